"""Engines carry out the server rules' decisions: ``sim`` on a simulated clock, ``rpc`` on real
processes. Engines import rules; rules import nothing from engines."""

from pipeline.engines.base import RunResult

ENGINES = ("sim",)

__all__ = ["ENGINES", "RunResult"]
