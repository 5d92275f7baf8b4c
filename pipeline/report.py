"""Figures and tables from the study's records (``results/``), nothing else.

    python -m pipeline.report [--results results]

Writes ``results/figures/*.png``, ``results/metrics.json`` and ``results/report.md``, and logs
them to an MLflow run ``report`` and to the parent runs of the sweeps they summarise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.records import read_history  # noqa: E402

OPTIMAL = ("rennala", "ringmaster")
ASYNC = "asgd"


def load_runs(root: Path) -> list[dict]:
    runs = []
    for summary in sorted(root.glob("*/summary.json")):
        s = json.loads(summary.read_text())
        s["dir"] = summary.parent
        runs.append(s)
    return runs


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _mean(values):
    vals = [v for v in values if v is not None]
    return mean(vals) if vals and len(vals) == len(values) else None


def grid_edges(tuned_file: dict) -> set[tuple[str, str]]:
    """(topology, method) pairs whose selected stepsize is the largest or smallest tried."""
    edges = set()
    for topo, runs in (tuned_file.get("grid") or {}).items():
        for method, lr in tuned_file["lr"].get(topo, {}).items():
            tried = [r["lr"] for r in runs if r["method"] == method]
            if len(tried) > 1 and lr in (min(tried), max(tried)):
                edges.add((topo, method))
    return edges


def table_rows(
    runs_by_topo: dict[str, list[dict]], tuned: dict, edges: set | frozenset = frozenset()
) -> list[dict]:
    rows = []
    for topo, runs in runs_by_topo.items():
        by_m = defaultdict(list)
        for s in runs:
            by_m[s["method"]].append(s)
        ttt = {m: _mean([s.get("time_to_target") for s in g]) for m, g in by_m.items()}
        first = runs[0]
        opt_measured = [ttt[m] for m in OPTIMAL if ttt.get(m) is not None]
        for m, g in sorted(by_m.items()):
            rows.append({
                "topology": topo,
                "method": m,
                "tuned_lr": tuned.get(topo, {}).get(m, g[0]["lr"]),
                "lr_at_grid_edge": (topo, m) in edges,
                "seeds": len(g),
                "time_to_target": ttt[m],
                "gradients_to_target": _mean([s.get("gradients_to_target") for s in g]),
                "final_suboptimality": _mean([s.get("final_suboptimality") for s in g]),
                "max_delay": max(s["max_delay"] for s in g),
                "mean_delay": mean(s["mean_delay"] or 0 for s in g),
                "measured_mb_over_async": (
                    ttt["minibatch"] / ttt[ASYNC]
                    if ttt.get("minibatch") and ttt.get(ASYNC) else None
                ),
                "theory_mb_over_async": first.get("theory_ratio_mb_over_asgd"),
                "measured_async_over_opt": (
                    ttt[ASYNC] / min(opt_measured) if ttt.get(ASYNC) and opt_measured else None
                ),
                "theory_async_over_opt": first.get("theory_ratio_asgd_over_opt"),
            })  # fmt: skip
    return rows


def fig_vs(runs, x_key, path, title, xlabel):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in sorted(runs, key=lambda s: s["method"]):
        if s["seed"] != min(r["seed"] for r in runs):
            continue
        h = read_history(s["dir"] / "history.csv")
        y = [r["suboptimality"] if r["suboptimality"] is not None else r["loss"] for r in h]
        ax.plot([r[x_key] for r in h], y, label=f"{s['method']} (lr {s['lr']:.3g})")
    target = runs[0].get("target")
    if target:
        ax.axhline(target, color="grey", ls=":", lw=1, label="target")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("F(x) - F*")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig_delays(run, path):
    delays = np.loadtxt(run["dir"] / "events.csv", delimiter=",", skiprows=1, usecols=2)
    n, mx = run["n_workers"], int(delays.max())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.hist(delays, bins=min(100, mx + 1), log=True, color="tab:blue")
    ax.axvline(n, color="k", ls="--", label=f"n = {n}")
    ax.axvline(mx, color="tab:red", ls="--", label=f"max delay = {mx} ({mx / n:.1f} n)")
    ax.set_xlabel("delay (server updates)")
    ax.set_ylabel("count (log)")
    ax.set_title(f"Delays of asynchronous SGD, {run['topology']} workers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig_time_to_target(rows, path):
    topos = sorted({r["topology"] for r in rows})
    fig, axes = plt.subplots(1, len(topos), figsize=(3.6 * len(topos), 3.8), squeeze=False)
    for ax, topo in zip(axes[0], topos, strict=True):
        rs = [r for r in rows if r["topology"] == topo]
        mb = next((r["time_to_target"] for r in rs if r["method"] == "minibatch"), None)
        names = [r["method"] for r in rs]
        measured = [
            (r["time_to_target"] / mb) if r["time_to_target"] and mb else np.nan for r in rs
        ]
        ratio = rs[0]["theory_mb_over_async"] or np.nan
        opt = rs[0]["theory_async_over_opt"] or np.nan
        theory = [1.0 if m == "minibatch" else (1 / ratio / opt if m in OPTIMAL else 1 / ratio)
                  for m in names]  # fmt: skip
        x = np.arange(len(names))
        ax.bar(x - 0.2, measured, 0.4, label="measured")
        ax.bar(x + 0.2, theory, 0.4, label="theory", alpha=0.6)
        ax.set_xticks(x, names, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(topo, fontsize=9)
    axes[0][0].set_ylabel("time to target / minibatch's")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig_scaling(scaling: dict[int, list[dict]], path) -> list[dict]:
    rows = []
    for n, runs in sorted(scaling.items()):
        best: dict[str, float] = {}
        for s in runs:
            t = s.get("time_to_target")
            if s["status"] == "finished" and t is not None:
                best[s["method"]] = min(best.get(s["method"], math.inf), t)
        rows.append({"n": n, **{f"ttt_{m}": v for m, v in best.items()},
                     "theory_async_over_opt": runs[0].get("theory_ratio_asgd_over_opt"),
                     "theory_m_star": runs[0].get("theory_m_star")})  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = sorted({k[4:] for r in rows for k in r if k.startswith("ttt_")})
    ns = [r["n"] for r in rows]
    for m in methods:
        ax.plot(ns, [r.get(f"ttt_{m}", np.nan) for r in rows], "o-", label=m)
    ax2 = ax.twinx()
    ax2.plot(ns, [r["theory_async_over_opt"] for r in rows], "k:", label="theory T_ASGD/T_opt")
    ax2.set_ylabel("theory T_ASGD / T_opt")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("workers n (tau_i = sqrt(i))")
    ax.set_ylabel("time to target (best stepsize)")
    ax.set_title("Asynchronous SGD against the optimal methods as n grows")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return rows


COLUMNS = [
    ("topology", "topology"), ("method", "method"), ("tuned_lr", "tuned lr"),
    ("time_to_target", "time to target"), ("gradients_to_target", "gradients to target"),
    ("final_suboptimality", "final F-F*"),
    ("measured_mb_over_async", "MB/async measured"), ("theory_mb_over_async", "tau_n/H_n"),
    ("measured_async_over_opt", "async/optimal measured"),
    ("theory_async_over_opt", "T_ASGD/T_opt"), ("max_delay", "max delay"),
    ("mean_delay", "mean delay"),
]  # fmt: skip


def markdown(rows, scaling_rows, target, figures) -> str:
    lines = ["# Asynchronous vs minibatch SGD: results", "",
             f"Target: F - F* <= {target}. Times are simulated seconds (event engine); each "
             "method at its own tuned stepsize; ratios of times to target, with the theory's "
             "fixed-model prediction beside each (METHODS.md).", ""]  # fmt: skip
    lines += ["| " + " | ".join(h for _, h in COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]  # fmt: skip
    for r in rows:
        cells = [_fmt(r[k]) + ("*" if k == "tuned_lr" and r["lr_at_grid_edge"] else "")
                 for k, _ in COLUMNS]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["lr_at_grid_edge"] for r in rows):
        lines += ["", "\\* selected at the edge of the tuning grid: the best stepsize may lie "
                  "beyond it (widen `lr_scales` in params.yaml)."]  # fmt: skip
    if scaling_rows:
        methods = sorted({k[4:] for r in scaling_rows for k in r if k.startswith("ttt_")})
        lines += ["", "## Scaling with n (tau_i = sqrt(i), noisy quadratic)", "",
                  "| n | " + " | ".join(methods) + " | theory m* | theory T_ASGD/T_opt |",
                  "|" + "---|" * (len(methods) + 3)]  # fmt: skip
        for r in scaling_rows:
            cells = [_fmt(r.get(f"ttt_{m}")) for m in methods]
            theory = f"{_fmt(r['theory_m_star'])} | {_fmt(r['theory_async_over_opt'])}"
            lines.append(f"| {r['n']} | " + " | ".join(cells) + f" | {theory} |")
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def build_report(results: Path) -> dict:
    figs = results / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    tuned_file = results / "tuned_lr.json"
    tuned = json.loads(tuned_file.read_text()) if tuned_file.exists() else {"lr": {}}
    runs_by_topo = {p.name: load_runs(p) for p in sorted((results / "runs").iterdir())
                    if p.is_dir() and load_runs(p)}  # fmt: skip
    if not runs_by_topo:
        raise SystemExit(f"error: no runs under {results / 'runs'}")
    rows = table_rows(runs_by_topo, tuned["lr"], grid_edges(tuned))
    written = []
    for topo, runs in runs_by_topo.items():
        p = figs / f"suboptimality_vs_gradients_{topo}.png"
        fig_vs(runs, "gradients", p, f"F - F* against gradients, {topo} workers", "gradients")
        written.append(p)
        p = figs / f"suboptimality_vs_time_{topo}.png"
        fig_vs(runs, "time", p, f"F - F* against time, {topo} workers", "simulated time")
        written.append(p)
    home = runs_by_topo.get("homogeneous") or next(iter(runs_by_topo.values()))
    asgd = [s for s in home if s["method"] == ASYNC and s["seed"] == min(r["seed"] for r in home)]
    if asgd:
        p = figs / "delay_histogram.png"
        fig_delays(asgd[0], p)
        written.append(p)
    p = figs / "time_to_target.png"
    fig_time_to_target(rows, p)
    written.append(p)
    scaling_rows = []
    sroot = results / "scaling"
    if sroot.exists():
        scaling = {int(d.name[1:]): load_runs(d) for d in sroot.iterdir() if d.name.startswith("n")}
        if scaling:
            p = figs / "scaling.png"
            scaling_rows = fig_scaling(scaling, p)
            written.append(p)
    target = next(iter(runs_by_topo.values()))[0].get("target")
    metrics = {"target": target, "table": rows, "scaling": scaling_rows}
    (results / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (results / "report.md").write_text(markdown(rows, scaling_rows, target, written))
    return {"figures": written, "metrics": metrics, "runs": runs_by_topo}


def log_to_mlflow(results: Path, report: dict) -> None:
    from pipeline.tracking import client_for, ensure_experiment

    client = client_for(None)
    exp = ensure_experiment(client, "async-sgd")
    run = client.create_run(exp, run_name="report", tags={"stage": "report"})
    for f in [*report["figures"], results / "report.md", results / "metrics.json"]:
        client.log_artifact(run.info.run_id, str(f), artifact_path="report")
    client.set_terminated(run.info.run_id, "FINISHED")
    for topo, runs in report["runs"].items():  # the sweep parents these figures summarise
        sweep_dir = str(runs[0]["dir"].parent.resolve())
        parents = client.search_runs(
            [exp],
            filter_string=f"tags.sweep_dir = '{sweep_dir}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        for f in report["figures"]:
            if parents and topo in f.name:
                client.log_artifact(parents[0].info.run_id, str(f), artifact_path="figures")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.report")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--no-mlflow", action="store_true")
    a = p.parse_args(argv)
    report = build_report(a.results)
    if not a.no_mlflow and not os.environ.get("ASGD_STUDY_NO_MLFLOW"):
        log_to_mlflow(a.results, report)
    print(f"wrote {a.results / 'report.md'}, {a.results / 'metrics.json'} and "
          f"{len(report['figures'])} figures")  # fmt: skip


if __name__ == "__main__":
    main()
