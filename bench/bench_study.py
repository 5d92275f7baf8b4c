"""Wall time of the study from nothing: a fresh ``git clone`` of the committed HEAD into a
temporary folder, ``profile: <profile>`` set in the clone's params.yaml, then each stage of
dvc.yaml in its order by ``dvc repro --single-item <stage>`` (data, tune, runs, paper, scaling,
nonconvex, real, report), timed one by one; afterwards ``dvc status`` must find nothing to do.
The clone's data files go to its own data/ (``ASGD_DATA_DIR``) and its MLflow runs to its own
mlflow.db (``MLFLOW_TRACKING_URI`` unset); the sweeps run as the study runs them (one job per
core, ``ASGD_STUDY_JOBS`` when set). The same work as ``dvc exp run -S profile=quick`` in a
fresh clone, without the experiment's bookkeeping.

    python bench/bench_study.py [--profile quick|full] [--out bench/results/] [--keep]

Writes bench/results/bench_study-<profile>.json (``--out``: a ``.json`` file or a folder):
seconds and CPU seconds per stage (CPU: every process of the stage that was reaped), the total,
the load average. ``--stages data,tune`` times only those (a partial record: it needs ``--out``,
and the publisher refuses it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._clone import clone_env, fresh_clone  # noqa: E402
from bench._meta import Measurement, load_average, out_file, usable_cores, write  # noqa: E402

UNITS = {
    "seconds": "s",
    "minutes": "min",
    "cpu_seconds": "s",
    "total_s": "s",
    "total_min": "min",
    "cpu_s": "s",
    "clone_s": "s",
    "status_s": "s",
    "study_jobs": "count",
    "rc": "exit code",
    "load_start": "load",
    "load_end": "load",
}


def set_profile(params: Path, profile: str) -> None:
    text, n = re.subn(r"(?m)^profile:[ \t]*\S+", f"profile: {profile}", params.read_text())
    if n != 1:
        raise SystemExit(f"error: {params} has {n} 'profile:' lines, expected one")
    params.write_text(text)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def dvc(*args: str, cwd: Path, env: dict, log: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, CPU seconds of the reaped processes) of ``dvc <args>``."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ dvc {' '.join(args)}\n")
        f.flush()
        rc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, stdout=f,
                            stderr=subprocess.STDOUT).returncode  # fmt: skip
    return rc, time.perf_counter() - t0, children_cpu() - cpu0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--profile", default="quick", help="quick | full (params.yaml's profiles)")
    p.add_argument("--stages", default=None, help="comma-separated: time only these (partial)")
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    a = p.parse_args(argv)
    if a.stages and a.out is None:
        p.error("--stages makes a partial record: give --out (bench/results/ is for full ones)")
    import yaml

    jobs = int(os.environ.get("ASGD_STUDY_JOBS") or usable_cores())
    m = Measurement("bench_study", argv, a.profile,
                    {"profile": a.profile, "where": "fresh clone", "study_jobs": jobs})  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench_study-"))
    clone = tmp / "clone"
    log = tmp / "dvc.log"
    t0 = time.perf_counter()
    sha = fresh_clone(clone)
    clone_s = time.perf_counter() - t0
    set_profile(clone / "params.yaml", a.profile)
    env = clone_env(clone, ASGD_DATA_DIR=str(clone / "data"))
    every = list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    wanted = every if not a.stages else [s.strip() for s in a.stages.split(",")]
    unknown = [s for s in wanted if s not in every]
    if unknown:
        p.error(f"no stage {', '.join(unknown)} in dvc.yaml ({', '.join(every)})")
    print(f"clone of {sha[:7]} in {clone}; log: {log}", flush=True)
    stages, ok = [], True
    for stage in [s for s in every if s in wanted]:
        la0 = load_average()
        rc, seconds, cpu = dvc("repro", "--single-item", stage, cwd=clone, env=env, log=log)
        la1 = load_average()
        stages.append({"stage": stage, "seconds": seconds, "minutes": seconds / 60,
                       "cpu_seconds": cpu, "rc": rc, "load_start": la0[0] if la0 else None,
                       "load_end": la1[0] if la1 else None})  # fmt: skip
        print(json.dumps(stages[-1]), flush=True)
        if rc != 0:
            ok = False
            print(f"error: stage {stage} failed (exit {rc}); the end of {log}:", file=sys.stderr)
            print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
            break
    complete = ok and wanted == every
    status_s, up_to_date = None, None
    if complete:  # a second `dvc repro` would do nothing
        t1 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone,
                             env=env, capture_output=True, text=True)  # fmt: skip
        status_s = time.perf_counter() - t1
        up_to_date = out.returncode == 0 and json.loads(out.stdout or "{}") == {}
    total = sum(s["seconds"] for s in stages)
    figures = {
        "stages": stages,
        "total_s": total,
        "total_min": total / 60,
        "cpu_s": sum(s["cpu_seconds"] for s in stages),
        "clone_s": clone_s,
        "status_s": status_s,
        "up_to_date_after": up_to_date,
        "complete": complete,
        "failed": not ok,
        "study_jobs": jobs,
    }
    git = {"commit": sha[:7], "dirty": False}  # what ran: the clone of the committed HEAD
    record = m.finish(figures, UNITS, git=git)
    name = f"bench_study-{a.profile}.json"
    if ok:
        write(out_file(a.out, name), record)
    else:  # a failed study does not replace a measured one: its record stays with the clone
        write(tmp / name, record)
        a.keep = True
    if a.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
