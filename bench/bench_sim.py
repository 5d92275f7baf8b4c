"""Benchmark of the event engine: figures as JSON in bench/results/ (BENCHMARKS.md's tables are
generated from them by ``python -m bench.publish --write``; nothing here is asserted).

Cases (each in a fresh process, so peak memory is its own):
- ``overhead``: the paper experiment (asgd, least squares 10000 x 400, 40 workers, batch 256,
  exponential times, 32,000 gradients), the engine (records included) against the same
  gradient computations and updates in a plain loop with the same samplers; ratio = engine /
  loop, interleaved repeats. ``--device cuda`` for the GPU.
- ``scale``: ``--workers`` workers (default 10,000), tau_i = sqrt(i), exponential times, a
  10-dimensional noisy quadratic, ``--events`` events (default 1,000,000), ``--method``
  (asgd, rennala with cancel, ringmaster with cancel; ``--batch S`` sets Rennala's S):
  events per second, peak memory; interleaved (``--scale-repeats``, default 3) with the plain
  numpy heap loop (bench/plain_loop.py; asgd) and the engine on its heap schedule (asgd: the
  bulk schedule's gain), unless ``--no-loop`` / ``--no-heap``.
- ``agreement``: the paper experiment for 8,000 gradients (asgd, asgd_adaptive) on the CPU and on
  the GPU: the final F - F* of each (needs CUDA).

    python bench/bench_sim.py [--case overhead|scale|agreement|all] [--repeats 5]
        [--events 1000000] [--out bench/results/]

``--out``: a ``.json`` file, or the folder for the case's own file name (default bench/results/;
``--case all`` writes one file per case there).
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

from bench._meta import Measurement, out_file, write  # noqa: E402
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
DEFAULT_EVENTS = 1_000_000
SMALL_S_EVENTS = 100_000  # --case all: Rennala with S = 100 (n / S job starts per arrival)


def compose(*overrides):
    from hydra import compose as hc
    from hydra import initialize_config_dir

    from pipeline import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hc(config_name="config", overrides=["tracking=none", *overrides])


UNFUSED = False  # --unfused: the GPU's batched rounds in the CPU's per-round form (comparison)
LAST_BULK = [None]  # whether the last engine run scheduled in bulk
WRITER_PEAK = [0.0]  # the last engine run's events writer: its peak resident memory (MiB)


def _peak_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM: since its exec, so not the parent's pages
    that a child shares between fork and exec, which getrusage's children maximum counts)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _NoEvents(RunRecorder):
    """A recorder that drops the event rows (the engine's cost without its events.csv)."""

    def write_columns(self, columns: tuple) -> None:
        pass

    def start_writer(self) -> None:
        pass


def engine_seconds(cfg, events: bool = True):
    """(seconds, the run's result, whether the replay batched) of one engine run."""
    exp = build_experiment(cfg)
    with tempfile.TemporaryDirectory() as d:
        rec = RunRecorder(d) if events else _NoEvents(d)
        control = RunControl(exp.evaluator, rec, 10**12, cfg.budget.gradients, None)
        eng = SimEngine(exp, control)
        if UNFUSED:
            eng.replay.fused = False
        if exp.objective.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = eng.run()
        WRITER_PEAK[0] = _peak_mib(rec._writer.proc.pid) if rec._writer else 0.0
        rec.close()  # the records are part of the engine's cost (the writer's too)
        LAST_BULK[0] = eng.bulk
        if exp.objective.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, res, eng.replay.batched


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


OVERHEAD_UNITS = {
    "gradients": "count",
    "repeats": "count",
    "engine_s": "s",
    "loop_s": "s",
    "engine_s_min": "s",
    "loop_s_min": "s",
    "engine_s_median": "s",
    "loop_s_median": "s",
    "ratio_of_minima": "ratio",
    "ratio_of_medians": "ratio",
    "engine_us_per_gradient": "µs",
    "loop_us_per_gradient": "µs",
    "engine_us_per_event_over_loop": "µs",
}


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
        "gradients": g,
        "repeats": repeats,
        "replay": ("batched" + (" fused" if device == "cuda" and not UNFUSED else ""))
        if batched
        else "one by one",
        "engine_s": eng,
        "loop_s": loop,
        "engine_s_min": min(eng),
        "loop_s_min": min(loop),
        "engine_s_median": float(np.median(eng)),
        "loop_s_median": float(np.median(loop)),
        "ratio_of_minima": min(eng) / min(loop),
        "ratio_of_medians": float(np.median(eng) / np.median(loop)),
        "engine_us_per_gradient": min(eng) / g * 1e6,
        "loop_us_per_gradient": min(loop) / g * 1e6,
        "engine_us_per_event_over_loop": (min(eng) - min(loop)) / g * 1e6,
    }


