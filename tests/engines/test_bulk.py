"""The event engine's schedule in bulk (pipeline/engines/bulk.py) for the rules that allow it
(:class:`DelayRule`s that go on, on emulated job times): the records are the same, byte for
byte, as the one-event-at-a-time schedule through the heap and the core (``sim.BULK = False``),
whatever the method, the noise of the job times, the budget and the chunk size; every other
rule keeps the general path."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.engines.sim as sim
from pipeline.api import DelayRule
from pipeline.compose.build import build_experiment
from pipeline.core.methods import AsyncSGD
from pipeline.core.records import RunRecorder
from pipeline.core.topology import BulkDraws, JobTimes
from pipeline.engines.base import RunControl
from pipeline.engines.bulk import BulkSchedule, bulk_applies
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg

RECORDS = ("events.csv", "history.csv", "summary.json")
METHODS = {
    "asgd": ["optimizer=asgd"],
    "asgd_adaptive": ["optimizer=asgd_adaptive"],
    "asgd_drop": ["optimizer=asgd_drop", "optimizer.threshold=3"],  # many discarded
    "rescaled_asgd": ["optimizer=rescaled_asgd"],  # a weight per worker
}
NOISES = ("exponential", "gamma", "halfnormal", "none")  # none: ties in time everywhere


def _quadratic(*extra):
    return compose_cfg(
        "~experiment", "objective=noisy_quadratic", "dataset=none", "tracking=none",
        "optimizer.lr=0.01", "eval_every=13", *extra,
    )  # fmt: skip


def _both(tmp_path, cfg, monkeypatch, chunk):
    """The run's records with the bulk schedule and with the heap, and whether bulk ran."""
    used = []
    real_init = sim.SimEngine.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.chunk = chunk
        used.append(self.bulk)

    monkeypatch.setattr(sim.SimEngine, "__init__", init)
    out = {}
    for bulk in (True, False):
        monkeypatch.setattr(sim, "BULK", bulk)
        d = tmp_path / ("bulk" if bulk else "heap")
        summary, _ = run_experiment(cfg, d)
        out[bulk] = (summary, {f: (d / f).read_bytes() for f in RECORDS})
    return out, used


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_bulk_schedule_writes_the_heap_s_records(tmp_path, monkeypatch, method, noise):
    cfg = _quadratic(*METHODS[method], "topology=linear", "topology.n_workers=7",
                     f"topology.noise={noise}", "budget.gradients=3000")  # fmt: skip
    out, used = _both(tmp_path, cfg, monkeypatch, chunk=100)  # 3000: the last chunk is full
    assert used == [True, False]
    (s_bulk, bulk), (_, heap) = out[True], out[False]
    assert s_bulk["gradients"] == 3000 and s_bulk["status"] == "finished"
    for f in RECORDS:
        assert bulk[f] == heap[f], f
    rows = bulk["events.csv"].decode().splitlines()[1:]
    applied = [r.split(",")[3] for r in rows]
    if method == "asgd_drop":  # the chunks with a discarded gradient, counted one by one
        assert 0 < applied.count("0") < len(rows)
    else:
        assert set(applied) == {"1"}


@pytest.mark.parametrize("budget", ["budget.time=37.5", "budget.time=40.0"])
def test_a_time_budget_ends_where_the_heap_ends(tmp_path, monkeypatch, budget):
    """The arrivals up to the budget's time, however the chunks fall (chunk 64; with noise none
    the times are multiples of the workers' taus, so 40.0 is itself an arrival time)."""
    for noise in ("exponential", "none"):
        cfg = _quadratic("optimizer=asgd", "topology=linear", "topology.n_workers=5",
                         f"topology.noise={noise}", "budget.gradients=null", budget)  # fmt: skip
        out, _ = _both(tmp_path / noise, cfg, monkeypatch, chunk=64)
        assert out[True][0]["stopped_by"] == "budget.time"
        for f in RECORDS:
            assert out[True][1][f] == out[False][1][f], (noise, f)


