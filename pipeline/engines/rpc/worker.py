"""The worker side of ``engine=rpc``, and what both sides share (names, rendezvous, messages).

A worker process (rank r >= 1 is worker w = r - 1) takes the run's resolved configuration from
the server (rank 0), builds only what a worker needs (the objective on its device, its data shard
and its seeded sampler; no F* solve, no evaluator), reports ready, joins the RPC group, then
serves jobs until the server says stop (or disappears).

Messages, one per job each way (flat contiguous tensors):
- server -> worker ``run_job(seq, point, wait_s)`` (``@rpc.functions.async_execution``): the job
  is queued on the worker's job thread, which runs jobs strictly in ``seq`` order: it draws the
  job's sample (always, so the worker's sample stream stays aligned with the event engine's),
  computes the gradient unless the job was cancelled, then waits out the rest of ``wait_s``
  (a cancellation interrupts the wait). The reply is ``("ok", seq, grad, compute_s)``,
  ``("cancelled", seq, compute_s)`` or ``("error", seq, text)``.
- server -> worker ``cancel_job(seq)``, ``stop()``; worker -> server ``ping``.

Before the RPC group forms, the rendezvous store carries the start-up handshake: the server
publishes the resolved configuration, each worker reports ``ready`` (or ``failed`` with why).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import torch
import torch.distributed as dist
import torch.distributed.rpc as rpc

# torch's RPC start-up calls a deprecated gloo API of its own
warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)

SERVER = "server"
SCHEME = "asgdtcp"  # our rendezvous: a TCP store whose every wait has a deadline


def worker_name(rank: int) -> str:
    return f"worker{rank}"


def _bounded_tcp_rendezvous(url: str, **kwargs):
    """Like torch's tcp:// rendezvous, but the store waits at most ``timeout`` seconds (from the
    URL) instead of 30 minutes for a rank that never comes. Rank 0 uses the store the server
    bound before it started anyone; under torchrun (an agent store already listens on the
    port) every rank is a client."""
    global MASTER_STORE
    u = urlparse(url)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    rank, world_size = int(q["rank"]), int(q["world_size"])
    if rank == 0 and MASTER_STORE is not None:
        store, MASTER_STORE = MASTER_STORE, None
    else:
        store = client_store(u.hostname, u.port, float(q.get("timeout", 120)))
    yield store, rank, world_size
    raise RuntimeError("the asgd rendezvous cannot be repeated")


MASTER_STORE: dist.TCPStore | None = None
CONFIG_KEY = "asgd/config"


def bind_master_store(addr: str, port: int, world_size: int, timeout: float) -> dist.TCPStore:
    """The rendezvous store, bound now (fails at once if the port is taken)."""
    return dist.TCPStore(
        addr,
        port,
        world_size,
        is_master=True,
        timeout=timedelta(seconds=timeout),
        wait_for_workers=False,
        multi_tenant=True,
    )


def client_store(addr: str, port: int, timeout: float) -> dist.TCPStore:
    return dist.TCPStore(
        addr, port, is_master=False, timeout=timedelta(seconds=timeout), wait_for_workers=False
    )


def publish_config(store: dist.TCPStore, cfg: dict) -> None:
    store.set(CONFIG_KEY, json.dumps(cfg))


def fetch_config(store: dist.TCPStore) -> dict:
    return json.loads(store.get(CONFIG_KEY))  # waits (with the store's deadline) for the server


def report(store: dist.TCPStore, rank: int, kind: str, info) -> None:
    store.set(f"asgd/{kind}/{rank}", json.dumps(info))


def read_state(store: dist.TCPStore, rank: int) -> tuple[str, object] | None:
    """("ready", info) or ("failed", text) once worker ``rank`` said so; else None."""
    for kind in ("failed", "ready"):
        key = f"asgd/{kind}/{rank}"
        if store.check([key]):
            return kind, json.loads(store.get(key))
    return None


def register_rendezvous() -> None:
    from torch.distributed.rendezvous import _rendezvous_handlers, register_rendezvous_handler

    if SCHEME not in _rendezvous_handlers:
        register_rendezvous_handler(SCHEME, _bounded_tcp_rendezvous)


def loopback_only(addr: str) -> dict[str, str]:
    """Environment that keeps TensorPipe and gloo on the loopback interface when the group's
    address is a loopback one (one machine): nothing listens beyond this host."""
    if addr not in ("127.0.0.1", "localhost", "::1"):
        return {}
    return {k: os.environ.get(k, "lo") for k in ("TP_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")}


def init_url(addr: str, port: int, timeout: float) -> str:
    return f"{SCHEME}://{addr}:{port}?timeout={timeout:g}"


def backend_options(url: str, timeout: float, threads: int) -> rpc.TensorPipeRpcBackendOptions:
    return rpc.TensorPipeRpcBackendOptions(
        init_method=url, rpc_timeout=timeout, num_worker_threads=threads
    )


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ------------------------------------------------------------------------------ the job thread
class JobRunner:
    """Runs this worker's jobs one at a time, in the order the server numbered them."""

    def __init__(self, objective, sampler, device: torch.device, worker: int = 0):
        self.objective = objective
        self.fault = parse_fault(os.environ.get(FAULT_ENV, ""), worker)
        self.sampler = sampler
        self.device = device
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
                    fut.set_result(("cancelled", seq, 0.0))
                    continue
                if self.fault is not None and seq == self.fault[1]:
                    inject(self.fault[0])
                g = self.objective.grad(point.to(self.device), sample)
                g = g.to("cpu", copy=False).contiguous()
            except Exception as e:  # reported to the server, which fails the run cleanly
                lines = traceback.format_exception_only(type(e), e)
                fut.set_result(("error", seq, "".join(lines).strip()))
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
                fut.set_result(("cancelled", seq, compute))
            else:
                fut.set_result(("ok", seq, g, compute))


