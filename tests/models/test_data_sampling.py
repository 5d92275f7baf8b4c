"""What a data objective samples (models/objectives/base.py) at its edges, by hand: minibatches
without replacement when the batch is the whole shard, one row, or divides the shard; the full
batch of a shard; samples stacked for the batched replay; and the defaults every objective
inherits (one-by-one batched gradients, the cost model, F* given, the metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.objectives.base import DataObjective, RowSampler
from models.objectives.quadratic import NoisyQuadratic, Quadratic

X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
Y = np.array([1.0, 2.0, 0.0, 2.0, 1.0, 3.0])


def quadratic() -> Quadratic:
    return Quadratic(X, Y)


def rows_of(sampler, calls):
    return [sampler().tolist() for _ in range(calls)]


# -- minibatches without replacement ------------------------------------------------------------
def test_a_batch_that_divides_the_shard_covers_it_each_epoch():
    shard = np.array([10, 11, 12, 13, 14, 15])
    s = RowSampler(shard, 3, np.random.default_rng(1), "cpu")
    got = rows_of(s, 8)  # 4 epochs of 2 batches
    for k in range(4):
        assert sorted(got[2 * k] + got[2 * k + 1]) == shard.tolist()


def test_a_batch_of_the_whole_shard_is_a_permutation_of_it():
    s = RowSampler([3, 1, 4], 3, np.random.default_rng(2), "cpu")
    for batch in rows_of(s, 5):
        assert sorted(batch) == [1, 3, 4]


def test_a_batch_of_one_row_walks_a_permutation():
    s = RowSampler([7, 8, 9, 10], 1, np.random.default_rng(3), "cpu")
    got = [b[0] for b in rows_of(s, 8)]
    assert sorted(got[:4]) == [7, 8, 9, 10] and sorted(got[4:]) == [7, 8, 9, 10]


def test_the_rows_are_long_indices_on_the_samplers_device():
    s = RowSampler(np.array([5, 6, 7], dtype=np.int32), 2, np.random.default_rng(0), "meta")
    out = s()
    assert out.dtype == torch.long and out.device.type == "meta" and out.shape == (2,)
    cpu = RowSampler(np.array([5, 6, 7], dtype=np.int32), 2, np.random.default_rng(0), "cpu")
    assert cpu().dtype == torch.long


def test_a_batch_larger_than_the_shard_is_refused():
    with pytest.raises(ValueError) as err:
        RowSampler(np.arange(4), 5, np.random.default_rng(0), "cpu")
    assert str(err.value) == "batch of 5 rows from a shard of 4 rows"


# -- a data objective's samplers -----------------------------------------------------------------
def test_full_batch_over_all_rows_is_none_and_over_a_shard_its_rows():
    obj = quadratic()
    rng = np.random.default_rng(0)
    assert obj.sampler(None, None, rng)() is None
    assert obj.sampler(np.arange(6), None, rng)() is None
    shard = obj.sampler(np.array([4, 1]), None, rng)
    for _ in range(2):
        idx = shard()
        assert idx.dtype == torch.long and idx.tolist() == [4, 1]
    # the gradient on that shard is the mean over its two rows
    g = obj.grad(torch.zeros(2, dtype=torch.float64), shard())
    assert g.tolist() == [0.0, -2.5]  # at x = 0: -(a_4 b_4 + a_1 b_1) / 2 = -((0, 1) + (0, 4)) / 2


def test_minibatches_of_a_data_objective_come_from_its_shard_on_its_device():
    obj = quadratic()
    obj.device = torch.device("meta")  # where the rows must go (no data needed to sample)
    s = obj.sampler(np.array([0, 2, 5]), 2, np.random.default_rng(0))
    assert isinstance(s, RowSampler) and s.b == 2 and s.rows.tolist() == [0, 2, 5]
    assert s().device.type == "meta"
    obj = quadratic()
    s = obj.sampler(None, 3, np.random.default_rng(0))
    assert sorted(s().tolist() + s().tolist()) == [0, 1, 2, 3, 4, 5]


def test_samples_are_stacked_when_their_shapes_agree():
    obj = quadratic()
    a, b, c = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4])
    stacked = obj.stack_samples([a, b])
    assert isinstance(stacked, torch.Tensor) and stacked.tolist() == [[0, 1], [2, 3]]
    assert obj.stack_samples([a]).tolist() == [[0, 1]]
    mixed = obj.stack_samples([a, c])
    assert isinstance(mixed, list) and mixed[0] is a and mixed[1] is c
    assert obj.stack_samples([None, None]) is None


# -- the defaults every objective inherits -------------------------------------------------------
def test_batched_gradients_on_shards_of_different_sizes_go_one_by_one():
    obj = quadratic()
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    samples = [torch.tensor([4, 1]), torch.tensor([0])]
    got = obj.grad_batch(points, obj.stack_samples(samples))
    assert got.tolist() == [[0.0, -2.5], [0.0, 0.0]]  # row 0 at (1, 1): (1 - 1) * (1, 0)
    with pytest.raises(ValueError):
        obj.grad_batch(points, samples[:1])  # a sample per point


def test_batching_pays_on_a_gpu_only():
    from models.objectives.modules import LogReg

    obj = LogReg(np.eye(3), np.array([0, 1, 2]))
    assert obj.batch_pays(None) is False and obj.batch_pays(8) is False
    obj.device = torch.device("cuda")  # the cost model only reads the device type
    assert obj.batch_pays(None) is True
    with pytest.raises(TypeError) as err:
        obj.samples_at(np.array([0]), np.array([1]))
    assert str(err.value) == "logreg draws its samples in order, per worker"


def test_a_known_optimum_is_not_solved_again():
    obj = quadratic()
    obj.known_optimum(0.125)
    assert obj.optimum() == 0.125


def test_the_default_metrics_are_the_loss_and_the_squared_gradient_norm():
    obj = NoisyQuadratic(dim=2, sigma=1.0, cond=2.0)  # h = (1/2, 1), x* = (1, 1)
    x = torch.zeros(2, dtype=torch.float64)
    assert obj.metrics(x) == {"loss": 0.75, "grad_norm_sq": 1.25}


def test_a_data_objective_is_on_the_cpu_unless_told():
    class Rows(DataObjective):
        def loss(self, x):
            return 0.0

        def grad(self, x, sample):
            return x

    obj = Rows(X, Y)
    assert obj.device == torch.device("cpu") and obj.X.dtype == torch.float64
    assert obj.n_rows == 6 and obj.y.tolist() == Y.tolist()
