"""PromptPolicy: sampling, log-probs, the clipped update, KL, entropy, candidates and JSON state (pure logic)."""

import json
import math
import random

import dspy
import pytest

from dspyrl.optim.prompts.policy import PromptPolicy, Slot


def two_way_policy(logits=(0.0, 0.0)) -> PromptPolicy:
    return PromptPolicy({"p": {"instruction": Slot(["a", "b"], list(logits), [0.0, 0.0], ["original", "proposed"])}})


def test_clipped_update_matches_hand_computation_and_the_clip_stops_the_second_epoch():
    policy = two_way_policy()
    choices = [{"p": {"instruction": 0}}, {"p": {"instruction": 1}}]
    # π = [.5, .5]; grad = mean(A_i (onehot_i - π)) = mean([.5, -.5], [.5, -.5]) = [.5, -.5]; lr 1 → logits [.5, -.5]
    stats = policy.update(choices, [1.0, -1.0], lr=1.0, clip_eps=0.2, epochs=1)
    assert policy.slots["p"]["instruction"].logits == pytest.approx([0.5, -0.5])
    assert stats.grad_norm == pytest.approx(math.sqrt(0.5))
    assert stats.surrogate_loss == pytest.approx(0.0)  # ratio 1: mean(A) = 0

    # A second epoch from the same samples: ratios are sigmoid(1)/.5 = 1.46 (A>0) and .54 (A<0): both outside
    # [0.8, 1.2] in the advantage's direction, so both are clipped and the logits must not move again.
    policy2 = two_way_policy()
    stats2 = policy2.update(choices, [1.0, -1.0], lr=1.0, clip_eps=0.2, epochs=2)
    assert policy2.slots["p"]["instruction"].logits == pytest.approx([0.5, -0.5])
    assert stats2.clip_frac == 1.0
    # clipped surrogate: mean(1.2·1, 0.8·(-1)) = 0.2 → loss -0.2
    assert stats2.surrogate_loss == pytest.approx(-0.2)


def test_without_clipping_the_second_epoch_keeps_moving():
    policy = two_way_policy()
    choices = [{"p": {"instruction": 0}}, {"p": {"instruction": 1}}]
    policy.update(choices, [1.0, -1.0], lr=1.0, clip_eps=10.0, epochs=2)
    assert policy.slots["p"]["instruction"].logits[0] > 0.5


