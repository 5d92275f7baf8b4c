"""Counter-based noise (models/noise.py) against the published SplitMix64 sequence and an
independent pure-Python reading of its docstring: counters, worker keys, the pair of uniforms of
each 64-bit hash and the Box-Muller transform, to the last bits; and the noise stream of a worker
(models/objectives/base.py: CounterNoise) built from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.noise import normals, splitmix64, worker_keys
from models.objectives.base import CounterNoise

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z: int) -> int:
    """SplitMix64's output function (Steele, Lea, Flood 2014) on Python integers."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference_normals(seed: int, worker: int, seq: int, dim: int) -> list[float]:
    """Sample ``seq`` of ``worker``: pair p hashes the counter seq * pairs + p xor the worker's
    key; the high 32 bits give u1 in (0, 1), the low 32 bits the angle."""
    pairs = (dim + 1) // 2
    base = mix((seed + GOLDEN) & MASK)
    key = mix(((base ^ (worker * GOLDEN & MASK)) + GOLDEN) & MASK)
    out = []
    for p in range(pairs):
        bits = mix((((seq * pairs + p) ^ key) + GOLDEN) & MASK)
        u1 = ((bits >> 32) + 0.5) * 2.0**-32
        angle = (bits & 0xFFFFFFFF) * (2.0 * math.pi * 2.0**-32)
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(angle), r * math.sin(angle)]
    return out[:dim]


def test_splitmix64_is_the_published_sequence():
    # SplitMix64 seeded with 0: state += golden, output mix(state); splitmix64(x) = mix(x + golden)
    x = np.array([0, GOLDEN, 2 * GOLDEN & MASK], dtype=np.uint64)
    assert [int(v) for v in splitmix64(x)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**63, size=50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    assert [int(v) for v in splitmix64(x)] == [mix((int(v) + GOLDEN) & MASK) for v in x]


def test_worker_keys_mix_the_seed_and_the_worker():
    for seed in (0, 1, 12345):
        base = mix((seed + GOLDEN) & MASK)
        want = [mix(((base ^ (w * GOLDEN & MASK)) + GOLDEN) & MASK) for w in (0, 1, 2, 1000)]
        assert [int(k) for k in worker_keys(seed, np.array([0, 1, 2, 1000]))] == want
        assert [int(k) for k in worker_keys(seed, [0, 1, 2, 1000])] == want  # a plain list


@pytest.mark.parametrize("dim", [1, 2, 3, 6, 7])
def test_normals_follow_the_documented_recipe(dim):
    seeds, workers, seqs = [0, 7, 7, 123, 2**40], [0, 0, 3, 5, 1], [1, 2, 2, 9, 1000]
    for seed, w, s in zip(seeds, workers, seqs, strict=True):
        z = normals(seed, [w], [s], dim)
        assert z.shape == (1, dim) and z.dtype == np.float64
        np.testing.assert_allclose(z[0], reference_normals(seed, w, s, dim), rtol=1e-13, atol=0)


def test_normals_of_many_samples_at_once_are_the_samples_one_by_one():
    workers = np.array([0, 1, 1, 2, 0])
    seqs = np.array([1, 1, 2, 5, 3])
    z = normals(3, workers, seqs, 5)
    assert z.shape == (5, 5)
    for i, (w, s) in enumerate(zip(workers, seqs, strict=True)):
        np.testing.assert_array_equal(z[i], normals(3, [w], [s], 5)[0])
    # one worker broadcast over several samples
    np.testing.assert_array_equal(normals(3, 1, [1, 2], 5), z[[1, 2]])
    # another seed, worker or sample number: other numbers
    assert not np.array_equal(normals(4, [1], [1], 5), z[[1]])
    assert not np.array_equal(z[1], z[2]) and not np.array_equal(z[0], z[1])


def test_normals_are_standard():
    z = normals(0, np.zeros(4000, dtype=np.int64), np.arange(1, 4001), 5).ravel()
    assert abs(z.mean()) < 0.03 and abs(z.var() - 1.0) < 0.03
    assert np.isfinite(z).all() and np.abs(z).max() < 6.8


def test_counter_noise_is_sigma_times_sample_s_plus_the_shift():
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    noise = CounterNoise(9, 2, 3, 0.5, torch.float64, "cpu", shift)
    first, second = noise(), noise()
    assert noise.count == 2
    for s, got in ((1, first), (2, second)):
        want = 0.5 * np.array(reference_normals(9, 2, s, 3)) + shift.numpy()
        assert got.dtype == torch.float64 and got.shape == (3,)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-15)
    # random access: the same samples, stacked, for any workers
    both = noise.at(np.array([2, 2]), np.array([1, 2]))
    np.testing.assert_array_equal(both.numpy(), torch.stack([first, second]).numpy())
    other = CounterNoise(9, 2, 3, 0.5, torch.float32, "cpu", None)()
    assert other.dtype == torch.float32
    np.testing.assert_allclose(other.numpy(), 0.5 * np.array(reference_normals(9, 2, 1, 3)),
                               rtol=1e-6)  # fmt: skip
