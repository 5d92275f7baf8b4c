"""A quiet terminal: MLflow's INFO lines (a new store's tables, the system-metrics monitor) go to
the run's log file, not to stdout or stderr; MLflow's warnings still reach the terminal."""

from __future__ import annotations

import logging

from pipeline.tracking.logs import quiet_library_logs
from tests.conftest import run_cli

NOISE = ("Creating initial MLflow database tables", "system_metrics")


def test_first_real_run_on_a_fresh_store_is_quiet(tmp_path, small_data):
    """engine=rpc: a real run, so MLflow's system-metrics monitor runs too."""
    run_dir = tmp_path / "run"
    out = run_cli(
        "engine=rpc", "optimizer=asgd", "dataset=small_lstsq", f"dataset.path={small_data}",
        "topology=linear", "topology.n_workers=2", "batch_size=8", "optimizer.lr=0.05",
        "budget.gradients=60", "eval_every=5", "engine.time_scale=0.002",
        f"tracking.uri=sqlite:///{tmp_path / 'fresh.db'}", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in NOISE:
        assert line not in out.stdout and line not in out.stderr, (out.stdout, out.stderr)
    assert " INFO mlflow" not in out.stderr
    log = (run_dir / "train.log").read_text()
    assert "[mlflow.store.db.utils][INFO] - Creating initial MLflow database tables" in log
    assert "[mlflow.system_metrics.system_metrics_monitor][INFO] - Started monitoring" in log
    assert "Successfully terminated system metrics monitoring" in log
    assert "[pipeline.train][INFO] - asgd: finished" in log


def test_mlflow_warnings_still_reach_the_terminal(tmp_path, capsys):
    file_handler = logging.FileHandler(tmp_path / "job.log")
    root = logging.getLogger()
    root.addHandler(file_handler)
    try:
        quiet_library_logs()
        quiet_library_logs()  # idempotent: one line per record in the file
        logger = logging.getLogger("mlflow.store.db.utils")
        logger.info("an info line")
        logger.warning("a warning line")
    finally:
        root.removeHandler(file_handler)
        file_handler.close()
    err = capsys.readouterr().err
    assert "a warning line" in err and "an info line" not in err
    assert (tmp_path / "job.log").read_text().splitlines() == ["an info line", "a warning line"]
