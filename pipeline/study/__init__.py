"""The study behind the report, driven by ``params.yaml``; every stage writes under
``results/<profile>/`` so that the profiles never overwrite each other.

    python -m pipeline.study tune       # tuning/, tuned_lr.json      (the paper's least squares)
    python -m pipeline.study runs       # runs/<topology>/<group>/    (seeds at the tuned lr)
    python -m pipeline.study paper      # paper/                      (the paper's own settings)
    python -m pipeline.study scaling    # scaling/, scaling_lr.json   (noisy quadratic, n grows)
    python -m pipeline.study nonconvex  # nonconvex/, nonconvex_lr.json (MLP and CNN)

Every sweep is a Hydra multirun of ``pipeline.train`` into a fixed directory, run in parallel
by Hydra's joblib launcher (one job per core; ``ASGD_STUDY_JOBS`` overrides the count). Records
do not depend on the launcher: same config and seed, same bytes.

**Tuning** (one seed, ``tune_seed``): per cell (a topology, or a worker count n) and method,
a log-spaced grid of ``lr_scale`` (the stepsize is the preset's ``lr_table`` entry times the
scale). The selected stepsize reaches the target in the least simulated time; ties, or no run
reaching the target, go to the lower final value; diverged or failed runs are never selected.
If the selected scale is the smallest or the largest tried, the grid is extended by one step
(the grid's own ratio) in that direction, and again, until the selection is interior (a point
at least as good as both neighbours, a worse or diverged point on each side) or the next step
would leave ``lr_scale_range`` (the cap; recorded as ``cap_hit``). A method with no stable
stepsize within the cap gets ``null`` and is left out of the runs.

**Runs**: each method at its own tuned stepsize, over ``seeds`` (disjoint from the tuning
seed), so the report's means and intervals are not measured on the seed that chose the lr.

**Variants** (``VARIANTS``): Rennala's S and Ringmaster's R default to m* = ceil(sigma^2/eps)
(sigma^2 at the solution); ``rennala_n``/``ringmaster_n`` set them to n, ``rennala_n_cancel``
is Rennala at S = n with cancel-and-restart. Each is tuned and run like a method of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import PROJECT_ROOT
from pipeline.core.runs import BASE_GROUP, job_dirs, label_of, rank_key

RESULTS = PROJECT_ROOT / "results"
PARAMS = PROJECT_ROOT / "params.yaml"

#: labelled settings of a method beyond its defaults: label -> overrides
VARIANTS: dict[str, list[str]] = {
    "rennala_n": ["optimizer=rennala", "optimizer.batch=${topology.n_workers}"],
    "rennala_n_cancel": [
        "optimizer=rennala",
        "optimizer.batch=${topology.n_workers}",
        "optimizer.cancel=true",
    ],
    "ringmaster_n": ["optimizer=ringmaster", "optimizer.threshold=${topology.n_workers}"],
}


class StudyError(RuntimeError):
    pass


def load_profile(params_file: Path = PARAMS) -> dict[str, Any]:
    params = yaml.safe_load(params_file.read_text())
    name = params["profile"]
    if name not in params["profiles"]:
        raise StudyError(
            f"params.yaml: unknown profile {name!r}; have {sorted(params['profiles'])}"
        )
    return {"name": name, **params["profiles"][name]}


def results_dir(profile: dict) -> Path:
    return RESULTS / profile["name"]


# ---------------------------------------------------------------------------- multiruns


def n_jobs() -> int:
    env = os.environ.get("ASGD_STUDY_JOBS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def multirun(
    overrides: list[str],
    sweep_dir: Path,
    name: str | None = None,
    jobs: int | None = None,
    subdir: str = "${hydra.job.num}",
) -> list[dict]:
    """Run ``python -m pipeline.train -m <overrides>`` into ``sweep_dir`` (parallel through the
    joblib launcher unless ``jobs`` is 1); return each job's summary in job order."""
    if sweep_dir.exists():
        shutil.rmtree(sweep_dir)
    jobs = n_jobs() if jobs is None else jobs
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    extra = ["tracking=none"] if os.environ.get("ASGD_STUDY_NO_MLFLOW") else []
    if name:
        extra.append(f"tracking.sweep_name={_quote(name)}")
    cmd = [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        *overrides,
        *extra,
        *launcher,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweep.subdir={subdir}",
        "progress=off",
    ]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StudyError(f"multirun failed ({proc.returncode}): {' | '.join(tail)}")
    return collect(sweep_dir)


