"""A folder of run records, as sweeps leave them: which runs it holds, in which order, under which
label, and which run is best. Shared by the study (selection), the report (tables) and MLflow's
sweep comparison, so the three agree."""

from __future__ import annotations

import math
from pathlib import Path

#: the study's group of plain methods (one multirun over optimizer=a,b,...); other groups are
#: named variants (``rennala_n``: rennala with S = n)
BASE_GROUP = "base"


def _job_order(name: str) -> tuple:
    return (not name.isdigit(), int(name) if name.isdigit() else 0, name)


def job_dirs(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold a ``summary.json``, in Hydra's job-number order
    (``0, 1, ..., 10``; other names after the numbers, by name)."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if (p / "summary.json").exists()),
        key=lambda p: _job_order(p.name),
    )


def label_of(group: str, summary: dict) -> str:
    """A run's label in tables: its method in the base group, else the variant's name."""
    return summary["method"] if group == BASE_GROUP else group


def rank_key(finished: bool, time_to_target: float | None, final: float | None) -> tuple:
    """Smaller is better: a finished run, then one that reached the target, then the sooner, then
    the smaller final value (a missing or non-finite one last)."""
    final = final if final is not None and math.isfinite(final) else math.inf
    reached = time_to_target is not None
    return (not finished, not reached, time_to_target if reached else math.inf, final)
