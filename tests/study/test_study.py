"""The study: tuning selection, the report step, the MLflow UI on the study's store, and the
quick `dvc repro` in a temporary clone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT
from pipeline.report import build_report, readme_block
from pipeline.runner import run_experiment
from pipeline.study import Group, Sweep, bracket, multirun, select, tune_sweep
from tests.conftest import compose_cfg
from tests.runinfo import mlflow_run_id
from tests.selections import selection


def test_tuning_picks_the_known_best_and_survives_divergence(tmp_path):
    """One worker on a noise-free quadratic with curvatures in [0.1, 1] is gradient descent:
    stepsize 1 (= 1/L) reaches the target first, 0.1 and 0.01 later, 100 diverges."""
    runs = multirun(
        [
            "~experiment",
            "objective=noisy_quadratic",
            "objective.sigma=0",
            "dataset=none",
            "optimizer=asgd",
            "optimizer.lr=0.01,0.1,1.0,100",
            "topology.n_workers=1",
            "budget.gradients=300",
            "target=1e-3",
            "eval_every=1",
            "tracking=none",
        ],
        tmp_path / "sweep",
    )
    assert [s["lr"] for s in runs] == [0.01, 0.1, 1.0, 100.0]
    assert [s["status"] for s in runs] == ["finished", "finished", "finished", "diverged"]
    best = select(runs)["asgd"]
    assert best["lr"] == 1.0
    assert best["time_to_target"] < runs[1]["time_to_target"]
    assert runs[0]["time_to_target"] is None  # 0.01 never gets there: ranked last


def test_selection_rules():
    def s(lr, status="finished", ttt=None, final=1.0):
        return {
            "method": "m",
            "lr": lr,
            "status": status,
            "time_to_target": ttt,
            "final_suboptimality": final,
        }

    assert select([s(1, ttt=5.0), s(2, ttt=3.0), s(3, "diverged", ttt=1.0)])["m"]["lr"] == 2
    assert select([s(1, final=0.5), s(2, final=0.2)])["m"]["lr"] == 2  # none reached: final
    assert select([s(1, ttt=4.0, final=0.9), s(2, ttt=4.0, final=0.1)])["m"]["lr"] == 2
    assert select([s(1, "diverged"), s(2, "failed")]) == {"m": None}  # a result, not a crash


GD = [
    "~experiment",
    "objective=noisy_quadratic",
    "objective.sigma=0",
    "dataset=none",
    "optimizer=asgd",
    "topology.n_workers=1",
    "budget.gradients=300",
    "target=1e-3",
    "eval_every=1",
    "tracking=none",
]


def _gd_sweep(root, lr_table: float) -> Sweep:
    """Gradient descent (one worker, no noise) on curvatures in [0.1, 1]: stable for lr < 2,
    fastest near 1 to 1.8; the grid starts at ``lr_table`` times the scales."""
    return Sweep(
        "test",
        "topology",
        [*GD, f"+lr_table.asgd={lr_table}"],
        [Group("base", ["asgd"], ["homogeneous"])],
        root,
    )


@pytest.mark.parametrize(
    "lr_table, expect_lr, tried",
    [
        # grid 0.05, 0.2: the best is the top edge -> 0.8, then 3.2 diverges: 0.8 is interior
        (0.05, 0.8, [0.05, 0.2, 0.8, 3.2]),
        # grid 6.4, 25.6: both diverge -> 1.6, then 0.4 is slower: 1.6 is interior
        (6.4, 1.6, [0.4, 1.6, 6.4, 25.6]),
    ],
)
def test_grid_extends_until_the_best_stepsize_is_bracketed(
    tmp_path, monkeypatch, lr_table, expect_lr, tried
):
    monkeypatch.setenv("ASGD_STUDY_JOBS", "1")
    sel = tune_sweep(_gd_sweep(tmp_path, lr_table), [1.0, 4.0], [1 / 64, 64.0], seed=0)
    v = sel["homogeneous"]["asgd"]
    assert [g["lr"] for g in v["grid"]] == pytest.approx(tried)
    assert v["lr"] == pytest.approx(expect_lr) and v["bracketed"] and not v["cap_hit"]
    status = {round(g["lr"], 6): g["status"] for g in v["grid"]}
    assert status[3.2 if lr_table < 1 else 6.4] == "diverged"
    # the selection beats both neighbours
    ttt = {round(g["lr"], 6): g["time_to_target"] for g in v["grid"]}
    i = tried.index(expect_lr)
    for j in (i - 1, i + 1):
        other = ttt[round(tried[j], 6)]
        assert status[round(tried[j], 6)] == "diverged" or other > ttt[round(expect_lr, 6)]


def test_bracket_rules_and_the_cap():
    def p(scale, ttt=None, status="finished", final=1.0):
        return {
            "lr_scale": scale,
            "lr": scale,
            "status": status,
            "time_to_target": ttt,
            "final_suboptimality": final,
        }

    interior = bracket([p(1, 5.0), p(2, 3.0), p(4, 6.0)], 1 / 8, 8, 2.0)
    assert interior["bracketed"] and interior["next"] is None and interior["best"]["lr"] == 2
    assert bracket([p(1, 5.0), p(2, 3.0), p(4, 1.0)], 1 / 8, 8, 2.0)["next"] == 8  # up
    assert bracket([p(1, 1.0), p(2, 3.0), p(4, 6.0)], 1 / 8, 8, 2.0)["next"] == 0.5  # down
    capped = bracket([p(2, 5.0), p(4, 3.0), p(8, 1.0)], 1 / 8, 8, 2.0)  # 16 is past the cap
    assert capped["cap_hit"] and not capped["bracketed"] and capped["best"]["lr"] == 8
    # every stepsize diverged: go smaller; at the cap: no stable stepsize (best None)
    assert bracket([p(1, status="diverged"), p(2, status="diverged")], 0.25, 8, 2.0)["next"] == 0.5
    none = bracket([p(0.25, status="diverged"), p(0.5, status="diverged")], 0.25, 8, 2.0)
    assert none["best"] is None and none["cap_hit"]
    # a diverged neighbour counts as worse: 2 is interior between 1 (slower) and 4 (diverged)
    assert bracket([p(1, 5.0), p(2, 3.0), p(4, 0.5, "diverged")], 1 / 8, 8, 2.0)["bracketed"]
    # no run reached the target: the final value decides, and brackets the same way
    assert bracket([p(1, final=0.3), p(2, final=0.1), p(4, final=0.2)], 1 / 8, 8, 2)["bracketed"]


def test_groups_one_multirun_per_setting():
    from pipeline.study import StudyError, make_groups

    g = make_groups(
        ["minibatch", "asgd", "ringmaster"],
        ["ringmaster_n"],
        ["a", "b"],
        ["b", "c"],
        {"minibatch": ["eval_every=2"]},
    )
    assert [(x.name, x.labels, x.cells) for x in g] == [
        ("base", ["asgd", "ringmaster"], ["a", "b"]),
        ("minibatch", ["minibatch"], ["a", "b"]),
        ("ringmaster_n", ["ringmaster_n"], ["b"]),  # variants only where asked, among the cells
    ]
    assert g[0].overrides() == ["optimizer=asgd,ringmaster"]
    assert g[1].overrides() == ["optimizer=minibatch", "eval_every=2"]
    assert g[2].overrides() == ["optimizer=ringmaster", "optimizer.threshold=${topology.n_workers}"]
    assert [x.method(x.labels[0]) for x in g] == ["asgd", "minibatch", "ringmaster"]
    with pytest.raises(StudyError, match="unknown variant 'ringmaster_x'"):
        make_groups(["asgd"], ["ringmaster_x"], ["a"], None)


def test_parallel_sweep_writes_the_same_records_as_a_sequential_one(tmp_path):
    sweep = [
        "~experiment",
        "objective=noisy_quadratic",
        "dataset=none",
        "topology=sqrt",
        "topology.n_workers=8",
        "topology.noise=exponential",
        "optimizer=asgd,rennala",
        "optimizer.lr=0.05",
        "seed=0,1",
        "budget.gradients=400",
        "target=0.5",
        "tracking=none",
    ]
    seq = multirun(sweep, tmp_path / "seq", jobs=1)
    par = multirun(sweep, tmp_path / "par", jobs=2)
    assert len(seq) == len(par) == 4
    for a, b in zip(seq, par, strict=True):
        for f in ("events.csv", "history.csv"):
            assert (Path(a["run_dir"]) / f).read_bytes() == (Path(b["run_dir"]) / f).read_bytes()
        assert a["time_to_target"] == b["time_to_target"]


NOISY = [
    "experiment=scaling_sqrt",
    "topology.n_workers=8",
    "topology.noise=exponential",
    "budget.gradients=3000",
    "target=0.05",
    "tracking=none",
]


def _run(root, *overrides):
    cfg = compose_cfg(*NOISY, *overrides)
    summary, _ = run_experiment(cfg, root)
    return summary


@pytest.fixture(scope="module")
def small_results(tmp_path_factory, small_digits):
    """A small study's records in the layout the study writes (every section of the report)."""
    root = tmp_path_factory.mktemp("results")
    lrs = {"minibatch": 1.0, "asgd": 0.03, "rennala": 1.0}
    cells = {"homogeneous": "topology=homogeneous", "sqrt": "topology=sqrt"}
    for cell, topo in cells.items():
        j = 0
        for m, lr in lrs.items():
            for seed in (1, 2):
                _run(
                    root / "runs" / cell / "base" / str(j),
                    f"optimizer={m}",
                    topo,
                    f"optimizer.lr={lr}",
                    f"seed={seed}",
                )
                j += 1
    for j, seed in enumerate((1, 2)):
        _run(
            root / "runs" / "sqrt" / "rennala_n" / str(j),
            "optimizer=rennala",
            "topology=sqrt",
            "optimizer.lr=1.0",
            "optimizer.batch=${topology.n_workers}",
            f"seed={seed}",
        )
    j = 0
    for m in ("minibatch", "asgd", "asgd_adaptive"):
        for seed in (1, 2):
            _run(root / "paper" / str(j), f"optimizer={m}", "topology=homogeneous", f"seed={seed}")
            j += 1
    for n in (4, 16):
        j = 0
        for m in ("asgd", "ringmaster"):
            for seed in (1, 2):
                _run(
                    root / "scaling" / "runs" / f"n{n}" / "base" / str(j),
                    f"optimizer={m}",
                    f"topology.n_workers={n}",
                    f"seed={seed}",
                )
                j += 1
    mlp = [
        "~experiment",
        "objective=mlp",
        "objective.hidden=[16]",
        "dataset=digits",
        f"dataset.path={small_digits}",
        "topology.n_workers=4",
        "topology.noise=exponential",
        "budget.gradients=400",
        "batch_size=16",
        "eval_every=10",
        "target=1.0",
        "tracking=none",
    ]
    j = 0
    for m, lr in (("minibatch", 0.5), ("asgd", 0.1)):
        for seed in (1, 2):
            cfg = compose_cfg(*mlp, f"optimizer={m}", f"optimizer.lr={lr}", f"seed={seed}")
            run_experiment(
                cfg, root / "nonconvex" / "mlp" / "runs" / "homogeneous" / "base" / str(j)
            )
            j += 1

    sel = selection

    tuned = {
        "profile": "test",
        "target": 0.05,
        "cells": {
            c: {
                **{m: sel(lr) for m, lr in lrs.items()},
                **({"rennala_n": sel(1.0, cap=True)} if c == "sqrt" else {}),
            }
            for c in cells
        },
    }
    (root / "tuned_lr.json").write_text(json.dumps(tuned))
    scaling = {
        "profile": "test",
        "cells": {f"n{n}": {"asgd": sel(0.03), "ringmaster": sel(0.03)} for n in (4, 16)},
    }
    (root / "scaling_lr.json").write_text(json.dumps(scaling))
    nc = {
        "profile": "test",
        "problems": {
            "mlp": {
                "target": 1.0,
                "accuracy": 0.5,
                "grad_norm_sq": 0.5,
                "cells": {"homogeneous": {"minibatch": sel(0.5), "asgd": sel(0.1)}},
            }
        },
    }
    (root / "nonconvex_lr.json").write_text(json.dumps(nc))
    return root


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    from models import datasets

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    datasets.build("digits", path, seed=0)
    return path


