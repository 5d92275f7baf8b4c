"""The parameter server's event loop for ``engine=rpc``: :class:`ServerLoop` sends jobs, takes
finished futures from a queue and hands each arrival to the dispatcher (unordered: as they
happen; ordered: in the simulated clock's order), watching every job's deadline; and
:class:`JobsFile` writes ``jobs.csv`` (every job's real start and end, what ``topology=trace``
replays). :mod:`~pipeline.engines.rpc.server` starts and stops the run around it."""

from __future__ import annotations

import csv
import math
import queue
import signal
import time
from collections import deque
from heapq import heappop, heappush
from pathlib import Path

import torch
import torch.distributed.rpc as rpc

from pipeline import Terminated
from pipeline.core.server import ParameterServer
from pipeline.core.trace import JOB_COLUMNS
from pipeline.engines.base import BY_EXHAUSTION, BY_FAILURE, BY_GRADIENTS, BY_TIME
from pipeline.engines.dispatch import Dispatcher
from pipeline.engines.rpc import protocol
from pipeline.engines.rpc.protocol import ERROR, OK, RunFailure


class HostStopped(Terminated):
    """Under torchrun, a worker said that the torchrun of its host is stopping every rank there
    (``protocol.host_stopping``): the run ends as if the server had got that signal itself,
    as it does when that host is the server's (records kept, marked killed)."""

    def __init__(self, rank: int, signum: int):
        super().__init__(signum)
        self.reason = (
            f"terminated: torchrun on the host of worker {rank - 1} stopped its ranks "
            f"({signal.Signals(signum).name} to rank {rank})"
        )


class JobsFile:
    """``jobs.csv``: one row per job, written when it ends (what ``topology=trace`` replays)."""

    def __init__(self, path: Path, n: int, resume_bytes: int | None = None):
        """``resume_bytes``: a resumed run's file is cut back to its checkpoint and appended to
        (the jobs still running at the checkpoint have no row)."""
        if resume_bytes is not None:
            with open(path, "rb+") as f:
                f.truncate(resume_bytes)
        self._file = open(path, "w" if resume_bytes is None else "a", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")
        if resume_bytes is None:
            self._writer.writerow(JOB_COLUMNS)
        self._file.flush()  # the header, from the first moment
        self.open: list[tuple[int, int, float] | None] = [None] * n  # (seq, version, start)

    def start(self, w: int, seq: int, version: int, now: float) -> None:
        self.open[w] = (seq, version, now)

    def end(self, w: int, status: str, now: float, compute: float | None = None) -> None:
        seq, v, start = self.open[w]
        self.open[w] = None
        end = "" if status in ("unfinished", "lost") else repr(now)
        c = "" if compute is None else repr(compute)
        self._writer.writerow((w, seq - 1, v, repr(start), end, status, c))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def tell(self) -> int:
        self._file.flush()
        return self._file.tell()

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

    def __init__(self, engine):  # the RpcEngine of server.py (which imports this module)
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
        self.checkpoints = engine.checkpoints
        resumed = self.checkpoints.loaded
        self.jobs = JobsFile(self.recorder.outdir / "jobs.csv", n,
                             resumed["jobs_bytes"] if resumed else None)  # fmt: skip
        self.core = Dispatcher(self.rule, self.start_job, self.cancel_job, self.apply, self.server)
        self.scales = self.rule.scales_steps
        self.pending: list[tuple[int, float, object]] = []  # scales_steps: the open step's
        if self.rule.reads_iterates:
            self.rule.iterates = ServerIterates(self.server)

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
        if self.scales:
            self._apply_scaled(w, weight, step)
        elif weight:
            self.server.add(weight, self.grads[w], step)
        elif step:
            self.server.step()
        if w >= 0:
            self.grads[w] = None

    def _apply_scaled(self, w: int, weight: float, step: bool) -> None:
        """A ``scales_steps`` rule: the step's gradients wait for its factors, then are added in
        arrival order with the weights the rows record (so the sums are the event engine's)."""
        pending = self.pending
        if weight and w >= 0:
            pending.append((w, weight, self.grads[w]))
        if not step:
            return
        scale = self.core.scale
        terms = [(wt * scale[u] if scale else wt, g) for u, wt, g in pending]
        terms = [(wt, g) for wt, g in terms if wt]
        self.pending = []
        if not terms:
            self.server.step()
        for i, (wt, g) in enumerate(terms):
            self.server.add(wt, g, i == len(terms) - 1)

    # -- workers ---------------------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Handle one finished job (or time out)."""
        try:
            w, s, fut = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        if w is None:  # (None, rank, signum): a worker's host is stopping (RpcEngine.host_stop)
            raise HostStopped(s, fut)
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

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Right after a step (nothing accumulated): the iterate and its version, the counts,
        the run's time, and the records as written (evaluations handed to the background are
        waited for). The jobs in flight are not saved: a resumed run starts fresh workers."""
        self.control.settle()
        self.recorder.write_events(self.core.rows)
        self.core.rows = []
        core = self.core
        self.checkpoints.save({
            "engine": "rpc", "x": self.server.x, "version": self.server.version,
            "gradients": core.gradients, "done": core.gradients,  # (done: as the runner reads)
            "cancelled": core.cancelled, "now": self.now,
            "failures": self.failures, "jobs_bytes": self.jobs.tell(),
            "control": self.control.state(), "recorder": self.recorder.state(),
        })  # fmt: skip

    def resume(self, state: dict) -> None:
        """Go on from a checkpoint: its iterate at its version (the rule's count too, so the
        delays of the new jobs are counted from there), its counts and its clock."""
        if state.get("engine") != "rpc":
            raise RunFailure("the checkpoint was written by another engine")
        self.server.x, self.server.version = state["x"], state["version"]
        self.rule.version = state["version"]
        self.core.gradients, self.core.cancelled = state["gradients"], state["cancelled"]
        self.failures = list(state["failures"])
        self.now = state["now"]
        self.control.load_state(state["control"], state["gradients"])

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
        resumed = self.checkpoints.loaded
        if resumed is None:
            control.start(self.server.x)
        else:
            self.resume(resumed)
        self.t0 = time.perf_counter() - self.now  # a resumed run's clock goes on from its time
        self.cpu0 = time.process_time()
        try:
            if self.engine.host_stop is not None:  # said before this loop could hear it
                raise HostStopped(*self.engine.host_stop)
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
                if recorder.due(len(core.rows)) and not core.open_rows:  # by count, or a
                    # second after the last (never inside a step whose weights may change)
                    recorder.write_events(core.rows)
                    core.rows = []
                    self.jobs.flush()
                if d.step and self.stepped():
                    stopped_by = None  # diverged
                    break
                if d.step and self.checkpoints.due():
                    self.checkpoint()
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


class ServerIterates:
    """The iterates a ``reads_iterates`` rule sees in a real run: the server's, and the points
    pinned for the jobs in flight (the arriving job's is released after the rule decides)."""

    def __init__(self, server: ParameterServer):
        self.server = server

    def current(self):
        return self.server.x

    def at(self, version: int):
        s = self.server
        return s.x if version == s.version else s.point(version)

    def distance(self, version: int) -> float:
        s = self.server
        if version == s.version:
            return 0.0
        return float(torch.linalg.vector_norm(s.x - s.point(version)))
