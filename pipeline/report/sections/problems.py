"""What the per-problem sections (``nonconvex``, ``hetero``) share: a stage's selection file and
its problems' runs, the times to the evaluation targets taken from each run's history, a row of
estimates over seeds, the curves against time and the table cells."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.core.records import read_history
from pipeline.report.figures import fig_bands
from pipeline.report.load import first_time, load_cells, read_json, times_of
from pipeline.report.sections.base import Context, est_dict
from pipeline.report.stats import mean_interval
from pipeline.report.text import anchor, fmt_est


def stage_problems(ctx: Context, stage: str, grad_norm: bool = True) -> Iterator[tuple]:
    """``(problem, its selection entry, {cell: {label: runs}})`` for each problem of
    ``<stage>_lr.json`` (none without the file), each run given ``time_to_accuracy`` (first
    evaluation at test accuracy >= the problem's ``accuracy``) and, with ``grad_norm``,
    ``time_to_grad_norm`` (first at ||grad F||^2 <= ``grad_norm_sq`` once the training loss is
    at most ``target``)."""
    sel = read_json(ctx.results / f"{stage}_lr.json")
    for prob, d in sel.get("problems", {}).items():
        cells = load_cells(ctx.results / stage / prob / "runs")
        for by_label in cells.values():
            for runs in by_label.values():
                for s in runs:
                    h = read_history(s["dir"] / "history.csv")
                    s["time_to_accuracy"] = first_time(h, "test_accuracy", d["accuracy"], True)
                    if grad_norm:
                        s["time_to_grad_norm"] = first_time(
                            h, "grad_norm_sq", d["grad_norm_sq"], False, after=d["target"]
                        )
        yield prob, d, cells


def problem_row(
    prefix: str, prob: str, cell: str, label: str, runs: list[dict], d: dict, times: tuple
) -> dict:
    """A method's row: tuned stepsize, cap hit, the final test accuracy and each of ``times``
    (summary keys, ``None`` for a seed that never reached) as a mean with its 95% interval over
    the seeds, with how many seeds reached (``<key>_reached``)."""
    r = {
        "problem": prob,
        "cell": cell,
        "label": label,
        "seeds": len(runs),
        "tuned_lr": runs[0]["lr"],
        "n": runs[0]["n_workers"],
        "cap_hit": d["cells"].get(cell, {}).get(label, {}).get("cap_hit"),
        "anchor": anchor(prefix, prob, cell, label),
        "final_test_accuracy": final_est(runs, "final_test_accuracy", floor=0.0, ceiling=1.0),
    }
    for key in times:
        t = times_of(runs, key)
        r[key] = est_dict(mean_interval(t, floor=0.0)) if t else None
        r[f"{key}_reached"] = sum(s.get(key) is not None for s in runs)
    return r


def final_est(runs: list[dict], key: str, **bounds) -> dict | None:
    """A summary value's mean and 95% interval over the seeds (``bounds``: floor, ceiling);
    None when a seed has none (a run stopped before its first evaluation)."""
    vals = [s.get(key) for s in runs]
    return None if None in vals else est_dict(mean_interval(vals, **bounds))


def curve_figures(
    ctx: Context, stage: str, prob: str, cell: str, by_label: dict, d: dict, curves: tuple
) -> list[Path]:
    """One figure per ``(history column, log scale, axis label)`` of ``curves`` against
    simulated time, 95% bands over the seeds; test accuracy with its target line on [0, 1]."""
    out = []
    for y_key, log, yl in curves:
        acc = y_key == "test_accuracy"
        out.append(
            fig_bands(
                by_label,
                "time",
                y_key,
                ctx.figs / f"{stage}_{prob}_{cell}_{y_key}.png",
                f"{prob}, {cell} workers: {yl}",
                "simulated time",
                yl,
                target=d["target"] if y_key == "suboptimality" else None,
                log=log,
                ref_lines={"accuracy target": d["accuracy"]} if acc else None,
                ylim=(0.0, 1.0) if acc else None,
            )
        )
    return out


def id_cell(r: dict) -> str:
    """A table's first cell: the row's anchor and its cell."""
    return f'<a id="{r["anchor"]}"></a>{r["cell"]}'


def reached_cell(r: dict, key: str) -> str:
    """A time's estimate with how many seeds reached it."""
    return fmt_est(r[key]) + f" ({r[f'{key}_reached']}/{r['seeds']})"
