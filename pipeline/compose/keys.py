"""A composed job's key (:func:`pipeline.core.jobkey.job_key` of its resolved config, the
digests of the files it reads and its device): what a study job writes into ``key.json``
(``pipeline.train``) and what the study recomputes from a finished job's saved config before
restoring a sweep without launching it (``pipeline.study.restore``). Code given by
``_target_`` from outside the project (a user's rule or model) is keyed by the digest of the
file that defines it: the project's own code is in the key's code digest already."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import PROJECT_ROOT
from pipeline.compose.datafiles import dataset_path
from pipeline.core import jobkey
from pipeline.core.devices import resolve_device
from pipeline.core.files import file_digest
from pipeline.core.trace import trace_file


def job_key(cfg: DictConfig) -> dict:
    """This job's key: its resolved config, the digests of the files it reads (cached per
    path, size and mtime), its device."""
    inputs: dict[str, str | None] = {}
    data = dataset_path(cfg)
    if data is not None:
        inputs["dataset"] = file_digest(data)
    if cfg.topology.get("trace_path"):
        inputs["trace"] = file_digest(trace_file(cfg.topology.trace_path))
    config = OmegaConf.to_container(cfg, resolve=True)
    for key, target in user_targets(config):
        digest = user_code_digest(target)
        if digest is not None:
            inputs[key] = digest
    return jobkey.job_key(config, inputs, str(resolve_device(cfg.objective.device)))


def user_targets(config: dict) -> list[tuple[str, str]]:
    """``(key, dotted path)`` of every ``_target_`` in the config (its groups, one level)."""
    out = []
    for group, node in config.items():
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("_target_"), str):
            out.append((f"{group}._target_", node["_target_"]))
        for k, v in node.items():
            if isinstance(v, dict) and isinstance(v.get("_target_"), str):
                out.append((f"{group}.{k}._target_", v["_target_"]))
    return out


def user_code_digest(target: str) -> str | None:
    """The digest of the file defining ``target`` when it lies outside the project (None
    inside it, or where it cannot be found: the run's own checks say so)."""
    module = target.rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not Path(origin).is_file():
        return None
    if Path(origin).resolve().is_relative_to(PROJECT_ROOT.resolve()):
        return None
    return file_digest(Path(origin))
