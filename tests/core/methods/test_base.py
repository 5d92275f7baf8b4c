"""What every server rule inherits (pipeline/core/methods/base.py) and the registry that builds
them by name (pipeline/core/methods/__init__.py): arguments checked with their messages, the
defaults, and each registered name with its options reaching the rule."""

from __future__ import annotations

import pytest

from pipeline.core.methods import (
    METHODS,
    AsyncSGD,
    Decision,
    MinibatchSGD,
    RandomAssignmentASGD,
    RennalaSGD,
    RingmasterASGD,
    ServerRule,
    build_rule,
)


class Plain(ServerRule):
    name = "plain"

    def on_gradient(self, worker, version):
        return Decision(0, self.lr, True, self._solo[worker])


def test_the_defaults_every_rule_inherits():
    r = Plain(3, 2)
    assert r.n == 3 and r.version == 0
    assert r.lr == 2.0 and type(r.lr) is float
    assert r.start() == (0, 1, 2)
    assert r._solo == ((0,), (1,), (2,))
    assert r.on_worker_lost(1) is None
    assert r.updates_per_gradient == 1.0
    assert r.describe() == {"lr": 2.0}
    assert r.synchronous is False
    assert Decision(1, 0.5, True) == (1, 0.5, True, (), (), ())  # no assignment, cancel, scale


def test_one_worker_and_a_tiny_stepsize_are_enough():
    r = Plain(1, 1e-300)
    assert r.start() == (0,) and r._solo == ((0,),)


@pytest.mark.parametrize(
    ("n", "lr", "message"),
    [
        (0, 0.1, "n_workers must be >= 1, got 0"),
        (-2, 0.1, "n_workers must be >= 1, got -2"),
        (2, 0.0, "stepsize must be positive, got 0.0"),
        (2, -1, "stepsize must be positive, got -1"),
        (2, float("nan"), "stepsize must be positive, got nan"),
    ],
)
def test_impossible_arguments_are_refused_with_their_value(n, lr, message):
    with pytest.raises(ValueError) as err:
        Plain(n, lr)
    assert str(err.value) == message


def test_the_registry_builds_each_rule_with_its_options():
    assert list(METHODS) == [
        "minibatch",
        "asgd",
        "asgd_adaptive",
        "asgd_drop",
        "asgd_random",
        "rennala",
        "ringmaster",
    ]
    r = build_rule("minibatch", 3, 0.5)
    assert type(r) is MinibatchSGD and (r.n, r.lr) == (3, 0.5)
    r = build_rule("asgd", 3, 0.5)
    assert type(r) is AsyncSGD and r.describe() == {"lr": 0.5, "stepsize": "constant"}
    r = build_rule("asgd_adaptive", 3, 0.5)
    assert type(r) is AsyncSGD and r.stepsize == "adaptive"
    r = build_rule("asgd_drop", 3, 0.5, {"threshold": 7})
    assert r.describe() == {"lr": 0.5, "stepsize": "drop", "threshold": 7}
    assert build_rule("asgd_drop", 3, 0.5).threshold == 3  # default: n
    r = build_rule("asgd_random", 3, 0.5, {"stepsize": "drop", "threshold": 2})
    assert type(r) is RandomAssignmentASGD and (r.stepsize, r.threshold) == ("drop", 2)
    assert build_rule("asgd_random", 3, 0.5, {"stepsize": None}).stepsize == "constant"
    r = build_rule("rennala", 4, 0.5, {"batch": 2, "cancel": True})
    assert type(r) is RennalaSGD and r.describe() == {"lr": 0.5, "batch": 2, "cancel": True}
    assert build_rule("rennala", 4, 0.5).describe() == {"lr": 0.5, "batch": 4, "cancel": False}
    r = build_rule("ringmaster", 4, 0.5, {"threshold": 2, "cancel": True})
    assert type(r) is RingmasterASGD
    assert r.describe() == {"lr": 0.5, "threshold": 2, "cancel": True}
    r = build_rule("ringmaster", 4, 0.5)
    assert r.describe() == {"lr": 0.5, "threshold": 4, "cancel": False}


def test_the_registry_refuses_an_unknown_method_by_name():
    with pytest.raises(ValueError) as err:
        build_rule("sgd", 2, 0.1)
    assert str(err.value) == (
        "unknown method 'sgd'; choose one of minibatch, asgd, asgd_adaptive, asgd_drop, "
        "asgd_random, rennala, ringmaster"
    )


def test_random_assignment_draws_from_the_seeded_rule_stream():
    """The same seed gives the same assignments; another seed other ones."""

    def draws(seed):
        r = build_rule("asgd_random", 5, 0.1, seed=seed)
        return [r.on_gradient(0, r.version).assign for _ in range(40)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
