"""Hand-checkable traces: 3-4 workers with distinct fixed times and full-batch gradients on a
small quadratic. Every arrival (order, worker, version, delay, applied, stepsize, time) was
derived by hand from docs/methods.md; the iterates are recomputed with an independent numpy
recursion from those hand-derived events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_asgd_constant(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "asgd", 10)
    assert events == ASGD_EVENTS
    assert lrs == [LR] * 10
    assert summary["updates"] == 10 and summary["max_delay"] == 6
    assert summary["mean_delay"] == pytest.approx(24 / 10)
    assert summary["sim_time"] == 4.5
    assert_iterates(result, reference_iterates(small_data, events, lrs, [True] * 10))


def test_asgd_adaptive_scales_long_delays(tmp_path, small_data):
    _, result, events, lrs = run_trace(tmp_path, small_data, "asgd_adaptive", 10)
    assert events == ASGD_EVENTS  # same arrivals: the stepsize never discards
    # gamma * min(1, n / tau) with n = 4: only the delay-6 gradient is scaled, by 4/6
    assert lrs == pytest.approx([LR] * 6 + [LR * 4 / 6] + [LR] * 3, rel=1e-15)
    assert_iterates(result, reference_iterates(small_data, events, lrs, [True] * 10))


DROP_EVENTS = [  # threshold 2: delays 3, 5, 3, 4, 5 are discarded, the worker restarts at x_k
    (0, 0, 0, 1, 1.0),
    (1, 0, 1, 1, 1.5),
    (0, 1, 1, 1, 2.0),
    (2, 0, 3, 0, 2.0),
    (0, 3, 0, 1, 3.0),
    (1, 2, 2, 1, 3.0),
    (3, 0, 5, 0, 3.0),
    (0, 4, 1, 1, 4.0),
    (2, 3, 3, 0, 4.0),
    (1, 5, 1, 1, 4.5),
    (0, 6, 1, 1, 5.0),
    (0, 8, 0, 1, 6.0),
    (1, 7, 2, 1, 6.0),
    (2, 6, 4, 0, 6.0),
    (3, 5, 5, 0, 6.0),
]


def test_asgd_drop_threshold(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "asgd_drop", 15, "optimizer.threshold=2"
    )
    assert events == DROP_EVENTS
    applied = [e[3] for e in events]
    assert lrs == [LR * a for a in applied]
    assert summary["updates"] == 10 and summary["discarded"] == 5
    steps = [bool(a) for a in applied]
    assert_iterates(result, reference_iterates(small_data, events, lrs, steps))


def test_asgd_drop_default_threshold_is_n(tmp_path, small_data):
    _, _, events, _ = run_trace(tmp_path, small_data, "asgd_drop", 10)
    # with threshold n = 4, only the delay-6 arrival of ASGD_EVENTS is discarded
    assert [e[3] for e in events[:7]] == [1, 1, 1, 1, 1, 1, 0]


def test_ringmaster_without_stopping_equals_drop_at_r_minus_one(tmp_path, small_data):
    # Ringmaster applies delay < R; drop applies delay <= threshold: R = 3 is threshold 2
    _, result, events, lrs = run_trace(
        tmp_path, small_data, "ringmaster", 15, "optimizer.threshold=3"
    )
    assert events == DROP_EVENTS
    steps = [bool(e[3]) for e in events]
    assert_iterates(result, reference_iterates(small_data, events, lrs, steps))


def test_ringmaster_stop_stale_cancels_at_delay_r(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path,
        small_data,
        "ringmaster",
        10,
        "optimizer.threshold=3",
        "optimizer.cancel=true",
    )
    # t=2: k reaches 3, so the jobs of workers 2 and 3 (version 0) are cancelled and restarted
    # at x_3 (due at 4 and 5); at t=4 (k=6) and t=6 (k=9) the same happens again, each time
    # before worker 2's arrival, which ties with worker 0's and comes second.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 1, 1, 1.5),
        (0, 1, 1, 1, 2.0),
        (0, 3, 0, 1, 3.0),
        (1, 2, 2, 1, 3.0),
        (0, 4, 1, 1, 4.0),
        (1, 5, 1, 1, 4.5),
        (0, 6, 1, 1, 5.0),
        (0, 8, 0, 1, 6.0),
        (1, 7, 2, 1, 6.0),
    ]
    assert summary["cancelled"] == 6 and summary["discarded"] == 0
    assert_iterates(result, reference_iterates(small_data, events, lrs, [True] * 10))


def test_minibatch_round_lasts_as_long_as_the_slowest_job(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "minibatch", 8)
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 1, 1.5),
        (2, 0, 0, 1, 2.0),
        (3, 0, 0, 1, 3.0),
        (0, 1, 0, 1, 4.0),
        (1, 1, 0, 1, 4.5),
        (2, 1, 0, 1, 5.0),
        (3, 1, 0, 1, 6.0),
    ]
    assert lrs == [LR / 4] * 8  # the mean of 4 gradients, stepsize LR
    assert summary["updates"] == 2 and summary["sim_time"] == 6.0
    steps = [False, False, False, True] * 2
    assert_iterates(result, reference_iterates(small_data, events, lrs, steps))


def test_rennala_finishes_and_discards_stale_jobs(tmp_path, small_data):
    """The published method: a job at an old point runs to its end, its gradient is discarded
    on arrival, and only then does its worker get the current point."""
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "rennala", 12, "optimizer.batch=2"
    )
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 1, 1.5),  # S = 2 reached: x_1; worker 1 restarts at x_1 (due 3.0)
        (0, 0, 1, 0, 2.0),  # started at x_0 at t=1: stale, discarded; restarts at x_1
        (2, 0, 1, 0, 2.0),
        (0, 1, 0, 1, 3.0),
        (1, 1, 0, 1, 3.0),  # x_2
        (3, 0, 2, 0, 3.0),
        (0, 1, 1, 0, 4.0),
        (2, 1, 1, 0, 4.0),
        (1, 2, 0, 1, 4.5),
        (0, 2, 0, 1, 5.0),  # x_3
        (0, 3, 0, 1, 6.0),  # ties at t=6: worker 0 first, then 1, 2, 3 (budget reached)
    ]
    assert lrs == [LR / 2 if e[3] else 0.0 for e in events]
    assert summary["updates"] == 3 and summary["cancelled"] == 0 and summary["discarded"] == 5
    steps = [False, True, False, False, False, True, False, False, False, False, True, False]
    assert_iterates(result, reference_iterates(small_data, events, lrs, steps))


def test_rennala_cancel_restarts_every_worker(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "rennala", 6, "optimizer.batch=2", "optimizer.cancel=true"
    )
    # S = 2: the first two arrivals at x_k make a step; then every running job is cancelled
    # and all four workers restart at x_{k+1} at that moment.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 1, 1.5),
        (0, 1, 0, 1, 2.5),
        (1, 1, 0, 1, 3.0),
        (0, 2, 0, 1, 4.0),
        (1, 2, 0, 1, 4.5),
    ]
    assert lrs == [LR / 2] * 6
    assert summary["updates"] == 3 and summary["cancelled"] == 9
    steps = [False, True] * 3
    assert_iterates(result, reference_iterates(small_data, events, lrs, steps))


class ScriptedDraws:
    """Stands in for the rule's generator: returns a fixed sequence of worker draws."""

    def __init__(self, draws):
        self.draws = list(draws)

    def integers(self, low, high, size):
        out = np.array((self.draws + [0] * size)[:size])
        self.draws = self.draws[size:]
        return out


