"""A sweep restored without launching it: when every job the multirun would run has a complete
job of the same key among an earlier attempt's folders, the study copies their folders into the
sweep itself, as the jobs would have copied them one by one (``pipeline.train``'s reuse) but
without starting Hydra, its launcher's processes, or an MLflow parent run for a sweep that would
compute nothing. This is what makes a resumed stage cost about what was left of it.

A job is restored from a folder only if that folder is complete, was launched with the same
task overrides (``.hydra/overrides.yaml``: then its saved ``config.yaml`` is the config this job
would compose, the conf/ being part of the key's code digest), and its key, recomputed here
from that saved config with the data files' current digests, this machine's device and the
current code and versions, equals the key it wrote. Any doubt (a job missing, a config that does
not load, a wall-clock engine, a custom job folder name) restores nothing, and the multirun
launches as before, its jobs checking their own keys."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from pipeline.compose.keys import job_key
from pipeline.core import jobkey

log = logging.getLogger(__name__)

#: Hydra's files of a job, copied with its records (config.yaml and overrides.yaml are hashed
#: by DVC; hydra.yaml is .dvcignore'd)
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
#: the job folder name a restored sweep must have (Hydra's default subdir)
JOB_NUM = "${hydra.job.num}"


def planned_jobs(overrides: list[str]) -> list[tuple[str, ...]]:
    """The task overrides of each job the multirun would launch, in Hydra's job order (its
    basic sweeper's expansion), without the ``hydra`` ones (as ``.hydra/overrides.yaml``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return [tuple(o for o in job if not o.startswith(("hydra.", "hydra/"))) for job in jobs]


def _task_overrides(job: Path) -> tuple[str, ...] | None:
    try:
        value = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return tuple(value) if isinstance(value, list) else None


def key_holds(job: Path) -> bool:
    """The key ``job`` wrote is the key its saved config has here and now."""
    from pipeline.engines import TIME_KINDS

    try:
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        if TIME_KINDS.get(cfg.engine.name) != "simulated":
            return False
        return job_key(cfg)["key"] == jobkey.read_key(job)
    except Exception:  # a config this code cannot read or resolve: not restored
        return False


def _candidates(previous: Path, pool: list[Path]) -> dict[tuple[str, ...], list[Path]]:
    """Complete jobs of the sweep's previous folder (the newest first) and of the stage's pool,
    by their task overrides."""
    jobs = jobkey.previous_jobs(previous)
    for root in pool:
        if Path(root).is_dir():
            jobs += [f.parent for f in sorted(Path(root).rglob(jobkey.KEY_FILE))]
    out: dict[tuple[str, ...], list[Path]] = {}
    for job in jobs:
        if jobkey.is_complete(job):
            task = _task_overrides(job)
            if task is not None:
                out.setdefault(task, []).append(job)
    return out


def restore(overrides: list[str], sweep_dir: Path, previous: Path, pool: list[Path],
            subdir: str = JOB_NUM) -> bool:  # fmt: skip
    """Restore every job of the sweep into ``sweep_dir`` (``<sweep_dir>/<n>/``) from complete
    jobs with its key, and return True; or write nothing and return False."""
    if subdir != JOB_NUM:
        return False
    candidates = _candidates(Path(previous), list(pool))
    if not candidates:  # a fresh sweep: nothing to compose
        return False
    try:
        planned = planned_jobs(overrides)
    except Exception:  # Hydra's parser refuses it: the launch says why
        return False
    sources = []
    for task in planned:
        src = next((j for j in candidates.get(task, []) if key_holds(j)), None)
        if src is None:
            return False
        sources.append(src)
    for n, src in enumerate(sources):
        dst = Path(sweep_dir) / str(n)
        (dst / ".hydra").mkdir(parents=True, exist_ok=True)
        for name in HYDRA_FILES:
            if (src / ".hydra" / name).is_file():
                shutil.copyfile(src / ".hydra" / name, dst / ".hydra" / name)
        shutil.copyfile(src / jobkey.KEY_FILE, dst / jobkey.KEY_FILE)
        jobkey.copy_records(src, dst)  # summary.json last: a copy cut short is not complete
        (dst / "train.log").write_text(f"reused {src} (restored by the study, not launched)\n")
    log.info("restored %d jobs of %s without launching", len(sources), sweep_dir)
    return True
