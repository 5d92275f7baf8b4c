"""Section ``tuning``: every stepsize selection of the study (comparison, scaling, non-convex,
heterogeneous data), its grid and whether it was bracketed or hit the cap."""

from __future__ import annotations

from pipeline.report.load import read_json
from pipeline.report.sections.base import Context, Section
from pipeline.report.text import fmt_num, table


def section_tuning(ctx: Context) -> Section:
    sec = Section("Tuning")
    sec.lines += [
        "Per cell and method, the grid of `lr_scale` (times the preset's stepsize) is "
        "extended, one grid step at a time, toward the edge where the best point lies until "
        "that point is interior (a worse or diverged point on each side), within "
        "`lr_scale_range`. Selection: least time to target on the tuning seed (not one of the "
        "evaluation seeds), ties and no target to the lower final value; diverged runs never "
        "win. † marks a cap hit.",
        "",
    ]
    body, summary = [], {"selections": 0, "bracketed": 0, "cap_hit": [], "no_stable": []}
    files = [
        ("comparison", ctx.results / "tuned_lr.json"),
        ("scaling", ctx.results / "scaling_lr.json"),
    ]
    tables = [(what, read_json(f).get("cells", {})) for what, f in files]
    for stage in ("nonconvex", "hetero"):  # per problem; absent from older results
        sel = read_json(ctx.results / f"{stage}_lr.json")
        tables += [(f"{stage} {p}", d["cells"]) for p, d in sel.get("problems", {}).items()]
    for what, cells in tables:
        for cell, labels in cells.items():
            for label, v in sorted(labels.items()):
                summary["selections"] += 1
                summary["bracketed"] += bool(v["bracketed"])
                if v["cap_hit"]:
                    summary["cap_hit"].append(f"{what} {cell} {label}")
                if v["lr"] is None:
                    summary["no_stable"].append(f"{what} {cell} {label}")
                tried = sorted(g["lr_scale"] for g in v["grid"])
                status = "bracketed" if v["bracketed"] else ("cap hit †" if v["cap_hit"] else "–")
                body.append(
                    [
                        what,
                        str(cell),
                        label,
                        fmt_num(v["lr"]),
                        fmt_num(v["lr_scale"]),
                        f"{fmt_num(tried[0])} … {fmt_num(tried[-1])} ({len(tried)})",
                        status,
                    ]
                )
    sec.lines += table(
        ["study", "cell", "method", "selected lr", "scale", "scales tried", "status"], body
    )
    sec.metrics = summary
    return sec