FAULT_ENV = "ASGD_WORKER_FAULT"


def parse_fault(spec: str, worker: int) -> tuple[str, int] | None:
    """Fault injection for tests and drills: ``ASGD_WORKER_FAULT=KIND:WORKER:JOB`` makes worker
    WORKER fail in its JOB-th job (1-based): ``raise`` (an exception in the gradient), ``exit``
    (the process exits), ``kill`` (SIGKILL to itself), ``hang`` (stops answering); ``nostart``
    (JOB ignored) never joins the group."""
    if not spec:
        return None
    kind, w, job = spec.split(":")
    if kind not in ("raise", "exit", "kill", "hang", "nostart"):
        raise ValueError(f"{FAULT_ENV}: unknown fault {kind!r}")
    return (kind, int(job)) if int(w) == worker else None


def inject(kind: str) -> None:
    if kind == "raise":
        raise RuntimeError("injected fault (ASGD_WORKER_FAULT)")
    if kind == "exit":
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # hang
        time.sleep(3600)


_RUNNER: JobRunner | None = None
_STOP = threading.Event()


@rpc.functions.async_execution
def run_job(seq: int, point: torch.Tensor, wait_s: float) -> torch.futures.Future:
    return _RUNNER.submit(seq, point, wait_s)


def cancel_job(seq: int) -> None:
    _RUNNER.cancel(seq)


def stop() -> None:
    _STOP.set()
    if _RUNNER is not None:
        _RUNNER.stop()


# ----------------------------------------------------------------------------- worker process
def build_worker(cfg, w: int):
    """Only what worker w needs (the objective on its device, its shard's sampler, the device),
    built by the function the composed experiment names (``Experiment.worker_builder``)."""
    from pipeline.compose.build import build_worker as builder

    return builder(cfg, w)


def serve(rank: int, world_size: int, url: str, start_timeout: float, parent: int | None) -> int:
    """A worker's life: fetch the config, build, report ready, join the RPC group, serve until
    told to stop (or until the server is gone)."""
    global _RUNNER
    from omegaconf import OmegaConf

    from pipeline.engines.rpc import server

    register_rendezvous()
    fault = parse_fault(os.environ.get(FAULT_ENV, ""), rank - 1)
    if fault is not None and fault[0] == "nostart":
        inject("hang")
    u = urlparse(url)
    store = client_store(u.hostname, u.port, start_timeout)
    w = rank - 1
    try:
        cfg = OmegaConf.create(fetch_config(store))
        torch.set_num_threads(int(cfg.engine.worker_threads))
        objective, sampler, device = build_worker(cfg, w)
    except Exception as e:
        report(store, rank, "failed", "".join(traceback.format_exception_only(type(e), e)).strip())
        return 1
    _RUNNER = JobRunner(objective, sampler, device, w)
    info = {"pid": os.getpid(), "device": str(device), "host": os.uname().nodename}
    report(store, rank, "ready", info)
    rpc.init_rpc(
        worker_name(rank),
        rank=rank,
        world_size=world_size,
        rpc_backend_options=backend_options(url, start_timeout, 8),
    )
    code = 0
    try:
        misses = 0
        while not _STOP.wait(1.0):
            if parent is not None and os.getppid() != parent:
                break  # the server process is gone
            if parent is None:  # launched by torchrun: is the server still there?
                try:
                    rpc.rpc_sync(SERVER, server.ping, timeout=5.0)
                    misses = 0
                except Exception:
                    misses += 1
                    if misses >= 3:
                        break
    except Exception:
        code = 1
    finally:
        _RUNNER.stop()
        try:
            rpc.shutdown(graceful=False)
        except Exception:
            pass
    return code


def spawned_worker(rank: int, world_size: int, url: str, start_timeout: float, parent: int):
    """Entry point of a worker started by the server in a fresh interpreter (spawned, never
    forked): ``python -m pipeline.engines.rpc.worker RANK WORLD_SIZE URL START_TIMEOUT PARENT``."""
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
    the start-up deadline (``engine.start_timeout=...``, default 120 s)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = 120.0
    for a in argv:
        if a.startswith("engine.start_timeout="):
            timeout = float(a.split("=", 1)[1])
    url = init_url(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # torchrun forwards signals to every rank
    code = serve(rank, world, url, timeout, None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def spawn_command(rank: int, world_size: int, url: str, start_timeout: float) -> list[str]:
    args = (rank, world_size, url, start_timeout, os.getpid())
    return [sys.executable, "-m", "pipeline.engines.rpc.worker", *map(str, args)]


if __name__ == "__main__":
    # run in the imported module, whose functions the RPC layer resolves by name (not __main__)
    from pipeline.engines.rpc import worker as rpc_worker

    r, ws, u, st, par = sys.argv[1:6]
    rpc_worker.spawned_worker(int(r), int(ws), u, float(st), int(par))
