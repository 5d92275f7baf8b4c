"""Run records, the contract other tools rely on. In a run's output directory:

- ``events.csv``: one row per arriving gradient: ``worker,version,delay,applied,lr,time``
  (engines hand rows to :meth:`RunRecorder.write_events` in chunks);
- ``history.csv``: ``update,gradients,time,loss,suboptimality`` (+ extra metrics), evaluated
  every ``eval_every`` updates and at the end;
- ``summary.json``: totals and final values (see :func:`write_summary`).

Rows are buffered and appended in chunks, so a run that fails mid-way keeps what it wrote.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

EVENT_COLUMNS = ("worker", "version", "delay", "applied", "lr", "time")
HISTORY_COLUMNS = ("update", "gradients", "time", "loss", "suboptimality")


def _floats(a: np.ndarray) -> list[str]:
    """repr of each float (few distinct values, such as stepsizes, are formatted once)."""
    values = a.astype(np.float64).tolist()
    if len(values) > 64:
        distinct = set(values)
        if len(distinct) * 8 < len(values):
            text = {v: repr(v) for v in distinct}
            return [text[v] for v in values]
    return repr(values)[1:-1].split(", ")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


class RunRecorder:
    """Writes events and history as they come; tracks delay statistics."""

    def __init__(
        self,
        outdir: str | os.PathLike,
        extra_history: Iterable[str] = (),
        flush_every: int = 16384,
        on_history: Callable[[list[dict]], None] | None = None,
    ):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.history_columns = HISTORY_COLUMNS + tuple(
            c for c in extra_history if c not in HISTORY_COLUMNS
        )
        self._history: list[dict] = []
        self.flush_every = flush_every
        self.on_history = on_history
        self.n_events = 0
        self.n_applied = 0
        self.max_delay = 0
        self.sum_delay = 0
        self.last_history: dict | None = None
        self._events_file = open(self.outdir / "events.csv", "w", newline="")  # noqa: SIM115
        self._events_file.write(",".join(EVENT_COLUMNS) + "\n")
        self._history_file = open(self.outdir / "history.csv", "w", newline="")  # noqa: SIM115
        self._history_writer = csv.writer(self._history_file, lineterminator="\n")
        self._history_writer.writerow(self.history_columns)
        self._closed = False

    def write_events(self, rows: list[tuple]) -> None:
        """Append event rows ``(worker, version, delay, lr, step, time)``."""
        if rows:
            W, V, D, LR, _, T = (np.array(c) for c in zip(*rows, strict=True))
            self.write_columns((W, V, D, LR, T))

    def write_columns(self, columns: tuple) -> None:
        """Append events given as arrays (worker, version, delay, lr, time), formatted column
        by column (the float columns in Python's shortest round-trip repr)."""
        W, V, D, LR, T = columns
        m = len(W)
        if not m:
            return
        applied = LR != 0
        self.max_delay = max(self.max_delay, int(D.max()))
        self.sum_delay += int(D.sum())
        self.n_applied += int(applied.sum())
        self.n_events += m
        cols = [W.tolist(), V.tolist(), D.tolist(), applied.astype(np.int8).tolist()]
        strs = [repr(c)[1:-1].split(", ") for c in cols]
        strs.append(_floats(LR))
        strs.append(_floats(T))
        self._events_file.write("\n".join(map(",".join, zip(*strs, strict=True))) + "\n")
        self._events_file.flush()

    def history(self, row: dict) -> None:
        self.last_history = row
        self._history.append(row)
        self._history_writer.writerow([_fmt(row.get(c)) for c in self.history_columns])
        if len(self._history) >= 256:
            self.flush_history()

    def flush_history(self) -> None:
        self._history_file.flush()
        rows, self._history = self._history, []
        if rows and self.on_history is not None:
            self.on_history(rows)

    @property
    def mean_delay(self) -> float | None:
        return self.sum_delay / self.n_events if self.n_events else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush_history()
        finally:
            self._events_file.close()
            self._history_file.close()


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if v != v else (1e308 if v > 0 else -1e308)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_summary(outdir: str | os.PathLike, summary: dict) -> Path:
    path = Path(outdir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_events(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {
                "worker": int(r["worker"]),
                "version": int(r["version"]),
                "delay": int(r["delay"]),
                "applied": int(r["applied"]),
                "lr": float(r["lr"]),
                "time": float(r["time"]),
            }
            for r in csv.DictReader(f)
        ]


def read_history(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]
