"""Section ``scaling``: times to target as the number of workers n grows (tau_i = sqrt(i), the
noisy quadratic), against the theory's T_ASGD / T_opt."""

from __future__ import annotations

from pipeline.report.figures import fig_scaling
from pipeline.report.load import OPTIMAL_MSTAR, load_cells, read_json, times_of
from pipeline.report.sections.base import Context, Section, cell_ratios, est_dict
from pipeline.report.stats import mean_interval
from pipeline.report.text import anchor, fmt_est, fmt_num, setting, table


def section_scaling(ctx: Context) -> Section:
    sec = Section("Scaling with n (tau_i = sqrt(i), noisy quadratic)")
    root = ctx.results / "scaling" / "runs"
    cells = load_cells(root)
    tuned = read_json(ctx.results / "scaling_lr.json").get("cells", {})
    if not cells:
        return sec
    rows = []
    for cell, by_label in sorted(cells.items(), key=lambda kv: int(kv[0][1:])):
        first = next(iter(by_label.values()))[0]
        row = {
            "n": first["n_workers"],
            "anchor": anchor("scaling", cell),
            "theory_async_over_opt": first.get("theory_ratio_asgd_over_opt"),
            "theory_m_star": first.get("theory_m_star"),
            "times": {},
            "cap_hit": [],
        }
        for label, runs in by_label.items():
            t = times_of(runs)
            row["times"][label] = est_dict(mean_interval(t, floor=0.0)) if t else None
            if tuned.get(cell, {}).get(label, {}).get("cap_hit"):
                row["cap_hit"].append(label)
        ra = cell_ratios(cell, by_label)
        row["async_over_opt_mstar"] = ra["async_over_opt_mstar"]
        row["async_over_opt_mstar_significant"] = ra["async_over_opt_mstar_significant"]
        rows.append(row)
    labels = sorted({lb for r in rows for lb in r["times"]})
    settings = sorted(
        {
            setting(runs[0]).split(",")[0]
            for by_label in cells.values()
            for label, runs in by_label.items()
            if label in OPTIMAL_MSTAR
        },
        reverse=True,  # S (rennala) before R (ringmaster)
    )
    sec.lines += [
        "Time to target (f - f* <= the preset's target) at each n, each method tuned at that n "
        "(bracketed), mean over the seeds with a 95% interval; `–`: not every seed reached. "
        f"`rennala` and `ringmaster` run {'; '.join(settings) or '–'}, "
        "`ringmaster_n` R = n. m* of T_opt is another number: the m that minimizes "
        "H_m (k + s/m) in the fixed-model bound T_opt (at most n; docs/methods.md, section 5).",
        "",
    ]
    body = []
    for r in rows:
        cells_txt = [
            fmt_est(r["times"].get(lb)) + ("†" if lb in r["cap_hit"] else "") for lb in labels
        ]
        ratio = fmt_est(r["async_over_opt_mstar"])
        if r["async_over_opt_mstar_significant"]:
            ratio = f"**{ratio}**"
        body.append(
            [
                f'<a id="{r["anchor"]}"></a>{r["n"]}',
                *cells_txt,
                ratio,
                fmt_num(r["theory_async_over_opt"]),
                fmt_num(r["theory_m_star"]),
            ]
        )
    sec.lines += table(
        [
            "n",
            *labels,
            "asgd / best optimal at ceil(sigma^2/eps)",
            "T_ASGD/T_opt (theory)",
            "m* of T_opt (theory)",
        ],
        body,
    )
    sec.figures.append(fig_scaling(rows, labels, ctx.figs / "scaling.png"))
    sec.metrics = {"rows": rows}
    return sec
