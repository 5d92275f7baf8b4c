"""A sweep whose every job is complete in an earlier attempt is restored by the study without
launching Hydra (pipeline/study/restore.py): the same files, byte for byte, as a launched sweep
whose jobs reuse their records one by one (what DVC hashes: the records, key.json and Hydra's
config.yaml and overrides.yaml); and nothing restored at the first doubt.

Whether Hydra launched is read from the sweep folder (Hydra writes ``multirun.yaml`` there at
every launch) and the jobs' logs, never from timing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import jobkey
from pipeline.study import multirun
from pipeline.study.restore import key_holds, planned_jobs
from tests.study.test_reuse import BASE, _outcomes, _records

#: files that say how a job came about, not what it computed (.dvcignore'd)
CIRCUMSTANCES = {"train.log", ".hydra/hydra.yaml", "run.json"}


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix().split("/", 1)[-1] not in CIRCUMSTANCES
        and p.name != "multirun.yaml"
    }  # fmt: skip


def _launched(root: Path) -> bool:
    return (root / "multirun.yaml").exists()


def test_a_rerun_sweep_is_restored_with_the_files_a_launched_reuse_writes(tmp_path, monkeypatch):
    overrides = [*BASE, "optimizer=asgd,minibatch", "seed=0"]
    first = multirun(overrides, tmp_path / "a", name="sweep a")
    assert _launched(tmp_path / "a") and set(_outcomes(tmp_path / "a").values()) == {"ran"}
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = _records(tmp_path / "a")
    # restored: no launch, every job's log says so
    again = multirun(overrides, tmp_path / "a", name="sweep a")
    assert not _launched(tmp_path / "a")
    logs = [(j / "train.log").read_text() for j in sorted((tmp_path / "a").iterdir())]
    assert all("restored by the study, not launched" in log for log in logs) and len(logs) == 4
    assert _records(tmp_path / "a") == before
    assert [s["final_suboptimality"] for s in again] == [s["final_suboptimality"] for s in first]
    assert not jobkey.previous_dir(tmp_path / "a").exists()
    # the same sweep launched, its jobs reusing one by one: the same files, byte for byte
    monkeypatch.setattr(sys.modules["pipeline.study.multirun"], "restore", lambda *a, **k: False)
    multirun(overrides, tmp_path / "b", name="sweep a")
    assert _launched(tmp_path / "b") and set(_outcomes(tmp_path / "b").values()) == {"reused"}
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_the_planned_jobs_and_keys_are_those_hydra_launches(tmp_path):
    overrides = [*BASE, "optimizer=asgd,minibatch", "seed=0,1", "hydra.job.chdir=false"]
    multirun(overrides, tmp_path, name="it's named")
    jobs = sorted((p for p in tmp_path.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    saved = [tuple(yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())) for j in jobs]
    planned = planned_jobs([*overrides, "tracking.sweep_name='it\\'s named'", "progress=off"])
    assert planned == saved and len(saved) == 8
    assert all(key_holds(j) for j in jobs)


def _data_sweep(root: Path, data: Path) -> list[dict]:
    return multirun(["optimizer=asgd", "seed=0,1", "dataset=small_lstsq",
                     f"dataset.path={data}", "batch_size=8", "topology.n_workers=4",
                     "budget.gradients=100", "tracking=none"], root)  # fmt: skip


@pytest.mark.slow
def test_nothing_is_restored_at_the_first_doubt(tmp_path):
    """A job missing, a saved config that no longer gives its key, a data file that changed:
    the sweep launches, and its jobs decide one by one."""
    from models import datasets

    data = tmp_path / "small.npz"
    datasets.build("small_lstsq", data, seed=0)
    root = tmp_path / "sweep"
    _data_sweep(root, data)
    # a job missing: launched, the other job reused
    shutil.rmtree(root / "1")
    _data_sweep(root, data)
    assert _launched(root) and _outcomes(root) == {("asgd", "homogeneous", 0): "reused",
                                                   ("asgd", "homogeneous", 1): "ran"}  # fmt: skip
    # a saved config edited by hand: its key no longer holds, launched
    (root / "multirun.yaml").unlink()
    cfg = root / "0" / ".hydra" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("budget:\n  gradients: 100", "budget:\n  gradients: 99"))
    assert not key_holds(root / "0") and key_holds(root / "1")
    _data_sweep(root, data)
    assert _launched(root)
    # the data file rewritten with other numbers: every key changes, everything runs again
    (root / "multirun.yaml").unlink()
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y"] = arrays["y"] + 0.5
    np.savez(data, **arrays)
    _data_sweep(root, data)
    assert _launched(root) and set(_outcomes(root).values()) == {"ran"}


@pytest.mark.parametrize("subdir", ["${optimizer.name}-${topology.name}"])
def test_a_sweep_with_named_job_folders_is_never_restored(tmp_path, subdir):
    overrides = [*BASE, "optimizer=asgd,minibatch", "seed=0"]
    multirun(overrides, tmp_path, subdir=subdir)
    (tmp_path / "multirun.yaml").unlink()
    multirun(overrides, tmp_path, subdir=subdir)
    assert _launched(tmp_path)
