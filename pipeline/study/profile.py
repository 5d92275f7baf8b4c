"""The study's settings: the profile that ``params.yaml`` selects, and where its results go
(``results/<profile>/``, so that the profiles never overwrite each other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "results"
PARAMS = PROJECT_ROOT / "params.yaml"


class StudyError(RuntimeError):
    pass


def load_profile(params_file: Path = PARAMS) -> dict[str, Any]:
    params = yaml.safe_load(params_file.read_text())
    name = params["profile"]
    if name not in params["profiles"]:
        raise StudyError(
            f"params.yaml: unknown profile {name!r}; have {sorted(params['profiles'])}"
        )
    searchpath = params.get("searchpath") or []
    if not (isinstance(searchpath, list) and all(isinstance(x, str) for x in searchpath)):
        raise StudyError(
            f"params.yaml: searchpath must be a list of config directories, got {searchpath!r}"
        )
    return {"name": name, "searchpath": searchpath, **params["profiles"][name]}


def results_dir(profile: dict) -> Path:
    return RESULTS / profile["name"]
