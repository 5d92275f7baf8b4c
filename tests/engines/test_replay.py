"""The event engine (schedule and replay, every path) against an independent reference
(tests/reference_engine.py: a plain event loop written from docs/methods.md that imports
nothing it checks): the same arrivals, the same records, the same iterates, for every method,
several topologies, both replay paths (batched and one by one) and chunks that cut runs
anywhere. The reference's job durations, samples and random assignments are generated here
from the documented seeded streams, its worker times written by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from models.datasets import load_npz
from pipeline.compose.build import build_experiment
from pipeline.core.records import RunRecorder, read_events, read_history
from pipeline.engines.base import RunControl
from pipeline.engines.sim import SimEngine
from tests import reference_engine as ref
from tests.conftest import compose_cfg

REFERENCE = Path(ref.__file__)
#: what the reference may import: numpy and the standard library, nothing of the project
REFERENCE_MAY_IMPORT = {"__future__", "collections", "dataclasses", "heapq", "math", "numpy"}
CHECKED = ("pipeline", "models")  # in particular pipeline.engines, pipeline.core.methods,
# pipeline.core.topology, pipeline.core.streams, pipeline.core.server, models.objectives,
# models.noise


def test_the_reference_engine_imports_nothing_it_checks():
    imported = set()
    for node in ast.walk(ast.parse(REFERENCE.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import in the reference"
            imported.add(node.module)
    assert imported, "the checker saw no import at all"
    tops = {name.split(".")[0] for name in imported}
    assert not tops & set(CHECKED), sorted(imported)
    assert tops <= REFERENCE_MAY_IMPORT, sorted(tops - REFERENCE_MAY_IMPORT)


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
# (overrides, the reference's tau_i by hand (docs/methods.md section 4), its noise)
TOPOLOGIES = [
    (("topology=sqrt", "topology.n_workers=5", "topology.noise=exponential"),
     np.sqrt([1.0, 2.0, 3.0, 4.0, 5.0]), "exponential"),
    (("topology=straggler", "topology.n_workers=5", "topology.factor=10", "topology.noise=gamma"),
     [1.0, 1.0, 1.0, 1.0, 10.0], "gamma"),
    (("topology=custom", "topology.n_workers=4", "topology.times=[1.0,1.5,2.0,3.0]"),
     [1.0, 1.5, 2.0, 3.0], "none"),
]  # fmt: skip
TOPOLOGY_PARAMS = [
    pytest.param(t, id=t[0][0], marks=() if i == 0 else pytest.mark.slow)
    for i, t in enumerate(TOPOLOGIES)
]
SEED = 0  # the config's default seed


def method_of(method: tuple, lr: float) -> ref.Method:
    """The reference's method from the overrides of METHODS."""
    keys = dict(o.removeprefix("optimizer.").split("=") for o in method[1:])
    return ref.Method(
        method[0], lr,
        threshold=int(keys["threshold"]) if "threshold" in keys else None,
        batch=int(keys["batch"]) if "batch" in keys else None,
        cancel=keys.get("cancel") == "true",
    )  # fmt: skip


def reference(method, lr, taus, noise, objective, every, *, batch=None, gradients=None,
              time=None, jobs=None):  # fmt: skip
    """The reference run, its inputs drawn from the documented streams: ``jobs`` per worker
    (enough for the run: every job is an arrival or a cancellation)."""
    n = len(taus)
    jobs = jobs or 3 * gradients + n
    durations = ref.job_durations(taus, noise, SEED, jobs)
    if isinstance(objective, ref.NoisyQuadratic):
        samples = [ref.counter_normals(SEED, w, jobs, objective.dim) for w in range(n)]
    elif batch is not None:
        samples = ref.minibatches(len(objective.y), batch, SEED, n, jobs)
    else:
        samples = None
    draws = ref.rule_draws(SEED, n, n * jobs) if method[0] == "asgd_random" else None
    return ref.run_reference(
        method_of(method, lr), objective, durations, samples, every, gradients, time, draws
    )


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


