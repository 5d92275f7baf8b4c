"""A run's values in MLflow's terms: the config flattened into params, the history's metric names
(chart sections), and a summary split into result metrics, derived params and outcome tags."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# MLflow's chart view groups metrics into sections by the prefix before "/", prefixed sections in
# alphabetical order first. Against step = server update, the evaluated time series are
# ``curves/<key>`` (first), the counters ``progress/gradients`` and ``progress/<clock>`` (x-axes
# for the curves: sim_time or wall_time); the run's results are ``results/<key>`` (logged once at
# step 0: one bar per run), a sweep parent's job counts ``sweep/<key>``, MLflow's system metrics
# ``system/<key>`` (always last)
CURVES = "curves/"
PROGRESS = "progress/"
RESULTS = "results/"
_COUNTERS = ("gradients", "time")
RESULT_METRICS = (
    "final_loss",
    "final_suboptimality",
    "final_grad_norm_sq",
    "final_test_loss",
    "final_test_accuracy",
    "time_to_target",
    "gradients_to_target",
    "updates_to_target",
    "max_delay",
    "mean_delay",
    "run_time_s",  # real runs only (engine time in wall-clock seconds)
    "gradients_per_s",  # real runs only, derived: gradients / run_time_s
)
# summary keys that are configuration-derived constants: params
_PARAM_KEYS = ("f_star", "n_workers", "time_kind", "dataset_file", "target")
_PARAM_PREFIXES = ("theory_",)
# summary keys that MLflow has already (as params or tags under another name) or cannot show
# usefully (lists: in the records artifact); every other summary key is an outcome: a tag
_SKIP_KEYS = (
    "method", "engine", "objective", "dataset", "topology",  # tags
    "noise", "seed", "lr", "batch_size", "eval_every", "split",  # params (config, resolved.*)
    "worker_rows", "worker_class_counts", "mlflow_run_id",
)  # fmt: skip
_SKIP_PREFIXES = ("rule_",)  # = params resolved.*


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _param(v: Any) -> str:
    s = "null" if v is None else str(v)
    return s if len(s) <= 500 else s[:480] + f"... ({len(s)} chars)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def result_metrics(summary: Mapping) -> dict[str, float]:
    """The run's results as metrics (finite values of ``RESULT_METRICS``)."""
    values = dict(summary)
    if values.get("time_kind") == "wall" and _finite(values.get("run_time_s")):
        if values["run_time_s"] > 0 and _finite(values.get("gradients")):
            values["gradients_per_s"] = values["gradients"] / values["run_time_s"]
    return {k: float(values[k]) for k in RESULT_METRICS if _finite(values.get(k))}


def split_summary(summary: Mapping, logged_params: Mapping) -> tuple[dict, dict, dict]:
    """(metrics, params, tags) of a summary: results, derived constants, outcome counts."""
    metrics = result_metrics(summary)
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for k, v in summary.items():
        if k in RESULT_METRICS or k in _SKIP_KEYS or k.startswith(_SKIP_PREFIXES):
            continue
        if isinstance(v, (list, tuple, dict)):
            continue
        if k in _PARAM_KEYS or k.startswith(_PARAM_PREFIXES):
            if k not in logged_params:
                params[k] = v
        else:
            tags[k] = "null" if v is None else str(v)
    failures = summary.get("failures") or []
    if failures:  # lost workers of a real run, one line each
        tags["failures"] = "; ".join(
            f"worker {f['worker']} at {f['time']:.3g} s: {f['cause']}" for f in failures
        )
    return metrics, params, tags