def collect(sweep_dir: Path) -> list[dict]:
    out = []
    for job in job_dirs(sweep_dir):
        summary = json.loads((job / "summary.json").read_text())
        cfg_file = job / ".hydra" / "config.yaml"
        if cfg_file.exists():
            summary["lr_scale"] = yaml.safe_load(cfg_file.read_text()).get("lr_scale")
        summary["run_dir"] = (
            str(job.relative_to(PROJECT_ROOT)) if job.is_relative_to(PROJECT_ROOT) else str(job)
        )
        out.append(summary)
    return out


# ---------------------------------------------------------------------------- selection


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


# ---------------------------------------------------------------------------- cells


@dataclass
class Group:
    """Jobs that share one multirun: the plain methods (``base``) or one variant."""

    name: str
    labels: list[str]
    cells: list[Any]  # the axis values this group runs on
    extra: list[str] | None = None  # a plain method with overrides of its own (its own group)

    def overrides(self, labels: list[str] | None = None) -> list[str]:
        if self.name == BASE_GROUP:
            return [f"optimizer={','.join(labels or self.labels)}"]
        if self.extra is not None:
            return [f"optimizer={self.name}", *self.extra]
        return list(VARIANTS[self.name])

    def method(self, label: str) -> str:
        if self.name == BASE_GROUP or self.extra is not None:
            return label
        return next(o.split("=", 1)[1] for o in VARIANTS[self.name] if o.startswith("optimizer="))


def make_groups(
    methods: list[str],
    variants: list[str],
    cells: list,
    variant_cells: list | None,
    method_overrides: dict[str, list[str]] | None = None,
):
    """The base group of plain methods, a group per method with overrides of its own
    (``method_overrides``, e.g. its own ``eval_every``), and a group per variant."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise StudyError(f"params.yaml: unknown variant {unknown[0]!r}; have {sorted(VARIANTS)}")
    own = method_overrides or {}
    plain = [m for m in methods if m not in own]
    groups = [Group(BASE_GROUP, plain, list(cells))] if plain else []
    groups += [Group(m, [m], list(cells), list(own[m])) for m in methods if m in own]
    vc = [c for c in (variant_cells if variant_cells is not None else cells) if c in cells]
    groups += [Group(v, [v], vc) for v in variants]
    return groups


@dataclass
class Sweep:
    """One study sweep: a set of cells along one config axis (``topology`` or
    ``topology.n_workers``), the groups of methods, the common overrides and where it writes."""

    stage: str
    axis: str
    common: list[str]
    groups: list[Group]
    root: Path
    cell_name: Callable[[Any], str] = str
    tag: str = ""  # extra words in sweep names (e.g. the problem)
    extra: dict = field(default_factory=dict)

    def cell_override(self, cells: list) -> str:
        return f"{self.axis}={','.join(str(c) for c in cells)}"

    def title(self, what: str) -> str:
        return " ".join(x for x in (what, self.tag) if x)


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


def run_sweep(sw: Sweep, tuned: dict, seeds: list[int]) -> list[dict]:
    """Each group's labels at their tuned stepsizes over ``seeds``, one multirun per cell."""
    out = []
    seed_list = ",".join(str(s) for s in seeds)
    for g in sw.groups:
        for cell in g.cells:
            sel = tuned.get(sw.cell_name(cell), {})
            labels = [lb for lb in g.labels if (sel.get(lb) or {}).get("lr") is not None]
            if not labels:
                continue
            lrs = [f"lr_table.{g.method(lb)}={sel[lb]['lr']}" for lb in labels]
            out += multirun(
                [
                    *sw.common,
                    sw.cell_override([cell]),
                    *g.overrides(labels),
                    *lrs,
                    "lr_scale=1.0",
                    f"seed={seed_list}",
                ],
                sw.root / "runs" / sw.cell_name(cell) / g.name,
                name=sw.title(f"{sw.stage} runs {sw.cell_name(cell)} {g.name}"),
            )
    return out


