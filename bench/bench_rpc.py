"""Benchmark of ``engine=rpc``: figures as JSON in bench/results/ (BENCHMARKS.md's tables are
generated from them by ``python -m bench.publish --write``; nothing here is asserted).

Cases:
- ``transport``: a free gradient (noisy quadratic, sigma 0) of 1e3, 1e5, 1e6 floats with 1, 2, 4
  workers, topology=native: gradients per second, against the "ideal" of the same gradients
  and updates in one process with no communication; the server's CPU per gradient (its own
  process: the loop, the RPC threads, the apply), for asgd and for minibatch.
- ``paper``: the paper problem (least squares 10000 x 400, batch 256), 4 workers, native,
  asgd: gradients per second (compare: ``python bench/bare_rpc_ps.py --workers 4``).
- ``emulated``: 20 ms jobs (homogeneous, no noise, time_scale 0.02), 4 workers (``--workers``,
  e.g. 40: ``bench_rpc-emulated-w40.json``): throughput against n / 20 ms.
- ``gpu``: the cnn objective (digits), 4 workers sharing one GPU, native (``--device cpu``: the
  same on the CPU, the baseline).
``--runs N`` repeats the paper, emulated and gpu cases (one record, every run in it).

    python bench/bench_rpc.py [--case transport|paper|emulated|gpu|all] [--seconds 10]
        [--runs 1] [--out bench/results/]

``--out``: a ``.json`` file, or the folder for the case's own file name (default bench/results/;
``--case all`` writes one file per case there).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._meta import Measurement, out_file, write  # noqa: E402
from pipeline.runner import run_experiment  # noqa: E402

RUN_UNITS = {
    "gradients": "count",
    "updates": "count",
    "seconds": "s",
    "gradients_per_s": "gradients/s",
    "startup_s": "s",
    "server_cpu_us_per_gradient": "µs",
    "server_cpu_us_per_update": "µs",
    "dim": "floats",
    "workers": "count",
    "ideal_gradients_per_s": "gradients/s",
    "ratio_to_ideal": "ratio",
    "job_s": "s",
    "gradients_per_s_min": "gradients/s",
    "gradients_per_s_median": "gradients/s",
    "gradients_per_s_max": "gradients/s",
    "ratio_to_ideal_min": "ratio",
    "ratio_to_ideal_median": "ratio",
    "ratio_to_ideal_max": "ratio",
}


def compose(*overrides):
    from hydra import compose as hc
    from hydra import initialize_config_dir

    from pipeline import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hc(config_name="config", overrides=["tracking=none", "progress=off", *overrides])


def rpc_run(*overrides) -> dict:
    cfg = compose("engine=rpc", "eval_every=1000000000", *overrides)
    with tempfile.TemporaryDirectory() as d:
        s, _ = run_experiment(cfg, d)
    assert s["status"] == "finished", s.get("error")
    return {
        "gradients": s["gradients"],
        "updates": s["updates"],
        "seconds": s["run_time_s"],
        "gradients_per_s": s["gradients_per_s"],
        "startup_s": s["startup_s"],
        # the server process over the run: its loop, the RPC threads, the apply
        "server_cpu_us_per_gradient": s["server_cpu_s"] / s["gradients"] * 1e6,
        "server_cpu_us_per_update": s["server_cpu_s"] / max(1, s["updates"]) * 1e6,
    }


def ideal_rate(dim: int, gradients: int = 2000) -> float:
    """Gradients + updates per second in one process, no communication."""
    from pipeline.compose.build import build_experiment

    cfg = compose(*_free(dim), f"budget.gradients={gradients}")
    exp = build_experiment(cfg)
    sampler = exp.objective.sampler(None, None, None)
    x = exp.objective.initial_point()
    t0 = time.perf_counter()
    for _ in range(gradients):
        x = x.sub(exp.objective.grad(x, sampler()), alpha=1e-3)
    return gradients / (time.perf_counter() - t0)


def _free(dim: int) -> list[str]:
    return ["~experiment", "objective=noisy_quadratic", f"objective.dim={dim}",
            "objective.sigma=0", "dataset=none", "optimizer.lr=1e-3"]  # fmt: skip


def transport(seconds: float) -> dict:
    rows = []
    for dim in (1_000, 100_000, 1_000_000):
        ideal = ideal_rate(dim)
        for n in (1, 2, 4):
            for method in ("asgd", "minibatch"):
                r = rpc_run(*_free(dim), f"optimizer={method}", "topology=native",
                            f"topology.n_workers={n}", f"budget.time={seconds}")  # fmt: skip
                r.update(dim=dim, workers=n, method=method, ideal_gradients_per_s=ideal,
                         ratio_to_ideal=r["gradients_per_s"] / ideal)  # fmt: skip
                rows.append(r)
                print(json.dumps(r), flush=True)
    return {"rows": rows}


def _repeated(one, runs: int, ideal: float | None = None) -> dict:
    """``runs`` runs of ``one()`` and the spread of their rates."""
    out = []
    for _ in range(runs):
        r = one()
        if ideal:
            r["ratio_to_ideal"] = r["gradients_per_s"] / ideal
        out.append(r)
        print(json.dumps(r), flush=True)
    rates = [r["gradients_per_s"] for r in out]
    fig: dict = {"runs": out, "gradients_per_s_min": min(rates),
                 "gradients_per_s_median": float(np.median(rates)),
                 "gradients_per_s_max": max(rates)}  # fmt: skip
    if ideal:
        fig.update(ratio_to_ideal_min=min(rates) / ideal,
                   ratio_to_ideal_median=float(np.median(rates)) / ideal,
                   ratio_to_ideal_max=max(rates) / ideal)  # fmt: skip
    return fig


def paper(seconds: float, runs: int, workers: int = 4) -> dict:
    return _repeated(
        lambda: rpc_run("optimizer=asgd", "topology=native", f"topology.n_workers={workers}",
                        "budget.gradients=null", f"budget.time={seconds}"),
        runs,
    )  # fmt: skip


def emulated(seconds: float, runs: int, workers: int = 4, job_s: float = 0.02) -> dict:
    fig = _repeated(
        # a small stepsize: 40 workers diverge at the preset's (the figure is throughput)
        lambda: rpc_run("optimizer=asgd", "optimizer.lr=0.001", "topology=homogeneous",
                        f"topology.n_workers={workers}",
                        "topology.noise=none", f"engine.time_scale={job_s}",
                        "budget.gradients=null", f"budget.time={seconds}"),
        runs, ideal=workers / job_s,
    )  # fmt: skip
    fig["ideal_gradients_per_s"] = workers / job_s
    return fig


def gpu(seconds: float, runs: int, workers: int = 4, device: str = "cuda") -> dict:
    fig = _repeated(
        lambda: rpc_run("experiment=cnn_digits", "optimizer=asgd", f"engine.device={device}",
                        "topology=native", f"topology.n_workers={workers}",
                        "budget.gradients=null", f"budget.time={seconds}"),
        runs,
    )  # fmt: skip
    fig["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return fig


PARAMS = {  # the fixed settings of each case, for its record
    "transport": {
        "dims": [1_000, 100_000, 1_000_000],
        "workers": [1, 2, 4],
        "methods": ["asgd", "minibatch"],
        "topology": "native",
    },
    "paper": {"workers": 4, "topology": "native", "method": "asgd"},
    "emulated": {
        "workers": 4,
        "job_s": 0.02,
        "topology": "homogeneous",
        "method": "asgd",
        "lr": 0.001,
    },
    "gpu": {"workers": 4, "topology": "native", "method": "asgd", "experiment": "cnn_digits"},
}


def default_name(case: str, device: str, workers: int | None = None) -> str:
    if case == "gpu":
        return f"bench_rpc-gpu-{device}.json"
    return f"bench_rpc-{case}" + (f"-w{workers}" if workers else "") + ".json"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--case", choices=["transport", "paper", "emulated", "gpu", "all"],
                   default="all")  # fmt: skip
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--runs", type=int, default=1, help="paper, emulated, gpu: repeats")
    p.add_argument("--device", default="cuda", help="gpu case: cuda, or cpu for its baseline")
    p.add_argument("--workers", type=int, default=None, help="emulated: workers (default 4)")
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    a = p.parse_args(argv)
    if a.case == "all" and a.out is not None and str(a.out).endswith(".json"):
        p.error("--case all writes one file per case: give --out a folder")
    cases = ["paper", "emulated", "transport"] if a.case == "all" else [a.case]
    for c in cases:
        if a.case == "all":  # each case its own record, with the command that makes it alone
            sub = ["--case", c, "--seconds", f"{a.seconds:g}", "--runs", str(a.runs)]
            sub += [] if a.out is None else ["--out", str(a.out)]
        else:
            sub = argv
        params = {**PARAMS[c], "seconds": a.seconds}
        if c != "transport":
            params["runs"] = a.runs
        if c == "gpu":
            params["device"] = a.device
        workers = a.workers if c == "emulated" else None
        if workers:
            params["workers"] = workers
        m = Measurement("bench_rpc", sub, c, params)
        if c == "transport":
            figures = transport(a.seconds)
        elif c == "gpu":
            figures = gpu(a.seconds, a.runs, device=a.device)
        elif c == "emulated":
            figures = emulated(a.seconds, a.runs, workers or 4)
        else:
            figures = paper(a.seconds, a.runs)
        write(out_file(a.out, default_name(c, a.device, workers)), m.finish(figures, RUN_UNITS))


if __name__ == "__main__":
    main()
