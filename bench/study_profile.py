"""Where the study's time goes, from its own records: for each stage of a study that
``bench/bench_study.py`` timed (its record, and the results folder of the clone it kept with
``--keep``), the runs the stage made, the seconds spent inside them (each run's ``run.json``:
``wall_time_s``, the engine's run with its evaluations, summed over the stage's jobs) and the
stage's capacity (its wall seconds times the parallel jobs): the share of the capacity spent
inside runs. The rest is what surrounds them: Python and Hydra starting each job, building the
experiment (data loading, F*), MLflow, the study's own steps (tuning's selection, figures) and
idle cores. The non-convex and heterogeneous stages are split by problem.

    python bench/study_profile.py --results /tmp/bench_study-XXXX/clone/results/full \\
        --study bench/results/bench_study-full.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._meta import Measurement, out_file, write  # noqa: E402

#: dvc.yaml stage -> its folder of results
STAGE_DIRS = {"tune": "tuning", "runs": "runs", "paper": "paper", "scaling": "scaling",
              "nonconvex": "nonconvex", "hetero": "hetero", "real": "real"}  # fmt: skip
UNITS = {"runs": "count", "run_s": "s", "stage_s": "s", "jobs": "count", "capacity_s": "s",
         "in_runs": "ratio", "total_run_s": "s", "total_stage_s": "s"}  # fmt: skip


def run_seconds(folder: Path) -> tuple[int, float]:
    """(runs, seconds inside them) of every run.json below ``folder``."""
    n, s = 0, 0.0
    for p in sorted(folder.rglob("run.json")):
        wall = json.loads(p.read_text()).get("wall_time_s")
        n += 1
        s += float(wall or 0.0)
    return n, s


def profile(results: Path, study: dict) -> dict:
    f = study["figures"]
    jobs = int(f["study_jobs"])
    stage_s = {st["stage"]: st["seconds"] for st in f["stages"]}
    rows = []
    for stage, sub in STAGE_DIRS.items():
        folder = results / sub
        if stage not in stage_s or not folder.is_dir():
            continue
        parts = sorted(p for p in folder.iterdir() if p.is_dir())
        split = stage in ("nonconvex", "hetero") and parts
        for part in parts if split else [folder]:
            n, s = run_seconds(part)
            rows.append({"stage": stage, "part": part.name if split else "", "runs": n,
                         "run_s": s})  # fmt: skip
    for stage in {r["stage"] for r in rows}:
        mine = [r for r in rows if r["stage"] == stage]
        cap = stage_s[stage] * jobs
        for r in mine:
            r.update(stage_s=stage_s[stage], jobs=jobs, capacity_s=cap)
        total = sum(r["run_s"] for r in mine)
        for r in mine:
            r["in_runs"] = total / cap if cap else 0.0  # the stage's, on each of its rows
    order = list(STAGE_DIRS)
    rows.sort(key=lambda r: (order.index(r["stage"]), r["part"]))
    return {"rows": rows, "total_run_s": sum(r["run_s"] for r in rows),
            "total_stage_s": float(f["total_s"]), "jobs": jobs}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--results", required=True, help="the study's results folder (kept clone)")
    p.add_argument("--study", required=True, help="the bench_study record that timed it")
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    a = p.parse_args(argv)
    study = json.loads(Path(a.study).read_text())
    profile_name = study["params"]["profile"]
    m = Measurement("study_profile", argv, profile_name,
                    {"profile": profile_name, "study_record": Path(a.study).name})  # fmt: skip
    figures = profile(Path(a.results), study)
    rec = m.finish(figures, UNITS)
    write(out_file(a.out, f"study_profile-{profile_name}.json"), rec)
    print(json.dumps(figures, indent=1))
    return rec


if __name__ == "__main__":
    main()
