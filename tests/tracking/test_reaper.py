"""A RUNNING MLflow run whose process died is marked KILLED, with its records attached, by the next
run on the store: real processes SIGKILLed, a real sqlite store, and the reaper's rules (pid gone,
pid reused, another host, no tags, already ended) on crafted runs of a real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT
from pipeline.tracking import client_for, ensure_experiment, process_tags, reap_stale_runs
from pipeline.tracking.reaper import BOOT, HOST, PID, REAPED_BY, RECORDS_DIR, START, start_ticks
from tests.conftest import run_cli

SMALL = ("optimizer=asgd", "topology.n_workers=4", "batch_size=8", "progress=off")
RECORDS = {"records/events.csv", "records/history.csv", "records/config.yaml"}


def small(small_data) -> tuple[str, ...]:
    return ("dataset=small_lstsq", f"dataset.path={small_data}", *SMALL)


def _start_long(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", *args],
            cwd=PROJECT_ROOT, env={**os.environ, "CI": "1"}, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_for_runs(proc: subprocess.Popen, uri: str, experiment: str, log: Path, count: int,
                   records: Path, timeout: float = 300) -> list:  # fmt: skip
    """The runs of ``experiment`` once ``count`` exist and ``records``/events.csv has rows (the
    process is well into its run), all RUNNING; fails if the process ends first."""
    client = client_for(uri)
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the long run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no MLflow run in time:\n{log.read_text()[-3000:]}"
        events = records / "events.csv"
        if events.exists() and len(events.read_bytes().splitlines()) > 1:
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if len(runs) >= count:
                assert all(r.info.status == "RUNNING" for r in runs)
                return runs
        time.sleep(0.5)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _records(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "records")}


def test_a_killed_run_is_marked_killed_by_the_next_run(tmp_path, small_data, mlflow_uri):
    # the session's store (created once), an experiment of the test's own
    uri, name = mlflow_uri, f"reaper-{tmp_path.name}"
    log = tmp_path / "long.log"
    store = (f"tracking.uri={uri}", f"tracking.experiment={name}")
    long = _start_long([*small(small_data), "budget.gradients=100000000", *store,
                        f"hydra.run.dir={tmp_path / 'long'}"], log)  # fmt: skip
    try:
        (run,) = _wait_for_runs(long, uri, name, log, 1, tmp_path / "long")
        _kill(long)
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    client = client_for(uri)
    dead = client.get_run(run.info.run_id)
    assert dead.info.status == "RUNNING"  # nobody has noticed yet
    tags = dead.data.tags
    assert tags[PID] == str(long.pid) and tags[HOST] == os.uname().nodename
    assert tags[RECORDS_DIR] == str((tmp_path / "long").resolve())
    assert START in tags and BOOT in tags  # Linux: the pid's start time and the boot
    assert _records(client, dead.info.run_id) == set()

    out = run_cli(*small(small_data), "budget.gradients=40", *store,
                  f"hydra.run.dir={tmp_path / 'next'}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]

    dead = client.get_run(run.info.run_id)
    assert dead.info.status == "KILLED"
    assert dead.info.end_time is not None and dead.info.end_time >= dead.info.start_time
    reaped_by = dead.data.tags[REAPED_BY]
    assert reaped_by.startswith("python -m pipeline.train (pid ")
    assert reaped_by.endswith(f": process {long.pid} is gone")
    assert dead.data.tags["status"] == "killed"
    # the records the dead run wrote, attached as they are on disk
    assert RECORDS <= _records(client, dead.info.run_id)
    local = client.download_artifacts(dead.info.run_id, "records/events.csv", str(tmp_path))
    assert Path(local).read_bytes() == (tmp_path / "long" / "events.csv").read_bytes()
    # the run that did it ran normally, and is not reaped itself
    exp = client.get_experiment_by_name(name).experiment_id
    (new,) = [r for r in client.search_runs([exp]) if r.info.run_id != run.info.run_id]
    assert new.info.status == "FINISHED" and REAPED_BY not in new.data.tags
    assert reap_stale_runs(client, exp) == []  # nothing left to reap


@pytest.mark.slow
def test_a_killed_sweep_and_its_job_are_marked_killed(tmp_path, small_data, mlflow_uri):
    """A sweep's process SIGKILLed during its first job: the parent and the job (the same
    process under Hydra's basic launcher) are both KILLED by the next run; the job gets its
    records from its own folder."""
    uri, name = mlflow_uri, f"reaper-{tmp_path.name}"
    log = tmp_path / "sweep.log"
    store = (f"tracking.uri={uri}", f"tracking.experiment={name}")
    long = _start_long(["-m", *small(small_data), "budget.gradients=100000000", "seed=0,1",
                        *store, f"hydra.sweep.dir={tmp_path / 'sweep'}"], log)  # fmt: skip
    try:
        runs = _wait_for_runs(long, uri, name, log, 2, tmp_path / "sweep" / "0")
        _kill(long)
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    (job,) = [r for r in runs if r is not parent]
    assert parent.data.tags[PID] == job.data.tags[PID] == str(long.pid)

    out = run_cli(*small(small_data), "budget.gradients=40", *store,
                  f"hydra.run.dir={tmp_path / 'next'}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = client_for(uri)
    for r in (parent, job):
        now = client.get_run(r.info.run_id)
        assert now.info.status == "KILLED", r.info.run_name
        assert now.data.tags[REAPED_BY].endswith(f": process {long.pid} is gone")
    assert RECORDS <= _records(client, job.info.run_id)
    assert _records(client, parent.info.run_id) == set()  # a sweep's parent has no records dir


def _dead_process() -> tuple[int, str]:
    """The pid and start time of a process that has exited (and been waited for)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = None
        for _ in range(100):
            started = start_ticks(p.pid)
            if started is not None:
                break
            time.sleep(0.05)
        assert started is not None
    finally:
        p.kill()
        p.wait()
    return p.pid, started


