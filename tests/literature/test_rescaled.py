"""Rescaled ASGD (docs/methods.md, section 3.8): asynchronous SGD with worker i's stepsize
lr * tau_i / tau_max: its decisions alone, then a hand-derived trace through the event engine
(the worker times filled in by the pipeline from the topology)."""

from __future__ import annotations

import pytest

from pipeline.api import Decision
from pipeline.literature import RescaledASGD
from tests.core.methods.traces import (
    ASGD_EVENTS,
    LR,
    TIMES,
    assert_iterates,
    reference_iterates,
    run_trace,
)


def test_each_worker_steps_with_lr_times_its_time_over_the_slowest():
    r = RescaledASGD(3, 0.6, worker_times=[1.0, 2.0, 4.0])
    assert r.on_gradient(0, 0) == Decision(0, 0.15, True, (0,))
    assert r.on_gradient(2, 0) == Decision(1, 0.6, True, (2,))
    assert r.on_gradient(1, 1) == Decision(1, 0.3, True, (1,))
    assert r.version == 3
    with pytest.raises(ValueError, match="needs each worker's mean job time"):
        RescaledASGD(3, 0.6)
    with pytest.raises(ValueError, match="3 positive times"):
        RescaledASGD(3, 0.6, worker_times=[1.0, 0.0, 2.0])


def test_rescaled_asgd_trace(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "rescaled_asgd", 10)
    assert events == ASGD_EVENTS  # the arrivals of asynchronous SGD: every gradient applied
    taus = [float(t) for t in TIMES.split("[")[1].rstrip("]").split(",")]  # 1, 1.5, 2, 3
    hand = [LR * taus[w] / 3.0 for w, *_ in ASGD_EVENTS]
    assert lrs == pytest.approx(hand, rel=1e-15)
    assert summary["updates"] == 10
    assert_iterates(result, reference_iterates(small_data, ASGD_EVENTS, hand, [True] * 10))


def test_a_topology_without_times_is_one_config_error():
    """topology=native or trace gives no tau_i: the rule's refusal is one ConfigError line."""
    from omegaconf import OmegaConf

    from pipeline import ConfigError
    from pipeline.compose.plugins import build_plugin

    opt = OmegaConf.create(
        {"_target_": "pipeline.literature.RescaledASGD", "name": "rescaled_asgd"}
    )
    with pytest.raises(ConfigError) as e:
        build_plugin(opt, 3, 0.1, None, None)
    assert str(e.value) == (
        "optimizer._target_=pipeline.literature.RescaledASGD: Rescaled ASGD needs each worker's "
        "mean job time tau_i; this topology gives none (choose an emulated topology: "
        "homogeneous, linear, sqrt, ...)"
    )


def test_describe_gives_the_range_of_the_stepsizes():
    r = RescaledASGD(2, 0.6, worker_times=[1.0, 3.0])
    assert r.describe() == {"lr": 0.6, "weight_min": pytest.approx(0.2), "weight_max": 0.6}
