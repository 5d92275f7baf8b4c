"""engine=rpc: real worker processes over torch.distributed.rpc. Every run here starts real
interpreters; each test checks that none is left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import RunError
from pipeline.core.records import read_events, read_history
from pipeline.core.trace import read_jobs
from pipeline.engines.rpc.launch import free_port
from pipeline.runner import run_experiment
from tests.conftest import PROJECT_ROOT, compose_cfg, run_cli
from tests.runinfo import mlflow_run_id

#: seconds after which a run that should have ended counts as hung (never a speed assertion:
#: the suite must pass on a loaded machine)
HANG_GUARD_S = 180

ALL_METHODS = [
    ("minibatch",),
    ("asgd",),
    ("asgd_adaptive",),
    ("asgd_drop", "optimizer.threshold=1"),
    ("asgd_random",),
    ("rennala", "optimizer.batch=2"),
    ("rennala", "optimizer.batch=2", "optimizer.cancel=true"),
    ("ringmaster", "optimizer.threshold=2"),
    ("ringmaster", "optimizer.threshold=2", "optimizer.cancel=true"),
    # the methods of the literature (rules given by _target_, pipeline/literature)
    ("malenia", "optimizer.batch=5"),  # per-worker factors at each step (scales_steps)
    ("malenia", "optimizer.batch=5", "optimizer.cancel=true"),
    ("rescaled_asgd",),
    ("picky", "optimizer.radius=0.02"),  # reads the iterates (lockstep); discards some
]
FAST = {
    ("asgd",),
    ("ringmaster", "optimizer.threshold=2", "optimizer.cancel=true"),
    ("malenia", "optimizer.batch=5"),
    ("picky", "optimizer.radius=0.02"),
}
METHOD_PARAMS = [
    pytest.param(m, id=" ".join(m), marks=() if m in FAST else pytest.mark.slow)
    for m in ALL_METHODS
]


def small(small_data: Path, method=("asgd",), *extra: str, engine: str = "rpc", n: int = 3):
    """A small least-squares run: n workers with tau_i = i (exponential), 2 ms per time unit."""
    overrides = [
        f"optimizer={method[0]}", *method[1:], "dataset=small_lstsq",
        f"dataset.path={small_data}", "topology=linear", f"topology.n_workers={n}",
        "topology.noise=exponential", "batch_size=8", "optimizer.lr=0.05",
        "budget.gradients=60", "eval_every=5", "tracking=none", "progress=off",
        f"engine={engine}",
    ]  # fmt: skip
    if engine == "rpc":
        overrides.append("engine.time_scale=0.002")
    return compose_cfg(*overrides, *extra)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, just not yet reaped
        return f.read().split()[2] != "Z"


def assert_no_workers_left(summary: dict) -> None:
    pids = [w["pid"] for w in summary.get("workers") or [] if w]
    assert pids, "the summary names no worker process"
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "worker processes left behind"


def events_of(path: Path) -> list[tuple]:
    return [(e["worker"], e["version"], e["delay"], e["applied"], e["lr"]) for e in
            read_events(path / "events.csv")]  # fmt: skip


def test_rpc_run_writes_complete_records(tmp_path, small_data, mlflow_uri):
    cfg = small(small_data, ("asgd",), f"tracking.uri={mlflow_uri}", "tracking.enabled=true")
    summary, result = run_experiment(cfg, tmp_path)
    assert summary["engine"] == "rpc" and summary["time_kind"] == "wall"
    assert summary["status"] == "finished" and summary["stopped_by"] == "budget.gradients"
    assert summary["gradients"] == 60 and summary["updates"] == 60
    assert summary["sim_time"] is None and summary["run_time_s"] > 0
    assert len(summary["workers"]) == 3 and all(w["device"] == "cpu" for w in summary["workers"])
    events = read_events(tmp_path / "events.csv")
    assert len(events) == 60
    times = [e["time"] for e in events]
    assert times == sorted(times) and times[-1] == pytest.approx(summary["run_time_s"])
    assert {e["worker"] for e in events} == {0, 1, 2}  # every worker contributed
    assert [e["lr"] for e in events] == [0.05] * 60
    # the delay of an arrival is the server's version minus the job's version
    assert [e["delay"] for e in events] == [i - e["version"] for i, e in enumerate(events)]
    history = read_history(tmp_path / "history.csv")
    assert [h["update"] for h in history] == list(range(0, 61, 5))
    assert history[-1]["loss"] < history[0]["loss"]
    assert summary["final_loss"] == pytest.approx(history[-1]["loss"])
    jobs = read_jobs(tmp_path)
    arrived = [j for j in jobs if j["status"] == "arrived"]
    assert len(arrived) == 60 and len(jobs) == 63  # the 3 jobs still running at the end
    assert {j["status"] for j in jobs} == {"arrived", "unfinished"}
    log = (tmp_path / "workers.log").read_text()  # the workers' own output
    for w, info in enumerate(summary["workers"]):
        assert f"worker {w} (rank {w + 1}) ready: pid {info['pid']}" in log
    # a job lasts at least its emulated time (>= 0 here), and ends when its event is handled
    assert sorted(j["end"] for j in arrived) == pytest.approx(times)
    assert all(j["end"] >= j["start"] for j in arrived)
    from pipeline.tracking import client_for

    run = client_for(mlflow_uri).get_run(mlflow_run_id(tmp_path))
    assert run.info.status == "FINISHED" and run.data.tags["engine"] == "rpc"
    assert (
        "progress/wall_time" in run.data.metrics and "results/gradients_per_s" in run.data.metrics
    )
    assert_no_workers_left(summary)


@pytest.mark.parametrize("method", METHOD_PARAMS)
def test_ordered_mode_equals_the_event_engine(method, tmp_path, small_data):
    """Applied in the simulated clock's order, real gradients from real processes give the
    event engine's arrivals and iterates (same per-worker duration and sample streams)."""
    sim, sim_result = run_experiment(
        small(small_data, method, engine="sim"), tmp_path / "sim", trace=True
    )
    real, real_result = run_experiment(
        small(small_data, method, "engine.ordered=true"), tmp_path / "rpc", trace=True
    )
    assert real["status"] == sim["status"] == "finished"
    assert events_of(tmp_path / "rpc") == events_of(tmp_path / "sim")
    assert real["cancelled"] == sim["cancelled"] and real["updates"] == sim["updates"]
    assert len(real_result.iterates) == len(sim_result.iterates) == sim["updates"] + 1
    for a, b in zip(real_result.iterates, sim_result.iterates, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert_no_workers_left(real)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(("asgd",), id="asgd"),
        pytest.param(("asgd_random",), id="asgd_random", marks=pytest.mark.slow),
        pytest.param(
            ("rennala", "optimizer.batch=2", "optimizer.cancel=true"),
            id="rennala cancel",
            marks=pytest.mark.slow,
        ),  # fmt: skip
    ],
)
def test_trace_replay_reproduces_a_real_run(method, tmp_path, small_data):
    """The event engine, fed the job durations a real run measured, makes the same arrivals in
    the same order at the same times."""
    real, _ = run_experiment(small(small_data, method), tmp_path / "real")
    cfg = compose_cfg(
        f"optimizer={method[0]}", *method[1:], "dataset=small_lstsq",
        f"dataset.path={small_data}", "topology=trace",
        f"topology.trace_path={tmp_path / 'real'}", "batch_size=8", "optimizer.lr=0.05",
        "budget.gradients=60", "eval_every=5", "tracking=none",
    )  # fmt: skip
    replay, _ = run_experiment(cfg, tmp_path / "replay")
    assert replay["n_workers"] == 3 and replay["topology"] == "trace"
    assert events_of(tmp_path / "replay") == events_of(tmp_path / "real")
    t_real = [e["time"] for e in read_events(tmp_path / "real" / "events.csv")]
    t_replay = [e["time"] for e in read_events(tmp_path / "replay" / "events.csv")]
    np.testing.assert_allclose(t_replay, t_real, rtol=0, atol=1e-9)
    assert replay["cancelled"] == real["cancelled"]
    assert_no_workers_left(real)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHOD_PARAMS)
