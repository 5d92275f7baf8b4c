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
from pipeline.compose.datafiles import DATA_DIR_ENV

# Hermetic: no test writes inside the repository. Default data files are built in a temporary
# folder ($ASGD_DATA_DIR) and runs without a tracking.uri go to a temporary MLflow store
# ($MLFLOW_TRACKING_URI); subprocesses inherit both. The session fails if the working tree changed.
_HERMETIC_ENV = (DATA_DIR_ENV, "MLFLOW_TRACKING_URI")


# caches of tools (bytecode, linters) may change while the suite runs: not the tests' writing;
# nor mutmut's mutated copy and its bookkeeping (mutants/, docs/mutation.md), rewritten while a
# mutation run goes on (and the whole of what a session run inside that copy sees)
_TOOL_CACHES = ("__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache", "mutants")


def _tree_state() -> dict[str, tuple] | None:
    """Every changed, untracked or ignored file of the working tree (tool caches aside),
    with its size and modification time; None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=all",
             "--", "."],
            cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    state: dict[str, tuple] = {}
    entries = iter(out.stdout.decode(errors="replace").split("\0"))
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":
            next(entries, None)  # a rename's source path
        if path.endswith(".pyc") or any(f"{c}/" in path for c in _TOOL_CACHES):
            continue
        try:
            st = (PROJECT_ROOT / path).stat()
            state[path] = (code, st.st_size, st.st_mtime_ns)
        except OSError:
            state[path] = (code, None, None)
    return state


@pytest.fixture(scope="session", autouse=True)
def hermetic(tmp_path_factory):
    """Temporary data folder and MLflow store for the whole session; afterwards, the working
    tree must be exactly as it was (git status, ignored files included)."""
    saved = {k: os.environ.get(k) for k in _HERMETIC_ENV}
    root = tmp_path_factory.mktemp("hermetic")
    os.environ[DATA_DIR_ENV] = str(root / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    before = _tree_state()
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    after = _tree_state()
    if before is not None and after is not None and after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        pytest.fail(
            f"the tests changed the working tree ({len(changed)} paths): {', '.join(changed[:20])}",
            pytrace=False,
        )


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
def mlflow_uri(hermetic) -> str:
    """The session's temporary sqlite store, also $MLFLOW_TRACKING_URI (created once:
    migrations take seconds)."""
    from pipeline.tracking import client_for, ensure_experiment

    uri = os.environ["MLFLOW_TRACKING_URI"]
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
