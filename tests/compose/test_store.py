"""An MLflow store that cannot be created or reached is refused before anything starts: one line
naming the store and why, exit code 2, no run directory, no store written; a good store passes
and is left uncreated for the run to create."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest

from pipeline import ConfigError
from pipeline.compose.preflight import preflight
from pipeline.compose.store import check_store
from tests.conftest import run_cli

SMALL = ("~experiment", "optimizer=asgd", "optimizer.lr=0.1", "topology.n_workers=4",
         "batch_size=8", "budget.gradients=40", "objective=noisy_quadratic",
         "dataset=none")  # fmt: skip


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(uri: str, *, env: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        if env is None:
            check_store(uri)
        else:
            saved = os.environ.get("MLFLOW_TRACKING_URI")
            os.environ["MLFLOW_TRACKING_URI"] = env
            try:
                check_store(None)
            finally:
                if saved is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = saved
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_sqlite_store_in_a_folder_that_cannot_be_made(tmp_path):
    assert _refused("sqlite:////proc/nope/x.db").startswith(
        "the MLflow store sqlite:////proc/nope/x.db (tracking.uri) cannot be used: cannot create "
        "the folder /proc/nope ("
    )
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    uri = f"sqlite:///{blocker}/deeper/mlflow.db"
    assert (
        _refused(uri)
        == f"the MLflow store {uri} (tracking.uri) cannot be used: {blocker} is not a folder"
    )


def test_a_sqlite_store_that_is_not_a_database(tmp_path):
    text_file = tmp_path / "mlflow.db"
    text_file.write_text("experiment,run\n")
    uri = f"sqlite:///{text_file}"
    assert _refused(uri) == (
        f"the MLflow store {uri} (tracking.uri) cannot be used: {text_file} is not an sqlite "
        "database (file is not a database)"
    )
    folder = tmp_path / "folder.db"
    folder.mkdir()
    assert _refused(f"sqlite:///{folder}").endswith(f"{folder} is a folder, not a database file")


def test_an_unreachable_tracking_server_and_the_environment(tmp_path):
    port = _closed_port()
    uri = f"http://127.0.0.1:{port}"
    assert _refused(uri) == (
        f"the MLflow store {uri} (tracking.uri) cannot be used: cannot connect to "
        f"127.0.0.1:{port} (Connection refused)"
    )
    # from $MLFLOW_TRACKING_URI, it says so
    assert _refused(None, env="sqlite:////proc/nope/x.db").startswith(
        "the MLflow store sqlite:////proc/nope/x.db ($MLFLOW_TRACKING_URI) cannot be used: "
    )


def test_a_server_behind_a_proxy_is_checked_through_it(monkeypatch):
    """With $http_proxy set, MLflow's requests go through the proxy: the check connects to it,
    unless $no_proxy names the server."""
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    proxy, server = _closed_port(), _closed_port()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy}")
    uri = f"http://127.0.0.1:{server}"
    assert _refused(uri).endswith(
        f"cannot connect to 127.0.0.1:{proxy} (the proxy of $http_proxy) (Connection refused)"
    )
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert _refused(uri).endswith(f"cannot connect to 127.0.0.1:{server} (Connection refused)")


def test_a_good_store_passes_and_nothing_is_created(tmp_path):
    db = tmp_path / "new" / "folders" / "mlflow.db"
    assert check_store(f"sqlite:///{db}") == f"sqlite:///{db}"
    assert list(tmp_path.iterdir()) == []  # the probe's folders are removed again
    existing = tmp_path / "mlflow.db"
    sqlite3.connect(existing).execute("CREATE TABLE t (x INTEGER)").connection.close()
    before = existing.read_bytes()
    check_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "mlflow.db"
    ]


def test_preflight_checks_the_store_of_tracked_jobs_only(tmp_path):
    bad = "tracking.uri=sqlite:////proc/nope/x.db"
    with pytest.raises(ConfigError, match=r"^the MLflow store sqlite:////proc/nope/x\.db "):
        preflight([*SMALL, bad])
    assert preflight([*SMALL, bad, "tracking=none"]) == 1  # not tracked: not checked
    # a sweep: every job's store
    good = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ConfigError, match="/proc/nope"):
        preflight(["-m", *SMALL, f"tracking.uri={good},sqlite:////proc/nope/x.db"])
    assert preflight(["-m", *SMALL, f"tracking.uri={good}", "seed=0,1"]) == 2
    assert not Path(tmp_path / "mlflow.db").exists()


def test_cli_bad_store_is_one_line_exit_2_before_anything(tmp_path):
    out = run_cli(*SMALL, "tracking.uri=sqlite:////proc/nope/x.db", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2, out.stderr[-3000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(
        "error: the MLflow store sqlite:////proc/nope/x.db (tracking.uri) cannot be used: cannot "
        "create the folder /proc/nope ("
    )
    assert "Traceback" not in out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory


def test_cli_unreachable_server_is_one_line_exit_2(tmp_path):
    port = _closed_port()
    out = run_cli(*SMALL, f"tracking.uri=http://127.0.0.1:{port}/", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip() == (
        f"error: the MLflow store http://127.0.0.1:{port}/ (tracking.uri) cannot be used: cannot "
        f"connect to 127.0.0.1:{port} (Connection refused)"
    )
    assert list(tmp_path.iterdir()) == []
