"""The event engine: a simulated clock, in two passes per chunk of events.

Every server rule decides from (worker, version) alone, never from gradient values, so the whole
schedule of a run (who arrives when, at which version, with which weight, which steps and
cancellations) does not depend on the iterates. So:

1. **schedule**: a heap of job completions plus the core (:class:`Dispatcher`) produce the event
   rows of a chunk, without a single gradient. Ties in completion time are broken by worker
   index. Worker w's j-th job gets the j-th duration of w's seeded stream and sample j of w's
   sample stream; cancelled jobs are dropped lazily from the heap.
2. **replay** (:class:`pipeline.engines.replay.Replay`): the iterates, computed from the rows,
   batched where it pays; evaluation and divergence happen there.

For a :class:`~pipeline.core.methods.base.DelayRule` (asynchronous SGD and its stepsizes) on
emulated job times the schedule needs no heap: the arrivals are a merge of the workers' own
streams of durations, computed a chunk at a time with arrays (:mod:`pipeline.engines.bulk`),
with the same chunks and rows as the heap's (``BULK = False`` gives the heap for every rule).

Records are written from each chunk's arrays. Memory stays bounded: a chunk's rows, plus the
iterates that jobs in flight or later rows still need.

Two kinds of rules change the chunks (docs/extending.md, "What a rule may assume of engines"):
a rule that ``reads_iterates`` decides from the iterates, so the two passes go in lockstep
(chunks of one event, replayed one by one before the next decision; :class:`SimIterates` shows
the replay's iterates to the rule); a rule that ``scales_steps`` rewrites the weights of a
step's rows when the step comes, so a chunk ends at its last step and the open step's rows go
on to the next chunk. Other rules run exactly as before.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush, heapreplace

import numpy as np
import torch

from pipeline.engines.base import (
    BY_EXHAUSTION,
    BY_FAILURE,
    BY_GRADIENTS,
    BY_SIGNAL,
    BY_TIME,
    Checkpoints,
    RunControl,
    RunResult,
)
from pipeline.engines.bulk import BulkSchedule, bulk_applies
from pipeline.engines.dispatch import Dispatcher
from pipeline.engines.replay import Replay

CHUNK_EVENTS = 1 << 16
CHUNK_BYTES = 64 << 20  # a chunk's iterates and gradients stay under this (large models)
#: schedule in bulk where the rule allows it (False: every run one event at a time, the
#: reference the bulk schedule is tested against)
BULK = True


class SimEngine:
    name = "sim"
    time_kind = "simulated"

    def __init__(
        self, exp, control: RunControl, trace_iterates: bool = False, bulk: bool | None = None
    ):
        n = exp.rule.n
        self.exp = exp
        self.rule = exp.rule
        self.objective = exp.objective
        self.times = exp.times
        if self.times.n_workers != n or len(exp.rows) != n:
            raise ValueError("rule, worker times and data shards disagree on the number of workers")
        self.control = control
        self.recorder = control.recorder
        self.trace_iterates = trace_iterates
        x0 = self.objective.initial_point()
        per_event = max(1, x0.numel() * x0.element_size() * 3)
        self.chunk = int(min(CHUNK_EVENTS, max(256, CHUNK_BYTES // per_event)))
        self.replay = Replay(exp, control, x0, trace_iterates)
        self.lockstep = bool(self.rule.reads_iterates)
        if self.lockstep:
            self.chunk = 1
            self.replay.batched = False
            self.rule.iterates = SimIterates(self.replay)
        self.checkpoints = Checkpoints()  # the runner's, where the run has a folder
        #: the schedule in bulk (:mod:`pipeline.engines.bulk`) where the rule allows it
        bulk = BULK if bulk is None else bulk
        self.bulk = bulk and not self.lockstep and bulk_applies(self.rule, self.times)

    @classmethod
    def create(cls, exp, control: RunControl, trace_iterates: bool = False) -> SimEngine:
        return cls(exp, control, trace_iterates)

    def schedule(self):
        """The schedule, chunk by chunk: yields ``(cols, seqs, in_flight, stopped_by, now)``
        (the rows as columns, :func:`columns`; each arrival's sample number, the versions of
        the jobs in flight after the chunk; ``stopped_by`` and ``now`` once the run's schedule
        ends). In bulk where the rule allows it, else one event at a time through the core."""
        if self.bulk:
            yield from self._bulk_schedule()
            return
        rule, control = self.rule, self.control
        draw = self.times.drawer()
        n = rule.n
        heap: list[tuple[float, int, int]] = []
        running = [0] * n  # number of each worker's running job (0: none)
        started = [0] * n  # jobs started per worker: the job's sample number
        now = clock = 0.0  # the time of the event being handled
        top = False  # that event's entry is still on the heap's top
        cancels = self.cancels  # the row at which each cancellation happened
        done = 0  # rows of earlier chunks

        def start_job(w: int, v: int) -> None:
            nonlocal top
            s = started[w] = started[w] + 1
            running[w] = s
            d = draw(w)
            if d == math.inf:  # a trace that ran out: this job never ends
                return
            if top:  # reuse the handled event's slot: one sift instead of two
                top = False
                heapreplace(heap, (clock + d, w, s))
            else:
                heappush(heap, (clock + d, w, s))

        def cancel_job(w: int, v: int) -> None:
            running[w] = 0
            cancels.append(done + len(core.rows) - 1)

        core = self.core = Dispatcher(rule, start_job, cancel_job)
        scales = rule.scales_steps
        held_seqs: list[int] = []  # scales_steps: the open step's rows wait for the step
        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time if control.budget_time is not None else math.inf
        core.begin()
        arrive = core.arrive
        while True:
            seqs: list[int] = held_seqs
            rows = core.rows
            room = self.chunk if budget_g < 0 else min(self.chunk, budget_g - done - len(rows))
            stopped_by = None
            while room:
                if not heap:
                    stopped_by = BY_EXHAUSTION
                    break
                t, w, s = heap[0]
                if running[w] != s:
                    heappop(heap)  # a cancelled job
                    continue
                if t > budget_t:
                    now, stopped_by = budget_t, BY_TIME
                    break
                now = clock = t
                running[w] = 0
                seqs.append(s)
                top = True
                arrive(w, t)
                if top:
                    top = False
                    heappop(heap)
                room -= 1
            if budget_g >= 0 and done + len(rows) == budget_g:
                stopped_by = BY_GRADIENTS
            core.rows, held_seqs = [], []
            in_flight = self._in_flight(core)
            if scales and stopped_by is None and core.open_rows:
                cut = len(rows) - core.open_rows  # the open step's rows wait for the step
                core.rows, held_seqs = rows[cut:], seqs[cut:]
                in_flight.update(r[1] for r in core.rows)
                rows, seqs = rows[:cut], seqs[:cut]
            done += len(rows)
            yield columns(rows), np.array(seqs, dtype=np.int64), in_flight, stopped_by, now
            if stopped_by is not None:
                return

    def _bulk_schedule(self):
        """:meth:`schedule` for a rule scheduled in bulk: the same chunks."""
        control = self.control
        bulk = self.core = BulkSchedule(self.rule, self.times)
        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time if control.budget_time is not None else math.inf
        now, done = 0.0, 0
        while True:
            room = self.chunk if budget_g < 0 else min(self.chunk, budget_g - done)
            W, T, S = bulk.arrivals(room, budget_t) if room else (np.zeros(0, np.int64),) * 3
            V, D, WT, ST = bulk.decide(W)
            stopped_by = None
            if len(W):
                now = float(T[-1])
            if len(W) < room:  # fewer than asked: the time is up, or no worker runs
                if bulk.started.any():
                    now, stopped_by = budget_t, BY_TIME
                else:
                    stopped_by = BY_EXHAUSTION
            if budget_g >= 0 and done + len(W) == budget_g:
                stopped_by = BY_GRADIENTS
            done += len(W)
            yield (W, V, D, WT, ST, T), S, bulk.in_flight(), stopped_by, now
            if stopped_by is not None:
                return

    def run(self) -> RunResult:
        """The replay consumes the schedule's chunks, and the records are written from them.
        (Running the schedule ahead in a thread was measured not to pay: the GIL hands over
        cost more than the schedule, about 2 us an event on the paper problem.)"""
        control, replay, checkpoints = self.control, self.replay, self.checkpoints
        self.cancels: list[int] = []
        status, stopped_by, now, done = "failed", BY_EXHAUSTION, 0.0, 0
        resumed = checkpoints.loaded
        skip = 0  # a resumed run: the chunks its records hold (the schedule runs through them)
        self.recorder.expect(control.budget_gradients)  # a long run's rows: formatted beside it
        if resumed is None:
            control.start(replay.x)
        else:
            if self.lockstep:
                raise RuntimeError(
                    f"{self.rule.name} reads the iterates (the event engine replays it in "
                    "lockstep): its runs are not resumable; run it again"
                )
            if resumed.get("engine") != self.name or resumed.get("chunk") != self.chunk:
                raise RuntimeError("the checkpoint was written by another engine or chunk size")
            skip, done = resumed["chunks"], resumed["done"]
            replay.load_state(resumed["replay"])
            control.load_state(resumed["control"], done)
        cols: tuple = ()
        replaying = False
        chunks = 0
        try:
            for cols, seqs, in_flight, stopped_by, now in self.schedule():
                chunks += 1
                if chunks <= skip:
                    continue
                replay.completed = 0  # a signal may land before the replay says so itself
                replaying = True
                diverged_at = replay.run(cols, seqs, done, in_flight)
                keep = len(seqs) if diverged_at is None else diverged_at + 1
                self.recorder.write_columns(replay.columns(keep))
                replaying = False
                done += keep
                if diverged_at is not None:
                    stopped_by, now = None, float(cols[5][diverged_at])
                    break
                if stopped_by is None and not self.lockstep and checkpoints.due():
                    checkpoints.save(self.state(chunks, done))
            status = "finished"
        except BaseException as e:
            # a signal (or an error) mid-chunk: the records end at the last row replayed, and
            # so does the result (the iterate is that row's)
            if isinstance(e, KeyboardInterrupt):
                status = "killed"
            stopped_by = BY_SIGNAL if status == "killed" else BY_FAILURE
            if replaying and replay.completed:
                self.recorder.write_columns(replay.columns(replay.completed))
                done += replay.completed
                now = float(cols[5][replay.completed - 1])
            raise
        finally:
            # a run that diverged ends at that row: so do its counts
            cancelled = sum(r < done for r in self.cancels)
            self.control.finish(
                replay.x,
                replay.version,
                done,
                now,
                status,
                stopped_by,
                cancelled=cancelled,
                iterates=replay.iterates,
            )
        return control.result

    def state(self, chunks: int, done: int) -> dict:
        """A checkpoint after ``chunks`` chunks (``done`` rows): the replay's, the run control's
        and the records' state. The schedule is not saved: it is a function of the seeds, and
        a resumed run runs it again through those chunks (no gradient computed)."""
        return {"engine": self.name, "chunks": chunks, "done": done, "chunk": self.chunk,
                "replay": self.replay.state(), "control": self.control.state(),
                "recorder": self.recorder.state()}  # fmt: skip

    @staticmethod
    def _in_flight(core: Dispatcher) -> set[int]:
        """Versions that jobs running or queued at this moment were given."""
        out = {v for v, b in zip(core.job_version, core.busy, strict=True) if b}
        for q in core.queues:
            if q:
                out.update(q)
        return out


def columns(rows: list[tuple]) -> tuple:
    """Rows ``(worker, version, delay, weight, step, time)`` as arrays (W, V, D, WT, ST, T)."""
    if not rows:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e, np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0)
    a = np.array(rows, dtype=np.float64)  # one conversion; versions are exact below 2**53
    W, V, D = (a[:, j].astype(np.int64) for j in range(3))
    return W, V, D, a[:, 3], a[:, 4].astype(bool), a[:, 5]


class SimIterates:
    """The iterates a ``reads_iterates`` rule sees on the simulated clock: the replay's, which
    in lockstep has applied every earlier row when the rule decides."""

    def __init__(self, replay: Replay):
        self.replay = replay

    def current(self):
        return self.replay.x

    def at(self, version: int):
        r = self.replay
        return r.x if version == r.version else r.store[version]

    def distance(self, version: int) -> float:
        r = self.replay
        if version == r.version:
            return 0.0
        return float(torch.linalg.vector_norm(r.x - r.store[version]))
