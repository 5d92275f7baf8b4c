"""MLflow: runs land in a real temporary sqlite store with curves as metrics, constants as params,
the data as dataset inputs; a sweep has the parent/child shape and its parent the comparison;
system metrics for real runs; parallel starts and parallel jobs lose nothing."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from models import datasets
from pipeline import PROJECT_ROOT
from pipeline.runner import run_experiment
from pipeline.tracking import (
    RESULT_METRICS,
    MlflowTracker,
    client_for,
    dataset_inputs,
    log_selection,
    make_tracker,
    retrying,
)
from tests.conftest import compose_cfg, run_cli
from tests.runinfo import mlflow_run_id

SMALL = ("topology.n_workers=4", "budget.gradients=200", "batch_size=8", "eval_every=20")


def small(small_data) -> tuple[str, ...]:
    return ("dataset=small_lstsq", f"dataset.path={small_data}", *SMALL)


def children_of(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)


def test_single_run_is_logged(tmp_path, mlflow_uri, small_data):
    cfg = compose_cfg("optimizer=asgd_adaptive", f"tracking.uri={mlflow_uri}", "target=0.5",
                      *small(small_data))  # fmt: skip
    summary, _ = run_experiment(cfg, tmp_path, {"experiment": "paper_quadratic"})
    client = client_for(mlflow_uri)
    run = client.get_run(mlflow_run_id(tmp_path))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "asgd_adaptive homogeneous n=4 lr=0.43 seed=0"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["method"] == "asgd_adaptive" and tags["engine"] == "sim"
    assert tags["topology"] == "homogeneous" and tags["preset"] == "paper_quadratic"
    assert params["optimizer.name"] == "asgd_adaptive" and params["topology.n_workers"] == "4"
    assert params["resolved.lr"] == "0.43" and params["n_workers"] == "4"

    # metrics: the curves, their x-axes and the results; nothing constant
    curves = {"curves/loss", "curves/suboptimality", "curves/grad_norm_sq"}
    progress = {"progress/gradients", "progress/sim_time"}
    results = set(metrics) - curves - progress
    assert curves | progress <= set(metrics)
    assert results <= {f"results/{k}" for k in RESULT_METRICS}
    assert {"results/final_suboptimality", "results/time_to_target", "results/max_delay"} <= results
    assert not any(k.startswith("system/") for k in metrics)  # simulated: no system metrics
    assert len(metrics) <= 16  # was 39 panels, most of them one-point constants
    assert metrics["results/final_suboptimality"] == summary["final_suboptimality"]
    assert metrics["results/time_to_target"] == summary["time_to_target"]
    # constants are params, outcome counts are tags
    assert float(params["f_star"]) == pytest.approx(summary["f_star"])
    assert params["theory_ratio_mb_over_asgd"] == str(summary["theory_ratio_mb_over_asgd"])
    assert tags["status"] == "finished" and tags["applied"] == str(summary["applied"])
    assert tags["updates"] == str(summary["updates"])

    loss = client.get_metric_history(run.info.run_id, "curves/loss")
    sim_time = client.get_metric_history(run.info.run_id, "progress/sim_time")
    assert [m.step for m in loss] == list(range(0, 201, 20))  # step = update
    assert len(sim_time) == len(loss) and sim_time[0].value == 0.0
    final = client.get_metric_history(run.info.run_id, "results/final_suboptimality")
    assert [m.step for m in final] == [0]  # one value: a bar per run in a comparison

    # the data as a dataset input: the file's digest and shapes
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "small_lstsq"
    assert inp.dataset.digest == hashlib.sha256(small_data.read_bytes()).hexdigest()[:16]
    assert json.loads(inp.dataset.profile)["features_shape"] == [64, 4]
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "train", "split": "none"}

    arts = {a.path for a in client.list_artifacts(run.info.run_id, "records")}
    assert {"records/summary.json", "records/history.csv", "records/events.csv"} <= arts
    # summary.json keeps every value, whatever its MLflow home
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("applied", "batch_size", "eval_every", "f_star", "theory_ratio_mb_over_asgd",
                "final_suboptimality", "time_to_target", "max_delay", "final_update"):  # fmt: skip
        assert key in on_disk
    assert on_disk["final_update"] == on_disk["updates"]
    # the circumstances are in run.json, and MLflow has them too
    assert mlflow_run_id(tmp_path) == run.info.run_id
    assert "wall_time_s" not in on_disk and float(run.data.tags["wall_time_s"]) >= 0


def test_dataset_inputs_carry_train_and_test(tmp_path):
    path = datasets.build("digits", tmp_path / "digits.npz", seed=0)
    cfg = compose_cfg("experiment=logreg_digits", f"dataset.path={path}",
                      "dataset.split=dirichlet", "dataset.alpha=0.5")  # fmt: skip
    inputs = dataset_inputs(cfg, path)
    arrays = datasets.load_npz(path)
    context_of = {"mlflow.data.context"}
    by_context = {next(t.value for t in i.tags if t.key in context_of): i for i in inputs}
    assert sorted(by_context) == ["test", "train"]
    for context, x in (("train", "X"), ("test", "X_test")):
        ds = by_context[context].dataset
        assert ds.name == "digits" and ds.source_type == "local"
        assert ds.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        assert json.loads(ds.profile)["features_shape"] == list(arrays[x].shape)
        assert json.loads(ds.source)["uri"] == str(path.resolve())
    train_tags = {t.key: t.value for t in by_context["train"].tags}
    assert train_tags["split"] == "dirichlet" and train_tags["alpha"] == "0.5"
    # a generated objective (no file) is an input of its own, told apart by its settings
    a, b = (dataset_inputs(compose_cfg("~experiment", "objective=noisy_quadratic", "dataset=none",
                                       f"objective.sigma={s}"), None)[0].dataset
            for s in (0.1, 0.2))  # fmt: skip
    assert a.name == "noisy_quadratic (generated)" and a.digest != b.digest


def test_sweep_has_one_named_parent_with_the_comparison(tmp_path, mlflow_uri, small_data):
    out = run_cli(
        "-m", "optimizer.lr=0.05,0.2,80", *small(small_data), "optimizer=asgd",
        "tracking.sweep_name=tune homogeneous", f"hydra.sweep.dir={tmp_path}/sweep",
        env={"MLFLOW_TRACKING_URI": mlflow_uri},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summaries = [json.loads((tmp_path / "sweep" / str(i) / "summary.json").read_text())
                 for i in (0, 1, 2)]  # fmt: skip
    assert [s["status"] for s in summaries] == ["finished", "finished", "diverged"]
    client = client_for(mlflow_uri)
    exp = client.get_experiment_by_name("async-sgd")
    parents = client.search_runs([exp.experiment_id], f"tags.sweep_dir = '{tmp_path}/sweep'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "tune homogeneous"  # tracking.sweep_name
    assert parent.data.tags["topology"] == "homogeneous" and parent.data.tags["method"] == "asgd"
    children = children_of(client, parent.info.run_id)
    assert sorted(c.info.run_id for c in children) == sorted(
        mlflow_run_id(tmp_path / "sweep" / str(i)) for i in (0, 1, 2)
    )
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    # names tell the children apart: they differ in lr only
    assert sorted(c.info.run_name for c in children) == [
        f"asgd homogeneous n=4 lr={lr} seed=0" for lr in ("0.05", "0.2", "80")
    ]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/jobs"] == 3 and parent.data.metrics["sweep/jobs_failed"] == 1
    # the parent carries the comparison: a figure and a table, one row per child, best first
    arts = {a.path: a for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.png", "comparison.csv"} <= set(arts) and arts["comparison.png"].file_size
    local = client.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))
    with open(local) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(
        mlflow_run_id(tmp_path / "sweep" / str(i)) for i in (0, 1, 2)
    )
    assert rows[-1]["status"] == "FAILED"  # the diverged run ranks last
    best = min((0, 1), key=lambda i: summaries[i]["final_suboptimality"])
    assert rows[0]["run_id"] == mlflow_run_id(
        tmp_path / "sweep" / str(best)
    )  # none reached a target: lowest final


def test_every_stage_selection_is_a_run(tmp_path, mlflow_uri):
    """The tuning and the scaling stages' selected stepsizes (no target in the latter)."""
    path = tmp_path / "scaling_lr.json"
    path.write_text(json.dumps({"lr": {"160": {"asgd": 0.1, "ringmaster": None}}}))
    client = client_for(mlflow_uri)
    params = {"160.asgd": 0.1, "160.ringmaster": None}
    run = client.get_run(log_selection("scaling", params, path, "quick", uri=mlflow_uri))
    assert run.info.run_name == "scaling selection (quick)" and run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "scaling" and run.data.tags["sweep"] == "selection"
    assert run.data.tags["profile"] == "quick"
    assert run.data.params == {"160.asgd": "0.1", "160.ringmaster": "null"}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["scaling_lr.json"]
    params = {"sqrt.asgd": 0.43, "target": 0.005}
    run = client.get_run(log_selection("tuning", params, uri=mlflow_uri))
    assert run.data.params == {"sqrt.asgd": "0.43", "target": "0.005"}


