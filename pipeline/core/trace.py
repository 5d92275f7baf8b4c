"""Replay a real run on the simulated clock: ``topology=trace`` (engine=sim).

An ``engine=rpc`` run writes ``jobs.csv`` beside its ``events.csv``: one row per job,
``worker,seq,version,start,end,status,compute_s``, where ``start`` is the time of the server event
that dispatched the job (the moment the event engine would start it), ``end`` the time its result
was handled (or it was cancelled), ``status`` one of ``arrived``, ``cancelled``, ``lost``,
``unfinished``, and ``compute_s`` the seconds the worker spent computing the gradient.

Worker w's j-th job in the replay lasts ``end - start`` of worker w's j-th job in the trace, so
the event engine, making the same decisions, reproduces the real run's arrival times and order.
A job that never arrived (cancelled, lost, unfinished) never ends in the replay either.

Every worker of a real run has at least one row (a job that had not ended is written
``unfinished`` when the run closes), so a trace in which a worker has none (rows removed, a run
killed before its slowest worker's first job was written) is refused rather than replayed with
that worker idle: the workers are 0 .. the highest one in ``jobs.csv``, or ``n_workers`` of the
``summary.json`` beside it when that says more.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from pipeline import ConfigError
from pipeline.core.files import check_file, where

JOB_COLUMNS = ("worker", "seq", "version", "start", "end", "status", "compute_s")
JOB_STATUSES = ("arrived", "cancelled", "lost", "unfinished")


def trace_file(path: str | Path, key: str = "topology.trace_path") -> Path:
    """``jobs.csv`` of a run, given its directory or any file in it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"trace not found: {where(p, key)}")
    if p.is_dir():
        p = p / "jobs.csv"
    elif p.name != "jobs.csv":
        p = p.with_name("jobs.csv")
    if not p.exists():
        raise ConfigError(
            f"no jobs.csv at {where(p, key)}: give the directory of an engine=rpc run"
        )
    return p


def _number(row: dict, col: str, at: str, empty_ok: bool = False) -> float | None:
    text = (row.get(col) or "").strip()
    if not text and empty_ok:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{at}: {col} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{at}: {col} is not finite: {text!r}")
    if v < 0:
        raise ConfigError(f"{at}: {col} is negative: {text!r}")
    return v


def _job(r: dict, at: str) -> dict:
    """One row of ``jobs.csv``, parsed and checked (columns, numbers, status, times)."""
    if None in r or any(r[c] is None for c in JOB_COLUMNS):
        raise ConfigError(f"{at}: expected {len(JOB_COLUMNS)} fields")
    ids = {c: _number(r, c, at) for c in ("worker", "seq", "version")}
    for c, v in ids.items():
        if v != int(v):
            raise ConfigError(f"{at}: {c} is not an integer")
    start = _number(r, "start", at)
    end = _number(r, "end", at, empty_ok=True)
    compute_s = _number(r, "compute_s", at, empty_ok=True)
    status = r["status"].strip()
    if status not in JOB_STATUSES:
        raise ConfigError(f"{at}: status {status!r} is not one of {', '.join(JOB_STATUSES)}")
    if status == "arrived" and end is None:
        raise ConfigError(f"{at}: an arrived job needs its end time")
    if end is not None and end < start:
        raise ConfigError(f"{at}: end {end} is before start {start}")
    return {
        **{c: int(v) for c, v in ids.items()},
        "start": start,
        "end": math.inf if end is None else end,
        "status": status,
        "compute_s": compute_s,
    }


def read_jobs(path: str | Path, key: str = "topology.trace_path") -> list[dict]:
    """The rows of a run's ``jobs.csv`` (its directory or any file in it), each checked as it is
    parsed: every fault (columns, numbers, times, statuses, job numbering) is one line naming
    the file, the key that chose it and the line."""
    p = trace_file(path, key)
    check_file(p, key, "trace")
    at = where(p, key)
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != JOB_COLUMNS:
                raise ConfigError(
                    f"{at} is not a jobs.csv: columns {','.join(reader.fieldnames or [])} "
                    f"(expected {','.join(JOB_COLUMNS)})"
                )
            rows = [_job(r, f"{at}, line {line}") for line, r in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise ConfigError(f"{at} is not a text file") from None
    if not rows:
        raise ConfigError(f"{at} holds no jobs")
    seqs: dict[int, list[int]] = {}
    for r in rows:
        seqs.setdefault(r["worker"], []).append(r["seq"])
    for w, s in sorted(seqs.items()):
        if sorted(s) != list(range(len(s))):
            raise ConfigError(f"{at}: worker {w}'s jobs are not numbered 0, 1, 2, ...")
    return rows


def recorded_workers(jobs_csv: Path) -> int | None:
    """``n_workers`` of the ``summary.json`` beside a trace, when it is there and says one."""
    try:
        n = json.loads((jobs_csv.parent / "summary.json").read_text()).get("n_workers")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def check_every_worker(rows: list[dict], path: str | Path, key: str = "topology.trace_path") -> int:
    """The number of workers the trace implies (the highest worker in it + 1, or the
    ``summary.json`` beside it when that says more); refused, in one line naming them, when
    any of those workers has no job: a replay would leave it idle."""
    p = trace_file(path, key)
    seen = {r["worker"] for r in rows}
    n = max(seen) + 1
    recorded = recorded_workers(p)
    source = ""
    if recorded is not None and recorded > n:
        n, source = recorded, ", as its summary.json says"
    idle = [w for w in range(n) if w not in seen]
    if idle:
        who = f"worker {idle[0]} has" if len(idle) == 1 else f"workers {_listed(idle)} have"
        raise ConfigError(
            f"{where(p, key)}: {who} no jobs, but the trace implies n_workers={n} (workers "
            f"0..{n - 1}{source}); a replay would leave {'it' if len(idle) == 1 else 'them'} "
            "idle: give the complete jobs.csv of an engine=rpc run"
        )
    return n


def _listed(ws: list[int], most: int = 10) -> str:
    text = ", ".join(map(str, ws[:most]))
    return text + (f" and {len(ws) - most} more" if len(ws) > most else "")


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
        n = check_every_worker(rows, path)
        if n_workers is not None and n_workers != n:
            raise ConfigError(
                f"topology.n_workers={n_workers} but the trace has {n} workers (leave it null)"
            )
        per_worker: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        for r in rows:
            d = r["end"] - r["start"] if r["status"] == "arrived" else math.inf
            per_worker[r["worker"]].append((r["seq"], d))
        durations = []
        for jobs in per_worker:
            durations.append([d for _, d in sorted(jobs)])
        return cls(durations)
