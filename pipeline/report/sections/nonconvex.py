"""Section ``nonconvex``: the MLP and CNN, times to the test-accuracy and gradient-norm targets
taken from each run's evaluations, with their curves."""

from __future__ import annotations

from pipeline.report.sections.base import Context, Section, cell_ratios
from pipeline.report.sections.problems import (
    curve_figures,
    id_cell,
    problem_row,
    reached_cell,
    stage_problems,
)
from pipeline.report.text import anchor, fmt_est, fmt_lr, fmt_num, fmt_sig, table

TIMES = ("time_to_target", "time_to_accuracy", "time_to_grad_norm")
CURVES = (("test_accuracy", False, "test accuracy"), ("loss", True, "training loss"))


def section_nonconvex(ctx: Context) -> Section:
    sec = Section("Non-convex models")
    rows, ratios = [], []
    for prob, d, cells in stage_problems(ctx, "nonconvex"):
        if not sec.lines:
            sec.lines += [
                "Tuned like the least squares (bracketed grid, least time to the training-loss "
                "target, one tuning seed), then run over the evaluation seeds. Measured: "
                "simulated time to the test-accuracy target and to the gradient-norm target "
                "(||grad F||^2 on the training set, the theory's eps, counted only once the "
                "training loss is below its target: the initial point's gradient is already "
                "small, a plateau rather than a solution), from each run's evaluations. Mean "
                "with 95% interval; **bold** ratios are significant.",
                "",
            ]
        for cell, by_label in cells.items():
            for label in sorted(by_label):
                rows.append(problem_row("nc", prob, cell, label, by_label[label], d, TIMES))
            for key in ("time_to_accuracy", "time_to_grad_norm"):
                ra = cell_ratios(cell, by_label, key)
                ratios.append(
                    {
                        "problem": prob,
                        "cell": cell,
                        "measure": key,
                        "anchor": anchor("ncratio", prob, cell, key),
                        "mb_over_async": ra["mb_over_async"],
                        "mb_over_async_significant": ra["mb_over_async_significant"],
                        "theory_mb_over_async": ra["theory_mb_over_async"],
                    }
                )
            sec.figures += curve_figures(ctx, "nonconvex", prob, cell, by_label, d, CURVES)
        sec.lines += [
            f"### {prob}",
            "",
            f"Targets: test accuracy >= {d['accuracy']}, ||grad F||^2 <= "
            f"{d['grad_norm_sq']}; tuning on training loss <= {d['target']}.",
            "",
        ]
        body = [
            [
                id_cell(r),
                r["label"],
                fmt_lr(r),
                reached_cell(r, "time_to_accuracy"),
                reached_cell(r, "time_to_grad_norm"),
                fmt_est(r["final_test_accuracy"]),
            ]
            for r in rows
            if r["problem"] == prob
        ]
        sec.lines += table(
            [
                "workers",
                "method",
                "tuned lr",
                "time to accuracy (reached)",
                "time to grad-norm (reached)",
                "final test accuracy",
            ],
            body,
        )
        body = [
            [
                id_cell(r),
                r["measure"],
                fmt_sig(r["mb_over_async"], r["mb_over_async_significant"]),
                fmt_num(r["theory_mb_over_async"]),
            ]
            for r in ratios
            if r["problem"] == prob
        ]
        sec.lines += [
            "",
            *table(["workers", "measure", "minibatch / asgd", "tau_n/H_n"], body),
            "",
        ]
    if sec.lines:  # the stage ran (an older results folder may have no such records)
        sec.metrics = {"rows": rows, "ratios": ratios}
    return sec
