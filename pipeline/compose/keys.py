"""A composed job's key (:func:`pipeline.core.jobkey.job_key` of its resolved config, the
digests of the files it reads and its device): what a study job writes into ``key.json``
(``pipeline.train``) and what the study recomputes from a finished job's saved config before
restoring a sweep without launching it (``pipeline.study.restore``)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

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
    return jobkey.job_key(config, inputs, str(resolve_device(cfg.objective.device)))
