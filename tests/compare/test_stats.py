"""Paired statistics: checked against scipy, against hand-computed values, and on synthetic data with a known effect."""

import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from dspyrl.errors import DataError
from dspyrl.compare.stats import (bootstrap_ci, cohens_dz, mcnemar_exact, mcnemar_sample_size, paired_statistics,
                          paired_t_power, paired_t_sample_size, rank_biserial, sign_test, wilcoxon_signed_rank)


def binary_pairs(b_only: int, a_only: int, both: int, neither: int):
    a = [0] * b_only + [1] * a_only + [1] * both + [0] * neither
    b = [1] * b_only + [0] * a_only + [1] * both + [0] * neither
    return np.array(a, float), np.array(b, float)


# ----------------------------------------------------------------------------------------------- hand-computed
def test_mcnemar_exact_matches_hand_computed_binomial():
    a, b = binary_pairs(b_only=8, a_only=2, both=30, neither=10)
    result = mcnemar_exact(a, b)
    assert (result["b_only"], result["a_only"]) == (8, 2)
    # two-sided exact: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert result["p_value"] == pytest.approx(112 / 1024)


def test_mcnemar_without_discordant_pairs_is_p_one():
    a, b = binary_pairs(0, 0, 5, 5)
    assert mcnemar_exact(a, b)["p_value"] == 1.0


def test_sign_test_counts_and_p():
    diff = np.array([0.5, 0.2, -0.1, 0.0, 0.3, 0.0, 0.4])
    result = sign_test(diff)
    assert (result["b_better"], result["a_better"], result["ties"]) == (4, 1, 2)
    assert result["p_value"] == pytest.approx(2 * (1 + 5) / 32)  # 2 * P(X <= 1), X ~ Bin(5, 1/2)


def test_wilcoxon_matches_scipy_and_hand_statistic():
    diff = np.array([1, 2, -1, 0, 3, 1], float)
    result = wilcoxon_signed_rank(diff)
    # non-zero |d| = 1,2,1,3,1 → ranks 2,4,2,5,2; the only negative difference has rank 2
    assert result["statistic"] == 2.0
    assert result["p_value"] == pytest.approx(sps.wilcoxon(diff).pvalue)
    assert wilcoxon_signed_rank(np.zeros(5)) == {"statistic": 0.0, "p_value": 1.0}


def test_effect_sizes_hand_computed():
    assert cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    assert cohens_dz([0.5, 0.5, 0.5]) is None
    # ranks of |d| for [1, 2, -1, 3, 1]: 2, 4, 2, 5, 2 → R+ = 13, R− = 2
    assert rank_biserial([1, 2, -1, 0, 3, 1]) == pytest.approx(11 / 15)
    assert rank_biserial([0, 0]) == 0.0


def test_paired_t_power_matches_gpower_reference():
    # G*Power 3.1, "Means: difference between two dependent means", d_z = 0.5, α = .05 two-tailed, power .80
    # → total sample size 34, actual power 0.8078
    assert paired_t_power(34, 0.5) == pytest.approx(0.8078, abs=5e-4)
    assert paired_t_power(33, 0.5) < 0.8
    diff = np.array([0.5 + x for x in (-1.0, 1.0)] * 10)  # mean 0.5, sd ≈ 1.026 → d_z ≈ 0.487
    n = paired_t_sample_size(diff)
    dz = cohens_dz(diff)
    assert paired_t_power(n, dz) >= 0.8 > paired_t_power(n - 1, dz)
    assert paired_t_sample_size(np.array([1.0, -1.0])) is None


def test_sample_size_of_a_rounding_sized_or_tiny_effect_does_not_crash():
    # partial-credit scores: the mean difference is 1e-17 of float rounding, not an effect (scipy's t quantile raised
    # a TypeError on the astronomically large n this used to compute, and ended a Schedule run)
    assert paired_t_sample_size(np.array([0.1, -0.1, 0.2, -0.2, 0.3, -0.3 + 1e-16])) is None
    n = paired_t_sample_size(np.array([0.5, -0.5] * 10 + [2.1e-6]))  # mean 1e-7: a real, tiny effect
    assert isinstance(n, int) and n > 10**6


def test_mcnemar_sample_size_matches_connor_formula():
    # p01 = 0.2 (B only), p10 = 0.1 (A only): δ = 0.1, ψ = 0.3
    a, b = binary_pairs(b_only=20, a_only=10, both=40, neither=30)
    z_a, z_b = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    expected = math.ceil((z_a * math.sqrt(0.3) + z_b * math.sqrt(0.3 - 0.01)) ** 2 / 0.01)
    assert mcnemar_sample_size(a, b) == expected == 234