def compare(tmp_path, overrides, expected: ref.Run, rtol=1e-10, **kw):
    """The event engine's records, result and iterates against the reference's (``rtol``: the
    iterates' and losses' relative tolerance)."""
    new = run(SimEngine, compose_cfg(*overrides), tmp_path, **kw)
    events = read_events(tmp_path / "events.csv")
    got = [(e["worker"], e["version"], e["delay"], e["applied"], e["time"]) for e in events]
    want = [(w, v, d, a, t) for w, v, d, a, _, t in expected.events]
    first = next((i for i, (g, e) in enumerate(zip(got, want, strict=False)) if g != e), None)
    if first is not None:
        pytest.fail(f"events differ from row {first}: engine {got[first : first + 3]}, "
                    f"reference {want[first : first + 3]}")  # fmt: skip
    assert len(got) == len(want)
    # the weights: the reference's own formulas, up to rounding (lr * (n / tau) and the like)
    np.testing.assert_allclose(
        [e["lr"] for e in events], [e[4] for e in expected.events], rtol=1e-15, atol=0
    )
    assert (new.gradients, new.updates, new.cancelled, new.time, new.status) == (
        expected.gradients, expected.updates, expected.cancelled, expected.time, expected.status,
    )  # fmt: skip
    assert len(new.iterates) == len(expected.iterates)
    for a, b in zip(new.iterates, expected.iterates, strict=True):
        np.testing.assert_allclose(a.cpu().numpy(), b, rtol=rtol, atol=1e-12)
    history = read_history(tmp_path / "history.csv")
    assert [(h["update"], h["gradients"], h["time"]) for h in history] == [
        (u, g, t) for u, g, t, _ in expected.history
    ]
    np.testing.assert_allclose(
        [h["loss"] for h in history], [h[3] for h in expected.history], rtol=rtol, atol=1e-14
    )
    return new


def small(small_data, method, topology, *extra):
    return [
        f"optimizer={method[0]}", *method[1:], *topology, "dataset=small_lstsq",
        f"dataset.path={small_data}", "optimizer.lr=0.05", "budget.gradients=400",
        "eval_every=7", "tracking=none", *extra,
    ]  # fmt: skip


def least_squares(small_data) -> ref.LeastSquares:
    d = load_npz(small_data)
    return ref.LeastSquares(d["X"], d["y"])


PATHS = {"batched": (True, False), "batched fused": (True, True), "one by one": (False, False)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("topology", TOPOLOGY_PARAMS)
@pytest.mark.parametrize("method", METHODS, ids=" ".join)
def test_replay_equals_the_reference(method, topology, path, tmp_path, small_data):
    # chunks of 37 rows cut rounds, steps and minibatch rounds anywhere
    overrides, taus, noise = topology
    batched, fused = PATHS[path]
    expected = reference(method, 0.05, taus, noise, least_squares(small_data), 7, batch=8,
                         gradients=400)  # fmt: skip
    compare(tmp_path, small(small_data, method, overrides, "batch_size=8"), expected,
            batched=batched, fused=fused, chunk=37)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("method", METHODS, ids=" ".join)
def test_replay_on_cuda_equals_the_reference(method, path, tmp_path, small_data):
    """objective.device=cuda: the same arrivals, stepsizes and counts as the reference, the
    iterates up to float64 rounding of the GPU's reductions (the default on a GPU is the
    batched fused path)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    overrides, taus, noise = TOPOLOGIES[1]
    batched, fused = PATHS[path]
    expected = reference(method, 0.05, taus, noise, least_squares(small_data), 7, batch=8,
                         gradients=400)  # fmt: skip
    cfg = small(small_data, method, overrides, "batch_size=8", "objective.device=cuda")
    new = compare(tmp_path, cfg, expected, rtol=1e-9, batched=batched, fused=fused, chunk=37)
    assert new.x.device.type == "cuda"


@pytest.mark.parametrize("noise", ["none", "gamma", "halfnormal"])
def test_every_noise_model_equals_the_reference(noise, tmp_path, small_data):
    """Linear workers (tau_i = 0.5 i: ties at every multiple of 0.5 without noise), each noise
    model's durations drawn by the reference from the documented stream."""
    method = ("asgd_drop", "optimizer.threshold=3")
    overrides = (
        "topology=linear", "topology.n_workers=4", "topology.tau=0.5", f"topology.noise={noise}",
        "topology.gamma_shape=3", "topology.jitter=0.3",
    )  # fmt: skip
    n, jobs = 4, 3 * 400 + 4
    durations = ref.job_durations([0.5, 1.0, 1.5, 2.0], noise, SEED, jobs, 3.0, 0.3)
    data = least_squares(small_data)
    expected = ref.run_reference(
        method_of(method, 0.05), data, durations,
        ref.minibatches(len(data.y), 8, SEED, n, jobs), 7, 400,
    )  # fmt: skip
    compare(tmp_path, small(small_data, method, overrides, "batch_size=8"), expected, chunk=37)


@pytest.mark.parametrize("method", METHODS[:2], ids=" ".join)
def test_full_gradients_equal_the_reference(method, tmp_path, small_data):
    """batch_size=null: every job's gradient on all rows (no sample stream)."""
    overrides, taus, noise = TOPOLOGIES[0]
    expected = reference(method, 0.05, taus, noise, least_squares(small_data), 7, gradients=400)
    compare(tmp_path, small(small_data, method, overrides, "batch_size=null"), expected, chunk=37)


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "batched fused"])
@pytest.mark.parametrize("method", METHODS, ids=" ".join)
def test_replay_of_the_noisy_quadratic(method, fused, tmp_path):
    """Random-access noise samples, drawn for a whole chunk at once."""
    taus = np.sqrt(np.arange(1.0, 8.0))  # topology=sqrt, 7 workers
    expected = reference(method, 0.05, taus, "exponential", ref.NoisyQuadratic(10, 1.0, 10.0), 3,
                         gradients=500)  # fmt: skip
    compare(
        tmp_path,
        [f"optimizer={method[0]}", *method[1:], "~experiment", "objective=noisy_quadratic",
         "dataset=none", "topology=sqrt", "topology.n_workers=7", "topology.noise=exponential",
         "optimizer.lr=0.05", "budget.gradients=500", "eval_every=3", "tracking=none"],
        expected, chunk=50, fused=fused,
    )  # fmt: skip


