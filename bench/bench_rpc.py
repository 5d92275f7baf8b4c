"""Benchmark of ``engine=rpc`` (figures go to BENCHMARKS.md; nothing here is asserted).

Cases:
- ``transport``: a free gradient (noisy quadratic, sigma 0) of 1e3, 1e5, 1e6 floats with 1, 2, 4
  workers, topology=native: gradients per second, against the "ideal" of the same gradients
  and updates in one process with no communication; the server's CPU per gradient (its own
  process: the loop, the RPC threads, the apply), for asgd and for minibatch.
- ``paper``: the paper problem (least squares 10000 x 400, batch 256), 4 workers, native,
  asgd: gradients per second (compare: ``python bench/bare_rpc_ps.py --workers 4``).
- ``emulated``: 20 ms jobs (homogeneous, no noise, time_scale 0.02), 4 workers: throughput
  against n / 20 ms.
- ``gpu``: the cnn objective (digits), 4 workers sharing one GPU, native (``--device cpu``: the
  same on the CPU, the baseline).

    python bench/bench_rpc.py [--case transport|paper|emulated|gpu|all] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.runner import run_experiment  # noqa: E402


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


def transport(seconds: float) -> list[dict]:
    out = []
    for dim in (1_000, 100_000, 1_000_000):
        ideal = ideal_rate(dim)
        for n in (1, 2, 4):
            for method in ("asgd", "minibatch"):
                r = rpc_run(*_free(dim), f"optimizer={method}", "topology=native",
                            f"topology.n_workers={n}", f"budget.time={seconds}")  # fmt: skip
                r.update(case="transport", dim=dim, workers=n, method=method,
                         ideal_gradients_per_s=ideal,
                         ratio_to_ideal=r["gradients_per_s"] / ideal)  # fmt: skip
                out.append(r)
                print(json.dumps(r), flush=True)
    return out


def paper(seconds: float, workers: int = 4) -> dict:
    r = rpc_run("optimizer=asgd", "topology=native", f"topology.n_workers={workers}",
                "budget.gradients=null", f"budget.time={seconds}")  # fmt: skip
    r.update(case="paper", workers=workers)
    print(json.dumps(r), flush=True)
    return r


def emulated(seconds: float, workers: int = 4, job_s: float = 0.02) -> dict:
    r = rpc_run("optimizer=asgd", "topology=homogeneous", f"topology.n_workers={workers}",
                "topology.noise=none", f"engine.time_scale={job_s}", "budget.gradients=null",
                f"budget.time={seconds}")  # fmt: skip
    r.update(case="emulated", workers=workers, job_s=job_s,
             ratio_to_ideal=r["gradients_per_s"] / (workers / job_s))  # fmt: skip
    print(json.dumps(r), flush=True)
    return r


def gpu(seconds: float, workers: int = 4, device: str = "cuda") -> dict:
    r = rpc_run("experiment=cnn_digits", "optimizer=asgd", f"engine.device={device}",
                "topology=native", f"topology.n_workers={workers}", "budget.gradients=null",
                f"budget.time={seconds}")  # fmt: skip
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    r.update(case="gpu", workers=workers, device=name)
    print(json.dumps(r), flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", choices=["transport", "paper", "emulated", "gpu", "all"],
                   default="all")  # fmt: skip
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--device", default="cuda", help="gpu case: cuda, or cpu for its baseline")
    a = p.parse_args()
    cases = ["paper", "emulated", "transport"] if a.case == "all" else [a.case]
    for c in cases:
        if c == "gpu":
            gpu(a.seconds, device=a.device)
        else:
            {"transport": transport, "paper": paper, "emulated": emulated}[c](a.seconds)


if __name__ == "__main__":
    main()
