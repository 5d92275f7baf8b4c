"""Which data file a run reads: ``dataset.path`` when given, else ``<name>.npz`` of the dataset's
own config in the data folder (``$ASGD_DATA_DIR`` when set, else the project's ``data/``, where
``python -m pipeline.data`` and DVC's data stage write), built there on first use. A changed
``dataset.seed`` or ``dataset.params`` gets a file of its own (``<name>-<digest>.npz``), and so
does every ``dataset=callable`` factory (``<function>-<digest>.npz``, :mod:`.userdata`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from models import datasets
from pipeline import CONF_DIR, PROJECT_ROOT, ConfigError
from pipeline.compose import userdata
from pipeline.compose.inputs import check_builder_params

DATA_DIR = PROJECT_ROOT / "data"  # the data step's (DVC's) folder
DATA_DIR_ENV = "ASGD_DATA_DIR"  # where default data files are read and built instead (tests)


def data_dir() -> Path:
    """The folder of default data files ``<name>.npz``: ``$ASGD_DATA_DIR`` when set (the test
    suite points it at a temporary folder), else the project's ``data/``."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override) if override else DATA_DIR


def data_key(cfg: Any) -> str:
    """How the user chose the data file, for messages: ``dataset.path`` or ``dataset=<name>``."""
    if cfg.dataset.path:
        return "dataset.path"
    if cfg.dataset.name == "callable":
        return f"{userdata.KEY}={userdata.factory_spec(cfg.dataset).get('_target_')}"
    return f"dataset={cfg.dataset.name}"


def default_data_file(ds: Any) -> Path:
    """``<name>.npz`` in :func:`data_dir` for the dataset's own config (conf/dataset/<name>.yaml,
    what the data step builds); ``<name>-<digest>.npz`` when ``dataset.seed`` or
    ``dataset.params`` differ from it, so a changed seed or size never reuses another file."""
    from omegaconf import OmegaConf

    if ds.name == "callable":
        return data_dir() / f"{userdata.file_stem(ds)}.npz"
    conf = CONF_DIR / "dataset" / f"{ds.name}.yaml"
    ref = OmegaConf.to_container(OmegaConf.load(conf)) if conf.exists() else {}
    own = {"seed": ds.seed, "params": dict(ds.params or {})}
    if own == {"seed": ref.get("seed", 0), "params": dict(ref.get("params") or {})}:
        return data_dir() / f"{ds.name}.npz"
    digest = hashlib.sha1(json.dumps(own, sort_keys=True).encode()).hexdigest()[:10]
    return data_dir() / f"{ds.name}-{digest}.npz"


def existing_data(cfg: Any) -> Path | None:
    """The data file if it exists (or is given explicitly); None for no data or a default file
    that is not built yet."""
    ds = cfg.dataset
    if ds.name == "none":
        return None
    if ds.path:
        return Path(ds.path)
    path = default_data_file(ds)
    return path if path.exists() else None


def dataset_path(cfg: Any) -> Path | None:
    """The data file a run reads; built by the data step when it is the default and missing.
    An explicit ``dataset.path`` that does not exist is an error."""
    ds = cfg.dataset
    if ds.name == "none":
        return None
    if ds.path:
        path = Path(ds.path)
        if not path.exists():
            raise ConfigError(f"data file not found: {path} (dataset.path)")
        return path
    if ds.name == "npz":
        raise ConfigError("dataset=npz needs dataset.path=<file>.npz (arrays X and y)")
    path = default_data_file(ds)
    if not path.exists() and ds.name == "callable":
        userdata.build(ds, path)
    if not path.exists():
        if ds.name not in datasets.BUILDERS:
            raise ConfigError(
                f"unknown dataset {ds.name!r}; choose one of {', '.join(datasets.BUILDERS)}"
            )
        params = check_builder_params(ds.name, dict(ds.params or {}))
        datasets.build(ds.name, path, seed=ds.seed, **params)
    return path
