"""A job's key, and the reuse of a finished job with the same key (issue #19).

The key is a digest of everything that shapes a simulated run's records:

- the resolved configuration, less the keys that do not change the records (``NOT_KEYED``:
  progress display and tracking settings); paths under the project root are written relative
  to it, so two clones get the same key;
- the content digest of every input file the run reads (the data file; a trace's
  ``jobs.csv``), and the device its tensors live on;
- the code version: a digest of the bytes of ``CODE_PATHS``, the source files and folders that
  dvc.yaml's simulated stages depend on (computed once per process, not from git);
- the versions of Python, numpy and torch.

A study sweep (:func:`pipeline.study.multirun.multirun`) moves its folder's earlier contents
aside (:func:`set_aside`: ``<sweep>/.previous/<n>/``) and names them in ``$ASGD_REUSE_FROM``; a
study stage does the same with its whole output folders (``$ASGD_REUSE_POOL``), so that a job
is found whichever sweep folder held it. Each job writes its key into ``key.json`` and, when a
complete job there has the same key (:func:`find_reusable`), copies its records
(:func:`copy_records`) instead of running.
Complete: ``summary.json`` says ``finished`` or ``diverged`` and ``key.json`` is there; a
killed, failed or running job is never reused. Only the core's json, hashlib and shutil here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline import PROJECT_ROOT

#: the environment variable that names a sweep's previous folder to its jobs
REUSE_ENV = "ASGD_REUSE_FROM"
#: folders (``os.pathsep``-separated) of a stage's earlier outputs, searched too
POOL_ENV = "ASGD_REUSE_POOL"
KEY_FILE = "key.json"
#: a job whose summary says one of these is complete (its records are final)
REUSABLE = ("finished", "diverged")
#: what a reused job copies: the records, ``summary.json`` last (so that a copy cut short is
#: never complete)
RECORD_FILES = ("events.csv", "history.csv", "jobs.csv", "summary.json")
#: top-level config keys that do not change the records
NOT_KEYED = ("progress", "tracking")
#: the code that shapes the simulated stages' records: dvc.yaml's code deps of tune, runs,
#: paper, scaling and nonconvex (tests/study/test_reuse.py checks the two agree)
CODE_PATHS = (
    "pipeline/__init__.py",
    "pipeline/core",
    "pipeline/engines/__init__.py",
    "pipeline/engines/base.py",
    "pipeline/engines/bulk.py",
    "pipeline/engines/dispatch.py",
    "pipeline/engines/sim.py",
    "pipeline/engines/replay.py",
    "pipeline/compose",
    "pipeline/api.py",
    "pipeline/literature",
    "pipeline/runner.py",
    "pipeline/train.py",
    "pipeline/study",
    "models/__init__.py",
    "models/objectives",
    "models/noise.py",
    "conf",
)
#: a folder's earlier contents, inside it; and the name it has for an instant while it moves
PREVIOUS = ".previous"
ASIDE_SUFFIX = ".aside"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def _skipped(path: Path) -> bool:
    """What dvc.yaml's deps do not see either (.dvcignore): bytecode."""
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def code_digest(root: Path = PROJECT_ROOT, paths: tuple[str, ...] = CODE_PATHS) -> str:
    """A digest of the bytes of every file under ``paths`` (relative to ``root``), with their
    relative names; a missing path counts as missing. Cached per process."""
    return _code_digest(str(Path(root).resolve()), tuple(paths))


@lru_cache(maxsize=8)
def _code_digest(root: str, paths: tuple[str, ...]) -> str:
    base = Path(root)
    entries = []
    for rel in paths:
        p = base / rel
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not _skipped(f))
        elif p.is_file():
            files = [p]
        else:
            entries.append(f"{rel} missing")
            continue
        entries += [f"{f.relative_to(base).as_posix()} {_sha(f.read_bytes())}" for f in files]
    return _sha("\n".join(entries).encode())[:32]


