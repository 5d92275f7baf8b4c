"""Where tensors live: one reading of ``cpu | cuda | cuda:N | auto`` for the objective of the
event engine (``objective.device``) and for the workers of the process engine
(``engine.device``)."""

from __future__ import annotations

import torch

from pipeline import ConfigError


def resolve_device(name: str, key: str = "objective.device", worker: int | None = None):
    """The torch device for ``name``; ``auto`` is CUDA where there is one. For a ``worker`` of the
    process engine, a bare ``cuda`` spreads the workers over the visible GPUs (worker i on
    ``cuda:(i mod count)``). A name this machine cannot honour is a one-line ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key} must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key} must be cpu, cuda, cuda:N or auto, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here ({key})")
    count = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and dev.index is None and worker is not None:
        return torch.device(f"cuda:{worker % count}")
    if dev.type == "cuda" and (dev.index or 0) >= count:
        raise ConfigError(f"{key}={name}: this machine has {count} CUDA device(s)")
    return dev
