"""The report's ``hetero`` section against numbers computed here from a small real run set's
records (summaries and history.csv read by hand, intervals from scipy's t quantiles); the
comparison with Picky SGD among its methods; a results folder without hetero records."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pipeline.report import build_report
from pipeline.report.cli import main as report_main
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg
from tests.selections import selection

PROBLEM = "digits_label_sorted"
CELL = "linear"
HETERO = {"asgd": 0.1, "asgd_random": 0.1, "malenia": 1.0, "rescaled_asgd": 0.2}
TARGET, ACCURACY = 0.1, 0.9  # F - F* (tuning's target) and test accuracy
SEEDS = (1, 2, 3)
COMPARE = {"minibatch": 1.0, "asgd": 0.03, "picky": 0.03}


def build_results(root: Path) -> Path:
    """The least-squares comparison (Picky SGD among its methods) and the hetero stage's
    records, in the layout the study writes."""
    j = 0
    for m, lr in COMPARE.items():
        for seed in (1, 2):
            cfg = compose_cfg(
                "experiment=scaling_sqrt", "topology=sqrt", "topology.n_workers=8",
                "topology.noise=exponential", "budget.gradients=3000", "target=0.05",
                "tracking=none", f"optimizer={m}", f"optimizer.lr={lr}", f"seed={seed}",
            )  # fmt: skip
            run_experiment(cfg, root / "runs" / "sqrt" / "base" / str(j))
            j += 1
    tuned = {
        "profile": "test",
        "target": 0.05,
        "cells": {"sqrt": {m: selection(lr) for m, lr in COMPARE.items()}},
    }
    (root / "tuned_lr.json").write_text(json.dumps(tuned))
    j = 0
    for m, lr in HETERO.items():
        for seed in SEEDS:
            cfg = compose_cfg(
                "experiment=heterogeneous_digits", "topology.noise=exponential",
                "budget.gradients=1500", f"target={TARGET}", "eval_every=10", "tracking=none",
                f"optimizer={m}", f"lr_table.{m}={lr}", "lr_scale=1.0", f"seed={seed}",
            )  # fmt: skip
            run_experiment(cfg, root / "hetero" / PROBLEM / "runs" / CELL / "base" / str(j))
            j += 1
    cells = {CELL: {m: selection(lr, cap=m == "malenia") for m, lr in HETERO.items()}}
    sel = {"target": TARGET, "accuracy": ACCURACY, "grad_norm_sq": 0.01, "cells": cells}
    (root / "hetero_lr.json").write_text(
        json.dumps({"profile": "test", "problems": {PROBLEM: sel}})
    )
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_results(tmp_path_factory.mktemp("results"))


def _t(df: float) -> float:
    return float(stats.t.ppf(0.975, df))


def _mean_ci(v: list[float], lo: float | None = None, hi: float | None = None) -> tuple:
    """Mean and t interval by hand, ends clipped to [lo, hi]."""
    v = np.asarray(v, float)
    m, half = v.mean(), _t(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    a, b = m - half, m + half
    return m, a if lo is None else max(lo, a), b if hi is None else min(hi, b)


def _ratio_ci(a: list[float], b: list[float]) -> tuple:
    """mean(a)/mean(b) with the log-scale Welch t interval, by hand."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    r = a.mean() / b.mean()
    va, vb = a.var(ddof=1) / (len(a) * a.mean() ** 2), b.var(ddof=1) / (len(b) * b.mean() ** 2)
    nu = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t(nu) * math.sqrt(va + vb)
    return r, r * math.exp(-half), r * math.exp(half)


def _records(root: Path) -> dict[str, list[tuple[dict, list[dict]]]]:
    """method -> [(summary, history rows)] over the seeds, read straight from the files."""
    out: dict[str, list] = {}
    for job in sorted((root / "hetero" / PROBLEM / "runs" / CELL / "base").iterdir()):
        s = json.loads((job / "summary.json").read_text())
        with open(job / "history.csv", newline="") as f:
            h = list(csv.DictReader(f))
        out.setdefault(s["method"], []).append((s, h))
    return out


def _first_at_accuracy(h: list[dict]) -> float | None:
    return next(
        (
            float(r["time"])
            for r in h
            if r["test_accuracy"] and float(r["test_accuracy"]) >= ACCURACY
        ),
        None,
    )


