"""The three mutants the mutation-testing issue names (docs/mutation.md), written out by hand
because no mutation operator produces them: each check below passes on the code and fails on
its mutant, applied here with monkeypatch.

- job durations that ignore tau_i (every worker's draws as if its mean time were 1);
- a minibatch sampler that reuses its first permutation for ever;
- a Ringmaster whose stepsize is doubled.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.objectives.base import RowSampler
from pipeline.core.methods import Decision, RingmasterASGD
from pipeline.core.server import ParameterServer
from pipeline.core.topology import NOISES, JobTimes
from pipeline.engines.dispatch import Dispatcher

TAUS = np.array([1.0, 3.0, 10.0])


# -- job durations ------------------------------------------------------------------------------
def durations(taus, noise, jobs=400, seed=5):
    """``jobs`` durations per worker, half through ``drawer`` and half through ``next``."""
    t = JobTimes(taus, noise, seed)
    draw = t.drawer()
    half = jobs // 2
    out = [[draw(w) for _ in range(half)] for w in range(len(taus))]
    for w in range(len(taus)):
        out[w] += [t.next(w) for _ in range(jobs - half)]
    return np.array(out)


def check_durations_scale_with_tau(noise):
    d = durations(TAUS, noise)
    assert d.shape == (3, 400) and np.all(d > 0)
    if noise == "none":
        assert np.all(d == TAUS[:, None])
    # the same seed with every tau doubled: every duration doubled (d = tau_i * noise draw)
    np.testing.assert_allclose(durations(2 * TAUS, noise), 2 * d, rtol=1e-12)
    # mean tau_i for exponential and gamma; tau_i * (1 + 0.5 * sqrt(2 / pi)) for halfnormal
    scale = 1 + 0.5 * np.sqrt(2 / np.pi) if noise == "halfnormal" else 1.0
    np.testing.assert_allclose(d.mean(axis=1), scale * TAUS, rtol=0.15)
    if noise == "halfnormal":
        assert np.all(d >= TAUS[:, None])  # tau_i plus a non-negative jitter


def ignore_tau(monkeypatch):
    init = JobTimes.__init__

    def mutant_init(self, taus, *args, **kwargs):
        init(self, taus, *args, **kwargs)
        self._tau_list = [1.0] * len(self._tau_list)  # every draw as if tau_i = 1

    monkeypatch.setattr(JobTimes, "__init__", mutant_init)


@pytest.mark.parametrize("noise", NOISES)
def test_job_durations_scale_with_each_workers_tau(noise):
    check_durations_scale_with_tau(noise)


@pytest.mark.parametrize("noise", NOISES)
def test_named_mutant_durations_that_ignore_tau_is_killed(noise, monkeypatch):
    ignore_tau(monkeypatch)
    with pytest.raises(AssertionError):
        check_durations_scale_with_tau(noise)


# -- minibatch sampler --------------------------------------------------------------------------
ROWS = np.arange(100, 110)  # a shard of 10 rows; batches of 3: 3 batches an epoch, 1 row skipped


def epochs(sampler, count):
    return [torch.cat([sampler() for _ in range(3)]).tolist() for _ in range(count)]


def check_each_epoch_is_a_fresh_permutation():
    s = RowSampler(ROWS, 3, np.random.default_rng(0), "cpu")
    got = epochs(s, 12)
    for e in got:
        assert len(e) == 9 and len(set(e)) == 9 and set(e) <= set(ROWS.tolist())
    assert len({tuple(e) for e in got}) == 12  # 12 different orders (of 10! / 1)
    assert {r for e in got for r in e} == set(ROWS.tolist())  # no row left out for ever
    # the permutations are the sampler's stream: the same seed draws them again
    again = RowSampler(ROWS, 3, np.random.default_rng(0), "cpu")
    assert epochs(again, 12) == got


def reuse_first_permutation(monkeypatch):
    def mutant_call(self):
        if not len(self._perm):
            self._perm = torch.from_numpy(self.rows[self.rng.permutation(len(self.rows))])
        if self._pos + self.b > len(self._perm):
            self._pos = 0  # a new epoch over the same permutation
        out = self._perm[self._pos : self._pos + self.b]
        self._pos += self.b
        return out

    monkeypatch.setattr(RowSampler, "__call__", mutant_call)


def test_each_epoch_of_a_minibatch_sampler_is_a_fresh_permutation():
    check_each_epoch_is_a_fresh_permutation()


def test_named_mutant_sampler_that_reuses_one_permutation_is_killed(monkeypatch):
    reuse_first_permutation(monkeypatch)
    with pytest.raises(AssertionError):
        check_each_epoch_is_a_fresh_permutation()


# -- Ringmaster's stepsize ----------------------------------------------------------------------
def check_ringmaster_applies_lr_below_r():
    """R = 2, lr = 1/4, 2 workers, a gradient of ones each time: hand-computed decisions and
    iterates through the dispatcher and a real server."""
    rule = RingmasterASGD(2, 0.25, threshold=2)
    server = ParameterServer(torch.zeros(2, dtype=torch.float64))
    ones = torch.ones(2, dtype=torch.float64)
    disp = Dispatcher(
        rule,
        start_job=lambda w, v: None,
        apply=lambda w, v, weight, step: server.add(weight, ones, step),
        server=server,
    )
    disp.begin()
    assert disp.arrive(0, 1.0) == Decision(0, 0.25, True, (0,))  # x_1 = -1/4
    assert disp.arrive(0, 2.0) == Decision(0, 0.25, True, (0,))  # x_2 = -1/2
    assert disp.arrive(1, 2.5) == Decision(2, 0.0, False, (1,))  # delay 2 = R: ignored
    assert disp.arrive(1, 3.0) == Decision(0, 0.25, True, (1,))  # x_3 = -3/4
    assert disp.arrive(0, 3.5) == Decision(1, 0.25, True, (0,))  # delay 1 < R: x_4 = -1
    assert server.version == rule.version == 4
    assert server.x.tolist() == [-1.0, -1.0]


def double_ringmaster_stepsize(monkeypatch):
    on_gradient = RingmasterASGD.on_gradient

    def mutant(self, worker, version):
        d = on_gradient(self, worker, version)
        return d._replace(weight=2 * d.weight)

    monkeypatch.setattr(RingmasterASGD, "on_gradient", mutant)


def test_ringmaster_applies_its_stepsize_once():
    check_ringmaster_applies_lr_below_r()


def test_named_mutant_doubled_ringmaster_stepsize_is_killed(monkeypatch):
    double_ringmaster_stepsize(monkeypatch)
    with pytest.raises(AssertionError):
        check_ringmaster_applies_lr_below_r()
