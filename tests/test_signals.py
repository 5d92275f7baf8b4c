"""A real SIGTERM to a real ``python -m pipeline.train`` (engine=sim), alone and in a multirun:
exit 143, records flushed and consistent, the MLflow run KILLED, and in a sweep the parent too.
(engine=rpc has its own in tests/engines/test_rpc.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT
from pipeline.core.records import read_events, read_history
from pipeline.tracking import client_for
from tests.runinfo import mlflow_run_id

LONG = (  # small_lstsq, 4 workers: a run that would go on for hours
    "optimizer=asgd", "dataset=small_lstsq", "topology.n_workers=4", "batch_size=8",
    "optimizer.lr=0.01", "budget.gradients=1000000000000", "eval_every=10", "progress=off",
)  # fmt: skip


def _start(args: list[str], mlflow_uri: str) -> subprocess.Popen:
    env = {**os.environ, "CI": "1", "MLFLOW_TRACKING_URI": mlflow_uri}
    cmd = [sys.executable, "-m", "pipeline.train", *args, f"tracking.uri={mlflow_uri}"]
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _terminate_when_recording(proc: subprocess.Popen, run_dir: Path) -> str:
    """Wait until ``history.csv`` has rows on disk, send SIGTERM; its stderr once it ended."""
    history = run_dir / "history.csv"
    try:
        deadline = time.monotonic() + 120
        while not (history.exists() and len(history.read_text().splitlines()) > 2):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"the run never got going: {proc.communicate(timeout=30)[1][-2000:]}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        # a hang guard, not a speed assertion: a run that handles the signal ends in seconds
        _, err = proc.communicate(timeout=180)
        return err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _assert_killed_run(run_dir: Path, mlflow_uri: str) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "killed" and summary["stopped_by"] == "signal"
    events = read_events(run_dir / "events.csv")
    history = read_history(run_dir / "history.csv")
    # records flushed: every computed gradient has its event row, history got past its buffer
    assert len(events) == summary["gradients"] > 0
    # asgd: one update per gradient; the event engine takes the signal wherever it lands, so the
    # arrival it interrupted may have updated the iterate without its event row being written
    assert summary["updates"] - summary["gradients"] in (0, 1)
    assert len(history) > 2 and history[0]["update"] == 0
    updates = [int(h["update"]) for h in history]
    assert updates == sorted(updates) and updates[-1] <= summary["updates"]
    assert int(history[-1]["gradients"]) <= summary["gradients"]
    assert history[-1]["time"] <= summary["sim_time"] and events[-1]["time"] <= summary["sim_time"]
    assert summary["final_loss"] == pytest.approx(history[-1]["loss"])
    run = client_for(mlflow_uri).get_run(mlflow_run_id(run_dir))
    assert run.info.status == "KILLED" and run.data.tags["status"] == "killed"
    return summary


def test_sigterm_ends_an_event_engine_run_like_ctrl_c(tmp_path, small_data, mlflow_uri):
    run_dir = tmp_path / "run"
    proc = _start([*LONG, f"dataset.path={small_data}", f"hydra.run.dir={run_dir}"], mlflow_uri)
    err = _terminate_when_recording(proc, run_dir)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)"
    _assert_killed_run(run_dir, mlflow_uri)


@pytest.mark.slow
def test_sigterm_during_a_multirun_kills_the_job_and_the_sweep(tmp_path, small_data, mlflow_uri):
    sweep = tmp_path / "sweep"
    proc = _start(
        ["-m", *LONG, f"dataset.path={small_data}", "seed=0,1,2", f"hydra.sweep.dir={sweep}"],
        mlflow_uri,
    )
    err = _terminate_when_recording(proc, sweep / "0")
    assert proc.returncode == 143, err[-2000:]
    assert not (sweep / "1").exists()  # the sweep stopped: no further job started
    _assert_killed_run(sweep / "0", mlflow_uri)
    client = client_for(mlflow_uri)
    exp = client.get_experiment_by_name("async-sgd")
    parents = client.search_runs([exp.experiment_id], f"tags.sweep_dir = '{sweep}'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "KILLED"
    assert client.get_run(mlflow_run_id(sweep / "0")).data.tags["mlflow.parentRunId"] == (
        parent.info.run_id
    )


@pytest.fixture
def run_handlers():
    """The run's signal handlers (pipeline.train), the previous ones back afterwards."""
    from pipeline.train import install_signal_handlers

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    install_signal_handlers()
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_a_signal_inside_a_store_write_waits_for_its_end(run_handlers):
    """SIGTERM inside ``signals_deferred`` (every call of the tracking client: a transaction
    cut by the signal's exception left the sqlite store locked, and the run's own finish then
    waited on it for ever): the block finishes, and Terminated comes at its end."""
    from pipeline import Terminated, signals_deferred

    done = []
    with pytest.raises(Terminated), signals_deferred():
        with signals_deferred():  # nested: raised at the outermost end
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"]


def test_a_tracking_call_is_not_cut_by_a_signal(run_handlers, mlflow_uri):
    from pipeline import Terminated

    client = client_for(mlflow_uri)
    calls = []

    def call_that_gets_a_signal(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # lands while the store's call is running
        calls.append("finished")
        return "value"

    client._client.get_experiment_by_name = call_that_gets_a_signal
    with pytest.raises(KeyboardInterrupt) as e:
        client.get_experiment_by_name("x")
    assert calls == ["finished"] and not isinstance(e.value, Terminated)


def test_outside_a_store_write_a_signal_ends_the_run_at_once(run_handlers):
    from pipeline import Terminated

    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached: the handler raises in this frame
        pytest.fail("the signal was deferred outside a store write")
