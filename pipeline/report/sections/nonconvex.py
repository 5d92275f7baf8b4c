"""Section ``nonconvex``: the MLP and CNN, times to the test-accuracy and gradient-norm targets
taken from each run's evaluations, with their curves."""

from __future__ import annotations

from pipeline.core.records import read_history
from pipeline.report.figures import fig_bands
from pipeline.report.load import first_time, load_cells, read_json, times_of
from pipeline.report.sections.base import Context, Section, cell_ratios, est_dict
from pipeline.report.stats import mean_interval
from pipeline.report.text import anchor, fmt_est, fmt_num, table


def section_nonconvex(ctx: Context) -> Section:
    sec = Section("Non-convex models")
    sel = read_json(ctx.results / "nonconvex_lr.json")
    if not sel:
        return sec
    rows, ratios = [], []
    sec.lines += [
        "Tuned like the least squares (bracketed grid, least time to the training-loss target, "
        "one tuning seed), then run over the evaluation seeds. Measured: simulated time to the "
        "test-accuracy target and to the gradient-norm target (||grad F||^2 on the training "
        "set, the theory's eps, counted only once the training loss is below its target: the "
        "initial point's gradient is already small, a plateau rather than a solution), from "
        "each run's evaluations. Mean with 95% interval; **bold** "
        "ratios are significant.",
        "",
    ]
    for prob, d in sel["problems"].items():
        cells = load_cells(ctx.results / "nonconvex" / prob / "runs")
        for cell, by_label in cells.items():
            for runs in by_label.values():
                for s in runs:
                    h = read_history(s["dir"] / "history.csv")
                    s["time_to_accuracy"] = first_time(h, "test_accuracy", d["accuracy"], True)
                    s["time_to_grad_norm"] = first_time(
                        h, "grad_norm_sq", d["grad_norm_sq"], False, after=d["target"]
                    )
            for label in sorted(by_label):
                runs = by_label[label]
                r = {
                    "problem": prob,
                    "cell": cell,
                    "label": label,
                    "seeds": len(runs),
                    "tuned_lr": runs[0]["lr"],
                    "n": runs[0]["n_workers"],
                    "cap_hit": d["cells"].get(cell, {}).get(label, {}).get("cap_hit"),
                    "anchor": anchor("nc", prob, cell, label),
                    "final_test_accuracy": est_dict(
                        mean_interval(
                            [s["final_test_accuracy"] for s in runs], floor=0.0, ceiling=1.0
                        )
                    ),
                }
                for key in ("time_to_target", "time_to_accuracy", "time_to_grad_norm"):
                    t = times_of(runs, key)
                    r[key] = est_dict(mean_interval(t, floor=0.0)) if t else None
                    r[f"{key}_reached"] = sum(s.get(key) is not None for s in runs)
                rows.append(r)
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
            for y_key, log, yl in (
                ("test_accuracy", False, "test accuracy"),
                ("loss", True, "training loss"),
            ):
                p = ctx.figs / f"nonconvex_{prob}_{cell}_{y_key}.png"
                ref = {"accuracy target": d["accuracy"]} if y_key == "test_accuracy" else None
                sec.figures.append(
                    fig_bands(
                        by_label,
                        "time",
                        y_key,
                        p,
                        f"{prob}, {cell} workers: {yl}",
                        "simulated time",
                        yl,
                        log=log,
                        ref_lines=ref,
                        ylim=(0.0, 1.0) if y_key == "test_accuracy" else None,
                    )
                )
        sec.lines += [
            f"### {prob}",
            "",
            f"Targets: test accuracy >= {d['accuracy']}, ||grad F||^2 <= "
            f"{d['grad_norm_sq']}; tuning on training loss <= {d['target']}.",
            "",
        ]
        body = []
        for r in (x for x in rows if x["problem"] == prob):
            body.append(
                [
                    f'<a id="{r["anchor"]}"></a>{r["cell"]}',
                    r["label"],
                    fmt_num(r["tuned_lr"]) + ("†" if r["cap_hit"] else ""),
                    fmt_est(r["time_to_accuracy"])
                    + f" ({r['time_to_accuracy_reached']}/{r['seeds']})",
                    fmt_est(r["time_to_grad_norm"])
                    + f" ({r['time_to_grad_norm_reached']}/{r['seeds']})",
                    fmt_est(r["final_test_accuracy"]),
                ]
            )
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
        body = []
        for r in (x for x in ratios if x["problem"] == prob):
            txt = fmt_est(r["mb_over_async"])
            body.append(
                [
                    f'<a id="{r["anchor"]}"></a>{r["cell"]}',
                    r["measure"],
                    f"**{txt}**" if r["mb_over_async_significant"] else txt,
                    fmt_num(r["theory_mb_over_async"]),
                ]
            )
        sec.lines += [
            "",
            *table(["workers", "measure", "minibatch / asgd", "tau_n/H_n"], body),
            "",
        ]
    sec.metrics = {"rows": rows, "ratios": ratios}
    return sec
