"""The study's stages, one function each (``STAGES``: tune, runs, paper, real, scaling,
nonconvex, hetero), run by ``python -m pipeline.study <stage>`` as ``dvc.yaml`` says; each
writes its records and its selection (a JSON file, and an MLflow run) under the profile's
results."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.study.multirun import multirun
from pipeline.study.profile import StudyError, results_dir
from pipeline.study.sweeps import Sweep, make_groups
from pipeline.study.tuning import tune_sweep


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
            lrs = [f"++lr_table.{g.method(lb)}={sel[lb]['lr']}" for lb in labels]
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
    return _problems(profile, "nonconvex", root)


def hetero(profile: dict, root: Path | None = None) -> dict:
    """Heterogeneous data (each worker its own label-sorted or Dirichlet shard of real data),
    heterogeneous worker times: the methods that average over workers (Malenia SGD, Rescaled
    ASGD, random assignment) against plain asynchronous SGD, tuned on the time to the F - F*
    target and run over the seeds, like the non-convex problems."""
    root = root or results_dir(profile)
    return _problems(profile, "hetero", root)


def _problems(profile: dict, stage: str, root: Path) -> dict:
    """Each problem of ``profile[stage]``: tuned, then run over the seeds, under
    ``<root>/<stage>/<problem>/``; the selection in ``<stage>_lr.json``."""
    nc = profile[stage]
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
        sw = Sweep(stage, "topology", common, groups, root / stage / name, tag=name)
        sel = tune_sweep(sw, nc["lr_scales"], nc["lr_scale_range"], profile["tune_seed"])
        run_sweep(sw, sel, nc.get("seeds", profile["seeds"]))
        out["problems"][name] = {
            "target": prob["target"],
            "accuracy": prob["accuracy"],
            "grad_norm_sq": prob["grad_norm_sq"],
            "cells": sel,
        }
    _write_json(root / f"{stage}_lr.json", out)
    _log_selection(stage, out, root / f"{stage}_lr.json")
    return out


#: stage name -> its output folders under the profile's results (set aside and reused from
#: while the stage runs: ``multirun.reusing``)
OUTPUTS: dict[str, tuple[str, ...]] = {
    "tune": ("tuning",),
    "runs": ("runs",),
    "paper": ("paper",),
    "scaling": ("scaling",),
    "nonconvex": ("nonconvex",),
    "hetero": ("hetero",),
    "real": ("real",),
}

#: stage name -> function(profile, root); one more stage is one more entry
STAGES: dict[str, Callable[..., Any]] = {
    "tune": tune,
    "runs": runs,
    "paper": paper,
    "scaling": scaling,
    "nonconvex": nonconvex,
    "hetero": hetero,
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
