"""Section ``compare``: the paper's least squares under every worker-time model, each method at
its tuned stepsize over the evaluation seeds: the ratio table, the times to target, and the
suboptimality and time-to-target figures."""

from __future__ import annotations

from pipeline.report.figures import fig_bands, fig_time_to_target
from pipeline.report.load import load_cells, read_json
from pipeline.report.sections.base import Context, Section, cell_ratios, row_stats
from pipeline.report.text import fmt_est, fmt_lr, fmt_num, fmt_sig, table


def section_compare(ctx: Context) -> Section:
    """The paper's least squares under every worker-time model: each method at its tuned
    stepsize over the evaluation seeds."""
    cells = load_cells(ctx.results / "runs")
    tuned = read_json(ctx.results / "tuned_lr.json").get("cells", {})
    sec = Section("Comparison on the paper's least squares")
    if not cells:
        return sec
    ctx.target = ctx.target or next(iter(next(iter(cells.values())).values()))[0].get("target")
    rows, ratios = [], []
    for cell, by_label in cells.items():
        for label in sorted(by_label):
            rows.append(row_stats(cell, label, by_label[label], by_label, tuned.get(cell, {})))
        ratios.append(cell_ratios(cell, by_label))
    sec.metrics = {"rows": rows, "ratios": ratios}
    n = rows[0]["seeds"]
    sec.lines += [
        f"Target F - F* <= {ctx.target}; simulated seconds; each method at its own tuned "
        f"stepsize (bracketed, see [Tuning](#tuning)); mean over {n} seeds with a 95% t "
        "interval; ratios with a log-scale Welch t interval; **bold** ratios are significant "
        "(the interval excludes 1). `–`: not every seed reached the target. The optimal "
        "methods run S, R = ceil(sigma^2/eps) (their default; see the setting column) or n; "
        "m* of T_opt is another number: the m that minimizes H_m (k + s/m) in the "
        "fixed-model bound T_opt (at most n; docs/methods.md, section 5).",
        "",
        "### Ratios",
        "",
    ]
    hdr = [
        "topology",
        "minibatch / asgd",
        "tau_n/H_n (theory)",
        "asgd / best optimal at ceil(sigma^2/eps)",
        "asgd / best optimal at n",
        "T_ASGD/T_opt (theory)",
        "m* of T_opt (theory)",
    ]
    body = []
    for r in ratios:

        def cellf(k, r=r):
            return fmt_sig(r[k], r.get(f"{k}_significant"))

        body.append(
            [
                f'<a id="{r["anchor"]}"></a>{r["cell"]}',
                cellf("mb_over_async"),
                fmt_num(r["theory_mb_over_async"]),
                cellf("async_over_opt_mstar") + f" ({r['async_over_opt_mstar_best'] or '–'})",
                cellf("async_over_opt_n") + f" ({r['async_over_opt_n_best'] or '–'})",
                fmt_num(r["theory_async_over_opt"]),
                fmt_num(r["theory_m_star"]),
            ]
        )
    sec.lines += table(hdr, body) + ["", "### Times to target", ""]
    hdr = [
        "topology",
        "method",
        "setting",
        "tuned lr",
        "reached",
        "time to target",
        "gradients to target",
        "time / asgd's",
        "final F-F*",
        "max delay",
        "mean delay",
    ]
    body = []
    for r in rows:
        body.append(
            [
                f'<a id="{r["anchor"]}"></a>{r["cell"]}',
                r["label"],
                r["setting"] or "",
                fmt_lr(r),
                f"{r['reached']}/{r['seeds']}",
                fmt_est(r["time_to_target"]),
                fmt_est(r["gradients_to_target"]),
                fmt_sig(r["ratio_to_asgd"], r["significant_vs_asgd"]),
                fmt_num(r["final_suboptimality"]),
                fmt_num(r["max_delay"]),
                fmt_num(r["mean_delay"]),
            ]
        )
    sec.lines += table(hdr, body)
    if any(r["cap_hit"] for r in rows):
        sec.lines += [
            "",
            "† the tuning grid reached the cap (`lr_scale_range`) before the "
            "selection was interior: the best stepsize may lie beyond it.",
        ]
    for cell, by_label in cells.items():
        for x_key, xl in (("gradients", "gradients"), ("time", "simulated time")):
            p = ctx.figs / f"suboptimality_vs_{x_key}_{cell}.png"
            sec.figures.append(
                fig_bands(
                    by_label,
                    x_key,
                    "suboptimality",
                    p,
                    f"F - F* against {xl}, {cell} workers (95% bands)",
                    xl,
                    "F(x) - F*",
                    ctx.target,
                )
            )
    sec.figures.append(fig_time_to_target(rows, ratios, ctx.figs / "time_to_target.png"))
    return sec
