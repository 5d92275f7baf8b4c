"""Whole runs: the documented command, determinism, the paper's ordering, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.records import EVENT_COLUMNS, HISTORY_COLUMNS, read_history
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg, run_cli


def test_documented_example_command_writes_the_records(tmp_path):
    out = run_cli(
        "optimizer=asgd", "topology=custom", "topology.n_workers=4",
        "topology.times=[1.0,1.5,2.0,3.0]", "topology.noise=none", "batch_size=null",
        "budget.gradients=200", "eval_every=1", f"hydra.run.dir={tmp_path}/check",
        "tracking=none",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run = tmp_path / "check"
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "method", "engine", "n_workers", "gradients", "updates", "final_loss",
        "final_suboptimality", "final_update", "sim_time", "max_delay", "mean_delay",
        "dataset_file", "status",
    ):  # fmt: skip
        assert key in summary
    info = json.loads((run / "run.json").read_text())  # the circumstances, apart
    assert {"wall_time_s", "mlflow_run_id", "host", "pid", "started_at", "ended_at",
            "dataset_path"} == set(info)  # fmt: skip
    assert "wall_time_s" not in summary and "mlflow_run_id" not in summary
    assert info["wall_time_s"] >= 0 and Path(info["dataset_path"]).is_absolute()
    assert summary["method"] == "asgd" and summary["engine"] == "sim"
    assert summary["gradients"] == 200 and summary["updates"] == 200
    assert summary["status"] == "finished" and summary["n_workers"] == 4
    events = (run / "events.csv").read_text().splitlines()
    assert events[0] == ",".join(EVENT_COLUMNS) and len(events) == 201
    assert events[1:4] == ["0,0,0,1,0.43,1.0", "1,0,1,1,0.43,1.5", "0,1,1,1,0.43,2.0"]
    history = read_history(run / "history.csv")
    assert list(history[0]) == [*HISTORY_COLUMNS, "grad_norm_sq"]  # contract columns first
    assert [h["update"] for h in history] == list(range(201))  # eval_every=1, incl. update 0
    assert history[-1]["loss"] == pytest.approx(summary["final_loss"], rel=1e-12)
    assert history[-1]["loss"] < history[0]["loss"]
    assert (run / ".hydra" / "config.yaml").exists()


def _paper(tmp_path, name, *overrides):
    cfg = compose_cfg("tracking=none", *overrides)
    summary, _ = run_experiment(cfg, tmp_path / name)
    return summary


def test_same_seed_same_records_byte_for_byte(tmp_path):
    args = ("optimizer=asgd_random", "topology=sqrt", "topology.noise=gamma",
            "topology.n_workers=16", "budget.gradients=1500", "eval_every=25")  # fmt: skip
    _paper(tmp_path, "a", *args)
    _paper(tmp_path, "b", *args)
    _paper(tmp_path, "c", *args, "seed=1")
    for f in ("events.csv", "history.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_paper_experiment_async_beats_minibatch_at_equal_gradients(tmp_path):
    mb = _paper(tmp_path, "mb", "optimizer=minibatch", "budget.gradients=4000")
    asgd = _paper(tmp_path, "asgd", "optimizer=asgd", "budget.gradients=4000")
    ada = _paper(tmp_path, "ada", "optimizer=asgd_adaptive", "budget.gradients=4000")
    assert mb["gradients"] == asgd["gradients"] == ada["gradients"] == 4000
    assert mb["updates"] == 100 and asgd["updates"] == 4000
    assert asgd["final_suboptimality"] < 0.8 * mb["final_suboptimality"]
    assert ada["final_suboptimality"] < 0.8 * mb["final_suboptimality"]
    # homogeneous exponential times: async runs ~n/H_n faster on the clock, too
    assert asgd["sim_time"] < mb["sim_time"] / 2


def test_divergence_is_recorded_not_raised(tmp_path):
    s = _paper(tmp_path, "div", "optimizer=asgd", "optimizer.lr=50", "budget.gradients=2000",
               "eval_every=10")  # fmt: skip
    assert s["status"] == "diverged"
    assert s["gradients"] < 2000  # stopped early
    assert json.loads((tmp_path / "div" / "summary.json").read_text())["status"] == "diverged"


def test_time_budget_stops_the_clock(tmp_path):
    s = _paper(tmp_path, "t", "optimizer=minibatch", "budget.gradients=null", "budget.time=30",
               "topology.noise=none")  # fmt: skip
    # rounds last exactly tau = 1: 30 rounds of 40 gradients fit in 30 seconds
    assert s["sim_time"] == 30 and s["updates"] == 30 and s["gradients"] == 1200


def test_finite_blow_up_is_divergence(tmp_path):
    # Ringmaster at 0.1 with delays up to R = 45 grows without bound (it reached 2e125 while
    # staying finite before this rule existed); 1e6 x the first loss counts as diverged
    s = _paper(tmp_path, "blow", "experiment=scaling_sqrt", "optimizer=ringmaster",
               "optimizer.lr=0.1", "eval_every=100")  # fmt: skip
    assert s["status"] == "diverged"
    assert s["final_loss"] > 1e6 * read_history(tmp_path / "blow" / "history.csv")[0]["loss"]
    assert s["gradients"] < 40000
