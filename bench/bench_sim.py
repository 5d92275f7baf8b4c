"""Benchmark of the event engine (figures go to BENCHMARKS.md; nothing here is asserted).

Case 1, overhead: the paper experiment (least squares 10000 x 400, 40 workers, batch 256,
exponential times) for asynchronous SGD, the engine against the same number of gradient
computations and updates done in a plain loop with the same samplers. Ratio = engine / loop.

Case 2, scale: 10,000 workers with tau_i = sqrt(i) (exponential noise) on a 10-dimensional noisy
quadratic: events per second and the process's peak resident memory.

    python bench/bench_sim.py [--repeats 5] [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from pipeline.build import build_experiment
from pipeline.engines.base import EvalSchedule
from pipeline.engines.sim import SimEngine
from pipeline.records import RunRecorder


def compose(*overrides):
    from hydra import compose as hc
    from hydra import initialize_config_dir

    from pipeline import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hc(config_name="config", overrides=["tracking=none", *overrides])


def engine_seconds(cfg) -> tuple[float, int]:
    exp = build_experiment(cfg)
    with tempfile.TemporaryDirectory() as d:
        rec = RunRecorder(d)
        eng = SimEngine(
            exp.rule, exp.objective, exp.times, exp.samplers(), rec,
            EvalSchedule(exp.evaluator, rec, 10**12),
            budget_gradients=cfg.budget.gradients, budget_time=cfg.budget.time,
        )  # fmt: skip
        t0 = time.perf_counter()
        res = eng.run()
        rec.close()  # the records are part of the engine's cost
        return time.perf_counter() - t0, res.gradients


def loop_seconds(cfg) -> float:
    """The same gradient computations and updates, with no engine around them."""
    exp = build_experiment(cfg)
    samplers = exp.samplers()
    grad = exp.objective.grad
    n, lr = exp.n_workers, exp.lr
    x = exp.objective.initial_point()
    exp.evaluator(x)  # the engine evaluates at the start and the end
    t0 = time.perf_counter()
    for j in range(cfg.budget.gradients):
        x = x.sub(grad(x, samplers[j % n]()), alpha=lr)
    el = time.perf_counter() - t0
    exp.evaluator(x)
    return el


def overhead(repeats: int) -> dict:
    torch.set_num_threads(1)
    cfg = compose("optimizer=asgd")
    eng, loop = [], []
    for _ in range(repeats):  # interleaved, so drifts of a shared machine hit both
        eng.append(engine_seconds(cfg)[0])
        loop.append(loop_seconds(cfg))
    g = cfg.budget.gradients
    return {
        "case": "overhead",
        "gradients": g,
        "engine_s_min": min(eng),
        "loop_s_min": min(loop),
        "ratio_of_minima": min(eng) / min(loop),
        "ratio_of_medians": float(np.median(eng) / np.median(loop)),
        "engine_us_per_event_over_loop": (min(eng) - min(loop)) / g * 1e6,
    }


def scale(events: int) -> dict:
    torch.set_num_threads(1)
    cfg = compose(
        "~experiment", "objective=noisy_quadratic", "dataset=none", "optimizer=asgd",
        "optimizer.lr=1e-4", "topology=sqrt", "topology.n_workers=10000",
        "topology.noise=exponential", f"budget.gradients={events}",
    )  # fmt: skip
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, grads = engine_seconds(cfg)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": "scale",
        "workers": 10000,
        "events": grads,
        "seconds": seconds,
        "events_per_s": grads / seconds,
        "peak_rss_mib": rss1 / 1024,
        "rss_growth_mib": (rss1 - rss0) / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--case", choices=["overhead", "scale", "all"], default="all")
    a = p.parse_args()
    if a.case == "all":  # each case in a fresh process, so peak memory is its own
        for case in ("overhead", "scale"):
            args = [sys.executable, __file__, "--case", case, "--repeats", str(a.repeats),
                    "--events", str(a.events)]  # fmt: skip
            subprocess.run(args, check=True)
        return
    out = overhead(a.repeats) if a.case == "overhead" else scale(a.events)
    print(json.dumps(out, indent=None))


if __name__ == "__main__":
    main()
