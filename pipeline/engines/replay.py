"""The event engine's second pass: the iterates of a chunk of scheduled events, computed from
the rows (:mod:`pipeline.engines.sim` produces them without a gradient). An arrival's point
always precedes it, so every step whose gradients only need known iterates can be computed at
once: where it pays (a modelled cost, :meth:`Objective.batch_pays`) the gradients of many steps
come from one batched call and the steps are applied as a cumulative sum; elsewhere one by one.
Evaluation (never charged to simulated time) and divergence happen here; a diverged run stops at
that step and its records end there."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.engines.base import RunControl


class Replay:
    """Computes the iterates of a schedule, chunk by chunk (see the module's doc)."""

    def __init__(self, exp, control: RunControl, x0: torch.Tensor, trace: bool):
        self.objective = exp.objective
        self.control = control
        self.x = x0
        self.version = 0
        self.iterates = [x0] if trace else None
        self.device = x0.device
        self.store: dict[int, torch.Tensor] = {}  # versions that later jobs still need
        self.carry: torch.Tensor | None = None  # gradients of a step the chunk did not finish
        obj = self.objective
        self.random_access = obj.random_access
        self.samplers = None if self.random_access else exp.samplers()
        self.drawn = [0] * exp.rule.n  # samples drawn so far from each worker's sampler
        self.batched = obj.batch_pays(exp.cfg.batch_size)
        # batched rounds with the chunk's sums and ring slots made once and the new iterates
        # written straight into the ring (fewer ops a round: on a GPU each is a launch); on the
        # CPU the per-round form, whose records are the study's
        self.fused = self.device.type == "cuda"
        self.ring: torch.Tensor | None = None  # batched path: recent iterates, by version
        self.mask = 0
        self._cols = None

    # -- checkpoints -------------------------------------------------------------------------------
    _STATE = ("x", "version", "store", "carry", "ring", "mask", "drawn")

    def state(self) -> dict:
        """Between chunks: the iterate, the iterates later rows still need, a step's gradients
        not yet applied, and how many samples each worker's stream gave."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state(self, state: dict) -> None:
        """Back to ``state``; the sample streams are drawn forward to where they were."""
        for k in self._STATE:
            setattr(self, k, state[k])
        self.drawn = list(self.drawn)
        if self.samplers is not None:
            for w, n in enumerate(self.drawn):
                sampler = self.samplers[w]
                for _ in range(n):
                    sampler()

    # -- samples ---------------------------------------------------------------------------------
    def _sample(self, w: int, s: int):
        """Sample s of worker w, from its in-order stream (skipping cancelled jobs' samples)."""
        sampler = self.samplers[w]
        z = None
        while self.drawn[w] < s:
            z = sampler()
            self.drawn[w] += 1
        return z

    def _samples(self, W: np.ndarray, S: np.ndarray):
        if self.random_access:
            return self.objective.samples_at(W, S)
        return self.objective.stack_samples(
            [self._sample(w, s) for w, s in zip(W.tolist(), S.tolist(), strict=True)]
        )

    # -- a chunk -----------------------------------------------------------------------------------
    def columns(self, keep: int) -> tuple:
        W, V, D, WT, T = self._cols
        return W[:keep], V[:keep], D[:keep], WT[:keep], T[:keep]

    completed = 0  # rows of the chunk being replayed that are done

    def run(self, cols: tuple, seqs: np.ndarray, done: int, in_flight: set[int] | np.ndarray):
        """Replay a chunk's rows, given as columns (W, V, D, WT, ST, T); returns the index of
        the row at which the run diverged. ``in_flight``: the versions jobs running or queued
        after the chunk hold, a set or an array (repeats allowed: a bulk schedule's, one per
        worker). ``completed`` says how many rows are replayed (and
        ``x``, ``version`` are theirs), also when a signal interrupts."""
        self.completed = 0
        W, V, D, WT, ST, T = cols
        self._cols = (W, V, D, WT, T)
        if not len(W):
            return None
        S = seqs
        applied = WT != 0
        if self.batched:
            return self._batched(W, V, WT, ST, T, S, applied, done, in_flight)
        return self._one_by_one(cols, S, applied, done, in_flight)

    def _one_by_one(self, cols, S, applied, done, in_flight):
        """Each arrival's gradient and each step in turn (where a gradient costs more than the
        loop around it)."""
        grad, control = self.objective.grad, self.control
        if isinstance(in_flight, np.ndarray):
            in_flight = set(in_flight.tolist())
        W, V, _, WT, ST, T = cols
        rows = zip(W.tolist(), V.tolist(), WT.tolist(), ST.tolist(), T.tolist(), strict=True)
        A = np.flatnonzero(applied).tolist()
        last_use: dict[int, int] = {}  # the last row of this chunk that needs each version
        for i, v in zip(A, V[A].tolist(), strict=True):
            last_use[v] = i
        keep_later = last_use.keys() | in_flight
        seqs = S.tolist()
        if self.random_access and A:
            samples = dict(zip(A, self.objective.samples_at(W[A], S[A]).unbind(0), strict=True))
        else:
            samples = None
        samplers, drawn = self.samplers, self.drawn
        x, version, store, buf = self.x, self.version, self.store, self.carry
        if version in keep_later:
            store[version] = x  # jobs started at it during this chunk may need it after a step
        tracing = self.iterates is not None
        next_eval = control.next_eval
        # what is replayed so far, row by row: a signal may land anywhere in a row
        x_done, version_done, buf_done, rows_done = x, version, buf, 0
        try:
            for i, (w, v, weight, step, t) in enumerate(rows):
                if weight:
                    if samples is not None:
                        z = samples[i]
                    elif self.random_access:
                        z = None  # noise-free: no sample
                    else:  # the worker's stream, skipping the samples of its cancelled jobs
                        z, s, sampler = None, seqs[i], samplers[w]
                        while drawn[w] < s:
                            z = sampler()
                            drawn[w] += 1
                    g = grad(x if v == version else store[v], z)
                    if buf is None:
                        if step:  # a step of one gradient: one op
                            x = x.sub(g, alpha=weight)
                            buf = _APPLIED
                        else:
                            buf = g.mul_(weight)
                    else:
                        buf.add_(g, alpha=weight)
                    if last_use[v] == i and v != version and v not in in_flight:
                        del store[v]
                if step:
                    if buf is not None and buf is not _APPLIED:
                        x = x - buf
                    buf = None
                    version += 1
                    if version in keep_later:
                        store[version] = x
                    if tracing:
                        self.iterates.append(x)
                    if version >= next_eval:
                        # the row is done before its evaluation is recorded: a signal inside
                        # the recording must not leave a history row past the final state
                        x_done, version_done, buf_done, rows_done = x, version, None, i + 1
                        diverged = control.stepped(x, version, done + i + 1, t)
                        next_eval = control.next_eval
                        if diverged:
                            return i
                x_done, version_done, buf_done, rows_done = x, version, buf, i + 1
        finally:
            self.x, self.version, self.carry = x_done, version_done, buf_done
            self.completed = rows_done
        self.store = {v: p for v, p in store.items() if v in in_flight or v == version}
        return None

    def _ring_for(self, lo: int, hi: int) -> None:
        """Make the ring of iterates hold versions lo..hi (it holds x_v at row v mod cap)."""
        span = hi - lo + 1
        if self.ring is not None and span <= self.ring.shape[0]:
            return
        cap = 1 << max(6, (span - 1).bit_length() + 1)
        ring = torch.empty((cap, self.x.numel()), dtype=self.x.dtype, device=self.device)
        if self.ring is not None:  # move the versions still needed, lo..version
            old = torch.arange(lo, self.version + 1, device=self.device)
            ring.index_copy_(0, old & (cap - 1), self.ring.index_select(0, old & self.mask))
        self.ring, self.mask = ring, cap - 1

    def _batched(self, W, V, WT, ST, T, S, applied, done, in_flight):
        """Steps whose points are all known, as batched gradients and a cumulative sum."""
        obj, dev, x = self.objective, self.device, self.x
        K0 = self.version
        steps = np.flatnonzero(ST)  # row of each step in the chunk
        n_steps = len(steps)
        contrib = np.cumsum(ST) - ST  # the step each row contributes to (n_steps: the next chunk)
        A = np.flatnonzero(applied)  # the rows whose gradients are computed
        need = np.full(n_steps + 1, -1, dtype=np.int64)  # the newest point each step needs
        if len(A):
            np.maximum.at(need, contrib[A], V[A])
        reach = np.maximum.accumulate(need[:n_steps])
        # applied rows before each step's first row: a round's rows are a slice of A
        first = np.searchsorted(A, np.concatenate([[0], steps + 1]))
        if isinstance(in_flight, np.ndarray):
            flight = [int(in_flight.min())] if len(in_flight) else []
        else:
            flight = list(in_flight)
        lo = min([K0, *flight, *(V[A].min(keepdims=True).tolist() if len(A) else [])])
        if self.ring is None:
            self._ring_for(lo, K0 + n_steps)
            self.ring[K0 & self.mask] = x
        else:
            self._ring_for(lo, K0 + n_steps)
        ring, mask = self.ring, self.mask
        vt = torch.as_tensor(V[A] & mask, device=dev)
        wt = torch.as_tensor(WT[A], dtype=x.dtype, device=dev)[:, None]
        ct = torch.as_tensor(contrib[A], device=dev)
        z = self._samples(W[A], S[A]) if len(A) else None
        carry, every, control = self.carry, self.control.every, self.control
        fused = self.fused
        if fused and n_steps:
            # the chunk's (negated) step sums made once; a round is then 3 ops
            # around the gradients (on a GPU every op is a kernel launch): the weighted sums,
            # the round's first point added, a cumulative sum written into the ring
            acc = torch.zeros((n_steps, x.numel()), dtype=x.dtype, device=dev)
            w_all = WT[A]
            uniform = len(w_all) > 0 and bool((w_all == w_all[0]).all())
            neg_w = -float(w_all[0]) if uniform else None
            nwt = None if uniform else wt.neg()
            if carry is not None:
                acc[0] -= carry
                carry = None
        k = 0
        while k < n_steps:
            k1 = int(np.searchsorted(reach, K0 + k, side="right"))  # steps k..k1-1 computable
            a0, a1 = first[k], first[k1]
            v0 = K0 + k + 1  # the version of the round's first step
            g = None
            if a1 > a0:
                g = obj.grad_batch(ring.index_select(0, vt[a0:a1]), _rows(z, a0, a1))
            if fused:
                if g is not None:
                    if uniform:
                        acc.index_add_(0, ct[a0:a1], g, alpha=neg_w)
                    else:
                        acc.index_add_(0, ct[a0:a1], g.mul_(nwt[a0:a1]))
                acc[k].add_(x)
                s0 = v0 & mask
                if s0 + k1 - k <= mask + 1:  # the round's slots are contiguous in the ring
                    xs = torch.cumsum(acc[k:k1], 0, out=ring[s0 : s0 + k1 - k])
                else:  # the round wraps around the ring's end
                    xs = torch.cumsum(acc[k:k1], 0)
                    ring.index_copy_(0, torch.arange(v0, v0 + k1 - k, device=dev) & mask, xs)
            else:
                sums = torch.zeros((k1 - k, x.numel()), dtype=x.dtype, device=dev)
                if g is not None:
                    sums.index_add_(0, ct[a0:a1] - k, g.mul_(wt[a0:a1]))
                if carry is not None:
                    sums[0] += carry
                    carry = None
                xs = torch.cumsum(torch.cat([x[None], sums.neg_()]), 0)[1:]
                ring.index_copy_(0, torch.arange(v0, v0 + k1 - k, device=dev) & mask, xs)
            x = xs[-1]
            traced = len(self.iterates) if self.iterates is not None else 0
            if self.iterates is not None:  # (fused: xs are ring rows, later overwritten)
                self.iterates.extend((xs.clone() if fused else xs).unbind(0))
            # the evaluations due in these steps: the multiples of `every`
            for version in range(-(-v0 // every) * every, v0 + k1 - k, every):
                j = version - v0
                row = int(steps[k + j])
                # done up to this step before its evaluation is recorded (a signal may land
                # inside the recording)
                self.x, self.version, self.carry = xs[j], version, None
                self.completed = row + 1
                if control.stepped(xs[j], version, done + row + 1, float(T[row])):
                    if self.iterates is not None:
                        del self.iterates[traced + j + 1 :]
                    return row
            k = k1
            # what is replayed so far (a signal may land between rounds)
            self.x, self.version, self.carry = x, K0 + k1, None
            self.completed = int(steps[k1 - 1]) + 1
        if first[n_steps] < len(A):  # rows after the last step: gradients for the next chunk
            a0 = first[n_steps]
            g = obj.grad_batch(ring.index_select(0, vt[a0:]), _rows(z, a0, len(A)))
            tail = g.mul_(wt[a0:]).sum(0)
            carry = tail if carry is None else carry + tail
        self.x, self.version, self.carry = x, K0 + n_steps, carry
        self.completed = len(V)
        return None


_APPLIED = object()  # the step's one gradient is already in x


def _rows(samples, a0: int, a1: int):
    """Samples a0..a1 of a chunk's (stacked tensor, list, or None for full batches)."""
    return None if samples is None else samples[a0:a1]