def test_random_assignment_queues_fifo(tmp_path, small_data, monkeypatch):
    import pipeline.core.methods as methods

    real = methods.RandomAssignmentASGD

    def scripted(n, lr, rng, stepsize="constant", threshold=None):
        return real(n, lr, ScriptedDraws([2, 2, 0, 1, 1, 0]), stepsize, threshold)

    monkeypatch.setitem(methods.METHODS, "asgd_random", lambda n, lr, o, rng: scripted(n, lr, rng))
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "asgd_random", 6, times="topology.times=[1.0,2.0,4.0]", n=3
    )
    # t=1: w0 done, job for w2 queued (busy) -> w0 idles; t=2: same for w1; t=4: w2 done,
    # w0 gets x_3, then w2 starts its queue head x_1; t=5: w1 gets x_4; t=7: w1 gets x_5;
    # t=8: w2's queued job arrives with delay 4, its waiting time included.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 1, 1, 2.0),
        (2, 0, 2, 1, 4.0),
        (0, 3, 0, 1, 5.0),
        (1, 4, 0, 1, 7.0),
        (2, 1, 4, 1, 8.0),
    ]
    assert_iterates(result, reference_iterates(small_data, events, lrs, [True] * 6))


@pytest.mark.parametrize("batch", ["8", "null"], ids=["one by one", "batched"])
def test_memory_holds_only_referenced_iterates(small_data, tmp_path, batch):
    """Between chunks the engine keeps only the iterates of jobs in flight or queued, never one
    per update; the rows of a chunk are written and dropped."""
    from pipeline.compose.build import build_experiment
    from pipeline.core.records import RunRecorder
    from pipeline.engines.base import RunControl
    from pipeline.engines.sim import SimEngine

    cfg = compose_cfg(
        "optimizer=asgd_random", "topology=sqrt", "topology.n_workers=8", f"batch_size={batch}",
        "optimizer.lr=0.01", "budget.gradients=3000", "dataset=small_lstsq",
        f"dataset.path={small_data}", "tracking=none", "topology.noise=exponential",
    )  # fmt: skip
    exp = build_experiment(cfg)
    rec = RunRecorder(tmp_path)
    eng = SimEngine(exp, RunControl(exp.evaluator, rec, 10, 3000, None))
    eng.replay.batched = batch == "null"  # both paths of the replay
    eng.chunk = 100
    held = []
    replay = eng.replay.run

    def probe(rows, *args):
        assert len(rows) <= 100
        out = replay(rows, *args)
        held.append(len(eng.replay.store))
        return out

    eng.replay.run = probe
    result = eng.run()
    rec.close()
    assert result.updates == 3000 and len(held) == 30
    assert max(held) <= 8 + 1  # n jobs in flight (queued ones included), plus the current
    assert torch.isfinite(result.x).all()
    assert len((tmp_path / "events.csv").read_text().splitlines()) == 3001