# ---------------------------------------------------------------------------- stages


def _paper_sweep(profile: dict, root: Path) -> Sweep:
    p = profile
    groups = make_groups(
        p["methods"], p.get("variants", []), p["topologies"], p.get("variant_topologies")
    )
    common = [
        f"experiment={p['experiment']}",
        f"budget.gradients={p['gradients']}",
        f"target={p['target']}",
        "topology.noise=exponential",
    ]
    return Sweep("compare", "topology", common, groups, root)


def tune(profile: dict, root: Path | None = None) -> dict:
    root = root or results_dir(profile)
    sw = _paper_sweep(profile, root)
    sel = tune_sweep(sw, profile["lr_scales"], profile["lr_scale_range"], profile["tune_seed"])
    out = {"profile": profile["name"], "target": profile["target"], "cells": sel}
    _write_json(root / "tuned_lr.json", out)
    _log_selection("tune", out, root / "tuned_lr.json")
    return out


def runs(profile: dict, root: Path | None = None) -> list[dict]:
    root = root or results_dir(profile)
    tuned = json.loads((root / "tuned_lr.json").read_text())["cells"]
    sw = _paper_sweep(profile, root)
    for topo in profile["topologies"]:
        if not any(v.get("lr") is not None for v in tuned.get(topo, {}).values()):
            raise StudyError(f"no method has a stable stepsize on {topo}; widen lr_scale_range")
    return run_sweep(sw, tuned, profile["seeds"])


def paper(profile: dict, root: Path | None = None) -> list[dict]:
    """The paper's own settings: its stepsizes (the preset's lr_table), 40 homogeneous workers
    with exponential times, its gradient budget; every evaluation seed."""
    root = root or results_dir(profile)
    p = profile["paper"]
    return multirun(
        [
            f"experiment={p['experiment']}",
            f"budget.gradients={p['gradients']}",
            f"target={profile['target']}",
            f"optimizer={','.join(p['methods'])}",
            f"seed={','.join(str(s) for s in profile['seeds'])}",
        ],
        root / "paper",
        name="paper figure",
    )


def real(profile: dict, root: Path | None = None) -> dict:
    """Real processes (engine=rpc) on the paper problem: 4 workers emulating tau_i = i with
    exponential job times, one run per method for the same wall-clock budget; then each run
    in the event engine twice: replaying its measured job durations (topology=trace: the
    simulator given reality's timing) and under the worker-time model alone (topology=linear,
    simulated seconds x time_scale: the simulator's own prediction)."""
    root = root or results_dir(profile)
    r = profile["real"]
    n, scale, seconds = int(r["n_workers"]), float(r["time_scale"]), float(r["seconds"])
    # its own target: a short wall-clock run at the preset's stepsizes (tuned for 40 workers)
    target = float(r.get("target", profile["target"]))
    common = [
        f"experiment={r['experiment']}", f"target={target}",
        f"optimizer={','.join(r['methods'])}", "budget.gradients=null",
        f"eval_every={r['eval_every']}", "seed=0",
    ]  # fmt: skip
    real_dir = root / "real" / "rpc"
    multirun(
        [*common, "engine=rpc", "topology=linear", f"topology.n_workers={n}",
         "topology.noise=exponential", f"engine.time_scale={scale}", f"budget.time={seconds}"],
        real_dir, name="real rpc", jobs=1, subdir="${optimizer.name}",
    )  # fmt: skip
    multirun(
        [*common, "topology=trace", f"topology.trace_path={real_dir}/${{optimizer.name}}",
         f"budget.time={seconds}"],
        root / "real" / "replay", name="real replay", subdir="${optimizer.name}",
    )  # fmt: skip
    multirun(
        [*common, "topology=linear", f"topology.n_workers={n}", "topology.noise=exponential",
         f"budget.time={seconds / scale}"],
        root / "real" / "model", name="real model", subdir="${optimizer.name}",
    )  # fmt: skip
    out = {"profile": profile["name"], "time_scale": scale, "seconds": seconds, "n_workers": n,
           "target": target}  # fmt: skip
    _write_json(root / "real" / "real.json", out)
    return out


