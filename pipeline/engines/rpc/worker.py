"""The worker process of ``engine=rpc``: ``python -m pipeline.engines.rpc.worker`` (spawned by the
server) or a rank >= 1 under torchrun (:func:`torchrun_worker`).

A worker (rank r >= 1 is worker w = r - 1) takes the run's resolved configuration and the name
of its builder from the server (rank 0) through the start-up handshake
(:mod:`~pipeline.engines.rpc.protocol`), imports that builder (``"module:function"``, which
returns ``(objective, sampler, device)``: the objective on its device, its data shard's seeded
sampler; no F* solve, no evaluator), reports ready, joins the RPC group, then runs jobs on its
:class:`JobRunner` until the server says stop (or disappears). It imports nothing of the server
and nothing of the composition: the builder comes by name.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.distributed.rpc as rpc
from omegaconf import OmegaConf

from pipeline.engines.rpc import protocol
from pipeline.engines.rpc.faults import fault_for, inject
from pipeline.engines.rpc.protocol import CANCELLED, ERROR, OK


# ------------------------------------------------------------------------------ the job thread
class JobRunner:
    """Runs this worker's jobs one at a time, in the order the server numbered them (what
    answers the server's messages: :class:`~pipeline.engines.rpc.protocol.JobHandler`)."""

    def __init__(
        self,
        objective,
        sampler,
        device: torch.device,
        worker: int = 0,
        on_stop: Callable[[], None] | None = None,
    ):
        self.objective = objective
        self.fault = fault_for(worker)
        self.sampler = sampler
        self.device = device
        self.on_stop = on_stop
        self.cond = threading.Condition()
        self.pending: dict[int, tuple] = {}
        self.cancelled: set[int] = set()
        self.next_seq = 1
        self.current = 0
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="asgd-jobs", daemon=True)
        self.thread.start()

    def submit(self, seq: int, point: torch.Tensor, wait_s: float) -> torch.futures.Future:
        fut: torch.futures.Future = torch.futures.Future()
        with self.cond:
            self.pending[seq] = (point, wait_s, fut)
            self.cond.notify()
        return fut

    def cancel(self, seq: int) -> None:
        with self.cond:
            self.cancelled.add(seq)
            if self.current == seq:
                self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        with self.cond:
            self.cond.notify()
        if self.on_stop is not None:
            self.on_stop()

    def _next(self):
        with self.cond:
            while self.next_seq not in self.pending:
                if self.stopping.is_set():
                    return None
                self.cond.wait(0.5)
            seq = self.next_seq
            self.next_seq += 1
            self.current = seq
            self.wake.clear()
            return (seq, *self.pending.pop(seq))

    def _loop(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            seq, point, wait_s, fut = item
            started = time.perf_counter()
            try:
                sample = self.sampler()  # drawn for every job, cancelled or not
                if seq in self.cancelled:
                    fut.set_result((CANCELLED, seq, 0.0))
                    continue
                if self.fault is not None and seq == self.fault[1]:
                    inject(self.fault[0])
                g = self.objective.grad(point.to(self.device), sample)
                g = g.to("cpu", copy=False).contiguous()
            except Exception as e:  # reported to the server, which fails the run cleanly
                lines = traceback.format_exception_only(type(e), e)
                fut.set_result((ERROR, seq, "".join(lines).strip()))
                continue
            compute = time.perf_counter() - started
            rest = wait_s - compute
            if rest > 0 and not self.stopping.is_set():
                self.wake.wait(rest)
            with self.cond:
                cancelled = seq in self.cancelled
                self.cancelled.discard(seq)
                self.current = 0
            if cancelled:
                fut.set_result((CANCELLED, seq, compute))
            else:
                fut.set_result((OK, seq, g, compute))


# ---------------------------------------------------------------------- output under torchrun
class ConsoleOutput:
    """Under torchrun: this process's stdout and stderr (file descriptors 1 and 2, so C++ output
    too) still reach the console, and are also sent through the rendezvous store (at most
    :data:`~pipeline.engines.rpc.protocol.OUTPUT_LIMIT` bytes), where the server takes them for
    ``workers.log``: what a spawned worker writes into that file directly."""

    def __init__(self, store: dist.TCPStore, rank: int):
        self.store = store
        self.rank = rank
        self.buf = bytearray()
        self.sent = 0
        self.lock = threading.Lock()  # the buffer
        self.sending = threading.Lock()  # the store (the main thread, and stop on an RPC thread)
        self.saved: dict[int, int] = {}
        self.threads: list[threading.Thread] = []
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            try:
                saved = os.dup(fd)
            except OSError:  # no such stream: nothing to pass on
                continue
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            self.saved[fd] = saved
            t = threading.Thread(target=self._pump, args=(r, saved), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, r: int, console: int) -> None:
        while True:
            try:
                data = os.read(r, 1 << 16)
            except OSError:
                break
            if not data:
                break
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(console, view) :]
            except OSError:
                pass
            with self.lock:
                self.buf += data
        os.close(r)

    def flush(self) -> None:
        with self.sending:
            with self.lock:
                data, self.buf = bytes(self.buf), bytearray()
            room = protocol.OUTPUT_LIMIT - self.sent
            if not data or room <= 0:
                return
            if len(data) > room:
                note = f"\n[output beyond {protocol.OUTPUT_LIMIT} bytes: see the console]\n"
                data = data[:room] + note.encode()
            self.sent += len(data)
            try:
                protocol.send_output(self.store, self.rank, data)
            except Exception:  # the store is gone: the console still has it
                pass

    def say(self, line: str) -> None:
        """``line`` on the console and in the store now, not when the pipe's reader thread gets
        to it: a line the server must find (``ready``) even if the process is killed next."""
        sys.stdout.flush()
        data = (line + "\n").encode()
        console = self.saved.get(1)
        if console is not None:
            try:
                os.write(console, data)
            except OSError:
                pass
        with self.lock:
            self.buf += data
        self.flush()

    def close(self) -> None:
        """Back to the console alone: what is left in the pipes still reaches it, and the store."""
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # closes the pipe's write end: its reader sees the end
        for t in self.threads:
            t.join(2.0)
        self.flush()
        for saved in self.saved.values():
            os.close(saved)
        self.saved = {}


