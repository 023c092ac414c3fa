"""Weighted multi-component rewards (pure logic)."""

import math

import dspy
import pytest

from dspyrl.errors import LMFailure
from dspyrl.rewards.combine import RewardComponent, RewardResult, WeightedReward, to_reward_result


def _const(value):
    return lambda example, pred, trace=None: value


def test_total_and_breakdown():
    reward = WeightedReward(format=(_const(1.0), 0.2), correct=(_const(0.0), 0.8), judge=(_const(0.5), 0.5))
    result = reward(None, None)
    assert result.total == pytest.approx(0.2 * 1.0 + 0.8 * 0.0 + 0.5 * 0.5)
    assert result.components == {"format": 1.0, "correct": 0.0, "judge": 0.5}
    assert not result.failed
    assert reward.weights == {"format": 0.2, "correct": 0.8, "judge": 0.5}


def test_normalized_total_divides_by_the_weights():
    reward = WeightedReward(a=(_const(1.0), 1.0), b=(_const(0.0), 3.0), normalize=True)
    assert reward(None, None).total == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [None, math.nan, "oops"])
def test_nan_or_none_component_is_counted_not_propagated(bad):
    reward = WeightedReward(ok=(_const(1.0), 0.5), bad=(_const(bad), 0.5))
    result = reward(None, None)
    assert result.failed
    assert result.components["bad"] == 0.0
    assert result.total == pytest.approx(0.5)
    assert math.isfinite(result.total)


def test_a_component_whose_lm_failed_is_a_failure_with_its_message():
    def judge_down(example, pred, trace=None):
        raise LMFailure("engine down")

    result = WeightedReward([RewardComponent("ok", _const(True), 1.0), RewardComponent("judge", judge_down, 1.0)])(None, None)
    assert result.failed and result.total == 1.0
    assert "judge: LMFailure: engine down" in result.feedback


def test_a_bug_in_a_component_stops_the_run():
    def broken(example, pred, trace=None):
        raise KeyError("answer")

    with pytest.raises(KeyError):
        WeightedReward([RewardComponent("ok", _const(True), 1.0), RewardComponent("broken", broken, 1.0)])(None, None)


def test_feedback_of_components_is_kept():
    judged = _const(RewardResult(0.4, {"judge": 0.4}, feedback="misses the date"))
    result = WeightedReward(judge=(judged, 1.0))(None, None)
    assert result.feedback == "judge: misses the date"


def test_invalid_construction():
    with pytest.raises(ValueError):
        WeightedReward()
    with pytest.raises(ValueError):
        WeightedReward([RewardComponent("a", _const(1)), RewardComponent("a", _const(1))])


def test_result_json_round_trip_and_coercion():
    result = RewardResult(0.5, {"a": 1.0}, "fb", failed=True)
    assert RewardResult.from_json(result.to_json()) == result
    assert to_reward_result(False).total == 0.0
    assert to_reward_result(dspy.Prediction(score=1, feedback="x")).feedback == "x"
