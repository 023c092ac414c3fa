"""Metric functions and the metric ⇄ reward bridges (pure logic)."""

import math

import dspy
import pytest

from dspyrl.rewards.combine import RewardResult
from dspyrl.rewards.metrics import (as_metric, as_reward, exact_match, extract_number, extract_xml, field_reward,
                                    length_penalty, matches_regex, normalize_text, numeric_match, token_f1, xml_format)


def test_normalized_exact_match():
    assert normalize_text("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Pacific Ocean.", "Pacific ocean") == 1.0
    assert exact_match("Atlantic", "Pacific") == 0.0
    assert exact_match("paris", ["London", "Paris"]) == 1.0
    assert exact_match(None, "x") == 0.0


def test_token_f1():
    assert token_f1("Leonardo da Vinci", "Leonardo da Vinci") == 1.0
    assert token_f1("da Vinci", "Leonardo da Vinci") == pytest.approx(0.8)
    assert token_f1("nothing shared", "Leonardo") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("blue whale", ["the whale", "blue whale"]) == 1.0


def test_regex_and_xml_format():
    good = "<reasoning>5 + 3 = 8</reasoning>\n<answer>8</answer>"
    assert xml_format(good) == 1.0
    assert xml_format(good, strict=True) == 1.0
    assert xml_format("<answer>8</answer>") == 0.5  # partial credit: one of two blocks
    assert xml_format("<answer>8</answer><reasoning>x</reasoning>") == 0.5  # order matters
    assert xml_format("<reasoning></reasoning><answer>8</answer>") == 0.5  # empty blocks do not count
    assert xml_format("Sure! " + good, strict=True) == 0.0
    assert extract_xml(good, "answer") == "8"
    assert extract_xml("no tags", "answer") is None
    assert matches_regex("Answer: 42", r"Answer: \d+") == 1.0
    assert matches_regex("Answer: 42 thanks", r"Answer: \d+", full=True) == 0.0


def test_numeric_extraction_and_match():
    assert extract_number("so the total is 1,234 apples") == 1234.0
    assert extract_number("-3.5 degrees") == -3.5
    assert extract_number("3/4 of it") == 0.75
    assert extract_number("first 2 then 7") == 7.0
    assert extract_number("first 2 then 7", last=False) == 2.0
    assert extract_number("no digits") is None
    assert numeric_match("The answer is 12.", 12) == 1.0
    assert numeric_match("12.0", "twelve is 12") == 1.0
    assert numeric_match("13", 12) == 0.0
    assert numeric_match("none", 12) == 0.0


def test_length_penalty():
    assert length_penalty("one two three", max_words=5) == 1.0
    assert length_penalty(" ".join(["w"] * 15), max_words=10) == pytest.approx(0.5)
    assert length_penalty(" ".join(["w"] * 25), max_words=10) == 0.0


def test_field_reward_reads_prediction_and_example():
    example = dspy.Example(question="q", answer="Paris").with_inputs("question")
    reward = field_reward(exact_match, "answer")
    assert reward(example, dspy.Prediction(answer="paris")) == 1.0
    assert reward(example, dspy.Prediction(answer="Rome")) == 0.0
    assert reward(example, dspy.Prediction()) == 0.0  # a missing field scores, never raises
    fmt = field_reward(xml_format, "response", gold_field="")
    assert fmt(example, dspy.Prediction(response="<reasoning>r</reasoning><answer>1</answer>")) == 1.0


@pytest.mark.parametrize("value, total, failed", [
    (True, 1.0, False), (0.25, 0.25, False), (None, -1.0, True), (math.nan, -1.0, True), (math.inf, -1.0, True),
    ("not a number", -1.0, True), (RewardResult(0.5, {"a": 0.5}), 0.5, False), (RewardResult(math.nan), -1.0, True),
    (dspy.Prediction(score=0.7, feedback="close"), 0.7, False),
])
def test_any_metric_works_as_a_reward(value, total, failed):
    reward = as_reward(lambda example, pred, trace=None: value, failure_score=-1.0)
    result = reward(None, None)
    assert isinstance(result, RewardResult)
    assert result.total == total and result.failed is failed


def test_any_reward_works_as_a_dspy_metric():
    metric = as_metric(lambda example, pred, trace=None: RewardResult(0.75, {"x": 0.75}))
    assert metric(None, None) == 0.75 and isinstance(metric(None, None), float)
    nan_metric = as_metric(lambda example, pred, trace=None: None)
    assert nan_metric(None, None) == 0.0
    # and it plugs into DSPy's own Evaluate machinery as a plain metric
    example = dspy.Example(q="a", answer="x").with_inputs("q")
    assert as_metric(field_reward(exact_match, "answer"))(example, dspy.Prediction(answer="X")) == 1.0