def test_system_metrics_for_real_runs(mlflow_uri):
    """A tracker with system metrics samples CPU and memory through MLflow's own monitor and
    stops it at finish; make_tracker turns it on for wall-clock (real) runs only."""
    tracker = MlflowTracker(mlflow_uri, "async-sgd", "system metrics", {}, {},
                            time_metric="wall_time", system_metrics=True,
                            system_metrics_interval=0.2)  # fmt: skip
    time.sleep(1.2)
    tracker.finish({"status": "finished", "updates": 0}, PROJECT_ROOT, files=())
    assert tracker.monitor is None
    assert not any(t.name == "SystemMetricsMonitor" and t.is_alive() for t in threading.enumerate())
    client = client_for(mlflow_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert key in run.data.metrics
    assert len(client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) >= 3

    cfg = compose_cfg(f"tracking.uri={mlflow_uri}")
    real = make_tracker(cfg, "real", {}, {}, "wall_time")
    simulated = make_tracker(cfg, "simulated", {}, {}, "sim_time")
    try:
        assert real.monitor is not None and simulated.monitor is None
        assert real.monitor.sampling_interval == 10.0  # one sample per 10 s: costs nothing
    finally:
        for t in (real, simulated):
            t.finish({"status": "finished"}, PROJECT_ROOT, files=())


def test_writes_wait_out_a_real_sqlite_lock(tmp_path):
    """A write that meets 'database is locked' is retried with backoff until the lock is gone,
    a bounded number of times; other errors are not retried."""
    db = tmp_path / "locked.db"
    con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    threading.Timer(0.6, lambda: con.execute("COMMIT")).start()
    attempts = []

    def insert():
        attempts.append(time.monotonic())
        with sqlite3.connect(db, timeout=0) as c:  # no busy wait of its own
            c.execute("INSERT INTO t VALUES (1)")

    retrying(insert)()
    assert len(attempts) > 1 and attempts[-1] - attempts[0] >= 0.5
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.execute("BEGIN IMMEDIATE")
    attempts.clear()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        retrying(insert, attempts=3, first=0.01)()  # bounded: gives up
    assert len(attempts) == 3
    con.execute("COMMIT")

    def broken():
        attempts.append(0)
        raise ValueError("not a lock")

    attempts.clear()
    with pytest.raises(ValueError):
        retrying(broken)()
    assert len(attempts) == 1


@pytest.mark.slow
def test_parallel_starts_on_a_fresh_store(tmp_path, small_data):
    """Four processes started together on a store that does not exist yet: four runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.train",
                "optimizer=asgd",
                "topology.n_workers=4",
                "budget.gradients=50",
                "dataset=small_lstsq",
                f"dataset.path={small_data}",
                "batch_size=8",
                f"tracking.uri={uri}",
                f"hydra.run.dir={tmp_path}/run{i}",
                "progress=off",
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outputs)
    client = client_for(uri)
    exp = client.get_experiment_by_name("async-sgd")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    ids = {mlflow_run_id(tmp_path / f"run{i}") for i in range(4)}
    assert ids == {r.info.run_id for r in runs}


@pytest.mark.slow
def test_parallel_multirun_loses_nothing(tmp_path, small_data):
    """A 12-job multirun with 2 parallel jobs (Hydra's joblib launcher) on a fresh store: 12
    FINISHED child runs under one parent and 12 complete record folders."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "optimizer=asgd", "optimizer.lr=0.05,0.1,0.2", "seed=0,1,2,3", *small(small_data),
        f"hydra.sweep.dir={tmp_path}/sweep", "progress=off",
        env={"MLFLOW_TRACKING_URI": uri}, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = client_for(uri)
    exp = client.get_experiment_by_name("async-sgd")
    (parent,) = client.search_runs([exp.experiment_id], "tags.sweep = 'parent'")
    children = children_of(client, parent.info.run_id)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 12
    assert parent.data.metrics["sweep/jobs"] == 12
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit())
    assert len(jobs) == 12
    for job in jobs:
        for f in ("summary.json", "history.csv", "events.csv"):
            assert (job / f).stat().st_size > 0, job / f
    ids = {mlflow_run_id(j) for j in jobs}
    assert ids == {c.info.run_id for c in children}