def test_kl_pulls_back_to_the_reference_and_entropy_flattens():
    policy = two_way_policy(logits=(1.0, -1.0))
    kl_before, h_before = policy.kl_and_entropy()
    p = 1 / (1 + math.exp(-2))
    assert kl_before == pytest.approx(p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert h_before == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    # no samples: only the KL gradient acts; ∂KL/∂θ_0 = p(log(2p) - KL)
    expected_grad0 = p * (math.log(2 * p) - kl_before)
    stats = policy.update([], [], lr=0.5, kl_beta=1.0, epochs=1)
    assert policy.slots["p"]["instruction"].logits[0] == pytest.approx(1.0 - 0.5 * expected_grad0)
    assert stats.kl < kl_before

    flat = two_way_policy(logits=(1.0, -1.0))
    stats = flat.update([], [], lr=0.5, entropy_coef=1.0, epochs=3)
    assert stats.entropy > h_before


def test_positive_advantage_raises_the_probability_of_the_chosen_candidate():
    policy = PromptPolicy({"p": {"instruction": Slot(["a", "b", "c"], [0.0] * 3, [0.0] * 3, ["o"] * 3),
                                 "demos": Slot([[], [{"x": 1}]], [0.0, 0.0], [0.0, 0.0], ["o", "o"])}})
    rng = random.Random(0)
    for _ in range(20):
        choices = [policy.sample(rng) for _ in range(8)]
        rewards = [float(c["p"]["instruction"] == 2 and c["p"]["demos"] == 1) for c in choices]
        mean = sum(rewards) / len(rewards)
        policy.update(choices, [r - mean for r in rewards], lr=2.0, epochs=2)
    assert policy.probability("p", "instruction", "c") > 0.6
    assert policy.probability("p", "demos", [{"x": 1}]) > 0.6
    assert policy.greedy() == {"p": {"instruction": 2, "demos": 1}}


def test_log_prob_is_the_sum_over_slots_and_sampling_follows_the_probabilities():
    policy = PromptPolicy({"p": {"instruction": Slot(["a", "b"], [math.log(3), 0.0], [0, 0], ["o", "o"]),
                                 "demos": Slot([[], [{"x": 1}]], [0.0, 0.0], [0, 0], ["o", "o"])}})
    assert policy.log_prob({"p": {"instruction": 0, "demos": 1}}) == pytest.approx(math.log(0.75 * 0.5))
    rng = random.Random(1)
    draws = [policy.sample(rng)["p"]["instruction"] for _ in range(4000)]
    assert draws.count(0) / 4000 == pytest.approx(0.75, abs=0.03)


def test_half_a_group_follows_the_policy_and_the_other_half_explores_values_the_group_has_not_used():
    # peaked at "a": independent draws of 4 would be "a" four times in most groups
    policy = PromptPolicy({"p": {"instruction": Slot(["a", "b", "c"], [4.0, 0.0, 0.0], [0.0] * 3, ["o"] * 3),
                                 "format": Slot([None, "chat", "json", "compact", "structured"], [0.0] * 5,
                                                [0.0] * 5, ["o"] * 5)}})
    rng = random.Random(3)
    groups = [policy.sample_group(rng, 4, explore=("instruction", "format")) for _ in range(2000)]
    for group in groups:
        instructions = [c["p"]["instruction"] for c in group]
        assert instructions[2] not in instructions[:2]  # the explored half avoids what the group already has
        assert len(set(instructions)) >= 2 and len(set(c["p"]["format"] for c in group)) >= 3
        if len(set(instructions[:2])) == 2:  # both others used: the last one takes the third
            assert len(set(instructions)) == 3
    # the policy's half is plain draws: "a" with probability e^4 / (e^4 + 2) ≈ 0.965
    share = sum(c["p"]["instruction"] == 0 for g in groups for c in g[:2]) / 4000
    assert share == pytest.approx(math.exp(4) / (math.exp(4) + 2), abs=0.015)
    same_seed = [policy.sample_group(random.Random(9), 6, ("format",)) for _ in range(2)]
    assert same_seed[0] == same_seed[1]
    plain = [policy.sample_group(rng, 4) for _ in range(500)]  # a slot not explored: independent draws, repeats
    assert sum(len(set(c["p"]["instruction"] for c in g)) == 1 for g in plain) / 500 > 0.8


def test_new_candidates_enter_at_the_top_and_full_slots_drop_the_weakest():
    policy = two_way_policy(logits=(2.0, -1.0))
    index = policy.add_candidate("p", "instruction", "c", "proposed@1", max_candidates=3)
    assert index == 2 and policy.slots["p"]["instruction"].logits[2] == 2.0
    assert policy.add_candidate("p", "instruction", "c", "proposed@2") is None  # duplicate
    policy.add_candidate("p", "instruction", "d", "proposed@3", max_candidates=3)
    slot = policy.slots["p"]["instruction"]
    assert slot.candidates == ["a", "c", "d"]  # "b" (lowest logit, not original, not best) was dropped
    assert len(slot.ref_logits) == len(slot.logits) == len(slot.origins) == 3


def test_state_round_trips_through_json_and_applies_to_a_program():
    program = dspy.Predict("question -> answer")
    policy = PromptPolicy.from_program(program)
    assert policy.greedy() == {"self": {"instruction": 0, "demos": 0, "format": 0}}
    assert policy.greedy_values()["self"]["format"] is None  # the context's format
    policy.add_candidate("self", "instruction", "Answer in one word.", "proposed@1")
    policy.add_candidate("self", "demos", [{"question": "2+2?", "answer": "4"}], "labelled")
    policy.add_candidate("self", "format", "compact", "format")
    restored = PromptPolicy.from_json(json.loads(json.dumps(policy.to_json())))
    assert restored.to_json() == policy.to_json()
    record = restored.apply(program, {"self": {"instruction": 1, "demos": 1, "format": 1}})
    assert program.signature.instructions == "Answer in one word."
    assert program.demos[0].answer == "4"
    assert program.dspyrl_format == "compact"
    assert record["origins"] == {"self": {"instruction": "proposed@1", "demos": "labelled", "format": "format"}}
