"""Replay a real run on the simulated clock: ``topology=trace`` (engine=sim).

An ``engine=rpc`` run writes ``jobs.csv`` beside its ``events.csv``: one row per job,
``worker,seq,version,start,end,status,compute_s``, where ``start`` is the time of the server event
that dispatched the job (the moment the event engine would start it), ``end`` the time its result
was handled (or it was cancelled), ``status`` one of ``arrived``, ``cancelled``, ``lost``,
``unfinished``, and ``compute_s`` the seconds the worker spent computing the gradient.

Worker w's j-th job in the replay lasts ``end - start`` of worker w's j-th job in the trace, so
the event engine, making the same decisions, reproduces the real run's arrival times and order.
A job that never arrived (cancelled, lost, unfinished) never ends in the replay either.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pipeline import ConfigError

JOB_COLUMNS = ("worker", "seq", "version", "start", "end", "status", "compute_s")
JOB_STATUSES = ("arrived", "cancelled", "lost", "unfinished")


def read_jobs(path: str | Path) -> list[dict]:
    """The rows of a run's ``jobs.csv`` (its directory or any file in it), checked first
    (:func:`pipeline.compose.inputs.check_trace`: every fault is one line)."""
    from pipeline.compose.inputs import check_trace

    with open(check_trace(path), newline="") as f:
        return [
            {
                "worker": int(r["worker"]),
                "seq": int(r["seq"]),
                "version": int(r["version"]),
                "start": float(r["start"]),
                "end": float(r["end"]) if r["end"].strip() else math.inf,
                "status": r["status"].strip(),
                "compute_s": float(r["compute_s"]) if r["compute_s"].strip() else None,
            }
            for r in csv.DictReader(f)
        ]


class TraceTimes:
    """Per-job durations from a recorded run; the same interface as :class:`JobTimes`."""

    def __init__(self, durations: list[list[float]]):
        self._queues = [list(reversed(d)) for d in durations]
        self.durations = durations
        finished = [[x for x in d if math.isfinite(x)] for d in durations]
        fallback = max((max(f) for f in finished if f), default=1.0)
        # mean measured time per worker, for the theory's predictions
        self.taus = np.array([float(np.mean(f)) if f else fallback for f in finished])
        self.noise = "trace"

    @property
    def n_workers(self) -> int:
        return len(self._queues)

    def next(self, worker: int) -> float:
        q = self._queues[worker]
        return q.pop() if q else math.inf

    def drawer(self):
        return self.next

    @classmethod
    def load(cls, path: str | Path, n_workers: int | None = None) -> TraceTimes:
        rows = read_jobs(path)
        n = max(r["worker"] for r in rows) + 1
        if n_workers is not None and n_workers != n:
            raise ConfigError(
                f"topology.n_workers={n_workers} but the trace has {n} workers (leave it null)"
            )
        per_worker: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        for r in rows:
            d = r["end"] - r["start"] if r["status"] == "arrived" else math.inf
            if d < 0:
                raise ConfigError(f"trace row ends before it starts: {r}")
            per_worker[r["worker"]].append((r["seq"], d))
        durations = []
        for w, jobs in enumerate(per_worker):
            jobs.sort()
            if [s for s, _ in jobs] != list(range(len(jobs))):
                raise ConfigError(f"trace: worker {w}'s jobs are not numbered 0, 1, 2, ...")
            durations.append([d for _, d in jobs])
        return cls(durations)
