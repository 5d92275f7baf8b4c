"""What every section shares: the Section and Context types, estimates as metrics, and the
per-row and per-cell statistics of a comparison (times to target, ratios to asynchronous SGD
and to the best optimal method)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.report.load import ASYNC, MB, OPTIMAL_MSTAR, OPTIMAL_N, times_of
from pipeline.report.stats import Estimate, mean_interval, ratio_interval
from pipeline.report.text import anchor, setting


@dataclass
class Section:
    title: str
    name: str = ""  # its anchor in report.md (set from SECTIONS)
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


@dataclass
class Context:
    results: Path
    figs: Path
    target: float | None = None
    metrics: dict = field(default_factory=dict)  # filled section by section


def est_dict(e: Estimate | None) -> dict | None:
    return e.as_dict() if e is not None else None


def significant(e: Estimate | None) -> bool | None:
    return None if e is None or not e.has_interval else e.excludes(1.0)


def row_stats(
    cell: str,
    label: str,
    runs: list[dict],
    ref: dict[str, list[dict]],
    tuned: dict,
    key: str = "time_to_target",
) -> dict:
    t = times_of(runs, key)
    g = times_of(runs, "gradients_to_target")
    asgd = times_of(ref.get(ASYNC, []), key)
    ratio = ratio_interval(t, asgd) if t and asgd and label != ASYNC else None
    sel = tuned.get(label, {})
    finals = [s.get("final_suboptimality") for s in runs]
    return {
        "cell": cell,
        "label": label,
        "method": runs[0]["method"],
        "setting": setting(runs[0]),
        "tuned_lr": runs[0]["lr"],
        "bracketed": sel.get("bracketed"),
        "cap_hit": sel.get("cap_hit"),
        "seeds": len(runs),
        "reached": sum(s.get(key) is not None for s in runs),
        "time_to_target": est_dict(mean_interval(t, floor=0.0)) if t else None,
        "gradients_to_target": est_dict(mean_interval(g, floor=0.0)) if g else None,
        "final_suboptimality": float(np.mean(finals)) if None not in finals else None,
        "max_delay": max(s["max_delay"] for s in runs),
        "mean_delay": float(np.mean([s["mean_delay"] or 0 for s in runs])),
        "ratio_to_asgd": est_dict(ratio),
        "significant_vs_asgd": significant(ratio),
        "anchor": anchor("row", cell, label),
    }


def best_label(by_label: dict[str, list[dict]], labels, key="time_to_target") -> str | None:
    """The label with the lowest mean time among ``labels`` whose every seed reached."""
    cands = [
        (float(np.mean(times_of(by_label[lb], key))), lb)
        for lb in labels
        if lb in by_label and times_of(by_label[lb], key)
    ]
    return min(cands)[1] if cands else None


def cell_ratios(cell: str, by_label: dict[str, list[dict]], key="time_to_target") -> dict:
    first = next(iter(by_label.values()))[0]
    asgd = times_of(by_label.get(ASYNC, []), key)
    mb = times_of(by_label.get(MB, []), key)
    out = {
        "cell": cell,
        "anchor": anchor("ratio", cell),
        "theory_mb_over_async": first.get("theory_ratio_mb_over_asgd"),
        "theory_async_over_opt": first.get("theory_ratio_asgd_over_opt"),
        "theory_m_star": first.get("theory_m_star"),
    }
    e = ratio_interval(mb, asgd) if mb and asgd else None
    out["mb_over_async"], out["mb_over_async_significant"] = est_dict(e), significant(e)
    for name, labels in (("opt_mstar", OPTIMAL_MSTAR), ("opt_n", OPTIMAL_N)):
        best = best_label(by_label, labels, key)
        e = ratio_interval(asgd, times_of(by_label[best], key)) if best and asgd else None
        out[f"async_over_{name}"] = est_dict(e)
        out[f"async_over_{name}_best"] = best
        out[f"async_over_{name}_significant"] = significant(e)
    return out
