"""Every figure of the report (matplotlib, the Agg backend set before pyplot is imported): curves
with 95% bands over seeds, the delay histogram, times to target, scaling with n, real processes
against the simulator."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core.records import read_history  # noqa: E402
from pipeline.report.load import ASYNC  # noqa: E402
from pipeline.report.stats import band  # noqa: E402


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def palette(n: int) -> list:
    """``n`` distinct colours: matplotlib's default ten (tab10), tab20 beyond ten labels (a
    comparison with every method and variant), cycling only past twenty."""
    base = list(plt.get_cmap("tab10" if n <= 10 else "tab20").colors)
    return [base[i % len(base)] for i in range(n)]


def _curves(runs: list[dict], x_key: str, y_key: str):
    xs, ys = [], []
    for s in runs:
        h = read_history(s["dir"] / "history.csv")
        ys.append(np.array([np.nan if r.get(y_key) is None else r[y_key] for r in h], float))
        xs.append(np.array([r[x_key] for r in h], float))
    return xs, ys


def fig_bands(
    by_label: dict[str, list[dict]],
    x_key: str,
    y_key: str,
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    target: float | None = None,
    log: bool = True,
    ref_lines: dict | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Mean over seeds with its 95% band (t interval of the mean of log10 y when ``log``)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lo_y, hi_y = math.inf, 0.0
    labels = sorted(by_label)
    for label, color in zip(labels, palette(len(labels)), strict=True):
        runs = by_label[label]
        xs, ys = _curves(runs, x_key, y_key)
        end = min(x[-1] for x in xs)
        grid = np.linspace(0.0, end, 200)
        mid, lo, hi = band(xs, ys, grid, log=log)
        (line,) = ax.plot(
            grid, mid, color=color, label=f"{label} (lr {runs[0]['lr']:.3g}, {len(runs)} seeds)"
        )
        finite = mid[np.isfinite(mid) & (mid > 0)]
        if finite.size:
            lo_y, hi_y = min(lo_y, float(finite.min())), max(hi_y, float(finite.max()))
        if ylim is not None:  # a quantity bounded to ylim (accuracy): so is its band
            lo, hi = np.clip(lo, *ylim), np.clip(hi, *ylim)
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=1, label="target")
    for name, v in (ref_lines or {}).items():
        ax.axhline(v, color="k", ls="--", lw=0.8, label=name)
    if log:  # the bands of a wandering seed can span decades: frame the means
        ax.set_yscale("log")
        if hi_y > 0:
            ax.set_ylim(max(lo_y / 10, 1e-12), hi_y * 10)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6)
    return save(fig, path)


PAPER_MAX_DELAY_OVER_N = 35.0  # the paper's largest delay, about 35 n (its real machine)


def fig_delays(run: dict, path: Path) -> Path:
    """Histogram of one asynchronous SGD run's delays, with n, its largest delay and the
    paper's."""
    delays = np.loadtxt(run["dir"] / "events.csv", delimiter=",", skiprows=1, usecols=2)
    n, mx = run["n_workers"], int(delays.max())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.hist(delays, bins=min(100, mx + 1), log=True, color="tab:blue")
    ax.axvline(n, color="k", ls="--", label=f"n = {n}")
    ax.axvline(mx, color="tab:red", ls="--", label=f"max delay = {mx} ({mx / n:.1f} n)")
    ax.axvline(
        PAPER_MAX_DELAY_OVER_N * n,
        color="tab:green",
        ls=":",
        label=f"paper's max, about {PAPER_MAX_DELAY_OVER_N:g} n",
    )
    ax.set_xlabel("delay (server updates)")
    ax.set_ylabel("count (log)")
    ax.set_title(f"Delays of asynchronous SGD, {run['topology']} workers, seed {run['seed']}")
    ax.legend(fontsize=8)
    return save(fig, path)


