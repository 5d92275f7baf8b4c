"""A fresh clone of the repository's committed HEAD in a temporary folder, and the environment
that runs it (its own code first on the path, this interpreter, no outside data folder or MLflow
store): what a user who clones the project gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench._meta import ROOT


def head(root: Path = ROOT) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.strip()


def fresh_clone(dest: Path, root: Path = ROOT) -> str:
    """Clone ``root``'s committed HEAD into ``dest`` (uncommitted changes are not in it);
    returns the commit."""
    sha = head(root)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(root), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", sha], cwd=dest, check=True)
    return sha


def clone_env(clone: Path, **extra: str) -> dict[str, str]:
    """The environment of a run inside ``clone``: its code (not an editable install elsewhere),
    this interpreter first on PATH (the commands DVC runs say ``python``), no data folder or
    MLflow store from outside (the defaults are then inside the clone), no DVC analytics."""
    env = dict(os.environ)
    for k in ("MLFLOW_TRACKING_URI", "ASGD_DATA_DIR"):
        env.pop(k, None)
    env["PYTHONPATH"] = str(clone)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra)
    return env
