"""What every engine shares: the engine protocol, the run's outcome, and the run control that
owns evaluation cadence, divergence, budgets, progress and the final record."""

from __future__ import annotations

import os
import queue
import threading
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from pipeline.core.evaluation import Evaluator
from pipeline.core.progress import Progress
from pipeline.core.records import RunRecorder

# why a run ended (summary.json ``stopped_by``)
BY_GRADIENTS = "budget.gradients"
BY_TIME = "budget.time"
BY_DIVERGENCE = "divergence"
BY_EXHAUSTION = "no jobs left"  # nothing in flight (a trace ran out, or every worker is lost)
BY_FAILURE = "failure"
BY_SIGNAL = "signal"

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class RunResult:
    x: torch.Tensor
    status: str  # finished | diverged | failed | killed
    gradients: int  # arrivals (computed gradients, applied or not)
    updates: int  # server versions
    time: float  # simulated seconds (sim) or wall seconds since the first job (rpc)
    cancelled: int = 0
    final: dict = field(default_factory=dict)  # metrics at the final iterate
    iterates: list[torch.Tensor] | None = None  # x_0, x_1, ... when traced
    failures: list[dict] = field(default_factory=list)  # lost workers: worker, time, cause
    stopped_by: str | None = None
    extra: dict = field(default_factory=dict)  # engine-specific figures for the summary


class Engine(Protocol):
    """An engine carries out a server rule's decisions on its own clock and transport."""

    name: str
    time_kind: str  # "simulated" | "wall"

    def run(self) -> RunResult: ...


class Checkpoints:
    """``checkpoint.pt`` in a run's folder: the engine's state at a point where the records on
    disk end exactly there, written atomically (a temporary file, then a rename) at most every
    ``every`` seconds (None: never). ``loaded``: the state a resumed run starts from. The
    runner removes the file when the run ends (finished or diverged); a killed or failed run
    keeps it for ``resume=``."""

    def __init__(self, path: Path | None = None, every: float | None = None,
                 loaded: dict | None = None):  # fmt: skip
        self.path, self.every, self.loaded = path, every, loaded
        self.saved = 0
        self._at = _time.monotonic()

    def due(self) -> bool:
        if self.path is None or self.every is None:
            return False
        return _time.monotonic() - self._at >= self.every

    def save(self, state: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.saved += 1
        self._at = _time.monotonic()


class RunControl:
    """Owns a run whatever its engine: evaluates at update 0, every ``every`` updates and at the
    end (a diverged evaluation stops the run), knows the budgets, draws the progress bar and
    assembles the :class:`RunResult`."""

    def __init__(
        self,
        evaluator: Evaluator,
        recorder: RunRecorder,
        every: int,
        budget_gradients: int | None,
        budget_time: float | None,
        progress: bool = False,
        desc: str = "",
        background: bool = False,
    ):
        if budget_gradients is None and budget_time is None:
            raise ValueError("set budget.gradients or budget.time")
        self.evaluator = evaluator
        self.recorder = recorder
        self.every = max(1, int(every))
        self.budget_gradients = budget_gradients
        self.budget_time = budget_time
        self.next_eval = self.every
        self.last_update = -1
        self.diverged = False
        self._bar = Progress(budget_gradients, desc, progress)
        self.result: RunResult | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._evaluate, name="asgd-eval", daemon=True)
            self._thread.start()

    def _evaluate(self) -> None:
        """Background evaluation (real runs): the server's loop only hands over the iterate,
        which is never modified in place, so wall-clock timing is not charged for it."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):  # settle(): everything before it is done
                item.set()
                continue
            try:
                self.record(*item)
            except BaseException as e:  # re-raised in the run's thread
                self._error = e
                self.diverged = True
                return

    def settle(self) -> None:
        """Wait until the evaluations handed to the background are written (a checkpoint's
        history must end where its state says)."""
        if self._thread is None or self._error is not None:
            return
        done = threading.Event()
        self._queue.put(done)
        while not done.wait(1.0):
            if not self._thread.is_alive():
                return

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error

    def record(self, x: torch.Tensor, update: int, gradients: int, time: float) -> dict:
        """Evaluate ``x`` and write its history row; returns the row."""
        metrics = self.evaluator(x)
        row = {"update": update, "gradients": gradients, "time": time, **metrics}
        self.recorder.history(row)
        self.last_update = update
        if self.evaluator.diverged(metrics):
            self.diverged = True
        return row

    def start(self, x: torch.Tensor) -> None:
        self.record(x, 0, 0, 0.0)

    def state(self) -> dict:
        """What a checkpoint needs to go on evaluating where this run would have."""
        return {"next_eval": self.next_eval, "last_update": self.last_update}

    def load_state(self, state: dict, gradients: int) -> None:
        self.next_eval, self.last_update = state["next_eval"], state["last_update"]
        self._bar.update_to(gradients)

    def stepped(self, x: torch.Tensor, version: int, gradients: int, time: float) -> bool:
        """After a server step; True when the run must stop (it diverged)."""
        if version < self.next_eval:
            return False
        self.next_eval = version + self.every
        self._bar.update_to(gradients)
        if self._queue is not None:
            self._queue.put((x, version, gradients, time))
            return self.diverged
        self.record(x, version, gradients, time)
        return self.diverged

    def finish(
        self,
        x: torch.Tensor,
        version: int,
        gradients: int,
        time: float,
        status: str,
        stopped_by: str | None,
        cancelled: int = 0,
        **kwargs,
    ) -> RunResult:
        """The final evaluation, whatever the run's end (finished, diverged, failed, killed),
        of the last iterate, unless its history row is the last one written already; where that
        evaluation itself fails (or a second signal lands in it), the finals are the last row
        written. ``final["update"]`` says which iterate the finals are from."""
        self._bar.close()
        try:
            self._drain()
        except Exception:
            if status == "finished":
                raise
        written = self.recorder.last_history
        try:
            if written is not None and written.get("update") == version:
                final = dict(written)
            else:
                final = self.record(x, version, gradients, time)
        except KeyboardInterrupt:
            final = dict(self.recorder.last_history or {})
        except Exception:
            if status == "finished":
                raise
            final = dict(self.recorder.last_history or {})
        if self.diverged and status == "finished":
            status, stopped_by = "diverged", BY_DIVERGENCE
        self.result = RunResult(
            x=x,
            status=status,
            gradients=gradients,
            updates=version,
            time=time,
            cancelled=cancelled,
            final=final,
            stopped_by=stopped_by,
            **kwargs,
        )
        return self.result
