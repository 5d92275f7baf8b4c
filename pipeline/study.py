"""The study behind the report: stepsize tuning, the comparison runs and the scaling runs, each a
Hydra multirun of ``pipeline.train`` into a fixed directory, driven by ``params.yaml``.

    python -m pipeline.study tune      # -> results/tuning/<topology>/, results/tuned_lr.json
    python -m pipeline.study runs      # -> results/runs/<topology>/<job>/
    python -m pipeline.study scaling   # -> results/scaling/n<N>/<job>/, results/scaling_lr.json

Tuning: per topology, one multirun over methods x ``lr_scale`` (lr = the preset's lr_table entry
times the scale, a log-spaced grid). Per method, the selected stepsize reaches the target in the
least simulated time; if none reaches it, the lowest final value wins; diverged runs are
failures, never selected, and a method with no stable stepsize gets ``null`` (left out of the
comparison runs). Methods are then compared at their own tuned stepsizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "results"


class StudyError(RuntimeError):
    pass


def load_profile(params_file: Path = PROJECT_ROOT / "params.yaml") -> dict[str, Any]:
    params = yaml.safe_load(params_file.read_text())
    name = params["profile"]
    if name not in params["profiles"]:
        raise StudyError(
            f"params.yaml: unknown profile {name!r}; have {sorted(params['profiles'])}"
        )
    return {"name": name, **params["profiles"][name]}


def multirun(overrides: list[str], sweep_dir: Path) -> list[dict]:
    """Run ``python -m pipeline.train -m <overrides>`` into ``sweep_dir``; return each job's
    summary (with its history) in job order."""
    if sweep_dir.exists():
        shutil.rmtree(sweep_dir)
    cmd = [
        sys.executable, "-m", "pipeline.train", "-m", *overrides,
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}", "progress=off",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StudyError(f"multirun failed ({proc.returncode}): {' | '.join(tail)}")
    return collect(sweep_dir)


def collect(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    out = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        summary["run_dir"] = (
            str(job.relative_to(PROJECT_ROOT)) if job.is_relative_to(PROJECT_ROOT) else str(job)
        )
        out.append(summary)
    return out


def _score(s: dict) -> tuple:
    """Smaller is better: reached the target, then time to it, then the final value."""
    final = s.get("final_suboptimality")
    if final is None:
        final = s.get("final_loss")
    final = final if final is not None and math.isfinite(final) else math.inf
    ttt = s.get("time_to_target")
    return (ttt is None, ttt if ttt is not None else math.inf, final)


def select(runs: list[dict]) -> dict[str, dict | None]:
    """Per method, the best finished run (see module doc), or None when every stepsize tried
    diverged or failed: a result to report, not a crash."""
    by_method: dict[str, list[dict]] = {}
    for s in runs:
        by_method.setdefault(s["method"], []).append(s)
    chosen: dict[str, dict | None] = {}
    for method, group in by_method.items():
        ok = [s for s in group if s["status"] == "finished"]
        chosen[method] = min(ok, key=_score) if ok else None
    return chosen


def _lr(run: dict | None) -> float | None:
    return run["lr"] if run is not None else None


def _common(profile: dict) -> list[str]:
    return [
        f"experiment={profile['experiment']}",
        f"budget.gradients={profile['gradients']}",
        f"target={profile['target']}",
    ]


def tune(profile: dict) -> dict:
    tuned: dict[str, dict[str, float]] = {}
    table: dict[str, list] = {}
    for topo in profile["topologies"]:
        runs = multirun(
            [*_common(profile), f"topology={topo}", "topology.noise=exponential",
             f"optimizer={','.join(profile['methods'])}",
             f"lr_scale={','.join(str(v) for v in profile['lr_scales'])}", "seed=0"],
            RESULTS / "tuning" / topo,
        )  # fmt: skip
        best = select(runs)
        tuned[topo] = {m: _lr(best[m]) for m in profile["methods"]}
        table[topo] = [
            {
                k: s.get(k)
                for k in ("method", "lr", "status", "time_to_target", "final_suboptimality")
            }
            for s in runs
        ]
    out = {"profile": profile["name"], "target": profile["target"], "lr": tuned, "grid": table}
    _write_json(RESULTS / "tuned_lr.json", out)
    _log_selection("tuning", out)
    return out


def runs(profile: dict) -> list[dict]:
    tuned = json.loads((RESULTS / "tuned_lr.json").read_text())["lr"]
    all_runs = []
    for topo in profile["topologies"]:
        methods = [m for m in profile["methods"] if tuned[topo].get(m) is not None]
        if not methods:
            raise StudyError(f"no method has a stable stepsize on {topo}; widen lr_scales")
        lrs = [f"lr_table.{m}={tuned[topo][m]}" for m in methods]
        all_runs += multirun(
            [*_common(profile), f"topology={topo}", "topology.noise=exponential", *lrs,
             f"optimizer={','.join(methods)}",
             f"seed={','.join(str(s) for s in profile['seeds'])}"],
            RESULTS / "runs" / topo,
        )  # fmt: skip
    return all_runs


def scaling(profile: dict) -> dict:
    sc = profile["scaling"]
    chosen: dict[str, dict[str, float]] = {}
    for n in sc["n_workers"]:
        runs = multirun(
            [f"experiment={sc['experiment']}", f"topology.n_workers={n}",
             f"budget.gradients={sc['gradients']}",
             f"optimizer={','.join(sc['methods'])}",
             f"lr_scale={','.join(str(v) for v in sc['lr_scales'])}"],
            RESULTS / "scaling" / f"n{n}",
        )  # fmt: skip
        chosen[str(n)] = {m: _lr(s) for m, s in select(runs).items()}
    out = {"profile": profile["name"], "lr": chosen}
    _write_json(RESULTS / "scaling_lr.json", out)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _log_selection(name: str, selection: dict) -> None:
    """The selected stepsizes as one MLflow parent run (params topology.method = lr)."""
    if os.environ.get("ASGD_STUDY_NO_MLFLOW"):
        return
    from mlflow.entities import Param

    from pipeline.tracking import client_for, ensure_experiment

    client = client_for(None)
    exp = ensure_experiment(client, "async-sgd")
    run = client.create_run(exp, run_name=f"{name} ({selection['profile']})",
                            tags={"sweep": "selection", "stage": name})  # fmt: skip
    params = [Param(f"{t}.{m}", str(lr)) for t, d in selection["lr"].items() for m, lr in d.items()]
    params.append(Param("target", str(selection["target"])))
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    client.log_artifact(run.info.run_id, str(RESULTS / "tuned_lr.json"))
    client.set_terminated(run.info.run_id, "FINISHED")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.study")
    p.add_argument("stage", choices=["tune", "runs", "scaling"])
    a = p.parse_args(argv)
    try:
        profile = load_profile()
        {"tune": tune, "runs": runs, "scaling": scaling}[a.stage](profile)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