def test_every_method_runs_on_real_processes(method, tmp_path, small_data):
    summary, _ = run_experiment(small(small_data, method, n=2), tmp_path)
    assert summary["status"] == "finished" and summary["gradients"] == 60
    assert len(read_events(tmp_path / "events.csv")) == 60
    assert read_history(tmp_path / "history.csv")[-1]["update"] == summary["updates"]
    jobs = read_jobs(tmp_path)
    assert sum(j["status"] == "arrived" for j in jobs) == 60
    assert sum(j["status"] == "cancelled" for j in jobs) == summary["cancelled"]
    assert_no_workers_left(summary)


def test_a_worker_exception_fails_the_run_cleanly(tmp_path, small_data, mlflow_uri):
    """One line on stderr, exit code 1, status failed, MLflow FAILED, records kept."""
    out = run_cli(
        "engine=rpc", "optimizer=asgd", "dataset=small_lstsq", f"dataset.path={small_data}",
        "topology=linear", "topology.n_workers=2", "batch_size=8", "optimizer.lr=0.05",
        "budget.gradients=500", "eval_every=5", "engine.time_scale=0.002",
        f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path}",
        env={"ASGD_WORKER_FAULT": "raise:1:4"},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: worker 1 failed: RuntimeError: injected fault (ASGD_WORKER_FAULT) ({tmp_path})"
    ]
    assert "Traceback" not in out.stderr
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stopped_by"] == "failure"
    assert summary["error"] == "worker 1 failed: RuntimeError: injected fault (ASGD_WORKER_FAULT)"
    events = read_events(tmp_path / "events.csv")
    assert 3 <= len(events) == summary["gradients"]  # what arrived before the fault is kept
    history = read_history(tmp_path / "history.csv")
    assert history[0]["update"] == 0
    # a failed run ends with an evaluation of its last iterate too: the finals are that row
    assert int(history[-1]["update"]) == summary["final_update"] == summary["updates"]
    assert summary["final_loss"] == history[-1]["loss"]
    from pipeline.tracking import client_for

    assert client_for(mlflow_uri).get_run(mlflow_run_id(tmp_path)).info.status == "FAILED"
    assert_no_workers_left(summary)


