"""Hand-checkable traces: 3-4 workers with distinct fixed times and full-batch gradients on a
small quadratic, run through the event engine. Every arrival (order, worker, version, delay,
applied, stepsize, time) of the rules' trace tests (one file per rule beside this one) was derived
by hand from docs/methods.md; the iterates are recomputed with an independent numpy recursion
from those hand-derived events and hand-derived stepsizes."""

from __future__ import annotations

import numpy as np

from models.datasets import load_npz
from pipeline.core.records import read_events
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg, full_grad

LR = 0.1

TIMES = "topology.times=[1.0,1.5,2.0,3.0]"


def run_trace(tmp_path, small_data, method, gradients, *extra, times=TIMES, n=4):
    cfg = compose_cfg(
        f"optimizer={method}",
        "topology=custom",
        f"topology.n_workers={n}",
        times,
        "topology.noise=none",
        "batch_size=null",
        f"budget.gradients={gradients}",
        "eval_every=1",
        f"optimizer.lr={LR}",
        "dataset=small_lstsq",
        f"dataset.path={small_data}",
        "tracking=none",
        *extra,
    )
    summary, result = run_experiment(cfg, tmp_path, trace=True)
    events = [
        (e["worker"], e["version"], e["delay"], e["applied"], e["time"])
        for e in read_events(tmp_path / "events.csv")
    ]
    lrs = [e["lr"] for e in read_events(tmp_path / "events.csv")]
    return summary, result, events, lrs


def reference_iterates(small_data, events, weights, steps_after):
    """x_{k+1} = x_k - sum of weight * grad(x_version) over the events of that step."""
    d = load_npz(small_data)
    X, y = d["X"], d["y"]
    xs = [np.zeros(X.shape[1])]
    buf = np.zeros(X.shape[1])
    for (_, v, _, _, _), w, step in zip(events, weights, steps_after, strict=True):
        if w:
            buf += w * full_grad(X, y, xs[v])
        if step:
            xs.append(xs[-1] - buf)
            buf = np.zeros_like(buf)
    return xs


def assert_iterates(result, expected):
    got = [x.numpy() for x in result.iterates]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


ASGD_EVENTS = [  # (worker, version, delay, applied, time)
    (0, 0, 0, 1, 1.0),
    (1, 0, 1, 1, 1.5),
    (0, 1, 1, 1, 2.0),
    (2, 0, 3, 1, 2.0),  # tie at t=2 broken by worker index
    (0, 3, 1, 1, 3.0),
    (1, 2, 3, 1, 3.0),
    (3, 0, 6, 1, 3.0),
    (0, 5, 2, 1, 4.0),
    (2, 4, 4, 1, 4.0),
    (1, 6, 3, 1, 4.5),
]
