"""Group-relative advantages on hand-computed cases."""

import math

import pytest

from dspyrl.optim.advantages import group_advantages


def test_one_success_in_a_group_of_four_gets_the_unbiased_std_scale():
    # mean 0.25; unbiased std = sqrt((0.75² + 3·0.25²) / 3) = 0.5
    result = group_advantages([[1.0, 0.0, 0.0, 0.0]], eps=0.0)
    assert result.group_means == [0.25]
    assert result.group_stds[0] == pytest.approx(0.5)
    assert result.advantages[0] == pytest.approx([1.5, -0.5, -0.5, -0.5])
    assert sum(result.advantages[0]) == pytest.approx(0.0)


def test_unscaled_variant_only_subtracts_the_group_mean():
    result = group_advantages([[1.0, 0.0, 0.0, 0.0], [0.2, 0.4]], scale=False)
    assert result.advantages[0] == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert result.advantages[1] == pytest.approx([-0.1, 0.1])


def test_eps_keeps_tiny_spreads_finite():
    result = group_advantages([[0.5, 0.5 + 1e-6]], eps=1e-4)
    assert all(math.isfinite(a) and abs(a) < 0.01 for a in result.advantages[0])


def test_flat_groups_are_zero_and_counted():
    result = group_advantages([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.3]])
    assert result.advantages[0] == [0.0, 0.0, 0.0]
    assert result.advantages[1] == [0.0, 0.0, 0.0]
    assert result.advantages[3] == [0.0]  # a group of one has no spread
    assert result.frac_zero_std == pytest.approx(3 / 4)
    assert result.advantages[2][0] < 0 < result.advantages[2][1]
    assert len(result.flat()) == 10


def test_empty_input():
    result = group_advantages([])
    assert result.frac_zero_std == 0.0 and result.advantages == []
