"""Section ``real``: real worker processes (engine=rpc) against the simulator replaying their
measured durations and the worker-time model alone."""

from __future__ import annotations

from pipeline.report.figures import fig_real
from pipeline.report.load import load_runs, read_json
from pipeline.report.sections.base import Context, Section
from pipeline.report.text import fmt_num, table


def section_real(ctx: Context) -> Section:
    """Real processes against the simulator: the same runs replayed with their measured job
    durations, and the worker-time model alone."""
    sec = Section("Real processes against the simulator")
    base = ctx.results / "real"
    if not (base / "real.json").exists():
        return sec
    meta = read_json(base / "real.json")
    scale = float(meta["time_scale"])
    target = meta.get("target", ctx.target)
    kinds = {"real": "rpc", "replayed": "replay", "model": "model"}
    runs = {k: {s["method"]: s for s in load_runs(base / d)} for k, d in kinds.items()}
    methods = sorted(runs["real"])
    sec.figures.append(
        fig_real(runs, methods, scale, target, meta["n_workers"], ctx.figs / "real_vs_replayed.png")
    )

    def ttt(s, factor=1.0):
        t = s.get("time_to_target") if s else None
        return None if t is None else t * factor

    rows, metrics = [], {}
    for m in methods:
        real, rep, mod = (runs[k].get(m) for k in ("real", "replayed", "model"))
        t_real, t_rep, t_mod = ttt(real), ttt(rep), ttt(mod, scale)
        metrics[m] = {
            "gradients": real["gradients"],
            "gradients_per_s": real.get("gradients_per_s"),
            "time_to_target_real": t_real,
            "time_to_target_replayed": t_rep,
            "time_to_target_model": t_mod,
            "replayed_over_real": t_rep / t_real if t_real and t_rep else None,
            "model_over_real": t_mod / t_real if t_real and t_mod else None,
            "same_arrivals": rep is not None and rep["gradients"] == real["gradients"],
        }
        r = metrics[m]
        rows.append([m, fmt_num(real["gradients"]), fmt_num(r["gradients_per_s"]), fmt_num(t_real),
                     fmt_num(t_rep), fmt_num(r["replayed_over_real"]), fmt_num(t_mod),
                     fmt_num(r["model_over_real"])])  # fmt: skip
    sec.lines += [
        f"{meta['n_workers']} worker processes over torch.distributed.rpc on this machine, "
        f"worker i emulating tau_i = i with exponential job times "
        f"({scale:g} s per unit), {meta['seconds']:g} s of wall clock per method, each method "
        f"at the paper preset's stepsize; times to F - F* <= {fmt_num(target)} (this stage's own "
        "target: the runs are short). Each run is then replayed in the event engine with "
        "its own measured job durations (topology=trace), and simulated from the worker-time "
        "model alone (topology=linear, times x time_scale). The replay reproduces the real "
        "arrival order and times by construction, so its curve checks the simulator's "
        "arithmetic; the model's curve shows what the simulator predicts without the real "
        "timings (no server latency, no CPU contention).",
        "",
    ]
    sec.lines += table(
        ["method", "gradients", "gradients/s", "time to target, real (s)", "replayed (s)",
         "replayed / real", "model (s)", "model / real"],
        rows,
    )  # fmt: skip
    sec.metrics = metrics
    return sec
