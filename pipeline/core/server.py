"""The parameter server's state, shared by every engine: the iterate, its version, the
accumulator for buffered gradients, and the iterates still referenced by jobs.

The current iterate is never modified in place: a step makes a new tensor, so a job's point is
just a reference to the tensor of its version, kept while some job holds it (memory O(n * d)).
"""

from __future__ import annotations

import torch


class ParameterServer:
    __slots__ = ("x", "version", "_buf", "_points")

    def __init__(self, x0: torch.Tensor):
        self.x = x0
        self.version = 0
        self._buf: torch.Tensor | None = None
        self._points: dict[int, list] = {}  # version -> [tensor, reference count]

    def pin(self) -> int:
        """Reference the current iterate for a new job; returns its version."""
        v = self.version
        entry = self._points.get(v)
        if entry is None:
            self._points[v] = [self.x, 1]
        else:
            entry[1] += 1
        return v

    def point(self, version: int) -> torch.Tensor:
        return self._points[version][0]

    def release(self, version: int) -> None:
        entry = self._points[version]
        entry[1] -= 1
        if not entry[1]:
            del self._points[version]

    def add(self, weight: float, grad: torch.Tensor, step: bool) -> None:
        """Accumulate ``weight * grad``; with ``step``, apply the accumulator (version += 1)."""
        buf = self._buf
        if buf is None:
            if step:
                self.x = self.x.sub(grad, alpha=weight)
                self.version += 1
                return
            self._buf = grad.mul(weight)
            return
        buf.add_(grad, alpha=weight)
        if step:
            self.step()

    def step(self) -> None:
        """Apply what is accumulated (possibly nothing): x_{k+1} = x_k - buffer."""
        if self._buf is not None:
            self.x = self.x - self._buf
            self._buf = None
        self.version += 1
