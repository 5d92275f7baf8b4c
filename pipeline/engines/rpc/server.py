"""``engine=rpc``: the parameter server's side, :class:`RpcEngine` and its loop.

The run's own process is the parameter server (rank 0): it holds the iterate, the rule, the
records and the MLflow run. ``n_workers`` worker processes (ranks 1..n,
:mod:`~pipeline.engines.rpc.worker`) are started by :mod:`~pipeline.engines.rpc.launch`:
spawned here on a fresh loopback port (``engine.launcher=spawn``), or by ``torchrun`` on one or
several machines (``engine.launcher=torchrun``). The server sends a job with ``rpc_async`` and
collects finished futures from a queue, so its loop (:class:`ServerLoop`) mirrors the event
engine's, with that queue in place of the heap:

- unordered (default): arrivals are applied in the order they really happen; a job takes at
  least its drawn duration x ``engine.time_scale`` seconds (``topology=native``: no wait);
- ``engine.ordered=true``: arrivals are applied in the order of the simulated clock (the same
  per-worker duration and sample streams as the event engine), so a real run and an event-engine
  run of the same config give the same iterates, to float tolerance.

Every phase has a deadline: start-up and rendezvous (``engine.start_timeout``), each job
(its wait + ``engine.job_timeout``), shutdown (``engine.shutdown_timeout``). A worker that dies or
misses its deadline is lost: asynchronous rules carry on with the others; synchronous ones
(minibatch, Rennala) follow ``engine.on_worker_failure``. An error inside a worker fails the run
with that error. However the run ends, every worker process is reaped.
"""

from __future__ import annotations

import csv
import math
import os
import queue
import threading
import time
from collections import deque
from heapq import heappop, heappush
from pathlib import Path

import torch.distributed.rpc as rpc
from omegaconf import OmegaConf

from pipeline.core.server import ParameterServer
from pipeline.core.trace import JOB_COLUMNS
from pipeline.engines.base import (
    BY_EXHAUSTION,
    BY_FAILURE,
    BY_GRADIENTS,
    BY_TIME,
    RunControl,
    RunResult,
)
from pipeline.engines.dispatch import Dispatcher
from pipeline.engines.rpc import launch, protocol
from pipeline.engines.rpc.protocol import ERROR, OK, RunFailure

_ACTIVE: RpcEngine | None = None  # the run this process serves (one at a time)


def fresh_rpc_state() -> None:
    """torch.distributed.rpc counts, per process, its ``init_rpc`` calls (a prefix of the
    rendezvous keys) and its all-gathers (a sequence id); our workers are fresh processes that
    start from 0, so a server that runs several rpc runs one after the other (a sweep, a test
    session) must start from 0 again, or the second group never forms."""
    from torch.distributed.rpc import api

    lock = getattr(rpc, "_init_counter_lock", None)
    if lock is not None and hasattr(rpc, "_init_counter"):
        with lock:
            rpc._init_counter = 0
    if hasattr(api, "_all_gather_sequence_id"):
        with api._all_gather_dict_lock:
            api._all_gather_sequence_id.clear()
            api._all_gather_sequence_id_to_states.clear()


