"""A shared tracking server: runs log to a real ``mlflow server`` process on loopback (its own
sqlite backend store and artifact root) through ``tracking.uri=http://...``. A parallel sweep and
an engine=rpc run land complete (every metric, the records as artifacts, byte for byte), the UI
helper names the server's own address instead of starting a second UI, a server that is down is
one line before anything starts, and a server that dies mid-run costs the run seconds: it goes
on, its records complete, the failure said in one line each when it happens and when it ends.

Without a server (fast): MLflow's HTTP retries bounded, and the tracker's rules on a real sqlite
store whose client fails on demand (mid-run then back, mid-run to the end, at the start).

The server tests are slow: ``mlflow server`` takes about a minute to answer on two busy cores."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT, RunError
from pipeline.core.records import RunRecorder, read_history
from pipeline.tracking import MlflowTracker, client_for, ensure_experiment, process_tags
from pipeline.tracking.reaper import PID, REAPED_BY, START, start_ticks
from pipeline.tracking.store import HTTP_LIMITS
from tests.conftest import run_cli
from tests.runinfo import mlflow_run_id

SMALL = ("optimizer=asgd", "topology.n_workers=4", "budget.gradients=200", "batch_size=8",
         "eval_every=20", "progress=off")  # fmt: skip
#: the files a run attaches under records/ (those of them it writes)
RECORDS = ("summary.json", "run.json", "history.csv", "events.csv", "jobs.csv", "workers.log",
           ".hydra/config.yaml")  # fmt: skip
#: seconds within which the server must answer; a bound against a hang, not a speed assertion
#: (it takes about a minute on two busy cores)
START_GUARD_S = 300


def small(small_data: Path) -> tuple[str, ...]:
    return ("dataset=small_lstsq", f"dataset.path={small_data}", *SMALL)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``mlflow server``: its address, folder (``server.db``, ``artifacts/``) and
    process (the leader of its own process group)."""

    uri: str
    root: Path
    proc: subprocess.Popen
    log: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