SCALE_UNITS = {
    "events": "count",
    "repeats": "count",
    "seconds": "s",
    "events_per_s": "events/s",
    "seconds_median": "s",
    "seconds_with_build": "s",
    "peak_rss_mib": "MiB",
    "rss_growth_mib": "MiB",
    "writer_peak_rss_mib": "MiB",
    "loop_seconds": "s",
    "loop_events_per_s": "events/s",
    "over_loop": "ratio",
    "over_loop_median": "ratio",
    "heap_seconds": "s",
    "heap_events_per_s": "events/s",
    "bulk_over_heap": "ratio",
    "no_events_seconds": "s",
    "no_events_over_loop": "ratio",
}


def scale(events: int, workers: int, method: str, batch: int | None = None, repeats: int = 1,
          loop: bool = True, heap: bool = True) -> dict:  # fmt: skip
    """The engine (records included) on the scale case, best of ``repeats``; interleaved with
    the plain numpy heap loop (bench/plain_loop.py, asgd only; and the engine with its event
    rows dropped, what the records cost) and the engine with its heap
    schedule (``sim.BULK = False``: the bulk schedule's gain, for the rules that have one). The
    peak memory is the process's after its first engine run (before any comparison ran), and
    the events writer's, a child process (pipeline/core/eventwriter.py), read from /proc before
    it ends."""
    import pipeline.engines.sim as sim
    from bench.plain_loop import plain_loop

    torch.set_num_threads(1)
    extra = [f"optimizer.batch={batch}"] if batch else []
    cfg = compose(
        "~experiment", "objective=noisy_quadratic", "dataset=none", *METHODS[method], *extra,
        "optimizer.lr=1e-4", "topology=sqrt", f"topology.n_workers={workers}",
        "topology.noise=exponential", f"budget.gradients={events}",
    )  # fmt: skip
    out: dict = {"repeats": repeats}
    eng, lp, hp, nr = [], [], [], []
    bulk = None
    for r in range(repeats):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        seconds, res, _ = engine_seconds(cfg)
        total = time.perf_counter() - t0
        eng.append(seconds)
        if r == 0:
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out.update(events=res.gradients, seconds_with_build=total,
                       peak_rss_mib=rss1 / 1024, rss_growth_mib=(rss1 - rss0) / 1024,
                       writer_peak_rss_mib=WRITER_PEAK[0])  # fmt: skip
            bulk = LAST_BULK[0]
        if loop and method == "asgd":
            lp.append(plain_loop(workers, events)[0])
        if loop and method == "asgd":
            nr.append(engine_seconds(cfg, events=False)[0])
        if heap and bulk:
            sim.BULK = False
            try:
                hp.append(engine_seconds(cfg)[0])
            finally:
                sim.BULK = True
    out.update(schedule="bulk" if bulk else "heap", seconds=min(eng),
               events_per_s=out["events"] / min(eng),
               seconds_median=float(np.median(eng)))  # fmt: skip
    if lp:
        out.update(loop_seconds=min(lp), loop_events_per_s=events / min(lp),
                   over_loop=min(lp) / min(eng),
                   over_loop_median=float(np.median(lp) / np.median(eng)))  # fmt: skip
    if nr:
        out.update(no_events_seconds=min(nr), no_events_over_loop=min(lp) / min(nr))
    if hp:
        out.update(heap_seconds=min(hp), heap_events_per_s=events / min(hp),
                   bulk_over_heap=min(hp) / min(eng))  # fmt: skip
    return out


AGREEMENT_UNITS = {"gradients": "count", "suboptimality_cpu": "F - F*",
                   "suboptimality_cuda": "F - F*"}  # fmt: skip


