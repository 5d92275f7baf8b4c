"""Samplers (docs/methods.md section 6): minibatches drawn without replacement, each worker
walking through consecutive chunks of a fresh random permutation of its rows per epoch and
skipping the remainder, for RowSampler and every data objective's ``sampler``; and the counter
noise of the noisy quadratic: sample s a pure function of (seed, worker, s), with mean ``shift``
and standard deviation ``sigma``.

Statistical tolerances are 6 standard errors, with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.objectives import CNN, MLP, CounterNoise, LogReg, NoisyQuadratic, Quadratic, RowSampler
from pipeline.compose.build import build_experiment
from tests.conftest import compose_cfg

Z = 6.0
N_ROWS = 40


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def make(name: str):
    data = np.random.default_rng(1)
    X = data.standard_normal((N_ROWS, 16))
    y = np.arange(N_ROWS) % 3  # three classes
    f64 = dict(dtype=torch.float64)
    if name == "quadratic":
        return Quadratic(X, y.astype(np.float64), **f64)
    if name == "logreg":
        return LogReg(X, y, l2=1e-2, **f64)
    if name == "mlp":
        return MLP(X, y, hidden=(4,), **f64)
    return CNN(X, y, (1, 4, 4), channels=2, **f64)


def row_sampler(rows, batch, gen, objective=None):
    """RowSampler itself, or an objective's sampler over ``rows`` (None: all rows)."""
    if objective is None:
        return RowSampler(np.arange(N_ROWS) if rows is None else rows, batch, gen, "cpu")
    return make(objective).sampler(rows, batch, gen, worker=0)


def epochs(sampler, batches_per_epoch: int, count: int) -> list[list[np.ndarray]]:
    """``count`` epochs of batches, each batch as a numpy array of row indices."""
    out = []
    for _ in range(count):
        epoch = []
        for _ in range(batches_per_epoch):
            b = sampler()
            assert isinstance(b, torch.Tensor) and b.dtype == torch.long and b.ndim == 1
            epoch.append(b.numpy().copy())
        out.append(epoch)
    return out


SHARD = np.arange(3, N_ROWS, 3)  # 13 rows of 40
CASES = {  # name: (rows, batch)
    "all rows, batch divides": (None, 5),  # 8 batches cover all 40 rows
    "all rows, remainder": (None, 6),  # 6 batches, 4 rows skipped per epoch
    "shard, remainder": (SHARD, 4),  # 3 batches, 1 row skipped
    "shard, batch divides": (SHARD[:12], 4),
    "batch of the whole shard": (SHARD, 13),
}
SOURCES = [None, "quadratic", "logreg", "mlp", "cnn"]  # RowSampler, then each data objective


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s or "RowSampler")
@pytest.mark.parametrize("case", list(CASES))
def test_an_epoch_is_chunks_of_a_fresh_permutation_of_the_shard(source, case):
    rows, batch = CASES[case]
    shard = np.arange(N_ROWS) if rows is None else rows
    per_epoch = len(shard) // batch
    eps = epochs(row_sampler(rows, batch, rng(7), source), per_epoch, 40)
    seen = set()
    for epoch in eps:
        for b in epoch:
            assert len(b) == batch
        rows_of_epoch = np.concatenate(epoch)
        # without replacement: an epoch's batches are disjoint, all from the shard
        assert len(np.unique(rows_of_epoch)) == per_epoch * batch
        assert np.isin(rows_of_epoch, shard).all()
        if len(shard) % batch == 0:  # exactly the shard's rows
            np.testing.assert_array_equal(np.sort(rows_of_epoch), shard)
        seen.update(rows_of_epoch.tolist())
    # the skipped remainder changes with the permutation: every row is used in some epoch
    assert seen == set(shard.tolist())
    # successive epochs are different permutations (their order, not only their sets)
    orders = [tuple(np.concatenate(e).tolist()) for e in eps]
    assert len(set(orders)) == len(orders)
    assert all(a != b for a, b in zip(orders, orders[1:], strict=False))


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s or "RowSampler")
def test_batches_are_the_chunks_of_the_generators_permutations(source):
    """Epoch e is rows[perm_e] cut into batches, perm_e the generator's e-th permutation, so
    the same seed reproduces the stream and another seed changes it."""
    rows, batch = SHARD, 4
    eps = epochs(row_sampler(rows, batch, rng(3), source), 3, 10)
    gen = rng(3)
    for epoch in eps:
        perm = rows[gen.permutation(len(rows))]
        np.testing.assert_array_equal(np.concatenate(epoch), perm[:12])
    again = epochs(row_sampler(rows, batch, rng(3), source), 3, 10)
    np.testing.assert_array_equal(np.array(again), np.array(eps))
    other = epochs(row_sampler(rows, batch, rng(4), source), 3, 10)
    assert not np.array_equal(np.array(other), np.array(eps))


