"""Sweeps and a study stage on a real SLURM (``hydra/launcher=slurm``, README "On a SLURM
cluster"): a private single-node cluster (munged, slurmctld, slurmd; ``tests/slurm/cluster.py``)
started for the session under a temporary folder and stopped after it. Every job must run as a
job of that cluster's array, and its records must be byte for byte those of the joblib launcher
(the comparison of ``tests/study/test_launchers.py``).

Skipped, with the reason, where SLURM cannot run: not root, SLURM not installed (the test
installs Debian's ``slurm-wlm`` and ``munge`` itself only with ``ASGD_TEST_INSTALL_SLURM=1``;
``.ci/run`` installs them), or daemons that do not come up within a minute."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pipeline import PROJECT_ROOT
from tests.conftest import run_cli
from tests.slurm.cluster import PARTITION, Cluster, ClusterError, install, missing_programs
from tests.study.test_launchers import _records, paper_stage_both_ways

pytestmark = pytest.mark.slow

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

#: lets the fixture ``apt-get install slurm-wlm munge`` where SLURM is missing
INSTALL_ENV = "ASGD_TEST_INSTALL_SLURM"
#: per job: one CPU and 1 GB, so that the jobs of an array run side by side on a small node
#: (the config's 2 CPUs and 8 GB are a cluster's; the resources are not in the records)
SMALL = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=15"]  # fmt: skip


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The private cluster: ``SLURM_CONF`` and ``ASGD_SLURM_PARTITION`` set for the module (so
    every ``sbatch`` of submitit, and every job, finds it); stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a private SLURM needs root (slurmd runs as root)")
    missing = missing_programs()
    if missing:
        if os.environ.get(INSTALL_ENV) != "1":
            why = f"SLURM is not installed (no {', '.join(missing)})"
            pytest.skip(f"{why}; {INSTALL_ENV}=1 lets the test apt-get install slurm-wlm munge")
        try:
            install()
        except ClusterError as e:
            pytest.skip(f"SLURM could not be installed: {e}")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start(deadline_s=60)
    except ClusterError as e:
        pytest.skip(f"a private SLURM did not start: {e}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "ASGD_SLURM_PARTITION")}
    os.environ["SLURM_CONF"] = str(cluster.conf)
    os.environ["ASGD_SLURM_PARTITION"] = PARTITION
    try:
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pythonpath() -> str:
    """This checkout first: the jobs (``sbatch`` exports the submitting environment, and
    submitit runs them with this interpreter) import this checkout's ``pipeline``."""
    return os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))


def _array_jobs(cluster: Cluster, sweep) -> dict[str, dict[str, str]]:
    """The SLURM jobs behind a sweep's submitit folders (``.submitit/<array>_<task>/``), as
    ``scontrol show job`` has them: {"<array>_<task>": its fields}."""
    folders = sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
    arrays = {f.split("_")[0] for f in folders}
    out = {}
    for array in arrays:
        shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True,
                               text=True, env=cluster.env, timeout=30)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        for line in shown.stdout.strip().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            out[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = fields
    assert sorted(out) == folders, (sorted(out), folders)
    return out


def _assert_ran_on(cluster: Cluster, sweep, n: int) -> None:
    """``n`` jobs, one array of the cluster's partition, each COMPLETED with exit code 0;
    each ran ``srun <this interpreter> -m submitit.core._submit`` and knew its SLURM job id
    (the ``.submitit/<array>/`` folder holds the array's batch script)."""
    jobs = _array_jobs(cluster, sweep)
    assert len(jobs) == n
    for name, j in jobs.items():
        assert (j["JobState"], j["ExitCode"], j["Partition"]) == ("COMPLETED", "0:0", PARTITION)
        assert j["NodeList"] == "localhost"
        # submitit's job id in the job: $SLURM_ARRAY_JOB_ID_$SLURM_ARRAY_TASK_ID
        log = (sweep / ".submitit" / name / f"{name}_0_log.out").read_text()
        assert f"Starting with JobEnvironment(job_id={name}, hostname=" in log, log[-2000:]
        assert "Job completed successfully" in log
    (array,) = {j["ArrayJobId"] for j in jobs.values()}
    script = sweep / ".submitit" / array / f"{array}_submission.sh"
    text = script.read_text()
    assert f"#SBATCH --partition={PARTITION}" in text and f"#SBATCH --array=0-{n - 1}%" in text
    assert "srun --unbuffered" in text and f"{sys.executable} -u -m submitit.core._submit" in text


def test_a_sweep_on_slurm_is_one_array_job_with_the_joblib_records(tmp_path, small_data, slurm):
    """One sweep (2 methods x 2 seeds) through joblib and through ``hydra/launcher=slurm``
    (the partition from ``ASGD_SLURM_PARTITION``): the four jobs ran as one SLURM array job,
    COMPLETED on the node, with the joblib records byte for byte; the runs reach MLflow."""
    from pipeline.tracking import client_for

    common = ["-m", "optimizer=asgd,minibatch", "seed=0,1", "optimizer.lr=0.05",
              "dataset=small_lstsq", f"dataset.path={small_data}", "batch_size=8",
              "topology.n_workers=4", "budget.gradients=200", "progress=off"]  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    joblib = run_cli(*common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"hydra.sweep.dir={tmp_path / 'joblib'}", "tracking=none")  # fmt: skip
    assert joblib.returncode == 0, joblib.stderr[-2000:]
    env = {"PYTHONPATH": _pythonpath()}
    sub = run_cli(*common, "hydra/launcher=slurm", *SMALL, f"tracking.uri={uri}",
                  "tracking.sweep_name=on slurm", f"hydra.sweep.dir={tmp_path / 'slurm'}",
                  env=env, timeout=900)  # fmt: skip
    assert sub.returncode == 0, sub.stderr[-3000:]
    want, got = _records(tmp_path / "joblib"), _records(tmp_path / "slurm")
    assert sorted(got) == ["0", "1", "2", "3"]
    assert got == want
    _assert_ran_on(slurm, tmp_path / "slurm", 4)
    client = client_for(uri)
    exp = client.get_experiment_by_name("async-sgd").experiment_id
    (parent,) = client.search_runs([exp], "tags.sweep = 'parent'")
    assert parent.info.run_name == "on slurm" and parent.info.status == "FINISHED"
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4


def test_a_study_stage_on_slurm_writes_the_joblib_records(tmp_path, monkeypatch, slurm):
    """The paper stage with ``ASGD_STUDY_LAUNCHER=slurm`` and the config as it is (2 CPUs, 8 GB
    per job): the joblib stage's records byte for byte, every job of the SLURM sweep a
    COMPLETED task of one array job."""
    stage = paper_stage_both_ways(tmp_path, monkeypatch, "slurm", PYTHONPATH=_pythonpath())
    _assert_ran_on(slurm, stage, 4)
