"""Counter-based Gaussian noise: the j-th coordinate of the s-th sample of worker w is a pure
function of (seed, w, s, j), so any set of samples can be drawn at once, in any order, by any
process, and each worker still has its own seeded stream.

Bits come from SplitMix64 (Steele, Lea, Flood 2014) applied to a counter mixed with a per-worker
key; each 64-bit output is a pair of 32-bit uniforms, made a pair of normals by the Box-Muller
transform. Everything is numpy
uint64/float64 arithmetic, vectorised over all samples asked for.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = (np.uint64(k) for k in (30, 27, 31, 32))
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_PI = 2.0 * np.pi
_UNIT32 = 2.0**-32


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function of ``x + golden`` (uint64 arrays; wraps mod 2**64)."""
    z = x + _GOLDEN
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def worker_keys(seed: int, workers: np.ndarray) -> np.ndarray:
    """A 64-bit key per worker, for a run's seed."""
    base = splitmix64(np.array([seed], dtype=np.uint64))
    return splitmix64(base ^ (np.asarray(workers, dtype=np.uint64) * _GOLDEN))


def normals(seed: int, workers, seqs, dim: int) -> np.ndarray:
    """Standard normals, shape (len(seqs), dim): row i is sample ``seqs[i]`` of worker
    ``workers[i]`` (both broadcast). One 64-bit hash gives a pair of 32-bit uniforms, hence a
    pair of normals (the tails reach about 6.8 standard deviations)."""
    w = np.atleast_1d(np.asarray(workers, dtype=np.uint64))
    s = np.atleast_1d(np.asarray(seqs, dtype=np.uint64))
    w, s = np.broadcast_arrays(w, s)
    pairs = (dim + 1) // 2
    # counter of pair p of sample s: s * pairs + p, mixed with the worker's key
    x = s[:, None] * np.uint64(pairs) + np.arange(pairs, dtype=np.uint64)[None, :]
    x ^= worker_keys(seed, w)[:, None]
    bits = splitmix64(x)
    u1 = (bits >> _S32).astype(np.float64)
    u1 += 0.5
    u1 *= _UNIT32  # in (0, 1): the log is finite
    angle = (bits & _LOW32).astype(np.float64)
    angle *= _TWO_PI * _UNIT32
    r = np.log(u1)
    r *= -2.0
    np.sqrt(r, out=r)
    z = np.empty((len(s), 2 * pairs))
    np.multiply(r, np.cos(angle), out=z[:, 0::2])
    np.multiply(r, np.sin(angle), out=z[:, 1::2])
    return z[:, :dim] if 2 * pairs != dim else z
