"""``engine=rpc``: the parameter server's side, :class:`RpcEngine`: start-up, shutdown and the
run's end around its loop (:mod:`~pipeline.engines.rpc.loop`).

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

import logging
import os
import threading
import time

import torch.distributed.rpc as rpc
from omegaconf import OmegaConf

from pipeline.core.server import ParameterServer
from pipeline.engines.base import (
    BY_FAILURE,
    Checkpoints,
    RunControl,
    RunResult,
)
from pipeline.engines.rpc import launch, protocol
from pipeline.engines.rpc.loop import ServerLoop
from pipeline.engines.rpc.protocol import RunFailure

log = logging.getLogger(__name__)
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
        self.host_stop: tuple[int, int] | None = None  # (rank, signum): see host_stopping
        self.checkpoints = Checkpoints()  # the runner's, where the run has a folder

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
        if not self.ordered:  # ordered: the iterates do not depend on the wall clock
            here = int(os.environ.get("LOCAL_WORLD_SIZE", n + 1)) if self.torchrun else n + 1
            warning = launch.oversubscription(here, launch.usable_cores())
            if warning is not None:
                log.warning(warning)
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
        if self.torchrun:
            protocol.on_host_stopping(self.host_stopping)
        else:
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

    def host_stopping(self, rank: int, signum: int) -> None:
        """Under torchrun, on an RPC thread: worker ``rank``'s torchrun sent it ``signum``, as it
        does to every rank of its host when one of them died or it was interrupted itself. When
        that host is the server's, the server got the signal too; on another host, this is how
        the run hears of it: the loop ends the run as on that signal."""
        if self.host_stop is not None:
            return
        self.host_stop = (rank, signum)
        loop = self.loop
        if loop is not None:  # else the loop sees host_stop when it begins
            loop.inbox.put((None, rank, signum))

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop the workers (politely, then not), leave the group, write ``workers.log`` (under
        torchrun), reap every process started here."""
        protocol.on_host_stopping(None)
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