def test_the_reaper_takes_only_dead_processes_of_this_host(tmp_path, mlflow_uri):
    client = client_for(mlflow_uri)
    exp = ensure_experiment(client, f"reaper-{tmp_path.name}")
    records = tmp_path / "records"
    (records / ".hydra").mkdir(parents=True)
    (records / "history.csv").write_text("update,loss\n0,1.0\n")
    (records / "summary.json").write_text("{}\n")
    (records / ".hydra" / "config.yaml").write_text("seed: 0\n")
    mine = process_tags(records)
    assert mine[PID] == str(os.getpid()) and mine[START] == start_ticks(os.getpid())
    pid, started = _dead_process()

    def run(name: str, tags: dict, status: str | None = None) -> str:
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        if status:
            client.set_terminated(run_id, status)
        return run_id

    dead = run("dead", {**mine, PID: str(pid), START: started})
    reused = run("pid reused", {**mine, START: str(int(mine[START]) + 1)})  # alive, another start
    alive = run("alive", mine)
    elsewhere = run("other host", {**mine, PID: str(pid), HOST: "another-machine"})
    untagged = run("no tags", {"method": "asgd"})
    ended = run("ended", {**mine, PID: str(pid), START: started}, status="FINISHED")
    bad_pid = run("bad pid", {**mine, PID: "not-a-pid"})

    assert sorted(reap_stale_runs(client, exp)) == sorted([dead, reused])
    status = {r: client.get_run(r).info.status for r in (dead, reused, alive, elsewhere, untagged,
                                                        ended, bad_pid)}  # fmt: skip
    assert status == {dead: "KILLED", reused: "KILLED", alive: "RUNNING", elsewhere: "RUNNING",
                      untagged: "RUNNING", ended: "FINISHED", bad_pid: "RUNNING"}  # fmt: skip
    assert client.get_run(dead).data.tags[REAPED_BY].endswith(f"process {pid} is gone")
    why = client.get_run(reused).data.tags[REAPED_BY]
    assert why.endswith(f"process {os.getpid()} is gone (the pid now belongs to another process)")
    assert REAPED_BY not in client.get_run(ended).data.tags
    expected = {"records/history.csv", "records/summary.json", "records/config.yaml"}
    assert _records(client, dead) == expected
    assert reap_stale_runs(client, exp) == []  # done once
    for r in (alive, elsewhere, untagged, bad_pid):
        client.set_terminated(r, "FINISHED")


def test_a_run_without_artifacts_gets_none_when_reaped(tmp_path, mlflow_uri):
    """tracking.artifacts=false is honoured for a dead run too: KILLED, nothing attached."""
    client = client_for(mlflow_uri)
    exp = ensure_experiment(client, f"reaper-{tmp_path.name}")
    (tmp_path / "history.csv").write_text("update,loss\n0,1.0\n")
    pid, started = _dead_process()
    run_id = client.create_run(
        exp, run_name="dead", tags={**process_tags(tmp_path), PID: str(pid), START: started}
    ).info.run_id
    client.log_param(run_id, "tracking.artifacts", "False")  # as a run logs its config
    assert reap_stale_runs(client, [exp]) == [run_id]
    assert client.get_run(run_id).info.status == "KILLED"
    assert _records(client, run_id) == set()
