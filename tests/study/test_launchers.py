"""Sweeps and study stages on Hydra's submitit launcher (issue #21): submitit's local executor
runs every job as a process of its own, submitted and collected as SLURM runs an array job
(``hydra/launcher=submitit_local``; ``slurm`` is the same launcher with a cluster's executor).
The records must be byte for byte those of the joblib launcher, and every job must reach
MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import PROJECT_ROOT
from pipeline.study.multirun import LAUNCHER_ENV, launcher, launcher_overrides
from pipeline.study.profile import StudyError
from tests.conftest import run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

#: every file of a job that the study reads or hashes (not run.json, train.log: circumstances)
RECORDS = ("events.csv", "history.csv", "summary.json", "key.json", ".hydra/config.yaml")


def _records(sweep) -> dict[str, dict[str, object]]:
    """Per job: its record files' bytes; its config less ``tracking`` (where runs are logged
    is not a record, and not in the key)."""
    out = {}
    for j in sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        files: dict[str, object] = {f: (j / f).read_bytes() for f in RECORDS if (j / f).exists()}
        cfg = yaml.safe_load(files.pop(".hydra/config.yaml"))
        files["config less tracking"] = {k: v for k, v in cfg.items() if k != "tracking"}
        out[j.name] = files
    return out


def test_the_launcher_is_checked_in_one_line(monkeypatch):
    monkeypatch.setenv(LAUNCHER_ENV, "slurmm")
    with pytest.raises(StudyError) as e:
        launcher()
    assert str(e.value) == (
        "ASGD_STUDY_LAUNCHER=slurmm: not a launcher "
        "(joblib, basic, submitit_local, submitit_slurm, slurm)"
    )
    monkeypatch.delenv(LAUNCHER_ENV)
    assert launcher() == "joblib"
    assert launcher_overrides("joblib", 3) == [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
    ]
    assert launcher_overrides("joblib", 1) == []  # Hydra's basic launcher, in-process
    assert launcher_overrides("slurm", 3) == ["hydra/launcher=slurm"]


def test_the_study_cli_refuses_an_unknown_launcher_before_any_sweep(tmp_path):
    env = {"ASGD_STUDY_LAUNCHER": "nope", "PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run([sys.executable, "-m", "pipeline.study", "tune"], cwd=tmp_path,
                         env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: ASGD_STUDY_LAUNCHER=nope: not a launcher "
        "(joblib, basic, submitit_local, submitit_slurm, slurm)"
    ]


def test_the_slurm_config_resolves_the_sites_settings_from_the_environment():
    """``hydra/launcher=slurm``: submitit's SLURM launcher with the README's settings, the
    partition and account from ``ASGD_SLURM_PARTITION`` / ``ASGD_SLURM_ACCOUNT``."""
    out = run_cli("hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher", "--resolve",
                  env={"ASGD_SLURM_PARTITION": "gpu", "ASGD_SLURM_ACCOUNT": "lab"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    conf = yaml.safe_load(out.stdout.split("\n", 1)[1])  # after "# @package hydra.launcher"
    assert (
        conf["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (conf["partition"], conf["account"]) == ("gpu", "lab")
    assert (conf["cpus_per_task"], conf["array_parallelism"], conf["timeout_min"]) == (2, 64, 120)
    assert conf["submitit_folder"].endswith("/.submitit/%j")


@pytest.mark.slow
def test_a_sweep_on_submitit_lands_in_mlflow_with_the_joblib_records(tmp_path, small_data):
    """One sweep (2 methods x 2 seeds) through joblib and through submitit's local executor:
    the same records byte for byte; each submitit job ran as its own submitted process (its
    submitit log); the four runs and their parent in MLflow, FINISHED, records attached."""
    from pipeline.tracking import client_for

    common = ["-m", "optimizer=asgd,minibatch", "seed=0,1", "optimizer.lr=0.05",
              "dataset=small_lstsq", f"dataset.path={small_data}", "batch_size=8",
              "topology.n_workers=4", "budget.gradients=200", "progress=off"]  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    joblib = run_cli(*common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"hydra.sweep.dir={tmp_path / 'joblib'}", "tracking=none")  # fmt: skip
    assert joblib.returncode == 0, joblib.stderr[-2000:]
    sub = run_cli(*common, "hydra/launcher=submitit_local", f"tracking.uri={uri}",
                  "tracking.sweep_name=on submitit", f"hydra.sweep.dir={tmp_path / 'sub'}",
                  timeout=900)  # fmt: skip
    assert sub.returncode == 0, sub.stderr[-2000:]
    want, got = _records(tmp_path / "joblib"), _records(tmp_path / "sub")
    assert sorted(got) == ["0", "1", "2", "3"]
    assert got == want
    logs = sorted((tmp_path / "sub" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 4  # one submitted job each
    client = client_for(uri)
    exp = client.get_experiment_by_name("async-sgd").experiment_id
    (parent,) = client.search_runs([exp], "tags.sweep = 'parent'")
    assert parent.info.run_name == "on submitit" and parent.info.status == "FINISHED"
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    for child in children:
        arts = {a.path for a in client.list_artifacts(child.info.run_id, "records")}
        assert "records/events.csv" in arts, arts


def paper_stage_both_ways(tmp_path, monkeypatch, launcher: str, **env: str) -> Path:
    """The paper stage of a small profile, once with the default launcher (into
    ``tmp_path/joblib``) and once with ``ASGD_STUDY_LAUNCHER=<launcher>`` (``tmp_path/<launcher>``,
    with ``env`` set): the same summaries and byte-identical job records, no submitit folder in
    the joblib one; returns the launcher's stage folder."""
    from models import datasets
    from pipeline.study import stages

    data = tmp_path / "data"
    datasets.build("lstsq_paper", data / "lstsq_paper.npz", seed=0)
    monkeypatch.setenv("ASGD_DATA_DIR", str(data))
    monkeypatch.setenv("ASGD_STUDY_NO_MLFLOW", "1")
    monkeypatch.setenv("ASGD_STUDY_JOBS", "2")
    profile = {"name": "launchers", "target": 0.5, "seeds": [1, 2],
               "paper": {"experiment": "paper_quadratic", "gradients": 400,
                         "methods": ["minibatch", "asgd"]}}  # fmt: skip
    joblib = stages.paper(profile, tmp_path / "joblib")
    monkeypatch.setenv(LAUNCHER_ENV, launcher)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    other = stages.paper(profile, tmp_path / launcher)
    assert len(other) == len(joblib) == 4
    assert [s["final_suboptimality"] for s in other] == [s["final_suboptimality"] for s in joblib]
    assert _records(tmp_path / launcher / "paper") == _records(tmp_path / "joblib" / "paper")
    assert not (tmp_path / "joblib" / "paper" / ".submitit").exists()
    return tmp_path / launcher / "paper"


@pytest.mark.slow
def test_a_study_stage_on_submitit_writes_the_joblib_records(tmp_path, monkeypatch):
    """The paper stage with ``ASGD_STUDY_LAUNCHER=submitit_local``: the joblib stage's records,
    each job a submitted process (its submitit log)."""
    stage = paper_stage_both_ways(tmp_path, monkeypatch, "submitit_local")
    assert len(list((stage / ".submitit").glob("*/*_log.out"))) == 4
