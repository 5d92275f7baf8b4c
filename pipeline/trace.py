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


def jobs_file(path: str | Path) -> Path:
    """``jobs.csv`` of a run, given its directory or any file in it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"trace not found: {p} (topology.trace_path)")
    if p.is_dir():
        p = p / "jobs.csv"
    elif p.name != "jobs.csv":
        p = p.with_name("jobs.csv")
    if not p.exists():
        raise ConfigError(
            f"no jobs.csv at {p} (topology.trace_path): give the directory of an engine=rpc run"
        )
    return p


def read_jobs(path: str | Path) -> list[dict]:
    p = jobs_file(path)
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != JOB_COLUMNS:
                raise ConfigError(f"{p} is not a jobs.csv: columns {reader.fieldnames}")
            rows = []
            for r in reader:
                row = {
                    "worker": int(r["worker"]),
                    "seq": int(r["seq"]),
                    "version": int(r["version"]),
                    "start": float(r["start"]),
                    "end": float(r["end"]) if r["end"] else math.inf,
                    "status": r["status"],
                    "compute_s": float(r["compute_s"]) if r["compute_s"] else None,
                }
                if row["status"] not in JOB_STATUSES or row["worker"] < 0 or row["seq"] < 0:
                    raise ValueError(f"bad row {r}")
                if not (math.isfinite(row["start"]) and row["start"] >= 0):
                    raise ValueError(f"bad start time in row {r}")
                rows.append(row)
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} cannot be read as a jobs trace: {e}") from None
    if not rows:
        raise ConfigError(f"{p} holds no jobs")
    return rows


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