def _check(est: dict | None, want: tuple) -> None:
    assert est is not None
    assert (est["mean"], est["lo"], est["hi"]) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_hetero_rows_and_ratios_from_the_records(results):
    report = build_report(results)
    metrics = json.loads((results / "metrics.json").read_text())
    assert set(metrics["hetero"]) == {"rows", "ratios"}
    rows = {r["label"]: r for r in metrics["hetero"]["rows"]}
    assert set(rows) == set(HETERO)
    rec = _records(results)
    times = {}
    for m, runs in rec.items():
        r = rows[m]
        assert r["problem"] == PROBLEM and r["cell"] == CELL and r["seeds"] == len(SEEDS)
        assert r["tuned_lr"] == HETERO[m] and r["cap_hit"] == (m == "malenia")
        assert (r["split"], r["n"]) == ("label_sorted", 10)
        ttt = [s["time_to_target"] for s, _ in runs]
        tta = [_first_at_accuracy(h) for _, h in runs]
        times[m] = {"time_to_target": ttt, "time_to_accuracy": tta}
        for key, vals in times[m].items():
            assert r[f"{key}_reached"] == sum(v is not None for v in vals)
            if None in vals:
                assert r[key] is None
            else:
                _check(r[key], _mean_ci(vals, lo=0.0))
        _check(r["final_suboptimality"], _mean_ci([s["final_suboptimality"] for s, _ in runs], 0.0))
        _check(
            r["final_test_accuracy"],
            _mean_ci([s["final_test_accuracy"] for s, _ in runs], 0.0, 1.0),
        )
    # the last F - F* of the history is the summary's final value
    s, h = rec["asgd"][0]
    assert float(h[-1]["suboptimality"]) == pytest.approx(s["final_suboptimality"])
    ratios = {(x["label"], x["measure"]): x for x in metrics["hetero"]["ratios"]}
    assert set(ratios) == {(m, k) for m in HETERO if m != "asgd" for k in times["asgd"]}
    text = (results / "report.md").read_text()
    flags = []
    for (m, key), x in ratios.items():
        a, b = times[m][key], times["asgd"][key]
        if None in a or None in b:
            assert x["over_asgd"] is None and x["over_asgd_significant"] is None
            continue
        want = _ratio_ci(a, b)
        _check(x["over_asgd"], want)
        sig = want[1] > 1 or want[2] < 1
        assert x["over_asgd_significant"] == sig
        flags.append(sig)
        lo, hi = (f"{v:.3g}" for v in want[1:])
        assert (f"**{want[0]:.3g} [{lo}, {hi}]**" in text) == sig
    assert set(flags) == {True, False}  # both kinds are in this run set
    # malenia never reaches F - F* <= TARGET within the budget: a dash, not a crash
    assert rows["malenia"]["time_to_target_reached"] == 0
    # the answer links each accuracy ratio to its table row
    for x in ratios.values():
        if x["measure"] == "time_to_accuracy" and x["over_asgd"]:
            assert f"](#{x['anchor']})" in metrics["answer"][0]
            assert f'<a id="{x["anchor"]}"></a>' in text
    names = {p.name for p in report["figures"]}
    for y in ("test_accuracy", "suboptimality"):
        assert f"hetero_{PROBLEM}_{CELL}_{y}.png" in names
    sections = re.findall(r'<a id="([a-z]+)"></a>\n## ', text)
    assert sections.index("compare") < sections.index("hetero") < sections.index("tuning")
    assert "nonconvex" not in sections  # no non-convex records here
    tuning = text.split("## Tuning")[1]
    assert f"| hetero {PROBLEM} | {CELL} | malenia | 1 |" in tuning and "cap hit †" in tuning
    assert f"hetero {PROBLEM} {CELL} malenia" in metrics["tuning"]["cap_hit"]


def test_picky_in_the_comparison(results):
    """A method the report's code does not name (Picky SGD) in the comparison's tables and
    figures: its own row and ratio, no setting, the figures' curves."""
    build_report(results)
    metrics = json.loads((results / "metrics.json").read_text())
    rows = {r["label"]: r for r in metrics["compare"]["rows"]}
    assert set(rows) == set(COMPARE)
    picky, asgd = rows["picky"], rows["asgd"]
    assert picky["method"] == "picky" and picky["setting"] == "" and picky["tuned_lr"] == 0.03
    t = [
        json.loads((results / "runs/sqrt/base" / str(j) / "summary.json").read_text())
        for j in range(6)
    ]
    tp = [s["time_to_target"] for s in t if s["method"] == "picky"]
    ta = [s["time_to_target"] for s in t if s["method"] == "asgd"]
    _check(picky["ratio_to_asgd"], _ratio_ci(tp, ta))
    assert asgd["ratio_to_asgd"] is None
    # no optimal method ran: their columns are dashes
    ra = metrics["compare"]["ratios"][0]
    assert ra["async_over_opt_mstar"] is None and ra["async_over_opt_mstar_best"] is None
    assert '<a id="row-sqrt-picky"></a>sqrt | picky |' in (results / "report.md").read_text()


def test_a_results_folder_without_hetero_records(results, tmp_path):
    """Older results (no hetero stage): the CLI still writes the report, without the section."""
    old = tmp_path / "old"
    shutil.copytree(results, old, ignore=shutil.ignore_patterns("hetero*", "figures", "*.md"))
    (old / "metrics.json").unlink(missing_ok=True)
    report_main(["--results", str(old), "--no-mlflow"])
    metrics = json.loads((old / "metrics.json").read_text())
    assert metrics["hetero"] == {} and metrics["compare"]["rows"]
    text = (old / "report.md").read_text()
    assert '<a id="hetero"></a>' not in text and "Heterogeneous data" not in text
    assert not list((old / "figures").glob("hetero_*"))
    assert "hetero" not in text.split("## Tuning")[1]


def test_a_seed_without_a_final_value_gives_no_estimate():
    """A run stopped before its first evaluation has no final value: a dash, not a crash."""
    from pipeline.report.sections.problems import final_est
    from pipeline.report.text import fmt_est

    runs = [{"final_suboptimality": 0.5}, {"final_suboptimality": None}]
    assert final_est(runs, "final_suboptimality", floor=0.0) is None and fmt_est(None) == "–"
    e = final_est(runs[:1] * 2, "final_suboptimality", floor=0.0)
    assert (e["mean"], e["n"]) == (0.5, 2)
