"""The study killed and resumed: what an interrupted ``dvc repro`` costs, and whether its outputs
come out the same.

    python bench/drill_study.py [--profile quick] [--kills 3] [--seed 0] [--expect 1500]
                                [--out bench/results/] [--keep]

Two fresh clones of the committed HEAD, ``profile: <profile>`` in both, run side by side, each
pinned to a core of its own (so that both see the same machine, neither takes the other's
core, and each study runs its sweeps one job at a time):
- *straight*: one ``dvc repro``, timed;
- *killed*: ``dvc repro`` SIGKILLed with its whole process group (DVC, the study, the sweeps'
  jobs, rpc workers) at ``--kills`` moments drawn from a seeded generator, then ``dvc repro``
  again each time, until one finishes. The moments are fractions of ``--expect`` (the seconds
  an uninterrupted study takes on one core) drawn uniformly and sorted; attempt k is
  killed when the time spent on all attempts reaches moment k. No cleanup between attempts:
  what the kill left is what the next ``dvc repro`` finds.

Checked afterwards: ``dvc status`` finds nothing to do in either clone; every deterministic
output agrees byte for byte (the hashes of every simulated stage's outputs in the two dvc.lock
files: every record folder and file; and ``results/<profile>/`` compared as the rebuild test
compares it, the wall-clock stage by structure). ``--recheck <kept folder>`` does the comparison
again on a kept drill (its timings unchanged). Figures: the killed study's total wall time
over the straight one's (issue #19 asks for at most 1.1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._clone import clone_env, fresh_clone  # noqa: E402
from bench._meta import Measurement, out_file, utc_now, write  # noqa: E402
from bench.bench_study import set_profile  # noqa: E402
from bench.drill_rpc import alive  # noqa: E402
from tests.study.test_rebuild import compare_results  # noqa: E402

#: stages whose outputs are measurements (real processes): compared by structure only
WALL_CLOCK_STAGES = ("real", "report")
UNITS = {"kills": "count", "straight_s": "s", "killed_s": "s", "ratio": "ratio", "at_s": "s",
         "seconds": "s", "attempts": "count", "rc": "exit code", "processes_left": "count",
         "stages_compared": "count", "outputs_compared": "count"}  # fmt: skip
_STAGE = re.compile(r"Running stage '([^']+)'")


def _start(clone: Path, env: dict, log: Path, cpu: int | None) -> subprocess.Popen:
    f = log.open("a")
    f.write(f"$ dvc repro  # {time.strftime('%H:%M:%S')}\n")
    f.flush()
    # its own process group: the kill reaches DVC, the study, the sweeps' jobs and rpc workers
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    return subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, stdout=f,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=pin)  # fmt: skip


def _group(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def straight(clone: Path, env: dict, log: Path, cpu: int | None, out: dict) -> None:
    t0 = time.perf_counter()
    proc = _start(clone, env, log, cpu)
    out["rc"] = proc.wait()
    out["seconds"] = round(time.perf_counter() - t0, 2)


def killed(clone: Path, env: dict, log: Path, cpu: int | None, moments: list[float]) -> dict:
    """Attempts until one finishes; attempt k killed when the time spent reaches moments[k]."""
    attempts, spent = [], 0.0
    for k in range(len(moments) + 1):
        t0 = time.perf_counter()
        proc = _start(clone, env, log, cpu)
        left = moments[k] - spent if k < len(moments) else None
        try:
            rc = proc.wait(timeout=left)
            a = {"rc": rc, "killed": False}
        except subprocess.TimeoutExpired:
            stages = _STAGE.findall(log.read_text())
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(3.0)  # rpc workers' parent-death signal, the kernel's reaping
            a = {"rc": None, "killed": True, "at_s": round(moments[k], 2),
                 "stage": stages[-1] if stages else None,
                 "processes_left": len([p for p in _group(proc.pid) if alive(p)])}  # fmt: skip
        a["seconds"] = round(time.perf_counter() - t0, 2)
        spent += a["seconds"]
        attempts.append(a)
        print("killed study, attempt", k + 1, json.dumps(a), flush=True)
        if not a["killed"]:
            break
    return {"attempts": attempts, "seconds": round(spent, 2)}


def lock_outs(clone: Path) -> dict[str, dict[str, str]]:
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    return {s: {o["path"]: o.get("md5") or o.get("hash") for o in v.get("outs", [])}
            for s, v in lock.items()}  # fmt: skip


def up_to_date(clone: Path, env: dict) -> bool:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone, env=env,
                         capture_output=True, text=True)  # fmt: skip
    return out.returncode == 0 and json.loads(out.stdout or "{}") == {}


def compare(a_dir: Path, b_dir: Path, profile: str) -> list[str]:
    """Every difference between the two clones' deterministic outputs, one line each: the
    simulated stages' output hashes in dvc.lock (every record file DVC sees: .dvcignore leaves
    out run.json, train.log and Hydra's own logs), the committed files of results/<profile>/
    (those git tracks, compared as the rebuild test compares them), and work left to do."""
    problems = []
    la, lb = lock_outs(a_dir), lock_outs(b_dir)
    for stage in sorted(set(la) | set(lb)):
        if stage not in WALL_CLOCK_STAGES and la.get(stage) != lb.get(stage):
            problems.append(f"dvc.lock: the outputs of stage {stage} differ")
    rel = Path("results") / profile
    tracked = subprocess.run(["git", "ls-files", str(rel)], cwd=a_dir, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for f in tracked:
            dest = Path(tmp) / Path(f).relative_to(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(a_dir / f, dest)
        problems += compare_results(Path(tmp), b_dir / rel)
    for clone in (a_dir, b_dir):
        env = clone_env(clone, ASGD_DATA_DIR=str(clone / "data"))
        if not up_to_date(clone, env):
            problems.append(f"{clone.name}: dvc status finds work left")
    return problems


def recheck(kept: Path, out: str | None) -> int:
    """The comparison of a kept drill's two clones done again (``--recheck <folder>``): its
    record's problems replaced, the timings as measured."""
    record = json.loads((kept / "drill_study.json").read_text())
    profile = record["params"]["profile"]
    problems = compare(kept / "straight", kept / "killed", profile)
    f = record["figures"]
    f["problems"], f["identical"] = problems, not problems
    record["params"]["rechecked_utc"] = utc_now()
    print(json.dumps({k: v for k, v in f.items() if k != "attempts"}), flush=True)
    good = not problems and f["kills"] == record["params"]["kills"]
    write(out_file(out, f"drill_study-{profile}.json") if good else kept / "drill_study.json",
          record)  # fmt: skip
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--profile", default="quick", help="quick | full (params.yaml's profiles)")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--expect",
        type=float,
        default=1500.0,
        help="seconds an uninterrupted study takes on one core",
    )
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the clones (their path is printed)")
    p.add_argument("--recheck", default=None, help="a kept drill's folder: compare it again")
    a = p.parse_args(argv)
    if a.recheck:
        return recheck(Path(a.recheck), a.out)
    rng = np.random.default_rng(a.seed)
    moments = sorted(float(np.round(x, 1)) for x in rng.uniform(0.05, 0.95, a.kills) * a.expect)
    m = Measurement("drill_study", argv, a.profile, {"profile": a.profile, "kills": a.kills,
                    "seed": a.seed, "expect_s": a.expect, "moments_s": moments})  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="drill_study-"))
    clones = {}
    for name in ("straight", "killed"):
        clone = tmp / name
        sha = fresh_clone(clone)
        set_profile(clone / "params.yaml", a.profile)
        clones[name] = (clone, clone_env(clone, ASGD_DATA_DIR=str(clone / "data")))
    print(f"clones of {sha[:7]} in {tmp}; kills at {moments} s", flush=True)
    one: dict = {}
    cpus = sorted(os.sched_getaffinity(0))
    pins = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    m.params["cpus"] = {"straight": pins[0], "killed": pins[1]}
    runner = threading.Thread(target=straight, args=(*clones["straight"], tmp / "straight.log",
                                                     pins[0], one))  # fmt: skip
    runner.start()
    other = killed(*clones["killed"], tmp / "killed.log", pins[1], moments)
    runner.join()
    a_dir, b_dir = clones["straight"][0], clones["killed"][0]
    ok_runs = one.get("rc") == 0 and other["attempts"][-1]["rc"] == 0
    problems = compare(a_dir, b_dir, a.profile) if ok_runs else []
    kills = sum(x["killed"] for x in other["attempts"])
    figures = {
        "straight_s": one.get("seconds"),
        "killed_s": other["seconds"],
        "ratio": round(other["seconds"] / one["seconds"], 3) if one.get("seconds") else None,
        "kills": kills,
        "attempts": other["attempts"],
        "identical": ok_runs and not problems,
        "problems": problems,
        "stages_compared": len([s for s in lock_outs(a_dir) if s not in WALL_CLOCK_STAGES])
        if ok_runs
        else 0,
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "attempts"}), flush=True)
    git = {"commit": sha[:7], "dirty": False}
    good = ok_runs and not problems and kills == a.kills
    record = m.finish(figures, UNITS, git=git)
    write(out_file(a.out, f"drill_study-{a.profile}.json") if good else tmp / "drill_study.json",
          record)  # fmt: skip
    if a.keep or not good:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
