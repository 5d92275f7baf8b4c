"""The rules' decisions at their edges, by hand: the smallest thresholds and batches they accept
(and the messages of those they refuse), the errors when every worker is gone, and random
assignment's count of each worker's outstanding jobs, which a lost worker hands on."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.methods import (
    AsyncSGD,
    Decision,
    MinibatchSGD,
    RandomAssignmentASGD,
    RennalaSGD,
    RingmasterASGD,
)
from tests.core.methods.test_random_assignment import ScriptedDraws


def message(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as err:
        fn(*args, **kwargs)
    return str(err.value)


# -- asynchronous SGD ----------------------------------------------------------------------------
def test_adaptive_stepsize_is_exactly_lr_up_to_delay_n():
    r = AsyncSGD(3, 0.1, "adaptive")
    for v in range(3):
        r.on_gradient(0, v)  # k = 3
    assert r.weight_for(0, 3) == 0.1  # not 0.1 * 3 / 3, which rounds to 0.10000000000000002
    assert r.on_gradient(1, 0) == Decision(3, 0.1, True, (1,))
    assert r.weight_for(0, 4) == 0.1 * 3 / 4


def test_drop_with_threshold_0_applies_only_fresh_gradients():
    r = AsyncSGD(2, 0.5, "drop", threshold=0)
    assert r.on_gradient(0, 0) == Decision(0, 0.5, True, (0,))
    assert r.on_gradient(1, 0) == Decision(1, 0.0, False, (1,))
    assert message(ValueError, AsyncSGD, 2, 0.5, "drop", -1) == "threshold must be >= 0, got -1"


# -- Ringmaster ---------------------------------------------------------------------------------
def test_ringmaster_with_r_1_applies_only_fresh_gradients():
    r = RingmasterASGD(2, 0.5, threshold=1)
    assert r.threshold == 1
    assert r.on_gradient(0, 0) == Decision(0, 0.5, True, (0,))
    assert r.on_gradient(1, 0) == Decision(1, 0.0, False, (1,))  # delay 1 >= R = 1
    assert r.on_gradient(1, 1) == Decision(0, 0.5, True, (1,))


def test_ringmaster_refuses_r_below_1_by_its_value():
    assert message(ValueError, RingmasterASGD, 2, 0.5, threshold=0) == (
        "Ringmaster threshold R must be >= 1, got 0"
    )


def test_ringmaster_cancel_cancels_each_stale_job_once():
    """R = 1, cancel: after each step every other running job is stale; each is cancelled once
    and restarted at the new version, whatever the order of the restarts."""
    r = RingmasterASGD(3, 0.5, threshold=1, cancel=True)
    assert r.on_gradient(0, 0) == Decision(0, 0.5, True, (0, 1, 2), (1, 2))
    assert r.on_gradient(2, 1) == Decision(0, 0.5, True, (2, 0, 1), (0, 1))
    assert r.on_gradient(1, 2) == Decision(0, 0.5, True, (1, 2, 0), (2, 0))
    assert r._running == [3, 3, 3]


# -- Rennala -------------------------------------------------------------------------------------
def test_rennala_with_s_1_steps_on_every_fresh_gradient():
    r = RennalaSGD(2, 0.5, batch=1)
    assert r.on_gradient(0, 0) == Decision(0, 0.5, True, (0,))
    assert r.on_gradient(1, 0) == Decision(1, 0.0, False, (1,))
    assert r.on_gradient(1, 1) == Decision(0, 0.5, True, (1,))
    assert r.updates_per_gradient == 1.0


def test_rennala_refuses_s_below_1_by_its_value():
    assert message(ValueError, RennalaSGD, 2, 0.5, batch=0) == (
        "Rennala batch S must be >= 1, got 0"
    )


def test_rennala_says_when_every_worker_is_gone():
    r = RennalaSGD(2, 0.5)
    assert r.on_worker_lost(0) is None
    assert r.on_worker_lost(0) is None  # told twice: nothing more
    assert message(RuntimeError, r.on_worker_lost, 1) == "Rennala SGD: every worker is gone"


# -- minibatch -----------------------------------------------------------------------------------
def test_minibatch_says_when_every_worker_is_gone():
    r = MinibatchSGD(1, 0.5)
    assert message(RuntimeError, r.on_worker_lost, 0) == "minibatch SGD: every worker is gone"


# -- random assignment ---------------------------------------------------------------------------
def test_random_assignment_draws_workers_uniformly_from_its_generator():
    """The assignments are the generator's integers in [0, n), in order."""
    r = RandomAssignmentASGD(3, 0.5, np.random.default_rng(7))
    expected = np.random.default_rng(7).integers(0, 3, size=RandomAssignmentASGD._BLOCK)
    got = [r.on_gradient(0, r.version).assign[0] for _ in range(300)]
    assert got == expected[:300].tolist()
    assert set(got) == {0, 1, 2}


def test_a_lost_worker_hands_on_exactly_its_outstanding_jobs():
    # draws: the arrivals give jobs to 2, 2, 0; the loss of 2 draws 1 and 0 for its two jobs
    r = RandomAssignmentASGD(3, 0.5, ScriptedDraws([2, 2, 0, 1, 0, 1, 2, 0]))
    r.on_gradient(0, 0)  # worker 0 back (0 outstanding), a job for 2 (2 outstanding)
    r.on_gradient(1, 0)  # worker 1 back (0), another for 2 (3)
    r.on_gradient(2, 0)  # one of worker 2's back (2), a job for 0 (1)
    assert r._outstanding == [1, 0, 2]
    assert r.on_worker_lost(2) == Decision(0, 0.0, False, (1, 0))
    assert r._outstanding == [2, 1, 0]
    # worker 0 holds two jobs: losing it hands on two, drawn among the others: 1, then 2 and 0
    # (both lost) are drawn again, then 1
    r._rng = ScriptedDraws([1, 2, 0, 1])
    r._draws = []
    assert r.on_worker_lost(0) == Decision(0, 0.0, False, (1, 1))
    assert r._outstanding == [0, 3, 0]


def test_a_worker_reported_lost_twice_hands_on_nothing_the_second_time():
    r = RandomAssignmentASGD(3, 0.5, ScriptedDraws([1, 2, 1, 2]))
    assert r.on_worker_lost(0) == Decision(0, 0.0, False, (1,))
    assert r.on_worker_lost(0) == Decision(0, 0.0, False, ())
    assert r._outstanding == [0, 2, 1]


def test_random_assignment_says_when_every_worker_is_gone():
    r = RandomAssignmentASGD(2, 0.5, ScriptedDraws([1, 1, 1]))
    r.on_worker_lost(0)
    assert message(RuntimeError, r.on_worker_lost, 1) == (
        "asynchronous SGD with random assignment: every worker is gone"
    )