class JobsFile:
    """``jobs.csv``: one row per job, written when it ends (what ``topology=trace`` replays)."""

    def __init__(self, path: Path, n: int):
        self._file = open(path, "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(JOB_COLUMNS)
        self.open: list[tuple[int, int, float] | None] = [None] * n  # (seq, version, start)

    def start(self, w: int, seq: int, version: int, now: float) -> None:
        self.open[w] = (seq, version, now)

    def end(self, w: int, status: str, now: float, compute: float | None = None) -> None:
        seq, v, start = self.open[w]
        self.open[w] = None
        end = "" if status in ("unfinished", "lost") else repr(now)
        c = "" if compute is None else repr(compute)
        self._writer.writerow((w, seq - 1, v, repr(start), end, status, c))

    def close(self, now: float) -> None:
        if self._file is None:
            return
        for w, job in enumerate(self.open):
            if job is not None:
                self.end(w, "unfinished", now)
        self._file.close()
        self._file = None


class ServerLoop:
    """One run's loop on the server: sends jobs, takes finished ones from the inbox, hands each
    arrival to the :class:`Dispatcher` (in real order, or in the simulated clock's order when
    ``ordered``), writes ``jobs.csv``, and loses workers that die or miss their deadline."""

    def __init__(self, engine: RpcEngine):
        ec = engine.ec
        n = self.n = engine.n
        self.engine = engine
        self.rule = engine.rule
        self.server = engine.server
        self.control = engine.control
        self.recorder = engine.recorder
        self.workers = engine.workers
        self.times = engine.exp.times
        self.ordered = engine.ordered
        self.synchronous = engine.synchronous
        self.on_worker_failure = ec.on_worker_failure
        self.scale = 0.0 if (engine.native or self.ordered) else float(ec.time_scale)
        self.job_timeout = float(ec.job_timeout)
        self.names = [protocol.worker_name(w + 1) for w in range(n)]
        self.inbox: queue.Queue = queue.Queue()
        self.seq = [0] * n  # jobs sent to each worker so far
        self.live = [0] * n  # the number of each worker's running job; 0 once cancelled or lost
        self.grads: list = [None] * n  # the current job's gradient, once it arrived
        self.compute: list[float | None] = [None] * n  # its compute seconds
        self.arrived: deque[int] = deque()  # unordered: workers whose current job arrived
        self.lost = [False] * n
        self.heap: list[tuple[float, int, int]] = []  # ordered: (simulated end, worker, seq)
        self.sim_now = 0.0  # ordered: the simulated clock
        self.failures: list[dict] = []
        self.iterates = [self.server.x] if engine.trace_iterates else None
        self.t0 = time.perf_counter()
        self.cpu0 = 0.0
        self.now = 0.0
        self.last_watch = 0.0
        self.jobs = JobsFile(self.recorder.outdir / "jobs.csv", n)
        self.core = Dispatcher(self.rule, self.start_job, self.cancel_job, self.apply, self.server)

    # -- the dispatcher's hands ------------------------------------------------------------------
    def start_job(self, w: int, v: int) -> None:
        self.seq[w] += 1
        s = self.live[w] = self.seq[w]
        self.grads[w] = None
        d = self.times.next(w)
        if self.ordered:
            heappush(self.heap, (self.sim_now + d, w, s))
        wait = d * self.scale if math.isfinite(d) else 0.0
        self.jobs.start(w, s, v, self.now)
        fut = rpc.rpc_async(
            self.names[w], protocol.run_job, args=(s, self.server.point(v).cpu(), wait),
            timeout=wait + self.job_timeout,
        )  # fmt: skip
        fut.add_done_callback(lambda f, w=w, s=s: self.inbox.put((w, s, f)))

    def cancel_job(self, w: int, v: int) -> None:
        self.jobs.end(w, "cancelled", self.now)
        s = self.live[w]
        self.live[w] = 0  # its result, should it come, is stale
        f = rpc.rpc_async(self.names[w], protocol.cancel_job, args=(s,), timeout=self.job_timeout)
        f.add_done_callback(lambda f: None)

    def apply(self, w: int, v: int, weight: float, step: bool) -> None:
        if weight:
            self.server.add(weight, self.grads[w], step)
        elif step:
            self.server.step()
        if w >= 0:
            self.grads[w] = None

    # -- workers ---------------------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Handle one finished job (or time out)."""
        try:
            w, s, fut = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        if self.lost[w] or s != self.live[w]:
            return  # a cancelled or lost job's late result
        try:
            res = fut.value()
        except Exception as e:
            text = str(e)
            if "On WorkerInfo" in text:  # the worker's own code raised: not a lost worker
                last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
                raise RunFailure(f"worker {w} failed: {last.strip()}") from None
            cause = " ".join(text.split())[:200]
            low = cause.lower()
            if "timed out" in low or "timeout" in low:
                cause = f"job did not finish within its wait + {self.job_timeout:g} s"
            elif "eof" in low or "pipe closed" in low or "connection" in low:
                cause = f"connection lost ({cause.split(' (')[0]})"
            self.lose(w, cause)
            return
        if res[0] == ERROR:
            raise RunFailure(f"worker {w} failed: {res[2]}")
        if res[0] == OK:
            self.grads[w] = res[2].to(self.server.x.device)
            self.compute[w] = res[3]
            if not self.ordered:
                self.arrived.append(w)

    def watch(self) -> None:
        """Lose the workers whose process (started here) has exited."""
        self.now = time.perf_counter() - self.t0
        for w in range(self.n):
            code = None if self.lost[w] else self.workers.exit_code(w)
            if code is not None:
                self.lose(w, f"process exited with code {code}")

    def lose(self, w: int, cause: str) -> None:
        if self.lost[w]:
            return
        self.lost[w] = True
        self.failures.append({"worker": w, "time": self.now, "cause": cause})
        if self.jobs.open[w] is not None:
            self.jobs.end(w, "lost", self.now)
        self.live[w] = 0
        self.workers.kill(w)
        if self.synchronous and self.on_worker_failure == "abort":
            raise RunFailure(
                f"worker {w} lost ({cause}); {self.rule.name} is synchronous and "
                "engine.on_worker_failure=abort"
            )
        try:
            d = self.core.lose(w, self.now)
        except RuntimeError as e:
            raise RunFailure(f"worker {w} lost ({cause}): {e}") from None
        if d is not None and d.step:
            self.stepped()

    def stepped(self) -> bool:
        """After a server step; True when the run must stop (it diverged)."""
        server = self.server
        if self.iterates is not None:
            self.iterates.append(server.x)
        return self.control.stepped(server.x, server.version, self.core.gradients, self.now)

    # -- the next arrival ------------------------------------------------------------------------
    def next_ordered(self, budget_t: float | None) -> int | str | None:
        """The worker whose job ends first on the simulated clock, once its gradient is here;
        a ``stopped_by`` reason, or None to look again (that worker was lost)."""
        heap, live = self.heap, self.live
        while heap and live[heap[0][1]] != heap[0][2]:
            heappop(heap)  # cancelled or lost
        if not heap:
            return BY_EXHAUSTION
        t, w, _ = heap[0]
        if budget_t is not None and t > budget_t:
            return BY_TIME
        while self.grads[w] is None and not self.lost[w]:
            self.pump(0.2)
            self.watch()
        if self.lost[w]:
            return None
        heappop(heap)
        self.sim_now = t
        return w

    def next_unordered(self, budget_t: float | None) -> int | str:
        """The worker whose job really arrived first, or a ``stopped_by`` reason."""
        while not self.arrived:
            if self.core.in_flight == 0:
                break
            self.pump(0.2)
            now = time.perf_counter() - self.t0
            if now - self.last_watch > 0.2:
                self.last_watch = now
                self.watch()
            if budget_t is not None and now > budget_t:
                break
        self.now = time.perf_counter() - self.t0
        if budget_t is not None and self.now > budget_t:
            self.now = budget_t
            return BY_TIME
        if not self.arrived:
            return BY_EXHAUSTION  # nothing in flight
        return self.arrived.popleft()

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Until a budget, divergence, exhaustion or failure; the result goes to the control."""
        control, core, recorder = self.control, self.core, self.recorder
        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time
        status, stopped_by = "finished", BY_EXHAUSTION
        control.start(self.server.x)
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.now = 0.0
        try:
            core.begin()
            while True:
                if self.ordered:
                    w = self.next_ordered(budget_t)
                    if w is None:
                        continue
                else:
                    w = self.next_unordered(budget_t)
                if isinstance(w, str):
                    stopped_by = w
                    break
                self.now = time.perf_counter() - self.t0
                self.jobs.end(w, "arrived", self.now, self.compute[w])
                d = core.arrive(w, self.now)
                if len(core.rows) >= recorder.flush_every:
                    recorder.write_events(core.rows)
                    core.rows = []
                if d.step and self.stepped():
                    stopped_by = None  # diverged
                    break
                if core.gradients == budget_g:
                    stopped_by = BY_GRADIENTS
                    break
            if stopped_by == BY_EXHAUSTION and core.alive == 0:
                raise RunFailure("every worker is lost")
        except RunFailure:
            status, stopped_by = "failed", BY_FAILURE
            raise
        except KeyboardInterrupt:
            status, stopped_by = "killed", None
            raise
        finally:
            recorder.write_events(core.rows)
            core.rows = []
            self.engine.finish(status, stopped_by)


class RpcEngine:
    name = "rpc"
    time_kind = "wall"

    def __init__(self, exp, control: RunControl, trace_iterates: bool = False):
        self.exp = exp
        cfg = exp.cfg
        self.ec = cfg.engine
        self.rule = exp.rule
        self.n = exp.rule.n
        self.control = control
        self.recorder = control.recorder
        self.trace_iterates = trace_iterates
        self.cfg_dict = OmegaConf.to_container(cfg, resolve=True)
        self.worker_builder = exp.worker_builder
        self.server = ParameterServer(exp.objective.initial_point())
        self.native = cfg.topology.name == "native"
        self.ordered = bool(self.ec.ordered)
        self.synchronous = bool(getattr(self.rule, "synchronous", False))
        self.workers = launch.Workers(self.n, self.recorder.outdir / "workers.log")
        self.loop: ServerLoop | None = None
        self.infos: dict[int, dict] = {}
        self.t0 = time.perf_counter()
        self.startup_s = 0.0
        self.rpc_up = False
        self._store = None
        self._clean = False  # the loop ended normally: workers may leave together

    @classmethod
    def create(cls, exp, control: RunControl, trace_iterates: bool = False) -> RpcEngine:
        return cls(exp, control, trace_iterates)

    @property
    def torchrun(self) -> bool:
        return self.ec.launcher == "torchrun"

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunResult:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RunFailure("an rpc run is already in progress in this process")
        _ACTIVE = self
        try:
            self._start()
            self.loop = ServerLoop(self)
            self.loop.run()
            self._clean = True
        except BaseException as e:
            if self.control.result is None:
                self.finish("killed" if isinstance(e, KeyboardInterrupt) else "failed", BY_FAILURE)
            raise
        finally:
            try:
                self._shutdown()
            finally:
                _ACTIVE = None
                if self.loop is not None:
                    self.loop.jobs.close(self.loop.now)
        return self.control.result

    def finish(self, status: str, stopped_by: str | None) -> None:
        """The run's result (with its final evaluation), however the run ended."""
        loop = self.loop
        core = loop.core if loop else None
        now = loop.now if loop else 0.0
        self.control.finish(
            self.server.x,
            self.server.version,
            core.gradients if core else 0,
            now,
            status,
            stopped_by,
            cancelled=core.cancelled if core else 0,
            iterates=loop.iterates if loop else None,
            failures=list(loop.failures) if loop else [],
            extra={
                "startup_s": self.startup_s,
                "n_failures": len(loop.failures) if loop else 0,
                "ordered": self.ordered,
                "time_scale": None if self.native else float(self.ec.time_scale),
                "workers": [self.infos.get(r) for r in range(1, self.n + 1)],
                "gradients_per_s": (core.gradients / now) if core and now else None,
                # the server process's CPU over the run (its loop, RPC threads, evaluation)
                "server_cpu_s": time.process_time() - loop.cpu0 if loop and loop.cpu0 else None,
            },
        )

    # -- start-up ----------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start-up in two phases, every wait with a deadline. 1: through the rendezvous store
        (which waits can be bounded), the workers fetch the resolved configuration and their
        builder, build what they need and report ready (or why not). 2: once every worker is
        ready, all ranks join the RPC group (torch waits there without a deadline, so that
        happens in a thread watched from here)."""
        ec, n = self.ec, self.n
        deadline = time.monotonic() + ec.start_timeout
        protocol.register_rendezvous()
        if self.torchrun:
            addr, port, self._store = launch.torchrun_store(n, ec.start_timeout)
        else:
            addr = ec.master_addr
            self._store, port = launch.bind_store(addr, ec.master_port, n + 1, ec.start_timeout)
        url = protocol.init_url(addr, port, ec.start_timeout)
        local = launch.loopback_only(addr)
        os.environ.update(local)  # before this process creates its RPC agent
        protocol.publish_config(self._store, self.cfg_dict, self.worker_builder)
        if not self.torchrun:
            self.workers.spawn(url, ec.start_timeout, local)
        # phase 1: every worker ready (or a clear reason why not)
        waiting = set(range(1, n + 1))
        while waiting:
            for r in sorted(waiting):
                state = protocol.read_state(self._store, r)
                if state is None:
                    continue
                kind, info = state
                if kind == protocol.FAILED:
                    raise RunFailure(f"worker {r - 1} could not start: {info}")
                self.infos[r] = info
                waiting.discard(r)
            if not waiting:
                break
            self.workers.check("during start-up")
            if time.monotonic() > deadline:
                shown = ", ".join(str(r - 1) for r in sorted(waiting)[:8])
                more = " ..." if len(waiting) > 8 else ""
                raise RunFailure(
                    f"workers {shown}{more} did not start within {ec.start_timeout:g} s "
                    "(engine.start_timeout)"
                )
            time.sleep(0.05)
        # phase 2: join the RPC group
        if not self.torchrun:
            protocol.hand_over_store(self._store)  # rank 0's rendezvous takes it
            self._store = None
        errors: list[BaseException] = []

        def join() -> None:
            try:
                fresh_rpc_state()
                rpc.init_rpc(
                    protocol.SERVER,
                    rank=0,
                    world_size=n + 1,
                    rpc_backend_options=protocol.backend_options(url, ec.start_timeout, 16),
                )
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        joiner = threading.Thread(target=join, name="asgd-rendezvous", daemon=True)
        joiner.start()
        while joiner.is_alive():
            joiner.join(0.1)
            self.workers.check("while joining the RPC group")
            if time.monotonic() > deadline:
                raise RunFailure(
                    f"the RPC group did not form within {ec.start_timeout:g} s "
                    "(engine.start_timeout)"
                )
        if errors:
            e = errors[0]
            text = " ".join(str(e).split())
            raise RunFailure(f"rendezvous failed: {type(e).__name__}: {text[:300]}")
        self.rpc_up = True
        self.startup_s = time.perf_counter() - self.t0

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop the workers (politely, then not), leave the group, write ``workers.log`` (under
        torchrun), reap every process started here."""
        timeout = float(self.ec.shutdown_timeout)
        deadline = time.monotonic() + timeout
        if self.rpc_up:
            # Ask every worker to stop and wait for the answers, then leave the group first
            # (torch's graceful shutdown keeps per-process counters and hangs when one server
            # process runs several groups one after the other).
            futs = []
            for r in range(1, self.n + 1):
                if self.workers.exit_code(r - 1) is not None:
                    continue
                try:
                    futs.append(
                        rpc.rpc_async(
                            protocol.worker_name(r), protocol.stop, timeout=min(2, timeout)
                        )
                    )
                except Exception:
                    pass
            for f in futs:
                try:
                    f.wait()
                except Exception:
                    pass
            try:
                rpc.shutdown(graceful=False)
            except Exception:
                pass
            self.rpc_up = False
        if self.torchrun:  # a worker's output up to its stop
            self.workers.write_output(self._store)
        self._store = None
        protocol.hand_over_store(None)
        self.workers.reap(deadline, self._clean)
