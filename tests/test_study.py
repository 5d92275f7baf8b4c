"""The study: tuning selection, the report step, the MLflow UI on the study's store, and the
quick `dvc repro` in a temporary clone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline import PROJECT_ROOT
from pipeline.report import build_report
from pipeline.runner import run_experiment
from pipeline.study import multirun, select
from tests.conftest import compose_cfg


def test_tuning_picks_the_known_best_and_survives_divergence(tmp_path):
    """One worker on a noise-free quadratic with curvatures in [0.1, 1] is gradient descent:
    stepsize 1 (= 1/L) reaches the target first, 0.1 and 0.01 later, 100 diverges."""
    runs = multirun(
        ["~experiment", "objective=noisy_quadratic", "objective.sigma=0", "dataset=none",
         "optimizer=asgd", "optimizer.lr=0.01,0.1,1.0,100", "topology.n_workers=1",
         "budget.gradients=300", "target=1e-3", "eval_every=1", "tracking=none"],
        tmp_path / "sweep",
    )  # fmt: skip
    assert [s["lr"] for s in runs] == [0.01, 0.1, 1.0, 100.0]
    assert [s["status"] for s in runs] == ["finished", "finished", "finished", "diverged"]
    best = select(runs)["asgd"]
    assert best["lr"] == 1.0
    assert best["time_to_target"] < runs[1]["time_to_target"]
    assert runs[0]["time_to_target"] is None  # 0.01 never gets there: ranked last


def test_selection_rules():
    def s(lr, status="finished", ttt=None, final=1.0):
        return {"method": "m", "lr": lr, "status": status, "time_to_target": ttt,
                "final_suboptimality": final}  # fmt: skip

    assert select([s(1, ttt=5.0), s(2, ttt=3.0), s(3, "diverged", ttt=1.0)])["m"]["lr"] == 2
    assert select([s(1, final=0.5), s(2, final=0.2)])["m"]["lr"] == 2  # none reached: final
    assert select([s(1, ttt=4.0, final=0.9), s(2, ttt=4.0, final=0.1)])["m"]["lr"] == 2
    assert select([s(1, "diverged"), s(2, "failed")]) == {"m": None}  # a result, not a crash


@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    """A small study's records: two topologies, three methods, the layout the study writes."""
    root = tmp_path_factory.mktemp("results")
    lrs = {"minibatch": 7.6, "asgd": 0.43, "rennala": 7.6}
    for topo in ("homogeneous", "sqrt"):
        for i, m in enumerate(lrs):
            cfg = compose_cfg(f"optimizer={m}", f"topology={topo}", "topology.n_workers=8",
                              "topology.noise=exponential", "optimizer.batch=8" if m == "rennala"
                              else "seed=0",
                              "budget.gradients=1600", "target=0.03", "tracking=none")  # fmt: skip
            run_experiment(cfg, root / "runs" / topo / str(i))
    for n in (4, 16):
        for i, m in enumerate(("asgd", "ringmaster")):
            cfg = compose_cfg("experiment=scaling_sqrt", f"optimizer={m}",
                              f"topology.n_workers={n}", "budget.gradients=3000",
                              "tracking=none")  # fmt: skip
            run_experiment(cfg, root / "scaling" / f"n{n}" / str(i))
    grid = [{"method": m, "lr": lr * f} for m, lr in lrs.items() for f in (0.5, 1.0)]
    tuned = {"lr": {"homogeneous": lrs, "sqrt": {**lrs, "asgd": 0.215}},
             "grid": {"homogeneous": grid, "sqrt": grid}}  # fmt: skip
    (root / "tuned_lr.json").write_text(json.dumps(tuned))
    return root


def test_report_builds_figures_and_tables(small_results):
    report = build_report(small_results)
    names = sorted(p.name for p in report["figures"])
    assert names == sorted([
        "suboptimality_vs_gradients_homogeneous.png", "suboptimality_vs_time_homogeneous.png",
        "suboptimality_vs_gradients_sqrt.png", "suboptimality_vs_time_sqrt.png",
        "delay_histogram.png", "time_to_target.png", "scaling.png",
    ])  # fmt: skip
    for p in report["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    metrics = json.loads((small_results / "metrics.json").read_text())
    rows = {(r["topology"], r["method"]): r for r in metrics["table"]}
    assert len(rows) == 6
    # the measured ratio is recomputed from the records, next to the theory's tau_n / H_n
    s = {m: json.loads((small_results / "runs" / "sqrt" / str(i) / "summary.json").read_text())
         for i, m in enumerate(("minibatch", "asgd", "rennala"))}  # fmt: skip
    r = rows[("sqrt", "asgd")]
    assert r["measured_mb_over_async"] == pytest.approx(
        s["minibatch"]["time_to_target"] / s["asgd"]["time_to_target"]
    )
    assert r["theory_mb_over_async"] == pytest.approx(s["asgd"]["theory_ratio_mb_over_asgd"])
    assert r["measured_mb_over_async"] > 1  # async beats minibatch in time when speeds differ
    assert r["max_delay"] == s["asgd"]["max_delay"] and r["tuned_lr"] == 0.215
    # 0.215 and 0.43 are the smallest and largest stepsizes tried: both at the grid's edge
    assert r["lr_at_grid_edge"] and rows[("homogeneous", "asgd")]["lr_at_grid_edge"]
    assert [x["n"] for x in metrics["scaling"]] == [4, 16]
    text = (small_results / "report.md").read_text()
    assert "| sqrt | asgd | 0.215* |" in text and "tau_n/H_n" in text
    assert "selected at the edge of the tuning grid" in text
    assert "![time_to_target](figures/time_to_target.png)" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_lists_the_study_runs(tmp_path, mlflow_uri):
    cfg = compose_cfg("optimizer=asgd", "topology.n_workers=4", "budget.gradients=200",
                      f"tracking.uri={mlflow_uri}")  # fmt: skip
    summary, _ = run_experiment(cfg, tmp_path / "run")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", mlflow_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.monotonic() + 90
        while True:
            try:
                query = f"{url}/experiments/get-by-name?experiment_name=async-sgd"
                with urllib.request.urlopen(query, timeout=5) as r:
                    exp = json.load(r)["experiment"]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow ui did not answer within 90 s") from None
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 1000})
        req = urllib.request.Request(f"{url}/runs/search", data=body.encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        ids = {run["info"]["run_id"] for run in runs}
        assert summary["mlflow_run_id"] in ids
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_quick_dvc_repro_in_a_fresh_clone(tmp_path):
    if shutil.which("dvc") is None:
        pytest.skip("dvc is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("profile: full", "profile: quick"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CI": "1"}  # fmt: skip
    env.pop("ASGD_DATA_DIR", None)  # the stages read the clone's own data/ (the data stage's)
    first = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=1500)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for f in ("results/report.md", "results/metrics.json", "results/figures/scaling.png",
              "results/figures/delay_histogram.png", "results/tuned_lr.json"):  # fmt: skip
        assert (clone / f).exists(), f
    metrics = json.loads((clone / "results/metrics.json").read_text())
    assert {r["topology"] for r in metrics["table"]} == {"homogeneous", "sqrt", "straggler"}
    second = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
