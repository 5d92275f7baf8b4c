"""``resume=<run dir>`` on the event engine: a run interrupted after its checkpoints (and after
more records than its last checkpoint holds) continues to records byte-identical to a run that
was never interrupted, for every method, on both replay paths; and the command line's checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline import PROJECT_ROOT
from pipeline.engines import replay as replay_mod
from pipeline.engines import sim as sim_mod
from pipeline.engines.base import CHECKPOINT_FILE, Checkpoints
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg, run_cli

RECORDS = ("events.csv", "history.csv", "summary.json")
CASES = {  # label: overrides
    "asgd": ["optimizer=asgd"],
    "asgd_full_batch": ["optimizer=asgd", "batch_size=null"],
    "asgd_adaptive": ["optimizer=asgd_adaptive"],
    "asgd_drop": ["optimizer=asgd_drop", "optimizer.threshold=3"],
    "asgd_random": ["optimizer=asgd_random"],
    "minibatch": ["optimizer=minibatch"],
    "rennala": ["optimizer=rennala", "optimizer.batch=3"],
    "rennala_cancel": ["optimizer=rennala", "optimizer.batch=4", "optimizer.cancel=true"],
    "ringmaster": ["optimizer=ringmaster", "optimizer.threshold=2"],
    "ringmaster_cancel": ["optimizer=ringmaster", "optimizer.threshold=2", "optimizer.cancel=true"],
}


def _cfg(small_data, case, *extra):
    return compose_cfg(
        *CASES[case], "dataset=small_lstsq", f"dataset.path={small_data}", "topology=sqrt",
        "topology.n_workers=5", "topology.noise=exponential", "batch_size=8",
        "optimizer.lr=0.01", "budget.gradients=1500", "eval_every=7", "tracking=none",
        "engine.checkpoint_every=1e-9", *extra,
    )  # fmt: skip


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 events (the smallest the engine makes is 256): a short run has many."""
    real_init = sim_mod.SimEngine.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.chunk = 64

    monkeypatch.setattr(sim_mod.SimEngine, "__init__", init)


@pytest.mark.parametrize("case", ["asgd", "asgd_drop", "minibatch", "rennala_cancel",
                                  "ringmaster_cancel"])  # fmt: skip
def test_one_by_one_replay_resumes_too(case, tmp_path, small_data, small_chunks, monkeypatch):
    """The same on the replay's other path (one gradient at a time: a step's gradients may
    be carried from one chunk to the next, and the stored iterates are a dict)."""
    real_init = replay_mod.Replay.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.batched = False

    monkeypatch.setattr(replay_mod.Replay, "__init__", init)
    test_a_resumed_run_equals_an_uninterrupted_one(case, tmp_path, small_data, None, monkeypatch)


def _interrupt_after(monkeypatch, checkpoints: int, chunks: int):
    """Checkpoints after the first ``checkpoints`` chunks only; Ctrl-C at the start of chunk
    ``chunks`` (so the records run past the last checkpoint, and a final row is written)."""
    monkeypatch.setattr(Checkpoints, "due", lambda self: self.saved < checkpoints)
    real_run = replay_mod.Replay.run
    calls = [0]

    def run(self, *a, **k):
        calls[0] += 1
        if calls[0] == chunks:
            raise KeyboardInterrupt
        return real_run(self, *a, **k)

    monkeypatch.setattr(replay_mod.Replay, "run", run)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_resumed_run_equals_an_uninterrupted_one(case, tmp_path, small_data, small_chunks,
                                                   monkeypatch):  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    summary, _ = run_experiment(_cfg(small_data, case), whole)
    assert summary["status"] == "finished" and summary["gradients"] == 1500
    assert not (whole / CHECKPOINT_FILE).exists()  # a finished run keeps none
    with monkeypatch.context() as m:
        _interrupt_after(m, checkpoints=3, chunks=7)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(_cfg(small_data, case), cut)
    killed = json.loads((cut / "summary.json").read_text())
    assert killed["status"] == "killed" and killed["gradients"] == 6 * 64
    assert (cut / CHECKPOINT_FILE).exists()
    assert (cut / "events.csv").read_bytes() != (whole / "events.csv").read_bytes()
    summary, _ = run_experiment(_cfg(small_data, case), cut, resume=True)
    assert summary["status"] == "finished"
    for f in RECORDS:
        assert (cut / f).read_bytes() == (whole / f).read_bytes(), f
    assert not (cut / CHECKPOINT_FILE).exists()
    info = json.loads((cut / "run.json").read_text())
    assert [r["from_gradients"] for r in info["resumed"]] == [3 * 64]


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, small_data, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_experiment(_cfg(small_data, "asgd", "engine.checkpoint_every=null"), whole)
    with monkeypatch.context() as m:
        _interrupt_after(m, checkpoints=0, chunks=1)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(_cfg(small_data, "asgd", "engine.checkpoint_every=null"), cut)
    assert not (cut / CHECKPOINT_FILE).exists()
    run_experiment(_cfg(small_data, "asgd", "engine.checkpoint_every=null"), cut, resume=True)
    for f in RECORDS:
        assert (cut / f).read_bytes() == (whole / f).read_bytes(), f


def _sigkill_after_a_checkpoint(cmd: list[str], run) -> None:
    """Start ``cmd``; SIGKILL it once ``run`` holds a checkpoint."""
    env = {**os.environ, "CI": "1"}
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600  # a hang guard
        while not (run / CHECKPOINT_FILE).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no checkpoint before the run ended: {proc.communicate()[1][-2000:]}")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