def scaling(profile: dict, root: Path | None = None) -> dict:
    root = root or results_dir(profile)
    sc = profile["scaling"]
    groups = make_groups(sc["methods"], sc.get("variants", []), sc["n_workers"], None)
    sw = Sweep(
        "scaling",
        "topology.n_workers",
        [f"experiment={sc['experiment']}", f"budget.gradients={sc['gradients']}"],
        groups,
        root / "scaling",
        cell_name=lambda n: f"n{n}",
    )
    sel = tune_sweep(sw, sc["lr_scales"], sc["lr_scale_range"], profile["tune_seed"])
    out = {"profile": profile["name"], "cells": sel}
    _write_json(root / "scaling_lr.json", out)
    _log_selection("scaling", out, root / "scaling_lr.json")
    run_sweep(sw, sel, sc.get("seeds", profile["seeds"]))
    return out


def nonconvex(profile: dict, root: Path | None = None) -> dict:
    """MLP and CNN under homogeneous and heterogeneous worker times: tuned on the time to the
    training-loss target (``target``), run over the seeds; the report adds the times to the
    test-accuracy and gradient-norm targets from the records."""
    root = root or results_dir(profile)
    nc = profile["nonconvex"]
    out: dict[str, Any] = {"profile": profile["name"], "problems": {}}
    for name, prob in nc["problems"].items():
        groups = make_groups(
            nc["methods"],
            nc.get("variants", []),
            nc["topologies"],
            None,
            prob.get("method_overrides"),
        )
        common = [
            f"experiment={prob['experiment']}",
            f"target={prob['target']}",
            "topology.noise=exponential",
            *prob.get("overrides", []),
        ]
        sw = Sweep("nonconvex", "topology", common, groups, root / "nonconvex" / name, tag=name)
        sel = tune_sweep(sw, nc["lr_scales"], nc["lr_scale_range"], profile["tune_seed"])
        run_sweep(sw, sel, profile["seeds"])
        out["problems"][name] = {
            "target": prob["target"],
            "accuracy": prob["accuracy"],
            "grad_norm_sq": prob["grad_norm_sq"],
            "cells": sel,
        }
    _write_json(root / "nonconvex_lr.json", out)
    _log_selection("nonconvex", out, root / "nonconvex_lr.json")
    return out


#: stage name -> function(profile, root); one more stage is one more entry
STAGES: dict[str, Callable[..., Any]] = {
    "tune": tune,
    "runs": runs,
    "paper": paper,
    "scaling": scaling,
    "nonconvex": nonconvex,
    "real": real,
}


# ---------------------------------------------------------------------------- outputs


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def selection_params(selection: dict) -> dict[str, str]:
    """``<problem>.<cell>.<label>`` -> lr (``null`` for none) and ``...cap_hit`` flags."""
    tables = (
        {f"{p}.": d["cells"] for p, d in selection["problems"].items()}
        if "problems" in selection
        else {"": selection["cells"]}
    )
    out = {}
    for prefix, cells in tables.items():
        for cell, labels in cells.items():
            for label, v in labels.items():
                out[f"{prefix}{cell}.{label}"] = "null" if v["lr"] is None else str(v["lr"])
                if v["cap_hit"]:
                    out[f"{prefix}{cell}.{label}.cap_hit"] = "true"
    return out


def _log_selection(stage: str, selection: dict, file: Path) -> None:
    """The selected stepsizes as one MLflow run (params ``<cell>.<label>`` = lr)."""
    if os.environ.get("ASGD_STUDY_NO_MLFLOW"):
        return
    from pipeline.tracking import log_selection

    params: dict[str, Any] = dict(selection_params(selection))
    if selection.get("target") is not None:
        params["target"] = selection["target"]
    log_selection(stage, params, file, profile=selection["profile"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.study")
    p.add_argument("stage", choices=list(STAGES))
    a = p.parse_args(argv)
    try:
        profile = load_profile()
        STAGES[a.stage](profile)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