def start_server(root: Path, port: int | None = None) -> Server:
    """``mlflow server`` as the README starts it (its own backend store and artifact root; one
    worker and no job runner to spare two busy cores), once ``/health`` answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", root, proc, log)
    deadline = time.monotonic() + START_GUARD_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=5) as r:
                    if r.read().strip() == b"OK":
                        return server
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    except BaseException:
        stop_server(server, signal.SIGKILL)
        raise


def stop_server(server: Server, first: int = signal.SIGTERM) -> None:
    """The server and every process it started (its process group) are gone, in every case."""
    for sig, wait in ((first, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the uvicorn child may outlive its parent for a moment
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(autouse=True)
def _http_limits_as_they_were(monkeypatch):
    """The MLflow HTTP settings that a client of a server puts into this process's environment
    are gone again after each test."""
    for key in HTTP_LIMITS:
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield s
    finally:
        stop_server(s)


def records_of(run_dir: Path) -> dict[str, Path]:
    """The record files of a run folder, by their artifact path."""
    return {f"records/{Path(n).name}": run_dir / n for n in RECORDS if (run_dir / n).is_file()}


def assert_landed(client, server: Server, run_dir: Path, tmp_path: Path):
    """The MLflow run of ``run_dir`` is FINISHED on the server with the run's every history row
    as metrics, its results, and its records attached, identical to the files on disk (as the
    client downloads them and as they lie in the server's artifact root)."""
    run_id = mlflow_run_id(run_dir)
    run = client.get_run(run_id)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.info.status == "FINISHED" and summary["status"] == "finished"
    assert run.data.tags["status"] == "finished"
    assert run.data.tags["records_dir"] == str(run_dir.resolve())
    history = read_history(run_dir / "history.csv")
    loss = client.get_metric_history(run_id, "curves/loss")
    assert sorted(m.step for m in loss) == [int(r["update"]) for r in history]
    assert sorted(m.value for m in loss) == sorted(r["loss"] for r in history)
    assert len(client.get_metric_history(run_id, "progress/gradients")) == len(history)
    (data,) = [i.dataset for i in run.inputs.dataset_inputs]
    assert data.name == "small_lstsq" and json.loads(data.profile)["features_shape"] == [64, 4]
    metrics = run.data.metrics
    assert metrics["results/final_loss"] == summary["final_loss"]
    assert metrics["results/final_suboptimality"] == summary["final_suboptimality"]
    expected = records_of(run_dir)
    assert {"records/summary.json", "records/history.csv", "records/events.csv",
            "records/config.yaml"} <= set(expected)  # fmt: skip
    listed = {a.path: a.file_size for a in client.list_artifacts(run_id, "records")}
    assert listed == {k: f.stat().st_size for k, f in expected.items()}
    local = Path(client.download_artifacts(run_id, "records", str(tmp_path / run_id)))
    stored = server.artifacts / run.info.experiment_id / run_id / "artifacts"
    for path, f in expected.items():
        assert (local.parent / path).read_bytes() == f.read_bytes(), path
        assert (stored / path).read_bytes() == f.read_bytes(), path
    return run


@pytest.mark.slow
def test_a_parallel_sweep_lands_complete_on_the_server(server, tmp_path, small_data):
    """Three jobs, two at a time (Hydra's joblib launcher, so two processes log at once): a
    parent with the job counts and the comparison, three FINISHED children with their records."""
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    out = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2",
        *small(small_data), f"tracking.uri={server.uri}", f"hydra.sweep.dir={sweep}",
        "tracking.sweep_name=server sweep", timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = client_for(server.uri)
    exp = client.get_experiment_by_name("async-sgd")
    (parent,) = client.search_runs([exp.experiment_id], f"tags.sweep_dir = '{sweep}'")
    assert parent.info.run_name == "server sweep" and parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/jobs"] == 3
    assert parent.data.metrics["sweep/jobs_finished"] == 3
    arts = {a.path: a.file_size for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.png", "comparison.csv"} <= set(arts) and arts["comparison.png"] > 0
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    jobs = [sweep / str(i) for i in range(3)]
    assert sorted(c.info.run_id for c in children) == sorted(mlflow_run_id(j) for j in jobs)
    for job in jobs:
        assert_landed(client, server, job, tmp_path)
    print(f"\nsweep of 3 jobs on the server: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_an_rpc_run_lands_complete_on_the_server(server, tmp_path, small_data):
    """Real worker processes and wall-clock metrics: the run, its system metrics and its records
    (workers.log and jobs.csv among them)."""
    run_dir = tmp_path / "rpc"
    out = run_cli(
        "engine=rpc", "engine.time_scale=0.002", "optimizer=asgd", "topology=linear",
        "topology.n_workers=3", "topology.noise=exponential", "dataset=small_lstsq",
        f"dataset.path={small_data}", "batch_size=8", "optimizer.lr=0.05",
        "budget.gradients=60", "eval_every=5", "progress=off", f"tracking.uri={server.uri}",
        f"hydra.run.dir={run_dir}", timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = client_for(server.uri)
    run = assert_landed(client, server, run_dir, tmp_path)
    assert run.data.tags["engine"] == "rpc"
    assert {"records/workers.log", "records/jobs.csv"} <= set(records_of(run_dir))
    metrics = run.data.metrics
    assert "progress/wall_time" in metrics and "system/cpu_utilization_percentage" in metrics
    assert metrics["results/run_time_s"] > 0


def ui(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline.ui`` as a user types it (MLFLOW_TRACKING_URI only where given)."""
    full_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    if not env or "MLFLOW_TRACKING_URI" not in env:
        full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "pipeline.ui", *args], cwd=PROJECT_ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_the_ui_helper_names_the_server_and_starts_nothing(server, tmp_path):
    """The server serves the UI: the helper asks it for the experiment, prints the address of
    its runs there (MLflow 3's "Model training" view) and exits 0, having marked KILLED a run of
    this host whose process is gone; a server that is down is one line, exit code 1."""
    client = client_for(server.uri)
    exp = ensure_experiment(client, "async-sgd")
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        while (started := start_ticks(gone.pid)) is None:
            time.sleep(0.05)
    finally:
        gone.kill()
        gone.wait()
    dead = client.create_run(exp, run_name="dead run on the server", tags={
        **process_tags(), PID: str(gone.pid), START: started}).info.run_id  # fmt: skip

    out = ui(f"tracking.uri={server.uri}")
    assert out.returncode == 0, out.stderr
    url = f"{server.uri}/#/experiments/{exp}/runs?workflowType=machine_learning"
    lines = out.stdout.splitlines()
    assert lines[0] == f"store: {server.uri}"
    assert f"open: {url}" == lines[-1]
    assert not any(line.startswith("command: ") for line in lines)  # no second UI started
    run = client.get_run(dead)
    assert run.info.status == "KILLED"
    assert f"marked KILLED: dead run on the server ({dead}): {run.data.tags[REAPED_BY]}" in lines
    with urllib.request.urlopen(url, timeout=30) as r:  # the address is the server's own UI
        assert r.status == 200 and b"<html" in r.read().lower()

    # the same store through the environment; --print-only contacts nothing
    env = {"MLFLOW_TRACKING_URI": server.uri}
    assert ui(env=env).stdout.splitlines()[-1] == f"open: {url}"
    down = f"http://127.0.0.1:{free_port()}"
    out = ui(f"tracking.uri={down}", "--print-only")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == (
        f"open: {down}/#/experiments?workflowType=machine_learning"
    )
    out = ui(f"tracking.uri={down}")
    assert out.returncode == 1 and out.stdout.splitlines() == [
        f"store: {down}", "the tracking server serves the UI itself: nothing to start"]  # fmt: skip
    assert out.stderr.splitlines() == [
        f"error: the MLflow store {down} (tracking.uri) cannot be used: cannot connect to "
        f"127.0.0.1:{down.rsplit(':', 1)[1]} (Connection refused)"
    ]


@pytest.mark.slow
def test_a_server_that_is_down_is_one_line_before_anything_starts(tmp_path, small_data):
    """A run and a multirun sweep (the server named by tracking.uri, then by the environment):
    exit code 2, one line on stderr, no run folder."""
    port = free_port()
    down = f"http://127.0.0.1:{port}"
    out = run_cli(*small(small_data), f"tracking.uri={down}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f"error: the MLflow store {down} (tracking.uri) cannot be used: cannot connect to "
        f"127.0.0.1:{port} (Connection refused)"
    ]
    out = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
                  *small(small_data), f"hydra.sweep.dir={tmp_path}/sweep",
                  env={"MLFLOW_TRACKING_URI": down})  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f"error: the MLflow store {down} ($MLFLOW_TRACKING_URI) cannot be used: cannot connect "
        f"to 127.0.0.1:{port} (Connection refused)"
    ]
    assert "Traceback" not in out.stdout and list(tmp_path.iterdir()) == []


def _wait_for_records(proc: subprocess.Popen, run_dir: Path, log: Path, rows: int,
                      timeout: float = 300) -> None:  # fmt: skip
    """Until the run has its MLflow run and ``rows`` history rows (so the tracker has sent
    history to the server); fails if the process ends first."""
    deadline = time.monotonic() + timeout
    history = run_dir / "history.csv"
    while True:
        assert proc.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no records in time:\n{log.read_text()[-3000:]}"
        if history.exists() and len(history.read_bytes().splitlines()) > rows:
            try:
                if mlflow_run_id(run_dir):
                    return
            except (OSError, ValueError, KeyError):  # run.json being written
                pass
        time.sleep(0.2)


@pytest.mark.slow
def test_a_server_that_dies_mid_run_costs_seconds(tmp_path, small_data):
    """The server SIGKILLed while a real run (engine=rpc, 30 wall seconds) logs to it: the run
    goes on to its budget, its records complete, and ends within seconds of it; the failure is
    one line when it happens and one when the run ends; the MLflow run keeps what was logged
    before the kill, RUNNING (the reaper's to close). MLflow's own retries, unbounded, hold
    every call for minutes."""
    server = start_server(tmp_path / "server")
    run_dir = tmp_path / "run"
    log = tmp_path / "run.log"
    budget = 30.0
    try:
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.train", "engine=rpc", "engine.time_scale=0.002",
                 "optimizer=asgd", "topology=linear", "topology.n_workers=2",
                 "dataset=small_lstsq", f"dataset.path={small_data}", "batch_size=8",
                 "optimizer.lr=0.05", f"budget.time={budget}", "eval_every=1", "progress=off",
                 f"tracking.uri={server.uri}", f"hydra.run.dir={run_dir}"],
                cwd=PROJECT_ROOT, env={**os.environ, "CI": "1"}, stdout=f,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_for_records(proc, run_dir, log, rows=600)
            stop_server(server, signal.SIGKILL)
            killed = time.monotonic()
            proc.wait(timeout=120 + budget)
            ended = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        stop_server(server)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    print(f"\nthe run ended {ended - killed:.1f} s after the server was killed")
    assert ended - killed < budget + 60, text[-3000:]  # MLflow's defaults: minutes per call
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["stopped_by"] == "budget.time"
    history = read_history(run_dir / "history.csv")
    assert int(history[-1]["update"]) == summary["final_update"] == summary["updates"]
    events = (run_dir / "events.csv").read_bytes().splitlines()
    assert len(events) - 1 == summary["gradients"]
    run_id = mlflow_run_id(run_dir)
    failed = [line for line in text.splitlines() if "MLflow: the store" in line]
    assert len(failed) == 1, text[-3000:]
    assert failed[0].endswith(
        f" - MLflow: the store {server.uri} failed during the run (MlflowException: Connection "
        f"refused); the run goes on and its records are written; the MLflow run {run_id} is "
        "completed when the run ends if the store answers again"
    )
    incomplete = [line for line in text.splitlines() if f"MLflow: the run {run_id}" in line]
    assert len(incomplete) == 1, text[-3000:]
    assert incomplete[0].endswith(
        f" - MLflow: the run {run_id} is incomplete on {server.uri} (MlflowException: Connection "
        "refused): left RUNNING (the reaper marks it KILLED with its records later); its "
        f"records are complete in {run_dir}"
    )
    # on the terminal nothing else of it: no retries, no traceback, no monitor's warning ...
    for noise in ("Traceback", "Retrying", "urllib3", "system_metrics", "Failed to"):
        assert noise not in text, text[-3000:]
    # ... which the run's log keeps
    assert "[urllib3.connectionpool][WARNING] - Retrying" in (run_dir / "train.log").read_text()
    # the server's own store, read without the server: what came before the kill
    stored = client_for(f"sqlite:///{server.root / 'server.db'}")
    run = stored.get_run(run_id)
    assert run.info.status == "RUNNING"
    logged = stored.get_metric_history(run_id, "curves/loss")
    assert 256 <= len(logged) < len(history)


# ------------------------------------------------------- without a server: the tracker's rules


def test_a_server_that_is_down_costs_seconds_per_call(monkeypatch):
    """MLflow's HTTP retries bounded where the environment does not set them (its defaults hold
    a call to a server that is down for about four minutes); a setting of the user's is kept."""
    for key in HTTP_LIMITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    client = client_for(f"http://127.0.0.1:{free_port()}")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    started = time.monotonic()
    with pytest.raises(Exception, match=r"Connection refused"):
        client.get_experiment_by_name("async-sgd")
    assert time.monotonic() - started < 30  # 3 attempts, 2-3 s of backoff: 2-11 s here


class Flaky:
    """A store client that fails every call, as MLflow does when the server is down, while
    ``down`` is set; counts the calls it refused."""

    def __init__(self, client):
        self._client, self.down, self.refused = client, False, 0

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                from mlflow.exceptions import MlflowException

                self.refused += 1
                raise MlflowException(
                    f"API request to {self._client.tracking_uri}/api/2.0/mlflow/{name} failed "
                    "with exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries "
                    "exceeded (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', "
                    "port=5000): Failed to establish a new connection: [Errno 111] Connection "
                    'refused"))'
                )
            return attr(*args, **kwargs)

        return call


def _run_with_a_failure(tmp_path: Path, uri: str, rows: int = 600, down_at: int = 300):
    """A tracker and its records (``rows`` history rows, handed over 256 at a time as a run's
    recorder does) whose store fails from row ``down_at`` on."""
    tracker = MlflowTracker(uri, "async-sgd", "flaky", {"seed": 0}, {}, records_dir=tmp_path)
    tracker.client = flaky = Flaky(tracker.client)
    recorder = RunRecorder(tmp_path, on_history=tracker.log_history)
    for u in range(rows):
        flaky.down = flaky.down or u == down_at
        recorder.history({"update": u, "gradients": u, "time": u / 10, "loss": 1 / (u + 1),
                          "suboptimality": 0.5 / (u + 1)})  # fmt: skip
    recorder.close()
    (tmp_path / "summary.json").write_text('{"status": "finished"}')
    return tracker, flaky


def test_a_store_that_fails_mid_run_and_answers_again(tmp_path, mlflow_uri, caplog):
    """The run goes on past the failure (nothing raised, one warning, nothing more sent); when it
    ends and the store answers again, the history it missed is read back from history.csv: the
    MLflow run is complete, every row once, its records attached, FINISHED."""
    caplog.set_level(logging.INFO, logger="pipeline.tracking.run")
    tracker, flaky = _run_with_a_failure(tmp_path, mlflow_uri)
    assert flaky.refused == 1  # the batch at row 512; nothing after it
    assert tracker.lost == "MlflowException: Connection refused"
    flaky.down = False
    tracker.finish({"status": "finished", "final_loss": 1 / 600}, tmp_path,
                   [tmp_path / "summary.json", tmp_path / "history.csv"])  # fmt: skip
    client = client_for(mlflow_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["results/final_loss"] == 1 / 600
    loss = client.get_metric_history(tracker.run_id, "curves/loss")
    assert sorted(m.step for m in loss) == list(range(600))  # none missing, none twice
    assert {a.path for a in client.list_artifacts(tracker.run_id, "records")} == {
        "records/summary.json", "records/history.csv"}  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.tracking.run"]
    assert said == [
        f"MLflow: the store {mlflow_uri} failed during the run (MlflowException: Connection "
        f"refused); the run goes on and its records are written; the MLflow run "
        f"{tracker.run_id} is completed when the run ends if the store answers again",
        f"MLflow: the store answers again: the run {tracker.run_id} is complete",
    ]


def test_a_store_that_stays_down_leaves_the_run_to_the_reaper(tmp_path, mlflow_uri, caplog):
    """Down to the end: finish tries once (the backlog, then the status), never raises, says so
    in one line; the MLflow run keeps what came before the failure and stays RUNNING."""
    tracker, flaky = _run_with_a_failure(tmp_path, mlflow_uri)
    tracker.finish({"status": "finished"}, tmp_path, [tmp_path / "summary.json"])
    assert flaky.refused == 3  # the failed batch; at the end the backlog and the status
    client = client_for(mlflow_uri)
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    assert len(client.get_metric_history(tracker.run_id, "curves/loss")) == 256
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.tracking.run"]
    assert len(said) == 2 and said[1] == (
        f"MLflow: the run {tracker.run_id} is incomplete on {mlflow_uri} (MlflowException: "
        "Connection refused): left RUNNING (the reaper marks it KILLED with its records later); "
        f"its records are complete in {tmp_path}"
    )
    client.set_terminated(tracker.run_id, "KILLED")  # not left for the session's other tests


def test_a_store_that_fails_when_the_run_starts_fails_it(monkeypatch, mlflow_uri):
    """Before the run has its MLflow run, a failing store is the run's failure: RunError, one
    line (exit code 1 from pipeline.train), the records kept by the runner."""
    import pipeline.tracking.run as run_module

    def down(uri):
        flaky = Flaky(client_for(uri))
        flaky.down = True
        return flaky

    monkeypatch.setattr(run_module, "client_for", down)
    with pytest.raises(RunError) as e:
        MlflowTracker(mlflow_uri, "async-sgd", "never", {}, {})
    assert str(e.value) == (
        f"MLflow: the store {mlflow_uri} cannot be used: MlflowException: Connection refused"
    )


def test_a_sweep_whose_server_is_down_at_its_end_does_not_fail(monkeypatch, caplog):
    """The sweep's end on a server that went down: one warning line, no exception (the jobs'
    records are written), the parent's variables gone from the environment."""
    from omegaconf import OmegaConf

    from pipeline.tracking import PARENT_ENV, PARENT_URI_ENV, SweepCallback

    down = f"http://127.0.0.1:{free_port()}"
    callback = SweepCallback()
    callback.parent, callback.uri = "0123456789abcdef", down
    monkeypatch.setenv(PARENT_ENV, callback.parent)
    monkeypatch.setenv(PARENT_URI_ENV, down)
    callback.on_multirun_end(OmegaConf.create({"tracking": {"artifacts": True}}))
    assert PARENT_ENV not in os.environ and PARENT_URI_ENV not in os.environ
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.tracking.sweep"]
    assert said == [
        f"MLflow: the sweep's run 0123456789abcdef is incomplete on {down} (MlflowException: "
        "Connection refused)"
    ]