def agreement(gradients: int = 8000) -> dict:
    """The paper experiment on the CPU and on the GPU: the same final F - F*?"""
    torch.set_num_threads(1)
    rows = []
    for method in ("asgd", "asgd_adaptive"):
        row: dict = {"method": method, "gradients": gradients}
        for device in ("cpu", "cuda"):
            cfg = compose(f"optimizer={method}", f"objective.device={device}",
                          f"budget.gradients={gradients}")  # fmt: skip
            _, res, _ = engine_seconds(cfg)
            row[f"suboptimality_{device}"] = float(res.final["suboptimality"])
        # equal to 4 significant digits (float64 on both: reductions may differ in the last bits)
        row["equal_4_digits"] = (f"{row['suboptimality_cpu']:.4g}"
                                 == f"{row['suboptimality_cuda']:.4g}")  # fmt: skip
        rows.append(row)
    return {"rows": rows}


def default_name(a) -> str:
    if a.case == "overhead":
        return f"bench_sim-overhead-{a.device}{'-unfused' if a.unfused else ''}.json"
    if a.case == "agreement":
        return "bench_sim-agreement.json"
    name = f"bench_sim-scale-{a.method}"
    if a.batch:
        name += f"-S{a.batch}"
    name += f"-w{a.workers}"
    if a.events != DEFAULT_EVENTS:
        name += f"-e{a.events}"
    return name + ".json"


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    p.add_argument("--workers", type=int, default=10_000)
    p.add_argument("--method", choices=sorted(METHODS), default="asgd")
    p.add_argument("--batch", type=int, default=None, help="scale, rennala_cancel: S")
    p.add_argument("--device", default="cpu")
    p.add_argument("--case", choices=["overhead", "scale", "agreement", "all"], default="all")
    p.add_argument("--unfused", action="store_true", help="GPU: rounds in the per-round form")
    p.add_argument("--scale-repeats", type=int, default=3, help="scale: interleaved repeats")
    p.add_argument("--no-loop", action="store_true", help="scale: without the plain loop")
    p.add_argument("--no-heap", action="store_true", help="scale: without the heap schedule")
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    a = p.parse_args(argv)
    global UNFUSED
    UNFUSED = a.unfused
    if a.case == "all":
        if a.out is not None and str(a.out).endswith(".json"):
            p.error("--case all writes one file per case: give --out a folder")
        out = [] if a.out is None else ["--out", str(a.out)]
        runs = [["--case", "overhead", "--repeats", str(a.repeats)]]
        runs += [["--case", "scale", "--method", "asgd"]]
        one = ["--scale-repeats", "1"]
        runs += [["--case", "scale", "--method", m, *one] for m in METHODS if m != "asgd"]
        # S = 100 restarts 10,000 workers every 100 arrivals: a tenth of the events is plenty
        small = ["--events", str(min(a.events, SMALL_S_EVENTS))]
        runs += [["--case", "scale", "--method", "rennala_cancel", "--batch", "100", *small,
                  *one]]  # fmt: skip
        runs += [["--case", "scale", "--workers", "100000", *one]]
        runs += [["--case", "scale", "--workers", "1000000", "--events", "10000000", *one,
                  "--no-heap"]]  # fmt: skip
        for extra in runs:
            if a.events != DEFAULT_EVENTS and "--events" not in extra:
                extra += ["--events", str(a.events)]
            subprocess.run([sys.executable, __file__, *extra, *out], check=True)
        return None
    if a.case == "overhead":
        params = {"device": a.device, "repeats": a.repeats, "unfused": a.unfused}
        m = Measurement("bench_sim", argv, a.case, params)
        figures, units = overhead(a.repeats, a.device), OVERHEAD_UNITS
    elif a.case == "agreement":
        m = Measurement("bench_sim", argv, a.case, {"gradients": 8000})
        figures, units = agreement(), AGREEMENT_UNITS
    else:
        params = {"method": a.method, "workers": a.workers, "events": a.events,
                  "batch": a.batch, "repeats": a.scale_repeats, "loop": not a.no_loop,
                  "heap": not a.no_heap}  # fmt: skip
        m = Measurement("bench_sim", argv, a.case, params)
        figures = scale(a.events, a.workers, a.method, a.batch, a.scale_repeats,
                        not a.no_loop, not a.no_heap)  # fmt: skip
        units = SCALE_UNITS
    record = m.finish(figures, units)
    print(json.dumps(figures))
    write(out_file(a.out, default_name(a)), record)
    return record


if __name__ == "__main__":
    main()