# ----------------------------------------------------------------------------- worker process
def load_builder(spec: str) -> Callable:
    """The function named ``"module:function"`` (``Experiment.worker_builder``)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


#: seconds a worker under torchrun waits, after torchrun's SIGTERM, for the server's ``stop``
#: (torchrun waits 30 s before its SIGKILL)
STOP_GRACE_S = 10.0


def relay_stop(rank: int, signum: int, relayed: list[float]) -> None:
    """Under torchrun, the SIGTERM handler: torchrun is stopping every rank of this host (one of
    them died, or torchrun was interrupted). On the server's host the server got it too; on
    another host only this message tells it (``protocol.host_stopping``), and the run ends as
    on one host. The worker then serves on until the server's ``stop`` (at most
    :data:`STOP_GRACE_S`), so the server records no loss of its own making."""
    if relayed:
        return
    relayed.append(time.monotonic())
    try:
        fut = rpc.rpc_async(protocol.SERVER, protocol.host_stopping, args=(rank, signum), timeout=5)
        fut.add_done_callback(lambda f: None)
    except Exception:  # the group is gone: nobody to tell
        pass


def serve(rank: int, world_size: int, url: str, start_timeout: float, parent: int | None) -> int:
    """A worker's life: fetch the config and builder, build, report ready, join the RPC group,
    serve until told to stop (or until the server is gone). ``parent``: the server's pid when
    it spawned this process; None under torchrun (the output then goes to the store too)."""
    protocol.register_rendezvous()
    w = rank - 1
    fault = fault_for(w)
    if fault is not None and fault[0] == "nostart":
        inject("hang")
    store = protocol.client_store(*protocol.store_address(url), start_timeout)
    output = ConsoleOutput(store, rank) if parent is None else None
    try:
        return _serve(store, output, rank, world_size, url, start_timeout, parent)
    finally:
        if output is not None:
            output.close()


def _serve(store, output, rank, world_size, url, start_timeout, parent) -> int:
    w = rank - 1
    try:
        cfg, builder = protocol.fetch_config(store)
        cfg = OmegaConf.create(cfg)
        torch.set_num_threads(int(cfg.engine.worker_threads))
        objective, sampler, device = load_builder(builder)(cfg, w)
    except Exception as e:
        if output is not None:
            output.flush()
        why = "".join(traceback.format_exception_only(type(e), e)).strip()
        protocol.report(store, rank, protocol.FAILED, why)
        return 1
    runner = JobRunner(objective, sampler, device, w, output.flush if output else None)
    protocol.serve_jobs(runner)
    info = {"pid": os.getpid(), "device": str(device), "host": os.uname().nodename}
    ready = f"worker {w} (rank {rank}) ready: pid {info['pid']} on {info['host']}, {device}"
    if output is not None:
        output.say(ready)
    else:
        print(ready, flush=True)
    protocol.report(store, rank, protocol.READY, info)
    rpc.init_rpc(
        protocol.worker_name(rank),
        rank=rank,
        world_size=world_size,
        rpc_backend_options=protocol.backend_options(url, start_timeout, 8),
    )
    code = 0
    relayed: list[float] = []  # under torchrun: when its SIGTERM came (and went to the server)
    if parent is None:
        signal.signal(signal.SIGTERM, lambda signum, frame: relay_stop(rank, signum, relayed))
    try:
        misses = 0
        while not runner.stopping.wait(1.0):
            if output is not None:
                output.flush()
            if relayed and time.monotonic() - relayed[0] > STOP_GRACE_S:
                break  # the server never said stop
            if parent is not None and os.getppid() != parent:
                break  # the server process is gone
            if parent is None:  # launched by torchrun: is the server still there?
                try:
                    rpc.rpc_sync(protocol.SERVER, protocol.ping, timeout=5.0)
                    misses = 0
                except Exception:
                    misses += 1
                    if misses >= 3:
                        break
    except Exception:
        code = 1
    finally:
        runner.stop()
        protocol.serve_jobs(None)
        try:
            rpc.shutdown(graceful=False)
        except Exception:
            pass
    return code


def spawned_worker(rank: int, world_size: int, url: str, start_timeout: float, parent: int):
    """A worker started by the server in a fresh interpreter (spawned, never forked)."""
    die_with_parent()
    if os.getppid() != parent:  # the server died before we could ask to die with it
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    code = serve(rank, world_size, url, start_timeout, parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # never wait on library threads at exit


def torchrun_worker(argv: list[str]) -> int:
    """A rank >= 1 under torchrun: a worker; its configuration comes from rank 0 (the server),
    so a different config on another host cannot silently run. The command line only gives
    the start-up deadline (``engine.start_timeout=...``, default 300 s)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = 300.0
    for a in argv:
        if a.startswith("engine.start_timeout="):
            timeout = float(a.split("=", 1)[1])
    url = protocol.init_url(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # torchrun forwards signals to every rank
    code = serve(rank, world, url, timeout, None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # the messages' functions live in protocol, so running as __main__ is fine
    r, ws, u, st, par = sys.argv[1:6]
    spawned_worker(int(r), int(ws), u, float(st), int(par))
