"""Section ``paper``: the paper's own figure (its stepsizes, 40 homogeneous workers, its budget)
and the delay histogram of asynchronous SGD."""

from __future__ import annotations

from collections import defaultdict

from pipeline.report.figures import fig_bands, fig_delays
from pipeline.report.load import ASYNC, load_runs
from pipeline.report.sections.base import Context, Section, est_dict
from pipeline.report.stats import mean_interval
from pipeline.report.text import fmt_est, fmt_num, table


def section_paper(ctx: Context) -> Section:
    """The paper's own figure: its stepsizes, 40 homogeneous workers, its budget."""
    sec = Section("The paper's figure, side by side")
    runs = load_runs(ctx.results / "paper") if (ctx.results / "paper").exists() else []
    if not runs:
        return sec
    by_label: dict[str, list[dict]] = defaultdict(list)
    for s in runs:
        by_label[s["method"]].append(s)
    s0 = runs[0]
    p = fig_bands(
        by_label,
        "gradients",
        "suboptimality",
        ctx.figs / "paper_suboptimality.png",
        f"F - F* against gradients, n = {s0['n_workers']}, the paper's stepsizes",
        "gradients",
        "F(x) - F*",
    )
    sec.figures.append(p)
    asgd = sorted(by_label.get(ASYNC, []), key=lambda s: s["seed"])
    if asgd:
        sec.figures.append(fig_delays(asgd[0], ctx.figs / "paper_delays.png"))
    finals = {m: mean_interval([s["final_suboptimality"] for s in g]) for m, g in by_label.items()}
    delays = {m: max(s["max_delay"] for s in g) for m, g in by_label.items()}
    sec.lines += [
        f"Layout of the paper's figure: F(x) - F* against gradients on a log scale, "
        f"n = {s0['n_workers']} workers with exponential job times (mean 1), "
        f"{s0['gradients']} gradients, the paper's tuned stepsizes (minibatch 0.19 on the sum "
        "= 7.6 on the mean, asynchronous 0.43, delay-adaptive 0.43 * 40 / max(40, tau)); "
        f"mean over {len(asgd) or len(runs)} seeds with a 95% band. The paper ran real "
        "processes (its delays came from a real machine; its largest delay was about 35 n); "
        "here the times are simulated.",
        "",
    ]
    sec.lines += table(
        ["method", "lr", "final F - F*", "largest delay (all seeds)"],
        [
            [m, fmt_num(g[0]["lr"]), fmt_est(est_dict(finals[m])), fmt_num(delays[m])]
            for m, g in sorted(by_label.items())
        ],
    )
    sec.metrics = {
        m: {"final_suboptimality": est_dict(finals[m]), "max_delay": delays[m]} for m in by_label
    }
    return sec
