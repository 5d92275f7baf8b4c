"""report.md and metrics.json: run the sections, then the answer paragraph built from their
metrics (every number a link to its table row), the threats to validity, and the document."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.report.load import OPTIMAL_MSTAR, OPTIMAL_N, machine, read_json
from pipeline.report.sections import SECTIONS, Context, Section
from pipeline.report.text import fmt_num, link


def answer(m: dict) -> list[str]:
    """The opening paragraph: every number links to its table row."""
    out = []
    comp = m.get("compare", {})
    ratios = {r["cell"]: r for r in comp.get("ratios", [])}
    if ratios:
        parts = []
        for cell, r in ratios.items():
            e = r["mb_over_async"]
            if not e:
                continue
            sig = "" if r["mb_over_async_significant"] else " (not significant)"
            parts.append(
                f"{link(fmt_num(e['mean'], 2) + 'x', r['anchor'])} with {cell} workers "
                f"(95% CI {fmt_num(e['lo'], 2)}-{fmt_num(e['hi'], 2)}){sig}"
            )
        if parts:
            out.append(
                f"**Asynchronous SGD reaches F - F* <= {m.get('target')} on the paper's "
                "least squares sooner than minibatch SGD**, each at its own bracketed "
                "stepsize: " + "; ".join(parts) + "."
            )
        th = [f"{c}: {fmt_num(r['theory_mb_over_async'], 3)}" for c, r in ratios.items()]
        out.append(
            "The fixed-time theory predicts tau_n/H_n = " + ", ".join(th) + "; the "
            "measured gains are larger because a minibatch round waits for the slowest "
            "of n random job times, which the fixed model does not see."
        )
        for name, labels, what in (
            ("opt_mstar", OPTIMAL_MSTAR, "set as the theory says"),
            ("opt_n", OPTIMAL_N, "with S = R = n instead"),
        ):
            opt = []
            for cell, r in ratios.items():
                e, best = r[f"async_over_{name}"], r[f"async_over_{name}_best"]
                if e:
                    sig = (
                        "significant" if r[f"async_over_{name}_significant"] else "not significant"
                    )
                    x = link(fmt_num(e["mean"], 2) + "x", r["anchor"])
                    opt.append(f"with {cell} workers asgd takes {x} the time of {best} ({sig})")
            if not opt:
                continue
            settings = sorted(
                {r["setting"].split(",")[0] for r in comp["rows"] if r["label"] in labels}
            )
            out.append(
                f"Against the optimal methods {what} ({'; '.join(settings)}"
                + (", sigma^2 at the solution" if name == "opt_mstar" else "")
                + "): "
                + "; ".join(opt)
                + "."
            )
    sc = m.get("scaling", {}).get("rows", [])
    if sc:
        last = sc[-1]
        e = last.get("async_over_opt_mstar")
        if e:
            sig = "significant" if last["async_over_opt_mstar_significant"] else "not significant"
            out.append(
                f"On the noisy quadratic with tau_i = sqrt(i), at n = {last['n']} "
                f"asynchronous SGD takes {link(fmt_num(e['mean'], 2) + 'x', last['anchor'])} "
                f"the time of the best optimal method ({sig}; theory T_ASGD/T_opt = "
                f"{fmt_num(last['theory_async_over_opt'], 3)})."
            )
    nc = [r for r in m.get("nonconvex", {}).get("ratios", []) if r["mb_over_async"]]
    out += _accuracy_ratios(
        nc, "mb_over_async", "{problem} {cell}",
        "Non-convex models, minibatch / asynchronous time to the test-accuracy target: ",
    )  # fmt: skip
    het = [r for r in m.get("hetero", {}).get("ratios", []) if r["over_asgd"]]
    out += _accuracy_ratios(
        het, "over_asgd", "{problem} {cell} {label}",
        "Heterogeneous data, each method's time to the test-accuracy target over "
        "asynchronous SGD's: ",
    )  # fmt: skip
    return [" ".join(out)] if out else []


def _accuracy_ratios(ratios: list[dict], key: str, name: str, lead: str) -> list[str]:
    """One sentence: each ratio of the times to the test-accuracy target, linked to its row."""
    parts = [
        name.format(**r)
        + f": {link(fmt_num(r[key]['mean'], 2) + 'x', r['anchor'])}"
        + ("" if r[f"{key}_significant"] else " (not significant)")
        for r in ratios
        if r["measure"] == "time_to_accuracy"
    ]
    return [lead + "; ".join(parts) + "."] if parts else []


def threats(m: dict) -> list[str]:
    t = [
        "Simulated clock: job times are drawn from the topology's model (exponential around "
        "tau_i); communication, server compute, contention and stragglers that change over "
        "time are not modelled, and evaluation is free.",
        "The theory's constants are all set to 1: its ratios compare orders of magnitude, and "
        "it bounds E||grad f||^2 while the target here is on F - F* (or a test metric).",
        "Stepsizes are tuned on one seed (the tuning seed is not an evaluation seed); a "
        "selection can be a seed's luck, and the best of several optimal-method settings is "
        "picked on the same seeds it is measured on.",
        "Time to target is the first evaluation at or below the target (evaluations every "
        "`eval_every` updates), so times are rounded up to the evaluation grid.",
        "A constant stepsize per method: no decay, no warm-up; the theory's stepsizes are not "
        "used, the grid's best is.",
        "Intervals are Student t over few seeds (log-scale for ratios); with 2 seeds (quick "
        "profile) they are very wide.",
        "The non-convex models are small (a 2-layer MLP, an 8-channel CNN) and trained for few "
        "gradients; accuracy targets are below what longer training reaches.",
    ]
    het = m.get("hetero", {}).get("rows", [])
    if het:
        data = ", ".join(sorted({r["dataset"] for r in het}))
        splits = ", ".join(sorted({f"`{r['split']}`" for r in het}))
        t.append(
            f"Heterogeneous data: one convex model on small data ({data}, split {splits}), "
            "each worker's shard fixed by the data seed, and one worker-time model per cell."
        )
    tun = m.get("tuning", {})
    if tun.get("cap_hit"):
        t.append(
            "The tuning cap was hit (the best stepsize may lie beyond `lr_scale_range`) "
            "for: " + ", ".join(tun["cap_hit"]) + "."
        )
    if tun.get("no_stable"):
        t.append("No stable stepsize within the cap for: " + ", ".join(tun["no_stable"]) + ".")
    return t


def markdown(ctx: Context, sections: list[Section], profile: str | None) -> str:
    m = ctx.metrics
    lines = ["# Asynchronous vs minibatch SGD: results", ""]
    if profile:
        lines += [f"Profile `{profile}` of `params.yaml` (`dvc repro`).", ""]
    if m.get("machine"):
        mc = m["machine"]
        lines += [
            f"Produced on {mc['cpu']}, Python {mc['python']}, torch {mc['torch']}, numpy "
            f"{mc['numpy']}: a rebuild on the same kind of CPU gives the same bytes.",
            "",
        ]
    lines += ["## Answer", "", *answer(m), "", "## Threats to validity", ""]
    lines += [f"- {x}" for x in threats(m)] + [""]
    for sec in sections:
        if not sec.lines and not sec.figures:
            continue
        lines += [
            f'<a id="{sec.name}"></a>',
            f"## {sec.title}",
            "",
            *sec.lines,
            "",
        ]
        lines += [f"![{p.stem}](figures/{p.name})" for p in sec.figures] + [""]
    return "\n".join(lines).rstrip() + "\n"


def build_report(results: Path) -> dict:
    results = Path(results)
    figs = results / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    ctx = Context(results, figs)
    sections = []
    for name, fn in SECTIONS:
        sec = fn(ctx)
        sec.name = name
        ctx.metrics[name] = sec.metrics
        sections.append(sec)
    if not ctx.metrics.get("compare"):
        raise SystemExit(f"error: no runs under {results / 'runs'}")
    profile = read_json(results / "tuned_lr.json").get("profile")
    ctx.metrics["target"] = ctx.target
    ctx.metrics["profile"] = profile
    ctx.metrics["answer"] = answer(ctx.metrics)
    ctx.metrics["machine"] = machine()
    (results / "metrics.json").write_text(
        json.dumps(ctx.metrics, indent=2, sort_keys=True, default=str) + "\n"
    )
    (results / "report.md").write_text(markdown(ctx, sections, profile))
    written = [p for s in sections for p in s.figures]
    return {"figures": written, "metrics": ctx.metrics, "sections": sections}
