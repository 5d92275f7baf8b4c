"""The parameter server on its own: points pinned by reference count, the accumulator, and the
version, against hand computation (gradients and weights are powers of two: every value below
is exact in float64)."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.server import ParameterServer


def vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_a_step_with_an_empty_accumulator_is_x_minus_weight_times_grad():
    x0 = vec(1.0, 2.0)
    s = ParameterServer(x0)
    assert s.version == 0 and s.x is x0
    g = vec(4.0, -8.0)
    s.add(0.25, g, True)
    assert s.version == 1
    assert s.x.tolist() == [0.0, 4.0]  # (1, 2) - 0.25 * (4, -8)
    assert x0.tolist() == [1.0, 2.0] and g.tolist() == [4.0, -8.0]  # nothing changed in place


def test_buffered_gradients_are_summed_with_their_weights_and_applied_by_the_step():
    x0 = vec(1.0, 1.0)
    s = ParameterServer(x0)
    g1, g2, g3 = vec(2.0, 4.0), vec(8.0, 0.0), vec(-4.0, 16.0)
    s.add(0.5, g1, False)
    assert s.version == 0 and s.x is x0  # buffered, not applied
    s.add(0.25, g2, False)
    assert s.version == 0 and s.x is x0
    s.add(0.125, g3, True)  # x_1 = x_0 - (0.5 g1 + 0.25 g2 + 0.125 g3)
    assert s.version == 1
    assert s.x.tolist() == [1.0 - (1.0 + 2.0 - 0.5), 1.0 - (2.0 + 0.0 + 2.0)]
    assert x0.tolist() == [1.0, 1.0]
    assert [g.tolist() for g in (g1, g2, g3)] == [[2.0, 4.0], [8.0, 0.0], [-4.0, 16.0]]
    # the accumulator is empty again: the next gradient steps from x_1 alone
    s.add(1.0, vec(1.0, 1.0), True)
    assert s.version == 2 and s.x.tolist() == [-2.5, -4.0]


def test_a_buffered_gradient_with_a_step_that_carries_no_gradient():
    s = ParameterServer(vec(0.0, 0.0))
    s.add(0.5, vec(2.0, -2.0), False)
    s.step()  # e.g. a round closed by a lost worker: what is buffered is applied
    assert s.version == 1 and s.x.tolist() == [-1.0, 1.0]
    x1 = s.x
    s.step()  # nothing buffered: the version moves, the point does not
    assert s.version == 2 and s.x.tolist() == [-1.0, 1.0] and s.x is x1


def test_a_discarded_gradient_with_weight_zero_leaves_the_point():
    s = ParameterServer(vec(3.0))
    s.add(0.0, vec(5.0), False)
    s.add(0.5, vec(2.0), True)
    assert s.version == 1 and s.x.tolist() == [2.0]


def test_points_are_reference_counted_per_version():
    x0 = vec(1.0)
    s = ParameterServer(x0)
    assert s.pin() == 0 and s.pin() == 0  # two jobs at x_0
    s.add(1.0, vec(1.0), True)
    x1 = s.x
    assert s.pin() == 1
    assert s.point(0) is x0 and s.point(1) is x1
    assert s._points == {0: [x0, 2], 1: [x1, 1]}
    s.release(0)
    assert s.point(0) is x0  # one job still holds x_0
    assert s._points[0] == [x0, 1]
    s.release(0)
    assert set(s._points) == {1}  # the last reference gone: x_0 dropped
    with pytest.raises(KeyError):
        s.point(0)
    s.release(1)
    assert s._points == {}
    assert s.pin() == 1 and s._points == {1: [x1, 1]}  # pinned afresh


def test_a_job_keeps_its_point_while_later_steps_move_the_iterate():
    s = ParameterServer(vec(0.0))
    v = s.pin()
    for _ in range(3):
        s.add(0.5, vec(2.0), True)
    assert s.version == 3 and s.x.tolist() == [-3.0]
    assert s.point(v).tolist() == [0.0]