# ----------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_is_seeded_and_agrees_with_a_plain_resampling_loop():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.2, 1.0, 80)
    ci = bootstrap_ci(diff, seed=7)
    assert ci == bootstrap_ci(diff, seed=7)
    assert ci != bootstrap_ci(diff, seed=8)
    assert ci[0] < diff.mean() < ci[1]
    loop_rng = np.random.default_rng(123)
    means = diff[loop_rng.integers(0, len(diff), size=(20_000, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert ci[0] == pytest.approx(low, abs=0.03) and ci[1] == pytest.approx(high, abs=0.03)


def test_bootstrap_of_constant_differences_is_a_point():
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)


# ----------------------------------------------------------------------------------------------- the verdict
def test_known_binary_effect_is_detected_with_the_documented_verdict_format():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.55).astype(float)
    b = np.where(rng.random(200) < 0.3, 1.0, a)  # B fixes ~30% of A's mistakes, never breaks a right answer
    result = paired_statistics(a, b, seed=0)
    assert result.binary and result.test == "McNemar" and result.significant
    assert result.mcnemar["a_only"] == 0 and result.mcnemar["b_only"] > 10
    assert re.fullmatch(r"B beats A by \+\d+\.\d points \[\d+\.\d, \d+\.\d\], p (<|=) 0\.\d{3} \(McNemar, n = 200\)",
                        result.verdict), result.verdict
    assert result.ci_low > 0 and result.mean_diff == pytest.approx(b.mean() - a.mean())


def test_known_graded_effect_is_detected_and_the_winner_is_named_when_a_wins():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 0.8, 60)
    b = np.clip(a - 0.05 + rng.normal(0, 0.03, 60), 0, 1)  # B is worse by 5 points
    result = paired_statistics(a, b, names=("baseline", "optimized"))
    assert not result.binary and result.test == "Wilcoxon signed-rank"
    assert result.p_value == pytest.approx(sps.wilcoxon(b - a).pvalue)
    assert result.verdict.startswith("baseline beats optimized by +")
    assert "(Wilcoxon signed-rank, n = 60)" in result.verdict
    assert result.effect_size["cohens_dz"] < -1


def test_identical_arms_give_no_significant_difference():
    rng = np.random.default_rng(2)
    scores = (rng.random(50) < 0.5).astype(float)
    result = paired_statistics(scores, scores.copy())
    assert not result.significant and result.p_value == 1.0
    assert result.verdict.startswith("no significant difference")
    assert result.n_for_power is None


def test_no_true_effect_is_not_called_significant_and_reports_the_power_sample_size():
    rng = np.random.default_rng(5)
    a = (rng.random(40) < 0.6).astype(float)
    b = (rng.random(40) < 0.6).astype(float)  # independent draws from the same rate
    result = paired_statistics(a, b)
    assert not result.significant
    if result.mean_diff != 0:
        assert f"about {result.n_for_power:,} examples would be needed" in result.verdict


def test_scores_outside_unit_interval_are_reported_in_raw_units():
    a = np.arange(10, dtype=float)
    b = a + 2.0 + np.linspace(-0.5, 0.5, 10)
    result = paired_statistics(a, b)
    assert result.unit == "" and result.scale == 1.0
    assert "by +2.000 [" in result.verdict and "points" not in result.verdict


@pytest.mark.parametrize("a, b, message", [
    ([1, 0, 1], [1, 0], "equal-length"),
    ([1], [0], "at least 2 examples"),
    ([], [], "at least 2 examples"),
    ([1, float("nan")], [1, 0], "NaN"),
])
def test_bad_inputs_raise_one_line_data_errors(a, b, message):
    with pytest.raises(DataError, match=message) as info:
        paired_statistics(a, b)
    assert "\n" not in str(info.value)


def test_verdict_never_contradicts_its_interval_and_names_the_deciding_test():
    # issue 18: 4 discordant pairs all for B: the bootstrap interval excludes 0, exact McNemar p = 0.125 does not decide
    a = np.array([0.0] * 4 + [1.0] * 10 + [0.0] * 6)
    b = np.array([1.0] * 4 + [1.0] * 10 + [0.0] * 6)
    result = paired_statistics(a, b, seed=0)
    assert result.test == "McNemar" and not result.significant and result.p_value == pytest.approx(0.125)
    assert result.ci_low > 0  # the interval alone would call it
    assert result.verdict.startswith("no significant difference")
    assert "decided by McNemar" in result.verdict and "excludes 0" in result.verdict
    assert "4 discordant pairs" in result.verdict