def portable(value: Any, root: Path = PROJECT_ROOT) -> Any:
    """``value`` with every string that is a path under ``root`` made relative to it."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return "<root>/" + Path(value).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return value
    return value


def _versions() -> dict[str, str]:
    import numpy
    import torch

    return {
        "python": ".".join(str(x) for x in sys.version_info[:3]),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
    }


def job_key(
    config: dict,
    inputs: dict[str, str | None],
    device: str,
    root: Path = PROJECT_ROOT,
) -> dict:
    """The key of a job: ``{"key": digest, "parts": {...}}``. ``config`` is the resolved config
    as a plain dict, ``inputs`` the content digests of the files it reads (name -> digest)."""
    keyed = {k: v for k, v in config.items() if k not in NOT_KEYED}
    parts = {
        "config": _sha(_canonical(portable(keyed, root)))[:32],
        "inputs": dict(sorted(inputs.items())),
        "device": device,
        "code": code_digest(root),
        "versions": _versions(),
    }
    return {"key": _sha(_canonical(parts))[:32], "parts": parts}


def write_key(job: Path, key: dict) -> Path:
    path = Path(job) / KEY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_key(job: Path) -> str | None:
    try:
        return json.loads((Path(job) / KEY_FILE).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_complete(job: Path) -> bool:
    """``summary.json`` says finished or diverged, and the job has a key."""
    try:
        status = json.loads((Path(job) / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status in REUSABLE and read_key(job) is not None


def _generations(previous: Path) -> list[Path]:
    if not previous.is_dir():
        return []
    gens = [p for p in previous.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(gens, key=lambda p: int(p.name), reverse=True)  # the newest first


def previous_jobs(previous: Path) -> list[Path]:
    """Every job folder of a previous folder (its generations, the newest first)."""
    return [j for g in _generations(Path(previous)) for j in sorted(g.iterdir()) if j.is_dir()]


def find_reusable(previous: Path | None, key: str, pool: Iterable[Path] = ()) -> Path | None:
    """A complete job with this key: among the jobs of a sweep's ``previous`` folder, else
    anywhere under the ``pool`` folders (a stage's earlier outputs, whichever sweep held it)."""
    if previous is not None:
        for job in previous_jobs(Path(previous)):
            if read_key(job) == key and is_complete(job):
                return job
    for root in pool:
        if not Path(root).is_dir():
            continue
        for f in sorted(Path(root).rglob(KEY_FILE)):
            if read_key(f.parent) == key and is_complete(f.parent):
                return f.parent
    return None


def copy_records(src: Path, dst: Path) -> None:
    """The records of ``src`` into ``dst`` (``summary.json`` last, replaced atomically)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        f = src / name
        if not f.is_file():
            continue
        tmp = dst / f"{name}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, dst / name)


def previous_dir(folder: Path) -> Path:
    """Where ``folder``'s earlier contents go: inside it (``<folder>/.previous/<n>/``), so that
    they stay within the folder (a DVC output, git-ignored as it is) and no reader of job
    folders sees them (no ``summary.json`` at the top)."""
    return Path(folder) / PREVIOUS


def set_aside(folder: Path, prune: bool = True) -> Path:
    """Move what ``folder`` holds into ``<folder>/.previous/<n>/`` (the newest generation),
    keeping what an earlier interrupted attempt left in ``.previous``; ``folder`` is then empty
    but for ``.previous``. With ``prune`` (a sweep folder: generations of job folders), drop
    every job that is not complete and every generation left with none. Returns the previous
    folder (it may not exist)."""
    folder = Path(folder)
    previous = previous_dir(folder)
    aside = folder.with_name(folder.name + ASIDE_SUFFIX)
    if folder.exists() and not aside.exists():
        os.replace(folder, aside)
    if aside.exists():  # also what a crash between the two moves left
        folder.mkdir(parents=True, exist_ok=True)
        if (aside / PREVIOUS).is_dir():
            if previous.exists():  # pragma: no cover - only after a crash mid-way
                shutil.rmtree(previous)
            os.replace(aside / PREVIOUS, previous)
        gens = _generations(previous)
        n = int(gens[0].name) + 1 if gens else 0
        previous.mkdir(exist_ok=True)
        os.replace(aside, previous / str(n))
    if prune:
        for gen in _generations(previous):
            for job in list(gen.iterdir()):
                if job.is_dir() and not is_complete(job):
                    shutil.rmtree(job)
            if not any(j.is_dir() for j in gen.iterdir()):
                shutil.rmtree(gen)
    if previous.is_dir() and not any(previous.iterdir()):
        previous.rmdir()
    return previous


def discard(previous: Path) -> None:
    if Path(previous).exists():
        shutil.rmtree(previous)