def test_a_time_budget_met_by_a_full_chunk(tmp_path, monkeypatch):
    """Times 1 .. 5 with no noise: 40 + 20 + 13 + 10 + 8 = 91 arrivals by t = 40.0; chunks of 91
    fill exactly, and the run stops on the next, empty one, as the heap does."""
    cfg = _quadratic("optimizer=asgd", "topology=linear", "topology.n_workers=5",
                     "topology.noise=none", "budget.gradients=null",
                     "budget.time=40.0")  # fmt: skip
    out, _ = _both(tmp_path, cfg, monkeypatch, chunk=91)
    assert out[True][0]["gradients"] == 91 and out[True][0]["stopped_by"] == "budget.time"
    for f in RECORDS:
        assert out[True][1][f] == out[False][1][f], f


def test_many_workers_many_chunks(tmp_path, monkeypatch):
    """2,000 workers with times 1 .. 2,000 (the pool holds the slow workers' completions for many
    chunks, the fast ones draw many a chunk)."""
    cfg = _quadratic("optimizer=asgd_adaptive", "topology=linear", "topology.n_workers=2000",
                     "topology.noise=exponential", "budget.gradients=20000")  # fmt: skip
    out, used = _both(tmp_path, cfg, monkeypatch, chunk=1500)
    assert used == [True, False]
    for f in RECORDS:
        assert out[True][1][f] == out[False][1][f], f


def test_the_paper_problem_one_by_one_replay(tmp_path, monkeypatch, small_data):
    """Least squares with minibatches: the replay goes one by one (its samples drawn in order
    per worker), from the bulk schedule's columns too."""
    cfg = compose_cfg("optimizer=asgd", "dataset=small_lstsq", f"dataset.path={small_data}",
                      "topology=sqrt", "topology.n_workers=6", "topology.noise=exponential",
                      "batch_size=8", "optimizer.lr=0.01", "budget.gradients=1000",
                      "eval_every=9", "tracking=none")  # fmt: skip
    out, used = _both(tmp_path, cfg, monkeypatch, chunk=64)
    assert used == [True, False]
    for f in RECORDS:
        assert out[True][1][f] == out[False][1][f], f


class LateStarters(DelayRule):
    """Starts workers 1 and 3 only; weight 1/(worker+1) whatever the delay."""

    name = "late_starters"

    def start(self):
        return (3, 1)

    def weight_for(self, worker, delay):
        return self.lr / (worker + 1)


class Starts(DelayRule):
    """A rule whose start() gives a worker twice."""

    name = "starts_twice"

    def start(self):
        return (0, 0)

    def weight_for(self, worker, delay):
        return self.lr


def _engine(rule_cls, n=4, budget=500, bulk=None, tmp_path=None):
    cfg = _quadratic("optimizer=asgd", "topology=sqrt", f"topology.n_workers={n}",
                     "topology.noise=exponential", f"budget.gradients={budget}")  # fmt: skip
    exp = build_experiment(cfg)
    if rule_cls is not None:
        exp.rule = rule_cls(n, 0.01)
    rec = RunRecorder(tmp_path)
    eng = sim.SimEngine(exp, RunControl(exp.evaluator, rec, 10, budget, None), bulk=bulk)
    return eng, rec


def test_a_rule_that_starts_some_workers(tmp_path):
    runs = {}
    for bulk in (True, False):
        d = tmp_path / str(bulk)
        eng, rec = _engine(LateStarters, bulk=bulk, tmp_path=d)
        assert eng.bulk is bulk
        eng.run()
        rec.close()
        runs[bulk] = (d / "events.csv").read_bytes()
    assert runs[True] == runs[False]
    workers = {r.split(",")[0] for r in runs[True].decode().splitlines()[1:]}
    assert workers == {"1", "3"}


def test_a_rule_that_starts_a_worker_twice_is_refused(tmp_path):
    eng, rec = _engine(Starts, tmp_path=tmp_path)
    with pytest.raises(ValueError, match="starts_twice: start\\(\\) must give distinct workers"):
        eng.run()
    rec.close()


