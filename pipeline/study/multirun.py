"""A study sweep as one Hydra multirun of ``pipeline.train`` into a fixed directory, run in
parallel by Hydra's joblib launcher (one job per core; ``ASGD_STUDY_JOBS`` overrides the count)
or by the launcher ``$ASGD_STUDY_LAUNCHER`` names (``submitit_local``, ``slurm``: the jobs run
where that launcher puts them, with the same records), and its jobs' summaries collected in job
order.

A sweep reuses finished jobs: what an earlier attempt left in the sweep folder is moved aside
(``<sweep_dir>/.previous/<n>/``, merged with what an interrupted attempt left there) and named
to the jobs in ``$ASGD_REUSE_FROM``; inside :func:`reusing` (a study stage), the stage's whole
earlier outputs are searched too (``$ASGD_REUSE_POOL``). A job whose key
(:mod:`pipeline.core.jobkey`) matches a complete job there copies its records instead of
running. The previous folders go when the sweep (the stage) succeeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from pipeline import PROJECT_ROOT
from pipeline.core import jobkey
from pipeline.core.runs import job_dirs
from pipeline.study.profile import StudyError
from pipeline.study.restore import restore

#: the environment variable that picks the sweeps' Hydra launcher (``hydra/launcher=<name>``)
LAUNCHER_ENV = "ASGD_STUDY_LAUNCHER"
#: launchers whose jobs run where ``n_jobs`` does not apply (a cluster's or submitit's own pool)
SUBMITIT = ("submitit_local", "submitit_slurm", "slurm")
LAUNCHERS = ("joblib", "basic", *SUBMITIT)


def launcher() -> str:
    """The sweeps' launcher: ``$ASGD_STUDY_LAUNCHER`` (joblib by default), checked in one line
    before any sweep starts."""
    name = os.environ.get(LAUNCHER_ENV, "").strip() or "joblib"
    if name not in LAUNCHERS:
        raise StudyError(f"{LAUNCHER_ENV}={name}: not a launcher ({', '.join(LAUNCHERS)})")
    if name in SUBMITIT:
        try:
            import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        except ImportError:
            raise StudyError(
                f"{LAUNCHER_ENV}={name} needs Hydra's submitit plugin: "
                "pip install hydra-submitit-launcher"
            ) from None
    return name


def launcher_overrides(name: str, jobs: int) -> list[str]:
    """The multirun's launcher arguments: joblib with ``jobs`` processes (Hydra's basic one,
    in-process, when ``jobs`` is 1), or the named launcher with its own settings."""
    if name == "joblib" and jobs > 1:
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    if name in ("joblib", "basic"):
        return []
    return [f"hydra/launcher={name}"]


def n_jobs() -> int:
    env = os.environ.get("ASGD_STUDY_JOBS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


#: the earlier outputs of the stage that is running (``reusing``)
_POOL: list[Path] = []


@contextmanager
def reusing(*outputs: Path) -> Iterator[list[Path]]:
    """A stage: its output folders' earlier contents set aside (``<out>/.previous/<n>/``) for
    every sweep inside to reuse from, whichever sweep folder held a job; they go when the
    stage succeeds, and stay for the next attempt when it does not."""
    pool = [jobkey.set_aside(p, prune=False) for p in outputs]
    _POOL.extend(pool)
    try:
        yield pool
    finally:
        del _POOL[len(_POOL) - len(pool) :]
    for p in pool:
        jobkey.discard(p)


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: config directories every sweep adds to ``hydra.searchpath`` (params.yaml ``searchpath``:
#: a user's package whose rules ``methods:`` names, e.g. ``pkg://their_pkg.conf``)
_SEARCHPATH: list[str] = []


def use_searchpath(paths: list[str]) -> None:
    _SEARCHPATH[:] = list(paths)


def searchpath_overrides() -> list[str]:
    return [f"hydra.searchpath=[{','.join(_SEARCHPATH)}]"] if _SEARCHPATH else []


def extra_overrides(name: str | None) -> list[str]:
    """What the study adds to a sweep's overrides: no MLflow (``$ASGD_STUDY_NO_MLFLOW``), the
    sweep's name, no progress display."""
    extra = ["tracking=none"] if os.environ.get("ASGD_STUDY_NO_MLFLOW") else []
    if name:
        extra.append(f"tracking.sweep_name={_quote(name)}")
    return [*extra, "progress=off"]


def multirun(
    overrides: list[str],
    sweep_dir: Path,
    name: str | None = None,
    jobs: int | None = None,
    subdir: str = "${hydra.job.num}",
) -> list[dict]:
    """Run ``python -m pipeline.train -m <overrides>`` into ``sweep_dir`` (parallel through the
    joblib launcher unless ``jobs`` is 1), reusing the complete jobs of an earlier attempt with
    the same key; return each job's summary in job order."""
    previous = jobkey.set_aside(sweep_dir)
    if restore([*overrides, *extra_overrides(name)], sweep_dir, previous, _POOL, subdir):
        jobkey.discard(previous)  # every job was complete with its key: nothing to launch
        return collect(sweep_dir)
    jobs = n_jobs() if jobs is None else jobs
    launch = launcher_overrides(launcher(), jobs)
    extra = extra_overrides(name)
    cmd = [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        *overrides,
        *extra,
        *launch,
        *searchpath_overrides(),
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweep.subdir={subdir}",
    ]
    env = {**os.environ, jobkey.REUSE_ENV: str(previous)}
    env[jobkey.POOL_ENV] = os.pathsep.join(str(p) for p in _POOL)
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # the previous folder stays: the next attempt reuses it too
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StudyError(f"multirun failed ({proc.returncode}): {' | '.join(tail)}")
    jobkey.discard(previous)
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
