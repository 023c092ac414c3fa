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


# ----------------------------------------------------------------------------------------------- per-module credit
def test_a_predictor_whose_choice_did_not_vary_in_a_group_gets_no_credit_there():
    from dspyrl.optim.advantages import module_advantages

    rewards = [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    choices = [  # group 0: only "extract" varied; group 1: both varied
        [{"extract": 0, "route": 1}, {"extract": 1, "route": 1}, {"extract": 1, "route": 1}, {"extract": 2, "route": 1}],
        [{"extract": 0, "route": 0}, {"extract": 1, "route": 1}, {"extract": 0, "route": 0}, {"extract": 1, "route": 1}],
    ]
    credit = module_advantages(rewards, choices, scale=False)
    run = group_advantages(rewards, scale=False)
    assert credit["extract"].advantages == run.advantages and credit["extract"].frac_zero == 0.0
    assert credit["route"].advantages[0] == [0.0] * 4 and credit["route"].advantages[1] == run.advantages[1]
    assert credit["route"].counted == [[False] * 4, [True] * 4] and credit["route"].frac_zero == 0.5
    assert credit["route"].flat_counted() == [False] * 4 + [True] * 4


def test_a_flat_group_carries_no_signal_for_any_predictor_and_shapes_must_match():
    from dspyrl.optim.advantages import module_advantages

    credit = module_advantages([[0.5, 0.5]], [[{"a": {"instruction": 0}}, {"a": {"instruction": 1}}]])
    assert credit["a"].advantages == [[0.0, 0.0]] and credit["a"].frac_zero == 1.0
    with pytest.raises(ValueError):
        module_advantages([[1.0, 0.0]], [[{"a": 0}]])


def test_module_update_moves_only_the_predictor_that_varied():
    """With per-module credit, a predictor whose choice never varied keeps its logits (apart from the KL pull, off here),
    while with run-wide credit its logits drift once the ratios move in later epochs."""
    from dspyrl.optim.advantages import module_advantages
    from dspyrl.optim.prompts.grpo import update_by_module
    from dspyrl.optim.prompts.policy import PromptPolicy, Slot

    def policy():
        return PromptPolicy({name: {"instruction": Slot(["x", "y", "z"], [0.0, 0.0, 0.0], [0.0] * 3, ["o"] * 3)}
                             for name in ("first", "second")})

    # one group: "first" varied and decided the reward; "second" sat on candidate 0 except once on 1
    choices = [[{"first": {"instruction": 0}, "second": {"instruction": 0}},
                {"first": {"instruction": 1}, "second": {"instruction": 0}},
                {"first": {"instruction": 0}, "second": {"instruction": 0}},
                {"first": {"instruction": 2}, "second": {"instruction": 0}}],
               [{"first": {"instruction": 0}, "second": {"instruction": 1}},
                {"first": {"instruction": 1}, "second": {"instruction": 1}},
                {"first": {"instruction": 0}, "second": {"instruction": 1}},
                {"first": {"instruction": 1}, "second": {"instruction": 1}}]]
    rewards = [[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    flat = [c for row in choices for c in row]
    by_module = policy()
    update_by_module(by_module, flat, module_advantages(rewards, choices), lr=1.0, epochs=4, kl_beta=0.0)
    assert by_module.slots["second"]["instruction"].logits == [0.0, 0.0, 0.0]
    assert by_module.probability("first", "instruction", "x") > 0.5

    run_wide = policy()
    run_wide.update(flat, group_advantages(rewards).flat(), lr=1.0, epochs=4, kl_beta=0.0)
    assert run_wide.probability("first", "instruction", "x") > 0.5
    assert run_wide.slots["second"]["instruction"].logits != [0.0, 0.0, 0.0]  # noise from the joint ratio
