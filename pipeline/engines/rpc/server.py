"""``engine=rpc``: real processes over torch.distributed.rpc, plus the core.

The run's own process is the parameter server (rank 0): it holds the iterate, the rule, the
records and the MLflow run. ``n_workers`` worker processes (ranks 1..n; see
:mod:`pipeline.engines.rpc.worker`) are started with multiprocessing *spawn* on a fresh loopback
port (``engine.launcher=spawn``), or by ``torchrun`` on one or several machines
(``engine.launcher=torchrun``). The server sends a job with ``rpc_async`` and collects finished
futures from a queue, so its loop mirrors the event engine's, with that queue in place of the heap:

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
import socket
import subprocess
import threading
import time
from collections import deque
from heapq import heappop, heappush

import torch.distributed.rpc as rpc
from omegaconf import OmegaConf

from pipeline import PROJECT_ROOT, RunError
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
from pipeline.engines.rpc import worker as wk

_SERVER: RpcEngine | None = None  # the engine this process serves, for the functions below


# -- called by workers, run on the server ----------------------------------------------------------
def ping() -> bool:
    return _SERVER is not None


class RunFailure(RunError):
    """The run cannot go on; the message is the one line the user sees."""


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


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class RpcEngine:
    name = "rpc"
    time_kind = "wall"

    def __init__(self, exp, control: RunControl, trace_iterates: bool = False):
        self.exp = exp
        self.cfg = cfg = exp.cfg
        self.ec = cfg.engine
        self.rule = exp.rule
        self.n = exp.rule.n
        self.control = control
        self.recorder = control.recorder
        self.trace_iterates = trace_iterates
        self.cfg_dict = OmegaConf.to_container(cfg, resolve=True)
        self.server = ParameterServer(exp.objective.initial_point())
        self.native = cfg.topology.name == "native"
        self.ordered = bool(self.ec.ordered)
        self.synchronous = bool(getattr(self.rule, "synchronous", False))
        self.inbox: queue.Queue = queue.Queue()
        self.procs: list = []
        self.infos: dict[int, dict] = {}
        self.failures: list[dict] = []
        self.t0 = time.perf_counter()
        self.cpu0 = 0.0
        self.now = 0.0
        self.startup_s = 0.0
        self.rpc_up = False
        self._jobs_file = None
        self._log = None
        self._store = None
        self._clean = False  # the loop ended normally: workers may leave together

    @classmethod
    def create(cls, exp, control: RunControl, trace_iterates: bool = False) -> RpcEngine:
        return cls(exp, control, trace_iterates)

    # -- start-up ----------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start-up in two phases, every wait with a deadline. 1: through the rendezvous store
        (which waits can be bounded), the workers fetch the resolved configuration, build
        what they need and report ready (or why not). 2: once every worker is ready, all ranks
        join the RPC group (torch waits there without a deadline, so that happens in a thread
        watched from here)."""
        ec = self.ec
        deadline = time.monotonic() + ec.start_timeout
        wk.register_rendezvous()
        if ec.launcher == "torchrun":
            world = int(os.environ.get("WORLD_SIZE", "0"))
            if int(os.environ.get("RANK", "-1")) != 0 or world != self.n + 1:
                raise RunFailure(
                    f"engine.launcher=torchrun needs this process to be rank 0 of a world of "
                    f"n_workers + 1 = {self.n + 1} (RANK={os.environ.get('RANK')}, "
                    f"WORLD_SIZE={os.environ.get('WORLD_SIZE')}); see README, several machines"
                )
            addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
            self._store = wk.client_store(addr, port, ec.start_timeout)
        else:
            addr = ec.master_addr
            port = self._bind(addr)
        url = wk.init_url(addr, port, ec.start_timeout)
        local = wk.loopback_only(addr)
        os.environ.update(local)  # before this process creates its RPC agent
        wk.publish_config(self._store, self.cfg_dict)
        if ec.launcher == "spawn":
            # fresh interpreters (spawned, never forked), so nothing of this process leaks in,
            # and no __main__ guard is needed in scripts that call the pipeline
            self._log = open(self.recorder.outdir / "workers.log", "ab")  # noqa: SIM115
            for r in range(1, self.n + 1):
                self.procs.append(
                    subprocess.Popen(
                        wk.spawn_command(r, self.n + 1, url, ec.start_timeout),
                        cwd=PROJECT_ROOT,
                        stdin=subprocess.DEVNULL,
                        stdout=self._log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **local, "TORCH_CPP_LOG_LEVEL": "ERROR"},
                    )
                )
        # phase 1: every worker ready (or a clear reason why not)
        waiting = set(range(1, self.n + 1))
        while waiting:
            for r in sorted(waiting):
                state = wk.read_state(self._store, r)
                if state is None:
                    continue
                kind, info = state
                if kind == "failed":
                    raise RunFailure(f"worker {r - 1} could not start: {info}")
                self.infos[r] = info
                waiting.discard(r)
            if not waiting:
                break
            self._check_children("during start-up")
            if time.monotonic() > deadline:
                shown = ", ".join(str(r - 1) for r in sorted(waiting)[:8])
                more = " ..." if len(waiting) > 8 else ""
                raise RunFailure(
                    f"workers {shown}{more} did not start within {ec.start_timeout:g} s "
                    "(engine.start_timeout)"
                )
            time.sleep(0.05)
        # phase 2: join the RPC group
        if self._store is not None and ec.launcher == "spawn":
            wk.MASTER_STORE, self._store = self._store, None  # handed to the rendezvous
        errors: list[BaseException] = []

        def join() -> None:
            try:
                fresh_rpc_state()
                rpc.init_rpc(
                    wk.SERVER,
                    rank=0,
                    world_size=self.n + 1,
                    rpc_backend_options=wk.backend_options(url, ec.start_timeout, 16),
                )
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        joiner = threading.Thread(target=join, name="asgd-rendezvous", daemon=True)
        joiner.start()
        while joiner.is_alive():
            joiner.join(0.1)
            self._check_children("while joining the RPC group")
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

    def _bind(self, addr: str) -> int:
        """Bind the rendezvous store before any worker starts: a taken port is an error at once
        (or, for a port we chose, a reason to choose another)."""
        fixed = self.ec.master_port
        for _ in range(1 if fixed else 5):
            port = fixed or free_port(addr)
            try:
                self._store = wk.bind_master_store(addr, port, self.n + 1, self.ec.start_timeout)
                return port
            except Exception as e:
                text = " ".join(str(e).split())
                if "in use" not in text.lower() and "EADDRINUSE" not in text:
                    raise RunFailure(f"cannot listen on {addr}:{port}: {text[:200]}") from None
        if fixed:
            raise RunFailure(f"port {fixed} on {addr} is taken (engine.master_port)")
        raise RunFailure(f"no free port on {addr} after 5 tries")

    def _check_children(self, when: str) -> None:
        for r, p in enumerate(self.procs, start=1):
            if p.poll() is not None:
                raise RunFailure(
                    f"worker {r - 1} exited with code {p.returncode} {when} (see workers.log)"
                )

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        global _SERVER
        if _SERVER is not None:
            raise RunFailure("an rpc run is already in progress in this process")
        _SERVER = self
        control = self.control
        try:
            self._start()
            self._loop()
            self._clean = True
        except BaseException as e:
            if control.result is None:
                status = "killed" if isinstance(e, KeyboardInterrupt) else "failed"
                self._finish(status, BY_FAILURE)
            raise
        finally:
            try:
                self._shutdown()
            finally:
                _SERVER = None
                self._close_jobs()
        return control.result

    def _open_jobs(self) -> None:
        self._jobs_file = open(self.recorder.outdir / "jobs.csv", "w", newline="")  # noqa: SIM115
        self._jobs = csv.writer(self._jobs_file, lineterminator="\n")
        self._jobs.writerow(JOB_COLUMNS)

    def _job_row(self, w: int, status: str, compute: float | None = None) -> None:
        seq, v, start = self.open_job[w]
        self.open_job[w] = None
        end = "" if status in ("unfinished", "lost") else repr(self.now)
        c = "" if compute is None else repr(compute)
        self._jobs.writerow((w, seq - 1, v, repr(start), end, status, c))

    def _close_jobs(self) -> None:
        if self._jobs_file is None:
            return
        for w in range(self.n):
            if self.open_job[w] is not None:
                self._job_row(w, "unfinished")
        self._jobs_file.close()
        self._jobs_file = None

    def _loop(self) -> None:
        n, ec, rule, server, control, recorder = (
            self.n, self.ec, self.rule, self.server, self.control, self.recorder,
        )  # fmt: skip
        times = self.exp.times
        scale = 0.0 if (self.native or self.ordered) else float(ec.time_scale)
        job_timeout = float(ec.job_timeout)
        names = [wk.worker_name(w + 1) for w in range(n)]
        seq = [0] * n  # jobs sent to each worker so far
        live = [0] * n  # the number of each worker's running job; 0 once cancelled or lost
        self.open_job: list = [None] * n  # (seq, version, start) of each worker's running job
        grads: list = [None] * n  # the current job's gradient, once it arrived
        arrived: deque[int] = deque()  # unordered: workers whose current job arrived
        lost = [False] * n
        heap: list[tuple[float, int, int]] = []  # ordered: (simulated end, worker, seq)
        sim_now = [0.0]
        inbox = self.inbox
        self._open_jobs()
        iterates = [server.x] if self.trace_iterates else None

        def start_job(w: int, v: int) -> None:
            seq[w] += 1
            s = live[w] = seq[w]
            grads[w] = None
            d = times.next(w)
            if self.ordered:
                heappush(heap, (sim_now[0] + d, w, s))
            wait = d * scale if math.isfinite(d) else 0.0
            self.open_job[w] = (s, v, self.now)
            fut = rpc.rpc_async(
                names[w], wk.run_job, args=(s, server.point(v).cpu(), wait),
                timeout=wait + job_timeout,
            )  # fmt: skip
            fut.add_done_callback(lambda f, w=w, s=s: inbox.put(("done", w, s, f)))

        def cancel_job(w: int, v: int) -> None:
            self._job_row(w, "cancelled")
            s = live[w]
            live[w] = 0  # its result, should it come, is stale
            f = rpc.rpc_async(names[w], wk.cancel_job, args=(s,), timeout=job_timeout)
            f.add_done_callback(lambda f: None)

        def apply(w: int, v: int, weight: float, step: bool) -> None:
            if weight:
                server.add(weight, grads[w], step)
            elif step:
                server.step()
            if w >= 0:
                grads[w] = None

        core = Dispatcher(rule, start_job, cancel_job, apply, server)
        self.core = core

        def lose(w: int, cause: str) -> None:
            if lost[w]:
                return
            lost[w] = True
            self.failures.append({"worker": w, "time": self.now, "cause": cause})
            if self.open_job[w] is not None:
                self._job_row(w, "lost")
            live[w] = 0
            if w < len(self.procs) and self.procs[w].poll() is None:
                self.procs[w].kill()
            if self.synchronous and ec.on_worker_failure == "abort":
                raise RunFailure(
                    f"worker {w} lost ({cause}); {rule.name} is synchronous and "
                    "engine.on_worker_failure=abort"
                )
            try:
                d = core.lose(w, self.now)
            except RuntimeError as e:
                raise RunFailure(f"worker {w} lost ({cause}): {e}") from None
            if d is not None and d.step:
                step_done(d)

        def pump(timeout: float) -> None:
            """Handle one message from the workers (or time out)."""
            try:
                kind, w, s, payload = inbox.get(timeout=timeout)
            except queue.Empty:
                return
            if kind != "done":
                return
            w = int(w)
            if lost[w] or s != live[w]:
                return  # a cancelled or lost job's late result
            try:
                res = payload.value()
            except Exception as e:
                text = str(e)
                if "On WorkerInfo" in text:  # the worker's own code raised: not a lost worker
                    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
                    raise RunFailure(f"worker {w} failed: {last.strip()}") from None
                cause = " ".join(text.split())[:200]
                low = cause.lower()
                if "timed out" in low or "timeout" in low:
                    cause = f"job did not finish within its wait + {job_timeout:g} s"
                elif "eof" in low or "pipe closed" in low or "connection" in low:
                    cause = f"connection lost ({cause.split(' (')[0]})"
                lose(w, cause)
                return
            if res[0] == "error":
                raise RunFailure(f"worker {w} failed: {res[2]}")
            if res[0] == "ok":
                grads[w] = res[2].to(server.x.device)
                self._compute[w] = res[3]
                if not self.ordered:
                    arrived.append(w)

        self._compute = [None] * n

        def watch() -> None:
            self.now = time.perf_counter() - self.t0
            for w, p in enumerate(self.procs):
                if not lost[w] and p.poll() is not None:
                    lose(w, f"process exited with code {p.returncode}")

        def step_done(d) -> bool:
            if iterates is not None:
                iterates.append(server.x)
            return control.stepped(server.x, server.version, core.gradients, self.now)

        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time
        status, stopped_by = "finished", BY_EXHAUSTION
        control.start(server.x)
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.now = 0.0
        last_watch = 0.0
        try:
            core.begin()
            while True:
                if self.ordered:
                    while heap and live[heap[0][1]] != heap[0][2]:
                        heappop(heap)  # cancelled or lost
                    if not heap:
                        break
                    t, w, s = heap[0]
                    if budget_t is not None and t > budget_t:
                        stopped_by = BY_TIME
                        break
                    while grads[w] is None and not lost[w]:
                        pump(0.2)
                        watch()
                    if lost[w]:
                        continue
                    heappop(heap)
                    sim_now[0] = t
                else:
                    while not arrived:
                        if core.in_flight == 0:
                            break
                        pump(0.2)
                        now = time.perf_counter() - self.t0
                        if now - last_watch > 0.2:
                            last_watch = now
                            watch()
                        if budget_t is not None and now > budget_t:
                            break
                    self.now = time.perf_counter() - self.t0
                    if budget_t is not None and self.now > budget_t:
                        self.now = budget_t
                        stopped_by = BY_TIME
                        break
                    if not arrived:
                        break  # nothing in flight
                    w = arrived.popleft()
                self.now = time.perf_counter() - self.t0
                self._job_row(w, "arrived", self._compute[w])
                d = core.arrive(w, self.now)
                if len(core.rows) >= recorder.flush_every:
                    recorder.write_events(core.rows)
                    core.rows = []
                if d.step and step_done(d):
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
            self._finish(status, stopped_by, iterates)

    def _finish(self, status: str, stopped_by: str | None, iterates=None) -> None:
        core = getattr(self, "core", None)
        self.control.finish(
            self.server.x,
            self.server.version,
            core.gradients if core else 0,
            self.now,
            status,
            stopped_by,
            cancelled=core.cancelled if core else 0,
            iterates=iterates,
            failures=list(self.failures),
            extra={
                "startup_s": self.startup_s,
                "n_failures": len(self.failures),
                "ordered": self.ordered,
                "time_scale": None if self.native else float(self.ec.time_scale),
                "workers": [self.infos.get(r) for r in range(1, self.n + 1)],
                "gradients_per_s": (core.gradients / self.now) if core and self.now else None,
                # the server process's CPU over the run (its loop, RPC threads, evaluation)
                "server_cpu_s": time.process_time() - self.cpu0 if self.cpu0 else None,
            },
        )

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop the workers (politely, then not), leave the group, reap every process."""
        timeout = float(self.ec.shutdown_timeout)
        deadline = time.monotonic() + timeout
        if self.rpc_up:
            # Ask every worker to stop and wait for the answers, then leave the group first
            # (torch's graceful shutdown keeps per-process counters and hangs when one server
            # process runs several groups one after the other).
            futs = []
            for r in range(1, self.n + 1):
                if r - 1 < len(self.procs) and self.procs[r - 1].poll() is not None:
                    continue
                try:
                    futs.append(rpc.rpc_async(wk.worker_name(r), wk.stop, timeout=min(2, timeout)))
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
        if not self._clean:  # an abnormal end: no reason to wait for anyone
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
            deadline = min(deadline, time.monotonic() + 2.0)
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        stuck = []
        for p in self.procs:
            try:
                p.wait(2.0)
            except subprocess.TimeoutExpired:  # not even SIGKILL helped: say so, never hang
                stuck.append(p.pid)
        self.procs = []
        self._store = None
        wk.MASTER_STORE = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if stuck:
            raise RunFailure(f"worker processes {stuck} would not die")
