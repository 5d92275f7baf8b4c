"""Section ``hetero``: heterogeneous data (each worker its own shard) under heterogeneous worker
times; plain asynchronous SGD against the methods that weigh every worker's data alike: times to
the F - F* and test-accuracy targets, final values, ratios to asgd, and the curves."""

from __future__ import annotations

from pipeline.report.load import ASYNC, times_of
from pipeline.report.sections.base import Context, Section, est_dict, significant
from pipeline.report.sections.problems import (
    curve_figures,
    final_est,
    id_cell,
    problem_row,
    reached_cell,
    stage_problems,
)
from pipeline.report.stats import ratio_interval
from pipeline.report.text import fmt_est, fmt_lr, fmt_sig, table

TIMES = ("time_to_target", "time_to_accuracy")
CURVES = (("test_accuracy", False, "test accuracy"), ("suboptimality", True, "F(x) - F*"))

INTRO = (
    "Heterogeneous data: each worker computes its gradients on its own shard of the training "
    "set (label-sorted: a few classes per worker; Dirichlet: each worker's class shares "
    "drawn at random), and the workers' job times differ. Plain asynchronous SGD (`asgd`) "
    "applies every gradient as it arrives, so the fast workers make most of the steps and it "
    "drifts towards the minimizer of their shards' loss rather than of F: it is biased. "
    "Methods that weigh every worker's data alike are not: `malenia` (Malenia SGD) averages "
    "each worker's gradients at the current point and steps on the mean over the workers; "
    "`rescaled_asgd` (Rescaled ASGD) scales worker i's stepsize by tau_i / tau_max, so every "
    "worker moves the point as much per unit of time; `asgd_random` (a uniformly drawn "
    "worker gets each new job) is unbiased too, but the slow workers get as many jobs as the "
    "fast ones, so its steps come at their pace. Tuned on the time to the F - F* target "
    "(bracketed grid, one tuning seed), then run over the evaluation seeds. Measured: the "
    "time to the F - F* target (the run's summary), the time to the test-accuracy target "
    "(the first evaluation at or above it, from each run's history), the final F - F* and "
    "test accuracy; mean over the seeds with a 95% t interval (reached: seeds that reached "
    "the target; `–` unless all did); ratios to asgd's time with a log-scale Welch t "
    "interval, **bold** when significant (the interval excludes 1); † the tuning grid hit "
    "its cap."
)


def ratios_to_asgd(prob: str, cell: str, by_label: dict, rows: list[dict]) -> list[dict]:
    """Each method's mean time over asgd's, per measure of ``TIMES``, with its interval and
    significance (None without asgd or where a seed did not reach)."""
    out = []
    anchors = {r["label"]: r["anchor"] for r in rows if r["problem"] == prob and r["cell"] == cell}
    for label in sorted(by_label):
        if label == ASYNC:
            continue
        for key in TIMES:
            t, ref = times_of(by_label[label], key), times_of(by_label.get(ASYNC, []), key)
            e = ratio_interval(t, ref) if t and ref else None
            out.append(
                {
                    "problem": prob,
                    "cell": cell,
                    "label": label,
                    "measure": key,
                    "anchor": anchors[label],
                    "over_asgd": est_dict(e),
                    "over_asgd_significant": significant(e),
                }
            )
    return out


def section_hetero(ctx: Context) -> Section:
    sec = Section("Heterogeneous data")
    rows, ratios = [], []
    for prob, d, cells in stage_problems(ctx, "hetero", grad_norm=False):
        if not sec.lines:
            sec.lines += [INTRO, ""]
        for cell, by_label in cells.items():
            for label in sorted(by_label):
                runs = by_label[label]
                r = problem_row("het", prob, cell, label, runs, d, TIMES)
                r["final_suboptimality"] = final_est(runs, "final_suboptimality", floor=0.0)
                r["split"], r["dataset"] = runs[0].get("split"), runs[0].get("dataset")
                r["topology"] = runs[0].get("topology")
                rows.append(r)
            ratios += ratios_to_asgd(prob, cell, by_label, rows)
            sec.figures += curve_figures(ctx, "hetero", prob, cell, by_label, d, CURVES)
        here = [r for r in rows if r["problem"] == prob]
        if not here:  # selected but never run
            continue
        sec.lines += [f"### {prob}", ""]
        first = here[0]
        topos = ", ".join(sorted({f"`{r['topology']}`" for r in here}))
        sec.lines += [
            f"Data: {first['dataset']} split `{first['split']}` across {first['n']} workers; "
            f"worker times: {topos}. Targets: F - F* <= {d['target']} (tuning's), test "
            f"accuracy >= {d['accuracy']}.",
            "",
        ]
        rat = {(x["cell"], x["label"], x["measure"]): x for x in ratios if x["problem"] == prob}

        def ratio(r, key, rat=rat):
            x = rat.get((r["cell"], r["label"], key))
            return fmt_sig(x["over_asgd"], x["over_asgd_significant"]) if x else ""

        body = [
            [
                id_cell(r),
                r["label"],
                fmt_lr(r),
                reached_cell(r, "time_to_target"),
                ratio(r, "time_to_target"),
                reached_cell(r, "time_to_accuracy"),
                ratio(r, "time_to_accuracy"),
                fmt_est(r["final_suboptimality"]),
                fmt_est(r["final_test_accuracy"]),
            ]
            for r in here
        ]
        sec.lines += table(
            [
                "workers",
                "method",
                "tuned lr",
                "time to F - F* target (reached)",
                "/ asgd's",
                "time to accuracy (reached)",
                "/ asgd's",
                "final F - F*",
                "final test accuracy",
            ],
            body,
        )
        sec.lines += [""]
    if sec.lines:  # the stage ran (an older results folder may have no such records)
        sec.metrics = {"rows": rows, "ratios": ratios}
    return sec
