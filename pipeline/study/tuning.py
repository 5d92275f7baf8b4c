"""Tuning a sweep's stepsizes: the best run of a grid (``select``), whether it is bracketed or
where the grid extends next (``bracket``, ``grid_ratio``), and the rounds of multiruns until
every method in every cell is bracketed or capped (``tune_sweep``); the rules are in the
package's docstring."""

from __future__ import annotations

from typing import Any

from pipeline.core.runs import label_of, rank_key
from pipeline.study.multirun import multirun
from pipeline.study.profile import StudyError
from pipeline.study.sweeps import Group, Sweep


def _score(s: dict) -> tuple:
    """Smaller is better: reached the target, then time to it, then the final value."""
    final = s.get("final_suboptimality")
    if final is None:
        final = s.get("final_loss")
    return rank_key(s["status"] == "finished", s.get("time_to_target"), final)


def select(runs: list[dict], key: str = "method") -> dict[str, dict | None]:
    """Per ``key`` (method or label), the best finished run (see module doc), or None when every
    stepsize tried diverged or failed: a result to report, not a crash."""
    by: dict[str, list[dict]] = {}
    for s in runs:
        by.setdefault(s[key], []).append(s)
    chosen: dict[str, dict | None] = {}
    for k, group in by.items():
        ok = [s for s in group if s["status"] == "finished"]
        chosen[k] = min(ok, key=_score) if ok else None
    return chosen


def bracket(points: list[dict], lo_cap: float, hi_cap: float, ratio: float) -> dict:
    """Where a method's grid stands: its best point and the next scale to try, if any.

    ``points`` are the runs of one method in one cell, each with ``lr_scale``. Returns
    ``{"best", "next", "bracketed", "cap_hit"}``: ``next`` is the scale to run next (None when
    the best is interior or the cap stops the extension)."""
    scales = sorted({p["lr_scale"] for p in points})
    best = select([{**p, "_k": 0} for p in points], key="_k")[0]
    if best is None:  # every stepsize diverged or failed: go smaller
        step, edge = -1, scales[0]
    elif len(scales) >= 3 and scales[0] < best["lr_scale"] < scales[-1]:
        return {"best": best, "next": None, "bracketed": True, "cap_hit": False}
    elif best["lr_scale"] == scales[-1]:
        step, edge = +1, scales[-1]
    else:
        step, edge = -1, scales[0]
    nxt = edge * ratio if step > 0 else edge / ratio
    tol = 1e-9
    if nxt > hi_cap * (1 + tol) or nxt < lo_cap * (1 - tol):
        return {"best": best, "next": None, "bracketed": False, "cap_hit": True}
    return {"best": best, "next": _round(nxt), "bracketed": False, "cap_hit": False}


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def grid_ratio(scales: list[float]) -> float:
    s = sorted(scales)
    if len(s) < 2:
        return 2.0
    return s[-1] / s[-2]


def tune_sweep(sw: Sweep, scales: list[float], cap: list[float], seed: int) -> dict:
    """Bracketed tuning over every group and cell of ``sw`` (module doc). Returns
    ``{cell_name: {label: {lr, lr_scale, bracketed, cap_hit, grid}}}``."""
    ratio = grid_ratio(scales)
    lo_cap, hi_cap = float(cap[0]), float(cap[1])
    if not (lo_cap <= min(scales) and max(scales) <= hi_cap):
        raise StudyError(f"params.yaml: lr_scales {scales} must lie within lr_scale_range {cap}")
    points: dict[tuple[str, str], list[dict]] = {}
    todo: list[tuple[Group, list, list[str], float | None]] = [
        (g, g.cells, g.labels, None) for g in sw.groups if g.cells
    ]
    rnd = 0
    while todo:
        for i, (g, cells, labels, scale) in enumerate(todo):
            grid = scales if scale is None else [scale]
            runs = multirun(
                [
                    *sw.common,
                    sw.cell_override(cells),
                    *g.overrides(labels),
                    f"lr_scale={','.join(str(s) for s in grid)}",
                    f"seed={seed}",
                ],
                sw.root / "tuning" / g.name / f"r{rnd}_{i}",
                name=sw.title(f"{sw.stage} tune {g.name} r{rnd}"),
            )
            for s in runs:
                cell = _cell_of(sw, s)
                points.setdefault((sw.cell_name(cell), label_of(g.name, s)), []).append(s)
        rnd += 1
        need: dict[tuple[str, float], tuple[set, set]] = {}
        for g in sw.groups:
            for cell in g.cells:
                for label in g.labels:
                    pts = points.get((sw.cell_name(cell), label), [])
                    b = bracket(pts, lo_cap, hi_cap, ratio)
                    if b["next"] is not None:
                        cs, ls = need.setdefault((g.name, b["next"]), (set(), set()))
                        cs.add(cell)
                        ls.add(label)
        todo = []
        for (gname, scale), (cs, ls) in sorted(need.items()):
            g = next(x for x in sw.groups if x.name == gname)
            todo.append(
                (g, [c for c in g.cells if c in cs], [x for x in g.labels if x in ls], scale)
            )
    out: dict[str, dict[str, dict]] = {}
    for g in sw.groups:
        for cell in g.cells:
            for label in g.labels:
                pts = sorted(points[(sw.cell_name(cell), label)], key=lambda p: p["lr_scale"])
                b = bracket(pts, lo_cap, hi_cap, ratio)
                best = b["best"]
                out.setdefault(sw.cell_name(cell), {})[label] = {
                    "method": g.method(label),
                    "lr": best["lr"] if best else None,
                    "lr_scale": best["lr_scale"] if best else None,
                    "bracketed": b["bracketed"],
                    "cap_hit": b["cap_hit"],
                    "grid": [
                        {
                            k: p.get(k)
                            for k in (
                                "lr_scale",
                                "lr",
                                "status",
                                "time_to_target",
                                "final_suboptimality",
                                "final_loss",
                            )
                        }
                        for p in pts
                    ],
                }
    return out


def _cell_of(sw: Sweep, summary: dict) -> Any:
    if sw.axis == "topology":
        return summary["topology"]
    if sw.axis == "topology.n_workers":
        return summary["n_workers"]
    raise StudyError(f"unknown sweep axis {sw.axis}")