def fig_time_to_target(rows, ratios, path: Path) -> Path:
    cells = sorted({r["cell"] for r in rows})
    fig, axes = plt.subplots(1, len(cells), figsize=(3.8 * len(cells), 3.9), squeeze=False)
    theory = {r["cell"]: r for r in ratios}
    for ax, cell in zip(axes[0], cells, strict=True):
        rs = [r for r in rows if r["cell"] == cell and r["time_to_target"]]
        x = np.arange(len(rs))
        m = np.array([r["time_to_target"]["mean"] for r in rs])
        lo = np.array([r["time_to_target"]["lo"] or r["time_to_target"]["mean"] for r in rs])
        hi = np.array([r["time_to_target"]["hi"] or r["time_to_target"]["mean"] for r in rs])
        ax.bar(x, m, 0.6, yerr=[m - np.maximum(lo, 1e-9), hi - m], capsize=2, color="tab:blue")
        th = theory[cell]
        asgd = next((r for r in rs if r["label"] == ASYNC), None)
        if asgd and th["theory_mb_over_async"]:
            ax.axhline(
                asgd["time_to_target"]["mean"] * th["theory_mb_over_async"],
                color="k",
                ls=":",
                lw=1,
                label="asgd x tau_n/H_n (theory's minibatch)",
            )
            ax.legend(fontsize=6)
        ax.set_xticks(x, [r["label"] for r in rs], rotation=70, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(cell, fontsize=9)
    axes[0][0].set_ylabel("time to target (mean, 95% CI)")
    return save(fig, path)


def fig_scaling(rows, labels, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ns = np.array([r["n"] for r in rows], float)
    for lb in labels:
        m = np.array([(r["times"].get(lb) or {}).get("mean", np.nan) or np.nan for r in rows])
        lo = np.array([(r["times"].get(lb) or {}).get("lo") or np.nan for r in rows], float)
        hi = np.array([(r["times"].get(lb) or {}).get("hi") or np.nan for r in rows], float)
        (line,) = ax.plot(ns, m, "o-", label=lb, ms=3)
        ax.fill_between(ns, np.maximum(lo, 1e-9), hi, color=line.get_color(), alpha=0.15, lw=0)
    ax2 = ax.twinx()
    ax2.plot(
        ns, [r["theory_async_over_opt"] or np.nan for r in rows], "k:", label="theory T_ASGD/T_opt"
    )
    ax2.set_ylabel("theory T_ASGD / T_opt")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("workers n (tau_i = sqrt(i))")
    ax.set_ylabel("time to target (mean, 95% band)")
    ax.set_title("Asynchronous SGD against the optimal methods as n grows", fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    return save(fig, path)


def fig_real(
    runs: dict[str, dict[str, dict]],
    methods: list[str],
    scale: float,
    target: float | None,
    n_workers: int,
    path: Path,
) -> Path:
    """F - F* against wall-clock seconds of the real runs (``runs["real"]``), their replays and
    the worker-time model (simulated seconds x ``scale``), one colour per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = dict(zip(methods, palette(len(methods)), strict=True))
    style = {"real": "-", "replayed": "--", "model": ":"}
    for kind, by_method in runs.items():
        for m in methods:
            s = by_method.get(m)
            if s is None:
                continue
            h = read_history(s["dir"] / "history.csv")
            factor = scale if kind == "model" else 1.0
            ax.plot([r["time"] * factor for r in h], [r["suboptimality"] for r in h],
                    style[kind], color=colors[m], lw=1.2,
                    label=m if kind == "real" else None)  # fmt: skip
    ax.plot([], [], "k-", label="real (engine=rpc)")
    ax.plot([], [], "k--", label="replayed durations (sim)")
    ax.plot([], [], "k:", label="worker-time model (sim)")
    if target:
        ax.axhline(target, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("wall-clock seconds (model: simulated x time_scale)")
    ax.set_ylabel("F(x) - F*")
    ax.set_title(f"{n_workers} real workers, tau_i = i emulated, paper problem")
    ax.legend(fontsize=7)
    return save(fig, path, dpi=120)
