"""A run folder's ``run.json`` (its circumstances: MLflow run id, wall time, host, pid)."""

from __future__ import annotations

import json
from pathlib import Path


def run_info(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def mlflow_run_id(run_dir: str | Path) -> str:
    return run_info(run_dir)["mlflow_run_id"]
