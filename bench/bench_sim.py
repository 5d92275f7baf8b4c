"""Benchmark of the event engine (figures go to BENCHMARKS.md; nothing here is asserted).

Cases (each in a fresh process, so peak memory is its own):
- ``overhead``: the paper experiment (asgd, least squares 10000 x 400, 40 workers, batch 256,
  exponential times, 32,000 gradients), the engine (records included) against the same
  gradient computations and updates in a plain loop with the same samplers; ratio = engine /
  loop, interleaved repeats. ``--device cuda`` for the GPU.
- ``scale``: ``--workers`` workers (default 10,000), tau_i = sqrt(i), exponential times, a
  10-dimensional noisy quadratic, ``--events`` events (default 1,000,000), ``--method``
  (asgd, rennala with cancel, ringmaster with cancel): events per second, peak memory.

    python bench/bench_sim.py [--case overhead|scale|all] [--repeats 5] [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.compose.build import build_experiment  # noqa: E402
from pipeline.core.records import RunRecorder  # noqa: E402
from pipeline.engines.base import RunControl  # noqa: E402
from pipeline.engines.sim import SimEngine  # noqa: E402

METHODS = {
    "asgd": ["optimizer=asgd"],
    # S and R default to n here (no target, so no ceil(sigma^2/eps)): a step restarts n workers
    # every n arrivals (Rennala), a job is cancelled when its delay reaches n (Ringmaster)
    "rennala_cancel": ["optimizer=rennala", "optimizer.cancel=true"],
    "ringmaster_cancel": ["optimizer=ringmaster", "optimizer.cancel=true"],
}


def compose(*overrides):
    from hydra import compose as hc
    from hydra import initialize_config_dir

    from pipeline import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hc(config_name="config", overrides=["tracking=none", *overrides])


UNFUSED = False  # --unfused: the GPU's batched rounds in the CPU's per-round form (comparison)


def engine_seconds(cfg) -> tuple[float, int, bool]:
    exp = build_experiment(cfg)
    with tempfile.TemporaryDirectory() as d:
        rec = RunRecorder(d)
        control = RunControl(exp.evaluator, rec, 10**12, cfg.budget.gradients, None)
        eng = SimEngine(exp, control)
        if UNFUSED:
            eng.replay.fused = False
        if exp.objective.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = eng.run()
        rec.close()  # the records are part of the engine's cost
        if exp.objective.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, res.gradients, eng.replay.batched


def loop_seconds(cfg) -> float:
    """The same gradient computations and updates, with no engine around them."""
    exp = build_experiment(cfg)
    samplers = exp.samplers()
    grad = exp.objective.grad
    n, lr = exp.n_workers, exp.lr
    x = exp.objective.initial_point()
    exp.evaluator(x)  # the engine evaluates at the start and the end
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for j in range(cfg.budget.gradients):
        x = x.sub(grad(x, samplers[j % n]()), alpha=lr)
    if cuda:
        torch.cuda.synchronize()
    el = time.perf_counter() - t0
    exp.evaluator(x)
    return el


def overhead(repeats: int, device: str) -> dict:
    torch.set_num_threads(1)
    cfg = compose("optimizer=asgd", f"objective.device={device}")
    eng, loop = [], []
    batched = None
    for _ in range(repeats):  # interleaved, so drifts of a shared machine hit both
        seconds, _, batched = engine_seconds(cfg)
        eng.append(seconds)
        loop.append(loop_seconds(cfg))
    g = cfg.budget.gradients
    return {
        "case": "overhead",
        "device": device,
        "gradients": g,
        "replay": ("batched" + (" fused" if device == "cuda" and not UNFUSED else ""))
        if batched
        else "one by one",
        "engine_s_min": min(eng),
        "loop_s_min": min(loop),
        "ratio_of_minima": min(eng) / min(loop),
        "ratio_of_medians": float(np.median(eng) / np.median(loop)),
        "engine_us_per_event_over_loop": (min(eng) - min(loop)) / g * 1e6,
    }


def scale(events: int, workers: int, method: str) -> dict:
    torch.set_num_threads(1)
    cfg = compose(
        "~experiment", "objective=noisy_quadratic", "dataset=none", *METHODS[method],
        "optimizer.lr=1e-4", "topology=sqrt", f"topology.n_workers={workers}",
        "topology.noise=exponential", f"budget.gradients={events}",
    )  # fmt: skip
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    seconds, grads, _ = engine_seconds(cfg)
    total = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": "scale",
        "method": method,
        "workers": workers,
        "events": grads,
        "seconds": seconds,
        "events_per_s": grads / seconds,
        "seconds_with_build": total,
        "peak_rss_mib": rss1 / 1024,
        "rss_growth_mib": (rss1 - rss0) / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=10_000)
    p.add_argument("--method", choices=sorted(METHODS), default="asgd")
    p.add_argument("--device", default="cpu")
    p.add_argument("--case", choices=["overhead", "scale", "all"], default="all")
    p.add_argument("--unfused", action="store_true", help="GPU: rounds in the per-round form")
    a = p.parse_args()
    global UNFUSED
    UNFUSED = a.unfused
    if a.case == "all":
        runs = [["--case", "overhead", "--repeats", str(a.repeats)]]
        runs += [["--case", "scale", "--method", m] for m in ("asgd",)]
        runs += [["--case", "scale", "--method", m] for m in ("rennala_cancel",
                                                              "ringmaster_cancel")]  # fmt: skip
        runs += [["--case", "scale", "--workers", "100000"]]
        for extra in runs:
            subprocess.run([sys.executable, __file__, "--events", str(a.events), *extra],
                           check=True)  # fmt: skip
        return
    if a.case == "overhead":
        out = overhead(a.repeats, a.device)
    else:
        out = scale(a.events, a.workers, a.method)
    print(json.dumps(out, indent=None))


if __name__ == "__main__":
    main()
