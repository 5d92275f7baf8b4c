"""Server rules: each method of docs/methods.md written once, run unchanged by every engine."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.methods.asgd import AsyncSGD
from pipeline.core.methods.base import Decision, ServerRule
from pipeline.core.methods.minibatch import MinibatchSGD
from pipeline.core.methods.random_assignment import RandomAssignmentASGD
from pipeline.core.methods.rennala import RennalaSGD
from pipeline.core.methods.ringmaster import RingmasterASGD
from pipeline.core.streams import RULE, stream

__all__ = [
    "METHODS",
    "AsyncSGD",
    "Decision",
    "MinibatchSGD",
    "RandomAssignmentASGD",
    "RennalaSGD",
    "RingmasterASGD",
    "ServerRule",
    "build_rule",
]

# name -> builder(n_workers, lr, options, rng); options are the method's own config keys
METHODS: dict[str, Callable[..., ServerRule]] = {
    "minibatch": lambda n, lr, o, rng: MinibatchSGD(n, lr),
    "asgd": lambda n, lr, o, rng: AsyncSGD(n, lr, "constant"),
    "asgd_adaptive": lambda n, lr, o, rng: AsyncSGD(n, lr, "adaptive"),
    "asgd_drop": lambda n, lr, o, rng: AsyncSGD(n, lr, "drop", o.get("threshold")),
    "asgd_random": lambda n, lr, o, rng: RandomAssignmentASGD(
        n, lr, rng, o.get("stepsize") or "constant", o.get("threshold")
    ),
    "rennala": lambda n, lr, o, rng: RennalaSGD(
        n, lr, o.get("batch"), bool(o.get("cancel", False))
    ),
    "ringmaster": lambda n, lr, o, rng: RingmasterASGD(
        n, lr, o.get("threshold"), bool(o.get("cancel", False))
    ),
}


def build_rule(
    method: str, n_workers: int, lr: float, options: dict | None = None, seed: int = 0
) -> ServerRule:
    """Build the server rule ``method`` for ``n_workers`` workers and base stepsize ``lr``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    rng = stream(seed, RULE)
    return METHODS[method](n_workers, lr, dict(options or {}), rng)