LONG = ("optimizer=asgd", "dataset=small_lstsq", "topology.n_workers=4", "batch_size=8",
        "optimizer.lr=0.001", "eval_every=5000", "progress=off", "tracking=none",
        "engine.checkpoint_every=0.2")  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_on_the_command_line(tmp_path, small_data):
    """A real SIGKILL after the first checkpoint (two chunks: the kill lands in the second),
    then ``python -m pipeline.train resume=<dir>``: the records equal an uninterrupted run's."""
    budget = "budget.gradients=130000"
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.train", *LONG, budget, f"dataset.path={small_data}",
           f"hydra.run.dir={run}"]  # fmt: skip
    _sigkill_after_a_checkpoint(cmd, run)
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    out = run_cli(f"resume={run}", timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    whole = tmp_path / "whole"
    ref = run_cli(*LONG, budget, f"dataset.path={small_data}", f"hydra.run.dir={whole}",
                  timeout=900)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-2000:]
    for f in RECORDS:
        assert (run / f).read_bytes() == (whole / f).read_bytes(), f
    info = json.loads((run / "run.json").read_text())
    assert [r["from_gradients"] for r in info["resumed"]] == [65536]


def test_what_cannot_be_resumed_is_one_line(tmp_path, small_data):
    run = tmp_path / "run"
    out = run_cli(*LONG, "budget.gradients=50", f"dataset.path={small_data}",
                  f"hydra.run.dir={run}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    again = run_cli(f"resume={run}")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: resume: the run in {run} is finished; only a killed, failed or interrupted run "
        "can be resumed"
    ]
    nothing = run_cli(f"resume={tmp_path}")
    assert nothing.returncode == 2 and nothing.stderr.strip() == (
        f"error: resume: {tmp_path} is not a run's folder (no .hydra/config.yaml and summary.json)"
    )
    other = run_cli(f"resume={run}", "seed=3")
    assert other.returncode == 2
    assert other.stderr.strip() == (
        "error: resume=<run dir> takes no other argument (the run keeps its config)"
    )


def test_a_resumed_run_goes_on_under_its_mlflow_run(tmp_path, small_data, small_chunks,
                                                    monkeypatch, mlflow_uri):  # fmt: skip
    from pipeline.tracking import client_for

    cfg = _cfg(small_data, "asgd", "tracking=mlflow", f"tracking.uri={mlflow_uri}")
    with monkeypatch.context() as m:
        _interrupt_after(m, checkpoints=2, chunks=5)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, tmp_path)
    first = json.loads((tmp_path / "run.json").read_text())["mlflow_run_id"]
    client = client_for(mlflow_uri)
    assert client.get_run(first).info.status == "KILLED"
    summary, _ = run_experiment(cfg, tmp_path, resume=True)
    assert summary["status"] == "finished"
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["mlflow_run_id"] == first and len(info["resumed"]) == 1
    exp = client.get_experiment_by_name("async-sgd")
    here = str(tmp_path.resolve())  # the session's store holds other tests' runs too
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("records_dir") == here]  # fmt: skip
    assert [r.info.run_id for r in runs] == [first]  # one run, no second one
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    assert run.data.tags["process.pid"] == str(os.getpid())
    steps = [m.step for m in client.get_metric_history(first, "curves/loss")]
    assert max(steps) == summary["updates"]


@pytest.mark.slow
def test_a_killed_real_run_resumes_with_fresh_workers_and_meets_its_budget(tmp_path, small_data,
                                                                           mlflow_uri):  # fmt: skip
    """engine=rpc: SIGKILL to the server after a checkpoint (its workers die with it), then
    ``resume=<dir>``: fresh workers, the budget met, the records one run's (events numbered
    on, versions counted from the checkpoint's), one MLflow run."""
    from pipeline.core.records import read_events, read_history
    from pipeline.tracking import client_for

    run = tmp_path / "run"
    args = ["engine=rpc", "optimizer=asgd", "dataset=small_lstsq", "topology=linear",
            "topology.n_workers=3", "batch_size=8", "optimizer.lr=0.01", "eval_every=20",
            "engine.time_scale=0.002", "engine.checkpoint_every=0.5", "budget.gradients=4000",
            "progress=off", f"dataset.path={small_data}", f"tracking.uri={mlflow_uri}"]  # fmt: skip
    cmd = [sys.executable, "-m", "pipeline.train", *args, f"hydra.run.dir={run}"]
    _sigkill_after_a_checkpoint(cmd, run)
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    state = torch.load(run / CHECKPOINT_FILE, weights_only=False)
    out = run_cli(f"resume={run}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["gradients"] == 4000
    events = read_events(run / "events.csv")
    assert len(events) == 4000
    # the first rows are the checkpoint's; the new workers' jobs start at its version
    after = events[state["gradients"] :]
    assert min(e["version"] for e in after) >= state["version"]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    history = read_history(run / "history.csv")
    updates = [int(h["update"]) for h in history]
    assert updates == sorted(set(updates)) and updates[-1] == summary["updates"]
    info = json.loads((run / "run.json").read_text())
    assert [r["from_gradients"] for r in info["resumed"]] == [state["gradients"]]
    client = client_for(mlflow_uri)
    (only,) = client.search_runs([client.get_experiment_by_name("async-sgd").experiment_id])
    assert only.info.run_id == info["mlflow_run_id"] and only.info.status == "FINISHED"
    assert only.data.tags["resumed"] == "1"
