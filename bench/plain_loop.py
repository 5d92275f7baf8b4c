"""The yardstick of the event engine at scale (bench/bench_sim.py ``--case scale``): a plain
numpy heap loop of asynchronous SGD on the same problem, the 30 lines a user with many workers
would write instead of the engine. Per event: pop the earliest completion, one gradient of the
10-d noisy quadratic at the worker's point, one update, push the worker's next completion. Its
randomness is its own (one generator, noise and times drawn in blocks), so its numbers are not
the engine's; its work per event is the same (no records, no evaluation).

    python bench/plain_loop.py --workers 10000 --events 1000000
"""

from __future__ import annotations

import argparse
import heapq
import time

import numpy as np


def plain_loop(workers: int, events: int, dim: int = 10, lr: float = 1e-4, cond: float = 10.0,
               sigma: float = 1.0, seed: int = 0) -> tuple[float, np.ndarray]:  # fmt: skip
    """(seconds, final x) of ``events`` arrivals of ``workers`` workers with tau_i = sqrt(i)
    and exponential job times."""
    rng = np.random.default_rng(seed)
    tau = np.sqrt(np.arange(1, workers + 1, dtype=np.float64))
    h = np.linspace(1.0 / cond, 1.0, dim)
    x_star = np.ones(dim)
    x = np.zeros(dim)
    points = np.zeros((workers, dim))  # the point each worker's job was given
    heap = list(
        zip((tau * rng.standard_exponential(workers)).tolist(), range(workers), strict=True)
    )
    heapq.heapify(heap)
    block = 1 << 16
    t0 = time.perf_counter()
    done = 0
    while done < events:
        m = min(block, events - done)
        noise = sigma * rng.standard_normal((m, dim))
        durations = rng.standard_exponential(m).tolist()
        for e in range(m):
            t, w = heap[0]
            g = h * (points[w] - x_star) + noise[e]
            x -= lr * g
            points[w] = x
            heapq.heapreplace(heap, (t + tau[w] * durations[e], w))
        done += m
    return time.perf_counter() - t0, x


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=10_000)
    p.add_argument("--events", type=int, default=1_000_000)
    a = p.parse_args()
    seconds, _ = plain_loop(a.workers, a.events)
    print(f"{a.events / seconds:.0f} events/s ({seconds:.2f} s)")
