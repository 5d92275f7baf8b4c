"""Run records, the contract other tools rely on. In a run's output directory:

- ``events.csv``: one row per arriving gradient: ``worker,version,delay,applied,lr,time``
  (engines hand rows to :meth:`RunRecorder.write_events` in chunks);
- ``history.csv``: ``update,gradients,time,loss,suboptimality`` (+ extra metrics), evaluated
  every ``eval_every`` updates and at the end;
- ``summary.json``: totals and final values (see :func:`write_summary`), written when the run
  starts (``status: running``) and replaced atomically when it ends;
- ``run.json``: the run's circumstances, which differ between two runs of one configuration
  (MLflow run id, wall time, host, pid, the data file's absolute path): kept out of summary.json
  so that every other record is byte-identical between reruns.

Every file has its header from the first moment. Rows are buffered and appended in chunks, by
count and by time (at most :data:`FLUSH_SECONDS` apart), so a run killed mid-way, even by
SIGKILL, keeps every row up to about that long before the kill.

A long run's event rows are formatted and written by a child process
(:mod:`pipeline.core.eventwriter`, from the :data:`WRITER_ROWS`-th row on), so the formatting,
most of a fast simulation's cost, runs beside the run on a second core. The file is the same
byte for byte; the child writes every row it was handed before it ends, also when the run's
process dies (it ends when its input closes), and a checkpoint waits until the rows are on disk.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

EVENT_COLUMNS = ("worker", "version", "delay", "applied", "lr", "time")
HISTORY_COLUMNS = ("update", "gradients", "time", "loss", "suboptimality")
SUMMARY_FILE, RUN_FILE = "summary.json", "run.json"
FLUSH_SECONDS = 1.0  # rows reach the files at most this long after they were handed over
WRITER_ROWS = 1 << 16  # a run that has handed over this many event rows gets a writer process
WRITER_WAIT = 120.0  # seconds a recorder waits for an earlier run's writer to finish the file


def wait_for_writer(path: Path, timeout: float = WRITER_WAIT) -> None:
    """Wait until no writer process holds ``path`` (it holds the file's lock while it writes:
    the writer of a run that was killed goes on until it has written every row it got, and a
    resumed run must not cut the file before that)."""
    if not path.exists():
        return
    deadline = time.monotonic() + timeout
    with open(path, "rb") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{path} is still being written by another run's events writer after "
                        f"{timeout:.0f} s"
                    ) from None
                time.sleep(0.05)
                continue
            fcntl.flock(f, fcntl.LOCK_UN)
            return


def _floats(a: np.ndarray) -> list[str]:
    """repr of each float (few distinct values, such as stepsizes, are formatted once)."""
    values = a.astype(np.float64).tolist()
    if len(values) > 64:
        distinct = set(values)
        if len(distinct) * 8 < len(values):
            text = {v: repr(v) for v in distinct}
            return [text[v] for v in values]
    return repr(values)[1:-1].split(", ")


def format_events(W, V, D, LR, T) -> str:
    """Event rows as the lines of events.csv (columns as arrays; ``applied`` is LR != 0)."""
    cols = [W.tolist(), V.tolist(), D.tolist(), (LR != 0).astype(np.int8).tolist()]
    strs = [repr(c)[1:-1].split(", ") for c in cols]
    strs.append(_floats(LR))
    strs.append(_floats(T))
    return "\n".join(map(",".join, zip(*strs, strict=True))) + "\n"


class EventWriter:
    """The child process that formats and appends event rows to ``path``
    (:mod:`pipeline.core.eventwriter`); rows go to it as raw arrays through a pipe."""

    def __init__(self, path: Path):
        root = str(Path(__file__).resolve().parents[2])  # the package's root, for the child
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "pipeline.core.eventwriter", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def _send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            self._failed()

    def write(self, W, V, D, LR, T) -> None:
        m = len(W)
        header = np.array([0, m], dtype=np.int64).tobytes()
        body = b"".join(
            np.ascontiguousarray(c, dtype=dt).tobytes()
            for c, dt in ((W, np.int64), (V, np.int64), (D, np.int64), (LR, np.float64),
                          (T, np.float64))
        )  # fmt: skip
        self._send(header + body)
        try:
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._failed()

    def sync(self) -> int:
        """Waits until every row handed over is on disk; returns the file's size."""
        self._send(np.array([1, 0], dtype=np.int64).tobytes())
        try:
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._failed()
        size = self.proc.stdout.read(8)
        if len(size) != 8:
            self._failed()
        return int(np.frombuffer(size, dtype=np.int64)[0])

    def close(self) -> None:
        """Every row handed over written; the child gone."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        code = self.proc.wait()
        if code != 0:
            self._failed()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def _failed(self):
        self.proc.kill()
        self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"the events writer (pid {self.proc.pid}) exited with {self.proc.returncode}"
            + (f": {err[-1]}" if err else "")
        )


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
        flush_seconds: float = FLUSH_SECONDS,
        on_history: Callable[[list[dict]], None] | None = None,
        resume: dict | None = None,
    ):
        """``resume``: a :meth:`state` of an earlier recorder of this folder; the files are cut
        back to where that state was taken and appended to."""
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.history_columns = HISTORY_COLUMNS + tuple(
            c for c in extra_history if c not in HISTORY_COLUMNS
        )
        self._history: list[dict] = []
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._flushed_at = self._history_flushed_at = time.monotonic()
        self.on_history = on_history
        self.n_events = 0
        self._handed = 0  # event rows handed over by this recorder (the writer's threshold)
        self._writer: EventWriter | None = None
        self.n_applied = 0
        self.max_delay = 0
        self.sum_delay = 0
        self.last_history: dict | None = None
        events, history = self.outdir / "events.csv", self.outdir / "history.csv"
        wait_for_writer(events)
        if resume is not None:
            for k in ("n_events", "n_applied", "max_delay", "sum_delay", "last_history"):
                setattr(self, k, resume[k])
            for path, size in (
                (events, resume["events_bytes"]),
                (history, resume["history_bytes"]),
            ):
                with open(path, "rb+") as f:
                    f.truncate(size)
        mode = "w" if resume is None else "a"
        self._events_file = open(events, mode, newline="")  # noqa: SIM115
        self._history_file = open(history, mode, newline="")  # noqa: SIM115
        self._history_writer = csv.writer(self._history_file, lineterminator="\n")
        if resume is None:
            self._events_file.write(",".join(EVENT_COLUMNS) + "\n")
            self._history_writer.writerow(self.history_columns)
        self._events_file.flush()  # the headers are on disk from the first moment
        self._history_file.flush()
        self._closed = False

    def due(self, pending: int) -> bool:
        """Whether an engine holding ``pending`` unwritten event rows should hand them over now:
        ``flush_every`` of them, or any after ``flush_seconds`` (a real run's slow arrivals)."""
        if pending >= self.flush_every:
            return True
        return pending > 0 and time.monotonic() - self._flushed_at >= self.flush_seconds

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
        self._handed += m
        if self._writer is None and self._handed >= WRITER_ROWS:
            self.start_writer()
        if self._writer is not None:
            self._writer.write(W, V, D, LR, T)
        else:
            self._events_file.write(format_events(W, V, D, LR, T))
        self._events_file.flush()
        self._history_file.flush()  # rows evaluated up to these events
        self._flushed_at = self._history_flushed_at = time.monotonic()

    def expect(self, rows: int | None) -> None:
        """The run will hand over about ``rows`` event rows (None: not known): a long run
        starts its writer process now, so that the child is ready when the first rows come."""
        if rows is None or rows >= WRITER_ROWS:
            self.start_writer()

    def start_writer(self) -> None:
        """Event rows from now on go to a writer process."""
        if self._writer is None and not self._closed:
            self._events_file.flush()  # the child appends after what this process wrote
            self._writer = EventWriter(self.outdir / "events.csv")

    def history(self, row: dict) -> None:
        """Write an evaluated row; it is ``last_history`` only once it is written (a signal in
        between must not leave finals that the file never got)."""
        self._history_writer.writerow([_fmt(row.get(c)) for c in self.history_columns])
        self._history.append(row)
        self.last_history = row
        if len(self._history) >= 256:
            self.flush_history()
        elif time.monotonic() - self._history_flushed_at >= self.flush_seconds:
            self._history_file.flush()
            self._history_flushed_at = time.monotonic()

    def flush_history(self) -> None:
        self._history_file.flush()
        self._history_flushed_at = time.monotonic()
        rows, self._history = self._history, []
        if rows and self.on_history is not None:
            self.on_history(rows)

    def state(self) -> dict:
        """Everything written so far, flushed, and the counters: where a resumed run goes on."""
        self.flush_history()
        self._events_file.flush()
        size = self._writer.sync() if self._writer is not None else self._events_file.tell()
        return {"events_bytes": size,
                "history_bytes": self._history_file.tell(),
                "n_events": self.n_events, "n_applied": self.n_applied,
                "max_delay": self.max_delay, "sum_delay": self.sum_delay,
                "last_history": self.last_history}  # fmt: skip

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
            if self._writer is not None:
                self._writer.close()


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if v != v else (1e308 if v > 0 else -1e308)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_summary(outdir: str | os.PathLike, summary: dict, name: str = SUMMARY_FILE) -> Path:
    """Write ``summary`` as ``outdir/name`` atomically (a temporary file, then a rename)."""
    path = Path(outdir) / name
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
