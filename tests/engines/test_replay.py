"""The event engine's schedule/replay split against the plain event loop it replaced
(tests/reference_engine.py): the same arrivals, the same records, the same iterates, for every
method, several topologies, both replay paths (batched and one by one) and chunks that cut runs
anywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.compose.build import build_experiment
from pipeline.core.records import RunRecorder, read_events, read_history
from pipeline.engines.base import RunControl
from pipeline.engines.sim import SimEngine
from tests.conftest import compose_cfg
from tests.reference_engine import EventLoopEngine

METHODS = [
    ("minibatch",),
    ("asgd",),
    ("asgd_adaptive",),
    ("asgd_drop", "optimizer.threshold=2"),
    ("asgd_random",),
    ("rennala", "optimizer.batch=3"),
    ("rennala", "optimizer.batch=3", "optimizer.cancel=true"),
    ("ringmaster", "optimizer.threshold=3"),
    ("ringmaster", "optimizer.threshold=3", "optimizer.cancel=true"),
]
TOPOLOGIES = [
    ("topology=sqrt", "topology.n_workers=5", "topology.noise=exponential"),
    ("topology=straggler", "topology.n_workers=5", "topology.factor=10", "topology.noise=gamma"),
    ("topology=custom", "topology.n_workers=4", "topology.times=[1.0,1.5,2.0,3.0]"),
]
TOPOLOGY_PARAMS = [
    pytest.param(t, id=t[0], marks=() if i == 0 else pytest.mark.slow)
    for i, t in enumerate(TOPOLOGIES)
]


def run(engine_cls, cfg, out, batched=None, chunk=None, fused=None):
    exp = build_experiment(cfg)
    rec = RunRecorder(out, extra_history=exp.evaluator.extra_columns)
    control = RunControl(exp.evaluator, rec, exp.eval_every, cfg.budget.gradients, cfg.budget.time)
    eng = engine_cls(exp, control, trace_iterates=True)
    if batched is not None:
        eng.replay.batched = batched
    if fused is not None:  # the GPU's form of the batched rounds, here on the CPU
        eng.replay.fused = fused
    if chunk is not None:
        eng.chunk = chunk
    result = eng.run()
    rec.close()
    return result


def compare(tmp_path, overrides, **kw):
    cfg = compose_cfg(*overrides)
    ref = run(EventLoopEngine, cfg, tmp_path / "ref")
    new = run(SimEngine, cfg, tmp_path / "new", **kw)
    assert read_events(tmp_path / "new" / "events.csv") == read_events(
        tmp_path / "ref" / "events.csv"
    )
    assert (new.gradients, new.updates, new.cancelled, new.time, new.status) == (
        ref.gradients, ref.updates, ref.cancelled, ref.time, ref.status,
    )  # fmt: skip
    assert len(new.iterates) == len(ref.iterates)
    for a, b in zip(new.iterates, ref.iterates, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    h_new = read_history(tmp_path / "new" / "history.csv")
    h_ref = read_history(tmp_path / "ref" / "history.csv")
    assert [(h["update"], h["gradients"], h["time"]) for h in h_new] == [
        (h["update"], h["gradients"], h["time"]) for h in h_ref
    ]
    np.testing.assert_allclose(
        [h["loss"] for h in h_new], [h["loss"] for h in h_ref], rtol=1e-10, atol=1e-14
    )
    return new


def small(small_data, method, topology, *extra):
    return [
        f"optimizer={method[0]}", *method[1:], *topology, "dataset=small_lstsq",
        f"dataset.path={small_data}", "optimizer.lr=0.05", "budget.gradients=400",
        "eval_every=7", "tracking=none", *extra,
    ]  # fmt: skip


PATHS = {"batched": (True, False), "batched fused": (True, True), "one by one": (False, False)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("topology", TOPOLOGY_PARAMS)
@pytest.mark.parametrize("method", METHODS, ids=" ".join)
def test_replay_equals_the_event_loop(method, topology, path, tmp_path, small_data):
    # chunks of 37 rows cut rounds, steps and minibatch rounds anywhere
    batched, fused = PATHS[path]
    compare(tmp_path, small(small_data, method, topology, "batch_size=8"),
            batched=batched, fused=fused, chunk=37)  # fmt: skip


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "batched fused"])
@pytest.mark.parametrize("method", METHODS, ids=" ".join)
def test_replay_of_the_noisy_quadratic(method, fused, tmp_path):
    """Random-access noise samples, drawn for a whole chunk at once."""
    compare(
        tmp_path,
        [f"optimizer={method[0]}", *method[1:], "~experiment", "objective=noisy_quadratic",
         "dataset=none", "topology=sqrt", "topology.n_workers=7", "topology.noise=exponential",
         "optimizer.lr=0.05", "budget.gradients=500", "eval_every=3", "tracking=none"],
        chunk=50, fused=fused,
    )  # fmt: skip


@pytest.mark.parametrize("path", list(PATHS))
def test_time_budget_and_divergence_stop_the_replay_where_the_loop_stops(
    path, tmp_path, small_data
):
    method, topology = ("asgd",), TOPOLOGIES[0]
    batched, fused = PATHS[path]
    kw = {"chunk": 20, "batched": batched, "fused": fused}
    new = compare(tmp_path / "t", small(small_data, method, topology, "budget.gradients=null",
                                        "budget.time=37.5", "batch_size=8"), **kw)  # fmt: skip
    assert new.stopped_by == "budget.time" and new.time == 37.5
    new = compare(tmp_path / "d", small(small_data, method, topology, "optimizer.lr=5",
                                        "eval_every=1", "batch_size=8"), **kw)  # fmt: skip
    assert new.status == "diverged" and new.gradients < 400


class _SignalAfterRecord(RunControl):
    """A signal that lands inside an evaluation, just after its history row is written."""

    def __init__(self, *a, at: int, **kw):
        super().__init__(*a, **kw)
        self.at = at

    def record(self, x, version, gradients, time):
        out = super().record(x, version, gradients, time)
        if version == self.at:
            self.at = -1
            raise KeyboardInterrupt
        return out


@pytest.mark.parametrize("path", list(PATHS))
def test_a_signal_inside_an_evaluation_keeps_the_records_consistent(path, tmp_path, small_data):
    """The run ends at the evaluated step: no history row past the final state, the final row is
    that step's, and the events stop at its arrival."""
    cfg = compose_cfg(*small(small_data, ("asgd",), TOPOLOGIES[0], "batch_size=8"))
    exp = build_experiment(cfg)
    rec = RunRecorder(tmp_path, extra_history=exp.evaluator.extra_columns)
    control = _SignalAfterRecord(exp.evaluator, rec, 7, cfg.budget.gradients, None, at=70)
    eng = SimEngine(exp, control)
    eng.replay.batched, eng.replay.fused = PATHS[path]
    with pytest.raises(KeyboardInterrupt):
        eng.run()
    rec.close()
    history = read_history(tmp_path / "history.csv")
    updates = [int(h["update"]) for h in history]
    assert updates == list(range(0, 71, 7))  # every 7th; the final state is the last row
    assert control.result.updates == 70 and control.result.status == "killed"
    assert len(read_events(tmp_path / "events.csv")) == control.result.gradients == 70


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