def test_a_rank_that_never_starts_ends_the_run_within_start_timeout(
    tmp_path, small_data, monkeypatch
):
    monkeypatch.setenv("ASGD_WORKER_FAULT", "nostart:1:0")
    # Which ranks are listed depends on how far the others got within 15 s (on a loaded machine
    # the healthy ones may not have started either): worker 1 is always among them.
    never = r"^workers ([0-9, ]+) did not start within 15 s \(engine\.start_timeout\)$"
    with pytest.raises(RunError, match=never) as raised:
        run_experiment(small(small_data, ("asgd",), "engine.start_timeout=15"), tmp_path)
    listed = re.match(never, str(raised.value)).group(1).split(", ")
    assert "1" in listed and set(listed) <= {"0", "1", "2"}
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == str(raised.value)
    assert not any("pipeline.engines.rpc.worker" in _cmdline(p) for p in _children())


def test_a_taken_port_is_one_clear_error(tmp_path, small_data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RunError, match=f"^port {port} on 127.0.0.1 is taken"):
            run_experiment(small(small_data, ("asgd",), f"engine.master_port={port}"), tmp_path)


def test_sigterm_ends_a_real_run_like_ctrl_c(tmp_path, small_data, mlflow_uri):
    _signal_run(tmp_path, small_data, mlflow_uri, signal.SIGTERM, 143)


@pytest.mark.slow
def test_sigint_ends_a_real_run(tmp_path, small_data, mlflow_uri):
    _signal_run(tmp_path, small_data, mlflow_uri, signal.SIGINT, 130)