def test_every_row_is_equally_likely_in_a_batch():
    """The permutations are uniform: over E epochs a row is in an epoch's first batch of 8 of 40
    rows Binomial(E, 1/5) times."""
    E, batch = 2000, 8
    eps = epochs(row_sampler(None, batch, rng(11)), N_ROWS // batch, E)
    counts = np.bincount(np.concatenate([e[0] for e in eps]), minlength=N_ROWS)
    p = batch / N_ROWS
    assert (np.abs(counts - E * p) < Z * math.sqrt(E * p * (1 - p))).all(), counts
    # and every position of the epoch: each row once per epoch, in each of the 5 batches alike
    where = np.zeros((N_ROWS, N_ROWS // batch))
    for e in eps:
        for k, b in enumerate(e):
            where[b, k] += 1
    assert (np.abs(where - E * p) < Z * math.sqrt(E * p * (1 - p))).all()


@pytest.mark.parametrize("name", ["quadratic", "logreg"])
def test_full_batches_and_bad_batches(name):
    obj = make(name)
    full = obj.sampler(None, None, rng(), worker=0)
    assert full() is None and full() is None  # all rows: the objective's full gradient
    shard = obj.sampler(SHARD, None, rng(), worker=0)
    np.testing.assert_array_equal(shard().numpy(), SHARD)  # a shard's full gradient
    np.testing.assert_array_equal(shard().numpy(), SHARD)
    with pytest.raises(ValueError, match="batch of 14 rows from a shard of 13"):
        obj.sampler(SHARD, 14, rng(), worker=0)


def test_each_workers_stream_is_its_own_and_the_seed_reproduces_it(small_data):
    """The run's samplers (one per worker, from the run's seed): different workers draw
    different minibatches; the same seed draws the same; another seed others."""

    def streams(seed):
        cfg = compose_cfg(
            "dataset=small_lstsq", f"dataset.path={small_data}", "topology=homogeneous",
            "topology.n_workers=3", "batch_size=8", f"seed={seed}", "budget.gradients=10",
            "tracking=none",
        )  # fmt: skip
        samplers = build_experiment(cfg).samplers()
        return np.array([[s().numpy() for _ in range(20)] for s in samplers])  # 2.5 epochs

    a = streams(0)
    assert a.shape == (3, 20, 8)
    for u in range(3):
        for w in range(u + 1, 3):
            assert not np.array_equal(a[u], a[w])
            assert (a[u] != a[w]).mean() > 0.5  # not one stream shifted or mostly shared
    np.testing.assert_array_equal(streams(0), a)
    assert not np.array_equal(streams(1), a)


# -- counter noise ------------------------------------------------------------------------------


def noise(seed=3, worker=2, dim=5, sigma=1.5, shift=None, dtype=torch.float64):
    return CounterNoise(seed, worker, dim, sigma, dtype, torch.device("cpu"), shift)


def test_sample_s_is_a_pure_function_of_seed_worker_and_s():
    c = noise()
    drawn = torch.stack([c() for _ in range(10)])  # samples 1..10, one by one
    seqs = np.arange(1, 11)
    torch.testing.assert_close(noise().at(np.full(10, 2), seqs), drawn, rtol=0, atol=0)
    order = np.random.default_rng(0).permutation(10)
    shuffled = noise(worker=0).at(np.full(10, 2), seqs[order])  # any instance, any order
    torch.testing.assert_close(shuffled, drawn[order], rtol=0, atol=0)
    torch.testing.assert_close(noise().at(np.array([2]), np.array([7]))[0], drawn[6])
    # another worker's stream drawn in between changes nothing
    c, d = noise(), noise(worker=5)
    mixed = []
    for _ in range(10):
        d()
        mixed.append(c())
        d()
    torch.testing.assert_close(torch.stack(mixed), drawn, rtol=0, atol=0)
    # and every coordinate differs across workers, seeds and samples
    assert (noise(worker=3).at(np.full(10, 3), seqs) != drawn).all()
    assert (noise(seed=4).at(np.full(10, 2), seqs) != drawn).all()
    assert (drawn[1:] != drawn[:-1]).all()


def test_counter_noise_has_mean_shift_and_std_sigma():
    n, dim, sigma = 20_000, 8, 1.5
    shift = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
    c = noise(dim=dim, sigma=sigma, shift=shift)
    seqs = np.arange(1, n + 1)
    a = c.at(np.full(n, 0), seqs).numpy()
    b = c.at(np.full(n, 1), seqs).numpy()
    assert a.shape == (n, dim)
    for s in (a, b):
        np.testing.assert_array_less(np.abs(s.mean(0) - shift.numpy()), Z * sigma / math.sqrt(n))
        np.testing.assert_array_less(np.abs(s.std(0) - sigma), Z * sigma / math.sqrt(2 * n))
    z = (a - shift.numpy()) / sigma
    # Gaussian tails: P(|z| > 2) = 0.0455 over all n * dim values
    p, m = math.erfc(2 / math.sqrt(2)), z.size
    assert abs((np.abs(z) > 2).mean() - p) < Z * math.sqrt(p * (1 - p) / m)
    # no correlation: within a Box-Muller pair, across pairs, between successive samples,
    # between workers
    r = Z / math.sqrt(n)
    zb = (b - shift.numpy()) / sigma
    for u, v in [
        (z[:, 0], z[:, 1]),
        (z[:, 1], z[:, 2]),
        (z[1:, 0], z[:-1, 0]),
        (z[:, 0], zb[:, 0]),
    ]:
        assert abs(np.corrcoef(u, v)[0, 1]) < r


def test_counter_noise_dtype_and_odd_dimensions():
    c = noise(dim=3, dtype=torch.float32)
    x = c()
    assert x.dtype == torch.float32 and x.shape == (3,)
    # an odd dimension is the first coordinates of the pairs of the next even one
    wide = noise(dim=4).at(np.array([2]), np.array([1]))
    torch.testing.assert_close(noise(dim=3).at(np.array([2]), np.array([1])), wide[:, :3])


def test_the_noisy_quadratics_sampler_is_each_workers_counter_noise():
    obj = NoisyQuadratic(dim=6, sigma=0.5, cond=4.0, seed=9)
    for w in range(3):
        s = obj.sampler(None, None, rng(), worker=w)
        got = torch.stack([s() for _ in range(5)])
        expected = noise(seed=9, worker=w, dim=6, sigma=0.5, shift=-obj.h).at(
            np.full(5, w), np.arange(1, 6)
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        torch.testing.assert_close(obj.samples_at(np.full(5, w), np.arange(1, 6)), got)
    assert NoisyQuadratic(dim=6, sigma=0.0).sampler(None, None, rng(), worker=0)() is None