@pytest.mark.parametrize("path", list(PATHS))
def test_time_budget_and_divergence_stop_the_replay_where_the_reference_stops(
    path, tmp_path, small_data
):
    method, (overrides, taus, noise) = ("asgd",), TOPOLOGIES[0]
    batched, fused = PATHS[path]
    kw = {"chunk": 20, "batched": batched, "fused": fused}
    data = least_squares(small_data)
    expected = reference(method, 0.05, taus, noise, data, 7, batch=8, time=37.5, jobs=400)
    cfg = small(small_data, method, overrides, "budget.gradients=null", "budget.time=37.5",
                "batch_size=8")  # fmt: skip
    new = compare(tmp_path / "t", cfg, expected, **kw)
    assert new.stopped_by == "budget.time" and new.time == 37.5
    expected = reference(method, 5.0, taus, noise, data, 1, batch=8, gradients=400)
    cfg = small(small_data, method, overrides, "optimizer.lr=5", "eval_every=1", "batch_size=8")
    new = compare(tmp_path / "d", cfg, expected, **kw)
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
    cfg = compose_cfg(*small(small_data, ("asgd",), TOPOLOGIES[0][0], "batch_size=8"))
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


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "batched"])
def test_memory_holds_only_referenced_iterates(small_data, tmp_path, batched):
    """Between chunks the engine keeps only the iterates of jobs in flight or queued, never one
    per update: one by one, a dict of the versions still needed (at most n jobs plus the
    current); batched, a ring sized by the chunk's span of versions (the oldest a job in flight
    or a row of the chunk needs, to the chunk's last step), never by the run's length. The rows
    of a chunk are written and dropped."""
    from pipeline.compose.build import build_experiment
    from pipeline.core.records import RunRecorder
    from pipeline.engines.base import RunControl
    from pipeline.engines.sim import SimEngine

    cfg = compose_cfg(
        "optimizer=asgd_random", "topology=sqrt", "topology.n_workers=8", "batch_size=8",
        "optimizer.lr=0.01", "budget.gradients=3000", "dataset=small_lstsq",
        f"dataset.path={small_data}", "tracking=none", "topology.noise=exponential",
    )  # fmt: skip
    exp = build_experiment(cfg)
    rec = RunRecorder(tmp_path)
    eng = SimEngine(exp, RunControl(exp.evaluator, rec, 10, 3000, None))
    eng.replay.batched = batched  # both paths of the replay
    eng.chunk = 100
    held, rows_held, spans = [], [], []
    replay = eng.replay.run

    def probe(cols, seqs, done, in_flight):
        assert len(cols[0]) <= 100
        before = eng.replay.version
        out = replay(cols, seqs, done, in_flight)
        held.append(len(eng.replay.store))
        if batched:
            rows_held.append(eng.replay.ring.shape[0])
            oldest = min([before, *in_flight, *cols[1][cols[3] != 0].tolist()])
            spans.append(eng.replay.version - oldest + 1)
        return out

    eng.replay.run = probe
    result = eng.run()
    rec.close()
    assert result.updates == 3000 and len(held) == 30
    if batched:
        assert max(held) == 0  # the batched path keeps its iterates in the ring only
        # the ring holds the largest span (it grows by powers of two: at most 4x, at least 64)
        assert max(spans) <= rows_held[-1] <= max(64, 4 * max(spans))
        assert rows_held == sorted(rows_held) and rows_held[-1] <= 256 < 3000
        assert max(spans) > 100  # a chunk's 100 steps and the delays of the jobs in flight
    else:
        assert max(held) <= 8 + 1  # n jobs in flight (queued ones included), plus the current
    assert torch.isfinite(result.x).all()
    assert len((tmp_path / "events.csv").read_text().splitlines()) == 3001
