"""MLflow: runs land in a real temporary sqlite store, a sweep has the parent/child shape."""

from __future__ import annotations

import json

from pipeline.runner import run_experiment
from pipeline.tracking import client_for
from tests.conftest import compose_cfg, run_cli

SMALL = ("topology.n_workers=4", "budget.gradients=400", "batch_size=32", "eval_every=20")


def test_single_run_is_logged(tmp_path, mlflow_uri):
    cfg = compose_cfg("optimizer=asgd_adaptive", f"tracking.uri={mlflow_uri}", *SMALL)
    summary, _ = run_experiment(cfg, tmp_path, {"experiment": "paper_quadratic"})
    client = client_for(mlflow_uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["method"] == "asgd_adaptive" and run.data.tags["engine"] == "sim"
    assert run.data.tags["topology"] == "homogeneous"
    assert run.data.tags["preset"] == "paper_quadratic"
    assert run.data.params["optimizer.name"] == "asgd_adaptive"
    assert run.data.params["topology.n_workers"] == "4"
    assert run.data.params["resolved.lr"] == "0.43"
    assert run.data.metrics["final_suboptimality"] == summary["final_suboptimality"]
    loss = client.get_metric_history(run.info.run_id, "loss")
    sim_time = client.get_metric_history(run.info.run_id, "sim_time")
    assert [m.step for m in loss] == list(range(0, 401, 20))  # step = update
    assert len(sim_time) == len(loss) and sim_time[0].value == 0.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "records")}
    assert {"records/summary.json", "records/history.csv", "records/events.csv"} <= arts


def test_sweep_has_one_parent_and_goes_on_after_divergence(tmp_path, mlflow_uri):
    out = run_cli(
        "-m", "optimizer.lr=0.05,80", *SMALL, "optimizer=asgd",
        f"hydra.sweep.dir={tmp_path}/sweep", env={"MLFLOW_TRACKING_URI": mlflow_uri},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summaries = [json.loads((tmp_path / "sweep" / str(i) / "summary.json").read_text())
                 for i in (0, 1)]  # fmt: skip
    assert [s["status"] for s in summaries] == ["finished", "diverged"]
    client = client_for(mlflow_uri)
    exp = client.get_experiment_by_name("async-sgd")
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.sweep_dir = '{tmp_path}/sweep'",
    )
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(c.info.run_id for c in children) == sorted(s["mlflow_run_id"] for s in summaries)
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs"] == 2 and parent.data.metrics["jobs_failed"] == 1