def test_which_rules_are_scheduled_in_bulk(tmp_path):
    class OwnDecision(AsyncSGD):
        def on_gradient(self, worker, version):  # its own: the engine cannot know it
            return super().on_gradient(worker, version)

    times = JobTimes(np.ones(3), "exponential")
    assert bulk_applies(AsyncSGD(3, 0.1), times)
    assert not bulk_applies(OwnDecision(3, 0.1), times)
    from pipeline.core.methods import METHODS as BUILT_IN

    rng = np.random.default_rng(0)
    for name in ("asgd_random", "minibatch", "rennala", "ringmaster"):
        rule = BUILT_IN[name](3, 0.1, {}, rng)
        assert not bulk_applies(rule, times), name
    from pipeline.core.trace import TraceTimes

    assert not bulk_applies(AsyncSGD(3, 0.1), TraceTimes.__new__(TraceTimes))
    for name in ("malenia", "picky"):
        cfg = _quadratic(
            f"optimizer={name}", "topology=sqrt", "topology.n_workers=3", "budget.gradients=100"
        )
        assert not bulk_applies(build_experiment(cfg).rule, times), name


def test_weights_for_is_weight_for_on_each_pair():
    rule = AsyncSGD(4, 0.3, "adaptive")
    delays = np.array([0, 4, 5, 9, 5, 1000, 3])
    workers = np.zeros(len(delays), dtype=np.int64)
    got = rule.weights_for(workers, delays)
    assert got.tolist() == [rule.weight_for(0, d) for d in delays.tolist()]
    assert got[2] == 0.3 * 4 / 5  # lr * n / delay, as the scalar rule computes it
    late = LateStarters(4, 0.5)
    w = np.array([0, 1, 2, 3, 1])
    assert late.weights_for(w, np.array([7, 7, 0, 2, 9])).tolist() == [0.5, 0.25, 0.5 / 3,
                                                                        0.125, 0.25]  # fmt: skip


@pytest.mark.parametrize("noise", NOISES)
def test_bulk_draws_are_each_worker_s_own_durations(noise):
    """Any split of a worker's stream into columns gives the durations JobTimes.next gives."""
    taus = np.sqrt(np.arange(1.0, 31.0))
    one, bulk = JobTimes(taus, noise, seed=5), BulkDraws(JobTimes(taus, noise, seed=5), block=8)
    rng = np.random.default_rng(2)
    got: dict[int, list[float]] = {w: [] for w in range(30)}
    for _ in range(150):
        ws = rng.choice(30, size=int(rng.integers(1, 30)), replace=False)
        counts = np.sort(rng.integers(1, 9, size=len(ws)))[::-1].copy()
        for j, col in enumerate(bulk.columns(ws, counts)):
            for w, d in zip(ws[: len(col)].tolist(), col.tolist(), strict=True):
                got[w].append(d)
            assert len(col) == int((counts > j).sum())
    for w in range(30):
        assert got[w] == [one.next(w) for _ in range(len(got[w]))], w


def test_the_chunk_s_versions_and_delays_by_hand():
    """Three workers, asgd: arrivals 2, 0, 2, 1 of jobs given at version 0 (all three), then the
    versions after each worker's previous arrival."""
    rule = AsyncSGD(3, 0.1)
    sched = BulkSchedule.__new__(BulkSchedule)
    sched.rule, sched.jobv = rule, np.zeros(3, dtype=np.int64)
    V, D, WT, ST = sched.decide(np.array([2, 0, 2, 1]))
    # versions before each arrival: 0, 1, 2, 3; worker 2's second job was given at 1
    assert V.tolist() == [0, 0, 1, 0] and D.tolist() == [0, 1, 1, 3]
    assert ST.all() and WT.tolist() == [0.1] * 4 and rule.version == 4
    assert sched.jobv.tolist() == [2, 4, 3]
    drop = AsyncSGD(3, 0.1, "drop", threshold=1)
    sched.rule, sched.jobv = drop, np.zeros(3, dtype=np.int64)
    V, D, WT, ST = sched.decide(np.array([2, 0, 1, 1]))
    # worker 1's first gradient has delay 2 > 1: discarded, no step; its next has delay 0
    assert D.tolist() == [0, 1, 2, 0] and ST.tolist() == [True, True, False, True]
    assert WT.tolist() == [0.1, 0.1, 0.0, 0.1] and drop.version == 3
    assert sched.jobv.tolist() == [2, 3, 1]
