"""Engines carry out the server rules' decisions: ``sim`` on a simulated clock, ``rpc`` on real
processes. Engines import rules; rules import nothing from engines.

An engine is registered here by name; it provides ``create(exp, control, trace_iterates)``,
``name``, ``time_kind`` and ``run() -> RunResult`` (:class:`pipeline.engines.base.Engine`).
"""

from __future__ import annotations

from importlib import import_module

from pipeline.engines.base import Engine, RunControl, RunResult

# name -> "module:class" (imported on first use: the rpc engine pulls in torch.distributed)
ENGINES: dict[str, str] = {
    "sim": "pipeline.engines.sim:SimEngine",
    "rpc": "pipeline.engines.rpc.server:RpcEngine",
}
TIME_KINDS = {"sim": "simulated", "rpc": "wall"}


def engine_class(name: str) -> type:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(import_module(module), cls)


__all__ = ["ENGINES", "TIME_KINDS", "Engine", "RunControl", "RunResult", "engine_class"]