def test_report_builds_every_section_with_intervals(small_results):
    from pipeline.report.stats import mean_interval, ratio_interval

    report = build_report(small_results)
    names = sorted(p.name for p in report["figures"])
    assert names == sorted(
        [
            "suboptimality_vs_gradients_homogeneous.png",
            "suboptimality_vs_time_homogeneous.png",
            "suboptimality_vs_gradients_sqrt.png",
            "suboptimality_vs_time_sqrt.png",
            "time_to_target.png",
            "paper_suboptimality.png",
            "paper_delays.png",
            "scaling.png",
            "nonconvex_mlp_homogeneous_test_accuracy.png",
            "nonconvex_mlp_homogeneous_loss.png",
        ]
    )
    for p in report["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    metrics = json.loads((small_results / "metrics.json").read_text())
    rows = {(r["cell"], r["label"]): r for r in metrics["compare"]["rows"]}
    assert len(rows) == 7  # 3 methods x 2 topologies + rennala at S = n on sqrt

    def ttt(cell, group, first):
        return [
            json.loads(
                (small_results / "runs" / cell / group / str(j) / "summary.json").read_text()
            )["time_to_target"]
            for j in (first, first + 1)
        ]

    mb, asgd = ttt("sqrt", "base", 0), ttt("sqrt", "base", 2)
    assert None not in mb + asgd
    r = rows[("sqrt", "minibatch")]
    e = mean_interval(mb, floor=0.0)
    assert r["time_to_target"]["mean"] == pytest.approx(sum(mb) / 2)
    assert (r["time_to_target"]["lo"], r["time_to_target"]["hi"]) == pytest.approx((e.lo, e.hi))
    ratio = ratio_interval(mb, asgd)
    assert r["ratio_to_asgd"]["mean"] == pytest.approx((mb[0] + mb[1]) / (asgd[0] + asgd[1]))
    assert r["ratio_to_asgd"]["lo"] == pytest.approx(ratio.lo)
    ra = {x["cell"]: x for x in metrics["compare"]["ratios"]}["sqrt"]
    assert ra["mb_over_async"]["mean"] == pytest.approx(r["ratio_to_asgd"]["mean"])
    assert ra["theory_mb_over_async"] > 1 and ra["theory_m_star"] == 8  # argmin over 8 workers
    assert rows[("sqrt", "rennala_n")]["setting"].startswith("S = n = 8")
    assert rows[("sqrt", "rennala")]["setting"].startswith("S = ceil(sigma^2/eps) = 18")
    assert rows[("sqrt", "rennala_n")]["cap_hit"]
    text = (small_results / "report.md").read_text()
    assert text.index("## Answer") < text.index("## Threats to validity") < text.index("## Comp")
    assert "sqrt rennala_n" in text.split("## Threats to validity")[1].split("##")[0]  # cap hit
    # every link of the answer paragraph points at a row anchor of a table
    answer = metrics["answer"][0]
    links = re.findall(r"\]\(#([^)]+)\)", answer)
    assert links and all(f'<a id="{a}"></a>' in text for a in links)
    assert "x](#ratio-sqrt)" in answer
    # the non-convex times come from each run's evaluations
    nc = {(x["cell"], x["label"]): x for x in metrics["nonconvex"]["rows"]}

    def first_at_accuracy(job: int) -> float:
        """The first evaluation at test accuracy >= 0.5, read from the csv by hand."""
        run = small_results / "nonconvex/mlp/runs/homogeneous/base" / str(job)
        assert json.loads((run / "summary.json").read_text())["method"] == "asgd"
        hdr, *lines = [ln.split(",") for ln in (run / "history.csv").read_text().split()]
        acc, t = hdr.index("test_accuracy"), hdr.index("time")
        return next(float(x[t]) for x in lines if x[acc] and float(x[acc]) >= 0.5)

    firsts = [first_at_accuracy(2), first_at_accuracy(3)]  # asgd's two seeds
    row = nc[("homogeneous", "asgd")]
    assert row["time_to_accuracy_reached"] == 2
    e = mean_interval(firsts, floor=0.0)
    assert row["time_to_accuracy"]["mean"] == pytest.approx(sum(firsts) / 2, rel=1e-12)
    assert (row["time_to_accuracy"]["lo"], row["time_to_accuracy"]["hi"]) == pytest.approx(
        (e.lo, e.hi), rel=1e-12
    )
    # no hetero records here (an older results folder): the section is absent, not an error
    assert metrics["hetero"] == {} and '<a id="hetero"></a>' not in text
    block = readme_block(metrics, "results/test")
    assert "(results/test/report.md#ratio-sqrt)" in block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_lists_the_study_runs(tmp_path, mlflow_uri):
    cfg = compose_cfg(
        "optimizer=asgd",
        "topology.n_workers=4",
        "budget.gradients=200",
        f"tracking.uri={mlflow_uri}",
    )
    summary, _ = run_experiment(cfg, tmp_path / "run")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            mlflow_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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
        req = urllib.request.Request(
            f"{url}/runs/search", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        ids = {run["info"]["run_id"] for run in runs}
        assert mlflow_run_id(tmp_path / "run") in ids
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_quick_profile_in_a_fresh_clone_leaves_the_full_profile_alone(tmp_path):
    """The README's quick try, `dvc exp run -S profile=quick`, in a clone: every stage
    (the non-convex and hetero ones included) runs, writes only under results/quick/, and a second
    `dvc repro` does nothing."""
    if shutil.which("dvc") is None:
        pytest.skip("dvc is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    full_before = {
        p: p.read_bytes() for p in (clone / "results" / "full").rglob("*") if p.is_file()
    }
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CI": "1"}
    env.pop("ASGD_DATA_DIR", None)  # the stages read the clone's own data/ (the data stage's)
    first = subprocess.run(
        ["dvc", "exp", "run", "-S", "profile=quick"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    q = clone / "results" / "quick"
    for f in (
        "report.md",
        "metrics.json",
        "figures/scaling.png",
        "figures/paper_delays.png",
        "figures/paper_suboptimality.png",
        "tuned_lr.json",
        "nonconvex_lr.json",
        "hetero_lr.json",
        "figures/hetero_digits_label_sorted_linear_test_accuracy.png",
        "figures/real_vs_replayed.png",
        "real/real.json",
    ):
        assert (q / f).exists(), f
    metrics = json.loads((q / "metrics.json").read_text())
    assert {r["cell"] for r in metrics["compare"]["rows"]} == {"homogeneous", "sqrt"}
    nc = {(r["problem"], r["cell"], r["label"]) for r in metrics["nonconvex"]["rows"]}
    assert nc == {
        (p, c, m)
        for p in ("mlp_mnist1d", "cnn_digits")
        for c in ("homogeneous", "sqrt")
        for m in ("minibatch", "asgd", "asgd_adaptive", "ringmaster")
    }
    het = {(r["problem"], r["cell"], r["label"]) for r in metrics["hetero"]["rows"]}
    assert het == {
        ("digits_label_sorted", "linear", m)
        for m in ("asgd", "asgd_random", "malenia", "rescaled_asgd")
    }
    # real processes, replayed with their own durations: the same arrivals
    assert metrics["real"] and all(r["same_arrivals"] for r in metrics["real"].values())
    labels = {r["label"] for r in metrics["compare"]["rows"] if r["cell"] == "sqrt"}
    assert {"rennala_n", "rennala_n_cancel", "ringmaster_n"} <= labels
    full_after = {p: p.read_bytes() for p in (clone / "results" / "full").rglob("*") if p.is_file()}
    assert full_after == full_before  # the published profile is untouched
    second = subprocess.run(
        ["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
