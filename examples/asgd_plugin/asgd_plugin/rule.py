"""Delay-capped asynchronous SGD: a server rule written against ``pipeline.api`` alone."""

from __future__ import annotations

from pipeline.api import Decision, ServerRule


class DelayCappedASGD(ServerRule):
    """Asynchronous SGD whose stepsize shrinks smoothly with the gradient's delay:

        x_{k+1} = x_k - lr / (1 + delay / cap) * g,    delay = k - (version g was computed at).

    Every arriving gradient is applied at once and its worker gets the new iterate, as in the
    paper's Algorithm 1; a fresh gradient (delay 0) gets the full ``lr``, one ``cap`` steps
    stale gets ``lr / 2``. ``cap`` is the rule's one key (``optimizer.cap``); ``n_workers`` and
    ``lr`` come from the pipeline. The rule sees only arrivals (no clock, no transport), so it
    runs unchanged on ``engine=sim`` and ``engine=rpc``.
    """

    name = "delay_capped"

    def __init__(self, n_workers: int, lr: float, cap: float = 4.0):
        super().__init__(n_workers, lr)
        if not cap > 0:  # a ValueError is reported as one line naming the rule
            raise ValueError(f"cap must be positive, got {cap}")
        self.cap = float(cap)

    def weight(self, delay: int) -> float:
        """The stepsize applied to a gradient ``delay`` steps stale."""
        return self.lr / (1.0 + delay / self.cap)

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version  # the rule counts its own steps
        self.version += 1  # a step at every arrival
        # add the gradient with this weight, step, and give the same worker the new iterate
        return Decision(delay, self.weight(delay), True, self.solo[worker])

    def describe(self) -> dict[str, object]:
        """What the records and MLflow show as the method's hyper-parameters."""
        return {"lr": self.lr, "cap": self.cap}
