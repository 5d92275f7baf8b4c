"""The protocol's invariants, checked on every decision as the rule makes it: :class:`Watch`
stands in for the rule's calls and :func:`check_decision` raises a :class:`Violation`."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from pipeline.api import Decision, ServerRule

#: the protocol's invariants, in the order they are reported
INVARIANTS = {
    "decision": "on_gradient returns a Decision with fields of the right types",
    "delay": "delay == the rule's version before the call - the job's version",
    "weight": "weights are finite",
    "version": "version += 1 on a step, unchanged otherwise (the server agrees)",
    "workers": "assign/cancel hold valid worker indices, no duplicates",
    "double-booking": "no worker runs two jobs (a busy worker's job waits in its queue)",
    "scale": "scale only from scales_steps rules, with a step, one finite factor per worker",
    "progress": "every run reaches its gradient budget (no stall, no error)",
    "lost worker": "on_worker_lost returns None or a Decision, or raises RuntimeError",
    "describe": "describe() returns a dict of JSON-serialisable values",
}


class Violation(Exception):
    """An invariant broken at a given event."""

    def __init__(self, invariant: str, message: str):
        super().__init__(f"{invariant}: {message}")
        self.invariant, self.message = invariant, message


def check_decision(rule: ServerRule, d: Any, where: str, expected_delay: int | None) -> None:
    """Every field of a decision; raises :class:`Violation` naming the first broken one."""
    if not isinstance(d, Decision):
        raise Violation("decision", f"{where}: returned {type(d).__name__} {d!r}, not a Decision")
    delay, weight, step, assign, cancel, scale = d

    def real(x):
        return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))

    kinds = [
        ("delay", isinstance(delay, numbers.Integral) and not isinstance(delay, (bool, np.bool_)),
         "an int"),
        ("weight", real(weight), "a float"),
        ("step", isinstance(step, (bool, np.bool_)), "a bool"),
        ("assign", isinstance(assign, tuple), "a tuple of worker indices"),
        ("cancel", isinstance(cancel, tuple), "a tuple of worker indices"),
        ("scale", isinstance(scale, tuple) and all(real(s) for s in scale), "a tuple of floats"),
    ]  # fmt: skip
    for name, ok, kind in kinds:
        if not ok:
            value = getattr(d, name)
            raise Violation(
                "decision", f"{where}: Decision.{name} is {type(value).__name__} {value!r}, "
                f"not {kind}"
            )  # fmt: skip
    if expected_delay is not None and delay != expected_delay:
        raise Violation(
            "delay", f"{where}: Decision.delay={delay}, expected {expected_delay} (the rule's "
            "version before the call minus the job's version)"
        )  # fmt: skip
    if not math.isfinite(weight):
        raise Violation("weight", f"{where}: Decision.weight={weight} is not finite")
    n = rule.n
    for name, workers in (("assign", assign), ("cancel", cancel)):
        for u in workers:
            if not isinstance(u, numbers.Integral) or isinstance(u, bool) or not 0 <= u < n:
                raise Violation(
                    "workers", f"{where}: Decision.{name} holds {u!r}, not a worker index "
                    f"0..{n - 1}"
                )  # fmt: skip
        dup = sorted({u for u in workers if workers.count(u) > 1})
        if dup:
            raise Violation(
                "workers", f"{where}: Decision.{name}={workers} names worker {dup[0]} twice"
            )
    if scale:
        if not rule.scales_steps:
            raise Violation(
                "scale", f"{where}: Decision.scale given but {type(rule).__name__} does not "
                "declare scales_steps"
            )  # fmt: skip
        if not step:
            raise Violation("scale", f"{where}: Decision.scale given without a step")
        if len(scale) != n or not all(math.isfinite(s) for s in scale):
            raise Violation("scale", f"{where}: Decision.scale={scale} is not {n} finite factors")


def decision_text(d: Any) -> str:
    return repr(tuple(d)) if isinstance(d, tuple) else repr(d)


class Watch:
    """Stands in for the rule's ``on_gradient`` and ``on_worker_lost`` (instance attributes
    shadow the methods, and the dispatcher takes ``rule.on_gradient`` when it is built): each
    decision is checked as it is made."""

    def __init__(self, rule: ServerRule):
        self.rule = rule
        self._on_gradient = rule.on_gradient
        self._on_worker_lost = rule.on_worker_lost
        self.arrivals = 0
        self.last = "no arrival yet"
        rule.on_gradient = self.on_gradient
        rule.on_worker_lost = self.on_worker_lost

    def _versions(self, before: int, d: Decision, where: str) -> None:
        after = self.rule.version
        expect = before + 1 if d.step else before
        if after != expect:
            raise Violation(
                "version", f"{where}: step={bool(d.step)} but the rule's version went {before} "
                f"-> {after} (expected {expect})"
            )  # fmt: skip

    def on_gradient(self, worker: int, version: int) -> Decision:
        before = self.rule.version
        self.arrivals += 1
        where = (
            f"arrival {self.arrivals} (worker {worker}, job version {version}, "
            f"rule version {before})"
        )
        d = self._on_gradient(worker, version)
        check_decision(self.rule, d, where, before - version)
        self._versions(before, d, where)
        self.last = f"{where} -> {decision_text(d)}"
        return d

    def on_worker_lost(self, worker: int) -> Decision | None:
        before = self.rule.version
        where = f"on_worker_lost({worker}) at version {before}"
        try:
            d = self._on_worker_lost(worker)
        except RuntimeError:
            raise
        except Exception as e:
            raise Violation(
                "lost worker", f"{where} raised {type(e).__name__}: {e} (raise RuntimeError to "
                "refuse)"
            ) from None  # fmt: skip
        if d is None:
            return None
        if not isinstance(d, Decision):
            raise Violation(
                "lost worker", f"{where} returned {type(d).__name__} {d!r}: return None or a "
                "Decision, or raise RuntimeError"
            )  # fmt: skip
        try:
            check_decision(self.rule, d, where, None)
            self._versions(before, d, where)
        except Violation as v:
            raise Violation("lost worker", v.message) from None
        return d
