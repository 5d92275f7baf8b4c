"""The two capabilities a rule may declare (pipeline.api): ``scales_steps`` (a step's per-worker
factors rewrite its rows' weights; the event engine never cuts a chunk inside a step) and
``reads_iterates`` (the event engine replays in lockstep). Rules that declare neither run as
before (every other engine test)."""

from __future__ import annotations

import pytest

import pipeline.engines.sim as sim
from pipeline.api import Decision, ServerRule
from pipeline.core.server import ParameterServer
from pipeline.engines.dispatch import Dispatcher
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg
from tests.core.methods.traces import assert_iterates, run_trace
from tests.literature.test_malenia import MALENIA_EVENTS


class Halves(ServerRule):
    """Steps every second arrival, scaling worker w's gradients by 1 / (w + 1)."""

    name = "halves"
    scales_steps = True

    def on_gradient(self, worker, version):
        self.count = getattr(self, "count", 0) + 1
        if self.count % 2:
            return Decision(self.version - version, 1.0, False, self.solo[worker])
        self.version += 1
        scale = tuple(1.0 / (w + 1) for w in range(self.n))
        return Decision(0, 1.0, True, self.solo[worker], (), scale)


def test_a_step_rewrites_the_weights_of_its_rows():
    core = Dispatcher(Halves(3, 1.0), lambda w, v: None)
    core.begin()
    core.arrive(2, 1.0)
    assert core.rows[-1][3] == 1.0 and core.open_rows == 1  # provisional until the step
    core.arrive(1, 2.0)
    # every other column as it was: (worker, version, delay, weight, step, time)
    assert core.rows == [(2, 0, 0, 1.0 / 3, False, 1.0), (1, 0, 0, 0.5, True, 2.0)]
    assert core.open_rows == 0


def test_a_lost_worker_s_step_rescales_the_open_step_too():
    class StepsWhenLost(Halves):
        def on_worker_lost(self, worker):
            self.version += 1
            return Decision(0, 0.0, True, (), (), (2.0, 4.0, 8.0))

    core = Dispatcher(StepsWhenLost(3, 1.0), lambda w, v: None)
    core.begin()
    core.arrive(1, 1.0)  # the open step's one row, weight 1
    d = core.lose(2, 1.5)
    assert d.step and core.rows == [(1, 0, 0, 4.0, False, 1.0)] and core.open_rows == 0
    assert core.scale == (2.0, 4.0, 8.0)


def test_rows_taken_before_their_step_are_an_error():
    core = Dispatcher(Halves(2, 1.0), lambda w, v: None)
    core.begin()
    core.arrive(0, 1.0)
    core.rows = []  # an engine that wrote the open step's row away
    with pytest.raises(AssertionError, match="1 rows of the open step were taken"):
        core.arrive(1, 2.0)


def test_a_scale_of_the_wrong_length_names_the_rule():
    class Short(Halves):
        def on_gradient(self, worker, version):
            d = super().on_gradient(worker, version)
            return d._replace(scale=d.scale[:1]) if d.step else d

    core = Dispatcher(Short(2, 1.0), lambda w, v: None, server=ParameterServer(None))
    core.begin()
    core.arrive(0, 1.0)
    with pytest.raises(ValueError, match="rule halves: Decision.scale has 1 factors for 2"):
        core.arrive(1, 2.0)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5])
def test_malenia_rows_do_not_depend_on_the_chunk_size(tmp_path, small_data, monkeypatch, chunk):
    """Chunks of 1 to 5 events cut every step of the trace somewhere: the open step's rows wait
    for it, so the rows and the iterates are the hand-derived ones whatever the cut."""
    ref_summary, ref, events, ref_lrs = run_trace(tmp_path / "ref", small_data, "malenia", 15)
    monkeypatch.setattr(sim, "CHUNK_EVENTS", chunk)
    summary, result, events, lrs = run_trace(tmp_path / "cut", small_data, "malenia", 15)
    assert events == MALENIA_EVENTS and lrs == ref_lrs
    assert summary["updates"] == ref_summary["updates"] == 2
    assert_iterates(result, [x.numpy() for x in ref.iterates])


@pytest.mark.parametrize("method, saves", [("picky", False), ("asgd", True)])
def test_a_lockstep_run_writes_no_checkpoint(tmp_path, small_data, monkeypatch, method, saves):
    """A reads_iterates rule: the schedule cannot run ahead of the iterates, and a resumed run
    replays the schedule alone through the recorded chunks, so such a run is never checkpointed
    (sim.py refuses to resume one, should a checkpoint be found); other rules are."""
    from pipeline.engines.base import Checkpoints

    saved = []
    monkeypatch.setattr(Checkpoints, "save", lambda self, state: saved.append(state["chunks"]))
    monkeypatch.setattr(sim, "CHUNK_EVENTS", 8)
    cfg = compose_cfg(
        f"optimizer={method}", "optimizer.lr=0.1", "dataset=small_lstsq",
        f"dataset.path={small_data}", "batch_size=8", "budget.gradients=40", "tracking=none",
        "engine.checkpoint_every=0.000001",
    )  # fmt: skip
    summary, _ = run_experiment(cfg, tmp_path)
    assert summary["status"] == "finished" and summary["gradients"] == 40
    assert bool(saved) is saves


def test_a_lost_worker_without_a_step_leaves_the_open_step_open():
    class Silent(Halves):
        def on_worker_lost(self, worker):
            return Decision(0, 0.0, False)

    core = Dispatcher(Silent(3, 1.0), lambda w, v: None)
    core.begin()
    core.arrive(2, 1.0)
    core.lose(0, 1.5)  # no step: the open step keeps its row
    assert core.open_rows == 1
    core.arrive(1, 2.0)
    assert [r[3] for r in core.rows] == [1.0 / 3, 0.5]
