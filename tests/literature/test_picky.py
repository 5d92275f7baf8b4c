"""Picky SGD (docs/methods.md, section 3.9): a delayed gradient is applied only if the iterate
moved at most ``radius`` since the gradient's point. The rule reads the iterates
(``reads_iterates``): the event engine replays it in lockstep with the schedule. Its decisions
alone, then traces through the event engine against an independent numpy loop."""

from __future__ import annotations

import numpy as np
import pytest

from models.datasets import load_npz
from pipeline.api import Decision
from pipeline.literature import PickySGD
from tests.conftest import full_grad
from tests.core.methods.traces import LR, assert_iterates, run_trace

#: arrivals with times 1, 1.5, 2, 3 and every worker going on at once (ties by worker index)
ARRIVALS = [(0, 1.0), (1, 1.5), (0, 2.0), (2, 2.0), (0, 3.0), (1, 3.0), (3, 3.0), (0, 4.0),
            (2, 4.0), (1, 4.5), (0, 5.0), (0, 6.0), (1, 6.0), (2, 6.0), (3, 6.0)]  # fmt: skip


class Moves:
    """An IterateView over given distances: version -> ||x_now - x_version||."""

    def __init__(self, far: dict[int, float]):
        self.far = far

    def distance(self, version: int) -> float:
        return self.far.get(version, 0.0)


def test_a_delayed_gradient_far_from_the_iterate_is_discarded():
    r = PickySGD(2, 0.5, radius=1.0)
    r.iterates = Moves({0: 2.0, 1: 0.5})
    assert r.on_gradient(0, 0) == Decision(0, 0.5, True, (0,))  # no delay: always applied
    assert r.on_gradient(1, 0) == Decision(1, 0.0, False, (1,))  # moved 2.0 > 1.0
    assert r.on_gradient(0, 1) == Decision(0, 0.5, True, (0,))
    assert r.on_gradient(1, 1) == Decision(1, 0.5, True, (1,))  # moved 0.5 <= 1.0
    assert r.version == 3 and r.discarded == 1 and r.reads_iterates
    with pytest.raises(ValueError, match="radius must be > 0"):
        PickySGD(2, 0.5, radius=0.0)


def reference(small_data, radius):
    """An independent loop (numpy only): Picky SGD on the fixed arrival order above."""
    d = load_npz(small_data)
    X, y = d["X"], d["y"]
    xs = [np.zeros(X.shape[1])]
    job = [0, 0, 0, 0]  # the version each worker's running job was given
    rows, weights = [], []
    for w, t in ARRIVALS:
        k, v = len(xs) - 1, job[w]
        if k == v or np.linalg.norm(xs[k] - xs[v]) <= radius:
            xs.append(xs[k] - LR * full_grad(X, y, xs[v]))
            rows.append((w, v, k - v, 1, t))
            weights.append(LR)
        else:
            rows.append((w, v, k - v, 0, t))
            weights.append(0.0)
        job[w] = len(xs) - 1  # it goes on at the current point
    return rows, weights, xs


@pytest.mark.parametrize("radius", [0.3, 0.5, 2.0])
def test_picky_trace_equals_an_independent_loop(tmp_path, small_data, radius):
    rows, weights, xs = reference(small_data, radius)
    discarded = sum(1 for r in rows if not r[3])
    if radius == 2.0:
        assert discarded == 0  # never far: the arrivals and weights of asynchronous SGD
    else:
        assert 0 < discarded < len(rows) - 4  # both branches, delayed gradients applied too
        assert any(r[3] and r[2] > 0 for r in rows)
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "picky", len(ARRIVALS), f"optimizer.radius={radius}"
    )
    assert events == rows
    assert lrs == weights
    assert summary["updates"] == len(xs) - 1 and summary["discarded"] == discarded
    assert_iterates(result, xs)


def test_a_move_of_exactly_the_radius_is_close_enough_and_discards_are_counted():
    r = PickySGD(3, 0.5, radius=0.25)
    r.iterates = Moves({0: 0.25, 1: 0.5})
    assert r.on_gradient(0, 0).step  # no delay
    assert r.on_gradient(1, 0).step  # moved exactly the radius: applied
    assert not r.on_gradient(2, 1).step and not r.on_gradient(0, 1).step
    assert r.discarded == 2 and r.version == 2
    assert PickySGD(2, 0.5).radius == 1.0  # the class's default (the YAML's is 0.1)
    assert r.describe() == {"lr": 0.5, "radius": 0.25}
