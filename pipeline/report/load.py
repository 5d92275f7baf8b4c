"""Reading the study's records: run summaries by cell and label, the selection files, and the
times to a target taken from them; the labels the report singles out."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from pipeline.core.runs import job_dirs, label_of

ASYNC = "asgd"
MB = "minibatch"
OPTIMAL_MSTAR = ("rennala", "ringmaster")  # S, R = ceil(sigma^2/eps), the theory's setting
OPTIMAL_N = ("rennala_n", "ringmaster_n")  # S, R = n


def load_runs(root: Path) -> list[dict]:
    runs = []
    for job in job_dirs(root):
        s = json.loads((job / "summary.json").read_text())
        s["dir"] = job
        runs.append(s)
    return runs


def load_cells(root: Path) -> dict[str, dict[str, list[dict]]]:
    """``runs/<cell>/<group>/<job>/`` -> {cell: {label: [summaries over seeds]}}."""
    out: dict[str, dict[str, list[dict]]] = {}
    if not root.exists():
        return out
    for cell in sorted(p for p in root.iterdir() if p.is_dir()):
        labels: dict[str, list[dict]] = defaultdict(list)
        for group in sorted(p for p in cell.iterdir() if p.is_dir()):
            for s in load_runs(group):
                s["label"] = label_of(group.name, s)
                labels[s["label"]].append(s)
        if labels:
            out[cell.name] = dict(labels)
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def first_time(
    history: list[dict], column: str, target: float, above: bool, after: float | None = None
) -> float | None:
    """Simulated time of the first evaluation with ``column >= target`` (``above``) or
    ``<= target``, counting only evaluations whose training loss is at most ``after`` when
    given; None if never."""
    for r in history:
        if after is not None and not (r.get("loss") is not None and r["loss"] <= after):
            continue
        v = r.get(column)
        if v is not None and (v >= target if above else v <= target):
            return r["time"]
    return None


def times_of(runs: list[dict], key: str = "time_to_target") -> list[float] | None:
    """Every seed's value, or None when any seed has none (not reached)."""
    vals = [s.get(key) for s in runs]
    return None if not vals or any(v is None for v in vals) else vals


def machine() -> dict[str, str]:
    """The kind of CPU and the versions the records are produced with: floating-point results
    are byte-identical between runs on the same kind, not across kinds (the BLAS and vector
    kernels torch picks differ between, e.g., Intel and AMD processors)."""
    import platform

    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)  # fmt: skip
    except OSError:
        pass
    return {"cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__}  # fmt: skip
