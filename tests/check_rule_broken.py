"""Server rules with one defect each, for tests/test_check_rule.py: the conformance kit
(pipeline/check_rule/) must catch every one and name the broken invariant."""

from __future__ import annotations

import random

from pipeline.api import Decision, ServerRule


class Asgd(ServerRule):
    """Plain asynchronous SGD, correct: the base every broken rule below changes in one place."""

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        self.version += 1
        return Decision(delay, self.lr, True, self.solo[worker])


class OffByOneDelay(Asgd):
    def on_gradient(self, worker, version):
        d = super().on_gradient(worker, version)
        return d._replace(delay=d.delay + 1)


class StepWithoutVersion(ServerRule):
    def on_gradient(self, worker, version):
        return Decision(self.version - version, self.lr, True, self.solo[worker])


class StepTwice(Asgd):
    def on_gradient(self, worker, version):
        d = super().on_gradient(worker, version)
        if self.version == 5:
            self.version += 1
        return d


class AssignTwice(Asgd):
    def on_gradient(self, worker, version):
        return super().on_gradient(worker, version)._replace(assign=(worker, worker))


class NaNWeight(Asgd):
    def on_gradient(self, worker, version):
        d = super().on_gradient(worker, version)
        return d._replace(weight=float("nan")) if self.version == 7 else d


class NeverReassign(Asgd):
    """The arriving worker never gets work again: the run stalls after n arrivals."""

    def on_gradient(self, worker, version):
        return super().on_gradient(worker, version)._replace(assign=())


class Unseeded(Asgd):
    """Python's global random, unseeded: two runs differ."""

    def on_gradient(self, worker, version):
        d = super().on_gradient(worker, version)
        return d._replace(weight=self.lr * (1.0 + random.random()))


class ScaleUndeclared(Asgd):
    """Returns per-worker factors without declaring scales_steps."""

    def on_gradient(self, worker, version):
        d = super().on_gradient(worker, version)
        return d._replace(scale=(0.5,) * self.n)


class LostReturnsString(Asgd):
    def on_worker_lost(self, worker):
        return f"worker {worker} is gone"


class DescribeObject(Asgd):
    def describe(self):
        return {"lr": self.lr, "rng": object()}


class NotADecision(Asgd):
    def on_gradient(self, worker, version):
        return tuple(super().on_gradient(worker, version))


class Overpromises(ServerRule):
    """Correct, but steps once per 10 gradients while declaring one update per gradient (a
    warning, not a failure)."""

    def __init__(self, n_workers: int, lr: float):
        super().__init__(n_workers, lr)
        self.count = 0

    def on_gradient(self, worker, version):
        self.count += 1
        step = self.count % 10 == 0
        delay = self.version - version
        if step:
            self.version += 1
        return Decision(delay, self.lr / 10, step, self.solo[worker])
