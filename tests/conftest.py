from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from models import datasets
from pipeline import CONF_DIR, PROJECT_ROOT

# tests never touch the project's own store
os.environ.pop("MLFLOW_TRACKING_URI", None)


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A 64 x 4 least-squares problem in a temporary data file."""
    path = tmp_path_factory.mktemp("data") / "small_lstsq.npz"
    datasets.build("small_lstsq", path, seed=0)
    return path


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One temporary sqlite store for the session (created once: migrations take seconds)."""
    from pipeline.tracking import client_for, ensure_experiment

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    ensure_experiment(client_for(uri), "async-sgd")
    return uri


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run ``python -m pipeline.train`` as a user would."""
    full_env = {**os.environ, "CI": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(cwd or PROJECT_ROOT),
        timeout=timeout,
    )


def full_grad(X: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return X.T @ (X @ x - y) / len(y)