def _signal_run(tmp_path, small_data, mlflow_uri, sig, code):
    import json

    cmd = [
        sys.executable, "-m", "pipeline.train", "engine=rpc", "optimizer=asgd",
        "dataset=small_lstsq", f"dataset.path={small_data}", "topology=linear",
        "topology.n_workers=3", "batch_size=8", "optimizer.lr=0.01", "budget.gradients=100000",
        "eval_every=50", "engine.time_scale=0.002", f"tracking.uri={mlflow_uri}",
        f"hydra.run.dir={tmp_path}", "progress=off",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until jobs are flowing
            jobs = tmp_path / "jobs.csv"
            if jobs.exists() and len(jobs.read_text().splitlines()) > 20:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never got going")
        proc.send_signal(sig)
        # a hang guard, not a speed assertion: a run that handles the signal ends in seconds
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "killed" and summary["stopped_by"] == "signal"
    assert len(read_events(tmp_path / "events.csv")) == summary["gradients"] > 0
    from pipeline.tracking import client_for

    assert client_for(mlflow_uri).get_run(mlflow_run_id(tmp_path)).info.status == "KILLED"
    assert_no_workers_left(summary)


def _ppid(proc_dir: Path) -> int:
    """A process's parent from /proc/<pid>/stat; its name, in parentheses, may hold spaces and
    parentheses itself, so the fields are counted after the last ')'."""
    stat = (proc_dir / "stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if _ppid(d) == me:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["asgd", "minibatch"])
def test_two_cuda_workers_train_the_cnn(method, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = compose_cfg(
        "experiment=cnn_digits", f"optimizer={method}", "engine=rpc", "engine.device=cuda",
        "topology.n_workers=2", "budget.gradients=200", "tracking=none", "progress=off",
        f"dataset.path={tmp_path / 'digits.npz'}",
    )  # fmt: skip
    from models import datasets

    datasets.build("digits", tmp_path / "digits.npz", seed=0)
    summary, _ = run_experiment(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["gradients"] == 200
    assert all(w["device"].startswith("cuda") for w in summary["workers"])
    assert summary["final_test_accuracy"] > 0.3
    assert len(read_events(tmp_path / "run" / "events.csv")) == 200
    assert_no_workers_left(summary)


def _lost_worker_run(tmp_path, small_data, monkeypatch, method, *extra, fault="kill:1:5", n=3):
    monkeypatch.setenv("ASGD_WORKER_FAULT", fault)
    return run_experiment(small(small_data, method, *extra, n=n), tmp_path)


def test_asynchronous_sgd_carries_on_without_a_killed_worker(tmp_path, small_data, monkeypatch):
    """Worker 1 gets SIGKILL in its 5th job: the run meets its budget with workers 0 and 2,
    and says what happened."""
    summary, _ = _lost_worker_run(tmp_path, small_data, monkeypatch, ("asgd",))
    assert summary["status"] == "finished" and summary["gradients"] == 60
    assert summary["n_failures"] == 1
    (failure,) = summary["failures"]
    assert failure["worker"] == 1 and failure["time"] > 0 and failure["cause"]
    events = read_events(tmp_path / "events.csv")
    ones = [i for i, e in enumerate(events) if e["worker"] == 1]
    assert len(ones) == 4  # its 4 jobs before the fault, none after
    assert {e["worker"] for e in events[ones[-1] + 1 :]} == {0, 2}
    jobs = read_jobs(tmp_path)
    assert [j["status"] for j in jobs if j["worker"] == 1] == ["arrived"] * 4 + ["lost"]
    assert_no_workers_left(summary)


@pytest.mark.slow
def test_minibatch_continues_with_the_survivors(tmp_path, small_data, monkeypatch):
    summary, _ = _lost_worker_run(
        tmp_path, small_data, monkeypatch, ("minibatch",), "engine.on_worker_failure=continue"
    )
    assert summary["status"] == "finished" and summary["gradients"] == 60
    assert [f["worker"] for f in summary["failures"]] == [1]
    events = read_events(tmp_path / "events.csv")
    # 4 full rounds of 3 (lr / 3 each), then rounds of the 2 survivors (lr / 2 each)
    assert [e["lr"] for e in events[:12]] == [pytest.approx(0.05 / 3)] * 12
    after = [e for e in events if e["version"] >= 5]
    assert after and all(e["lr"] == pytest.approx(0.05 / 2) for e in after)
    assert all(e["worker"] in (0, 2) for e in after)
    assert_no_workers_left(summary)


@pytest.mark.slow
def test_minibatch_aborts_when_told_to(tmp_path, small_data, monkeypatch):
    with pytest.raises(RunError, match=r"^worker 1 lost \(.*\); minibatch is synchronous"):
        _lost_worker_run(
            tmp_path, small_data, monkeypatch, ("minibatch",), "engine.on_worker_failure=abort"
        )
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failures"][0]["worker"] == 1
    assert 12 <= summary["gradients"] < 60
    assert_no_workers_left(summary)


@pytest.mark.slow
def test_a_run_whose_last_worker_dies_fails_cleanly(tmp_path, small_data, monkeypatch):
    with pytest.raises(RunError, match="every worker is lost"):
        _lost_worker_run(tmp_path, small_data, monkeypatch, ("asgd",), fault="kill:0:3", n=1)


def _torchrun(tmp_path, *extra):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
        "-m", "pipeline.train", "engine=rpc", "engine.launcher=torchrun", "topology.n_workers=2",
        "dataset=small_lstsq", f"dataset.path={extra[0]}", "topology=linear", "batch_size=8",
        "optimizer.lr=0.01", "engine.time_scale=0.002", "eval_every=20", "tracking=none",
        f"hydra.run.dir={tmp_path / 'run'}", "progress=off", *extra[1:],
    ]  # fmt: skip
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_torchrun_on_loopback(tmp_path, small_data):
    """Ranks from the environment: rank 0 is the server and the only one that writes records;
    ranks 1 and 2 are workers that take their configuration from it, and whose output (still
    on the console) reaches the server's workers.log through the rendezvous store."""
    import json

    proc = _torchrun(tmp_path, small_data, "budget.gradients=120")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["gradients"] == 120
    assert len(summary["workers"]) == 2
    assert len(read_events(tmp_path / "run" / "events.csv")) == 120
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # workers wrote nothing
    log = (tmp_path / "run" / "workers.log").read_text()
    for w, info in enumerate(summary["workers"]):
        ready = f"worker {w} (rank {w + 1}) ready: pid {info['pid']}"
        assert f"-- worker {w} (rank {w + 1}) --\n{ready}" in log, log
        assert ready in out  # and on torchrun's console
    assert_no_workers_left(summary)


@pytest.mark.slow
def test_torchrun_on_two_nodes(tmp_path, small_data):
    """The README's two-machine recipe, both "machines" on this host: node 0 runs the server
    and one worker, node 1 two workers and gives no configuration of its own (it takes rank 0's:
    a different budget there is ignored). Ranks are laid out node by node."""
    import json

    port = free_port("127.0.0.1")
    common = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=2",
        "--master-addr=127.0.0.1", f"--master-port={port}",
    ]  # fmt: skip
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    node_b = tmp_path / "b"
    node_b.mkdir()
    procs = [
        subprocess.Popen(
            [*common, "--node-rank=0", "-m", "pipeline.train", "engine=rpc",
             "engine.launcher=torchrun", "topology.n_workers=3", "dataset=small_lstsq",
             f"dataset.path={small_data}", "topology=linear", "batch_size=8",
             "optimizer.lr=0.01", "engine.time_scale=0.002", "eval_every=20", "tracking=none",
             f"hydra.run.dir={tmp_path / 'run'}", "progress=off", "budget.gradients=150"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
        subprocess.Popen(
            [*common, "--node-rank=1", "-m", "pipeline.train", "engine=rpc",
             "engine.launcher=torchrun", "budget.gradients=7"],
            cwd=node_b, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
    ]  # fmt: skip
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][:3000] + outs[1][:3000]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["gradients"] == 150
    assert len(summary["workers"]) == 3
    per_worker = {w: 0 for w in range(3)}
    for e in read_events(tmp_path / "run" / "events.csv"):
        per_worker[int(e["worker"])] += 1
    assert all(c > 0 for c in per_worker.values()), per_worker  # node 1's workers took part
    assert list(node_b.iterdir()) == []  # node 1 wrote nothing
    log = (tmp_path / "run" / "workers.log").read_text()
    assert all(f"worker {w} (rank {w + 1}) ready" in log for w in range(3)), log
    assert_no_workers_left(summary)


@pytest.mark.slow
def test_torchrun_with_a_rank_killed_ends_cleanly(tmp_path, small_data):
    """SIGKILL to a worker rank: the server records the loss; torchrun then stops the group,
    and the server ends like on SIGTERM, records kept, nothing left running."""
    import json

    proc = _torchrun(tmp_path, small_data, "budget.gradients=1000000")
    try:
        jobs = tmp_path / "run" / "jobs.csv"
        deadline = time.monotonic() + 180
        while not (jobs.exists() and len(jobs.read_text().splitlines()) > 30):
            assert time.monotonic() < deadline and proc.poll() is None, "never got going"
            time.sleep(0.2)
        worker_pid = [
            p for p in _descendants(proc.pid)
            if "pipeline.train" in _cmdline(p) and _env_of(p).get("RANK") == "2"
        ]  # fmt: skip
        assert len(worker_pid) == 1
        os.kill(worker_pid[0], signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD_S)  # (a hang guard: torchrun's monitor is slow
        # to notice on a loaded machine)
    finally:
        if proc.poll() is None:  # hung: its ranks too, or they would outlive the test
            for pid in _descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] in ("killed", "failed")
    assert [f["worker"] for f in summary["failures"]] == [1]
    assert len(read_events(tmp_path / "run" / "events.csv")) == summary["gradients"] > 0
    assert "worker 0 (rank 1) ready" in (tmp_path / "run" / "workers.log").read_text()
    assert not [p for p in _descendants(proc.pid) if alive(p)]
    assert_no_workers_left(summary)


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                kids.setdefault(_ppid(d), []).append(int(d.name))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _env_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(x.decode(errors="replace").split("=", 1) for x in raw if b"=" in x)


@pytest.mark.slow
def test_two_real_runs_at_once_and_an_rpc_multirun(tmp_path, small_data):
    """Side by side: two rpc runs started at the same moment on a fresh MLflow store never
    collide (ports, files, store); a Hydra multirun of rpc jobs runs them one after the other in
    one server process."""
    import json

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    common = [
        sys.executable, "-m", "pipeline.train", "engine=rpc", "optimizer=asgd",
        "dataset=small_lstsq", f"dataset.path={small_data}", "topology=linear",
        "topology.n_workers=2", "batch_size=8", "optimizer.lr=0.05", "budget.gradients=80",
        "engine.time_scale=0.002", f"tracking.uri={uri}", "progress=off",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*common, f"hydra.run.dir={tmp_path / f'run{i}'}"],
            cwd=PROJECT_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from pipeline.tracking import client_for

    client = client_for(uri)
    for i in range(2):
        s = json.loads((tmp_path / f"run{i}" / "summary.json").read_text())
        assert s["status"] == "finished" and s["gradients"] == 80
        assert len(read_events(tmp_path / f"run{i}" / "events.csv")) == 80
        assert client.get_run(mlflow_run_id(tmp_path / f"run{i}")).info.status == "FINISHED"
        assert_no_workers_left(s)
    rest = [a for a in common[3:] if a != "optimizer=asgd"]
    out = run_cli("-m", *rest, "optimizer=asgd,minibatch", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-2000:]
    for job in ("0", "1"):
        s = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert s["status"] == "finished" and s["engine"] == "rpc"
        assert_no_workers_left(s)
