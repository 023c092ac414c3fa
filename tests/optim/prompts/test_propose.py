"""Proposer cleaning and garbage handling (pure logic, canned LM), and label-balanced demo sets."""

import random
from typing import Literal

import dspy
import pytest

from dspyrl.optim.prompts.propose import (InstructionProposer, ScoredCall, balanced_demo_set, label_field,
                                  labelled_demo_sets)


class Sentiment(dspy.Signature):
    """Classify the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


class CannedLM:
    """Returns fixed completions and records what it was asked (pure-logic stand-in for an LM)."""

    def __init__(self, completions, fail=False):
        self.completions, self.fail, self.calls = completions, fail, []

    def __call__(self, messages=None, **kwargs):
        self.calls.append((messages, kwargs))
        if self.fail:
            raise ConnectionError("HTTP 500")
        return list(self.completions)


CALLS = [ScoredCall({"review": "great"}, {"sentiment": "positive"}, 1.0, 1.2, "correct"),
         ScoredCall({"review": "awful"}, {"sentiment": "positive"}, 0.0, -0.8, "expected negative"),
         ScoredCall({"review": "meh"}, "I think it is", 0.0, 0.0)]


def test_good_proposals_are_cleaned_and_garbage_is_counted():
    lm = CannedLM(["Instruction: \"Read the review and answer with exactly one word: positive or negative.\"",
                   "```\n[[ ## sentiment ## ]]\npositive\n```",
                   "ok",
                   "{\"a\": 1, \"b\": [2, 3], \"c\": 4444444}",
                   "Read the review and answer with exactly one word: positive or negative.",  # duplicate of #1
                   "Classify the review."])  # same as the current instruction
    proposer = InstructionProposer(lm, num_proposals=6)
    out = proposer.propose(Sentiment, "Classify the review.", CALLS, rollout_id=3)
    assert out == ["Read the review and answer with exactly one word: positive or negative."]
    assert proposer.stats.accepted == 1 and proposer.stats.asked == 6
    assert proposer.stats.rejected == {"format_markers": 1, "too_short": 1, "not_prose": 1, "duplicate": 2}
    messages, kwargs = lm.calls[0]
    assert kwargs["n"] == 6 and kwargs["rollout_id"] == 3
    prompt = messages[-1]["content"]
    assert "great" in prompt and "awful" in prompt and "expected negative" in prompt
    assert prompt.index("WELL") < prompt.index("great") < prompt.index("BADLY") < prompt.index("awful")
    assert "one of 'positive', 'negative'" in prompt


def test_instructions_cut_off_at_max_tokens_are_rejected():
    from types import SimpleNamespace

    good = "Read the review and answer with exactly one word: positive or negative."
    rambling = "Your new instruction would read: rewrite the review in sentence case and then take a look at"
    lm = CannedLM([good, rambling])
    # as DSPy's history holds an engine-API call with n=2: a tuple of responses, the second stopped at max_tokens
    lm.history = [{"response": (SimpleNamespace(finish_reason="stop"), SimpleNamespace(finish_reason="length"))}]
    proposer = InstructionProposer(lm, num_proposals=2)
    assert proposer.propose(Sentiment, "Classify the review.", CALLS) == [good]
    assert proposer.stats.rejected == {"cut_off": 1}


def test_an_lm_failure_costs_the_round_not_the_run():
    proposer = InstructionProposer(CannedLM([], fail=True))
    assert proposer.propose(Sentiment, "Classify the review.", CALLS) == []
    assert proposer.stats.lm_failures == 1 and proposer.stats.rejected == {"lm_error": 1}


def test_label_balanced_demo_sets():
    trainset = [dspy.Example(review=f"good {i}", sentiment="positive").with_inputs("review") for i in range(10)]
    trainset += [dspy.Example(review=f"bad {i}", sentiment="negative").with_inputs("review") for i in range(2)]
    assert label_field(Sentiment) == "sentiment"
    sets = labelled_demo_sets(Sentiment, trainset, k=4, count=3, rng=random.Random(0))
    assert sets and all(len(s) == 4 for s in sets)
    for demos in sets:
        labels = [d["sentiment"] for d in demos]
        assert labels.count("negative") == 2  # balanced although only 2 of 12 rows are negative
        assert set(demos[0]) == {"review", "sentiment"}
    assert labelled_demo_sets(dspy.Signature("question -> answer"), trainset, k=2, count=1, rng=random.Random(0)) == []


def test_balanced_set_without_a_label_is_a_plain_sample():
    pool = [{"q": str(i), "a": str(i)} for i in range(5)]
    demos = balanced_demo_set(pool, 3, random.Random(1))
    assert len(demos) == 3 and len({d["q"] for d in demos}) == 3
    assert balanced_demo_set([], 3, random.Random(1)) == []


@pytest.mark.parametrize("text,reason", [("", "empty"), ("   ", "empty"), ("Be nice", "too_short"),
                                         ("word " * 400, "too_long"), ("<|im_start|>assistant hi there you", "format_markers")])
def test_clean_rejections(text, reason):
    assert InstructionProposer().clean(text) == (None, reason)


@pytest.mark.parametrize("text, reason", [
    ("One possible improved instruction could be: decide whether the review is positive or negative.", "meta_talk"),
    ("Sure! Read the review and reply positive or negative.", "meta_talk"),
    ("I would tell the model to read the review and say positive or negative.", "meta_talk"),
    ("Convert the temperature from Celsius to Fahrenheit and round it to two decimals.", "off_task"),
    ("Add up the numbers in the list and print the total at the end.", "off_task"),
    ("In this instruction, the steps are rewritten so that the review is easier to follow.", "meta_talk"),
    ("Keep the original instruction and classify the review.", "meta_talk"),
    # the proposal prompt copied back (measured on the embedded model: benchmarks/prompt_opt.py --read-proposals)
    ("The correct rationale is: - input review: a lovely film - output sentiment: positive (reward 1.00)", "echoes_prompt"),
    ("The step reads: improve the sentiment of the review and give an encouraging example.", "echoes_prompt"),
    ("Decide the sentiment of the review -> output the label the customer meant.", "echoes_prompt"),
    ("Read the review and answer with exactly one word: positive or negative.", ""),
    ("Read the input review carefully, then output its sentiment as one word.", ""),
    ("Decide whether the customer liked the product; say which sentiment the review expresses.", ""),
])
def test_meta_talk_echoes_and_off_task_proposals_are_rejected_and_task_instructions_pass(text, reason):
    proposer = InstructionProposer(CannedLM([text]), num_proposals=1)
    accepted = proposer.propose(Sentiment, "Classify the review.", CALLS)
    assert accepted == ([] if reason else [text])
    assert proposer.stats.rejected == ({reason: 1} if reason else {})


def test_a_proposal_that_quotes_an_example_input_is_rejected_and_a_short_common_phrase_is_not():
    # measured on topic_classification (seed 4): "change \"Heading: Scientists grow tomatoes in soil...\" to ..."
    calls = [ScoredCall({"review": "The plot of this movie was a total mess from start to end"}, {"sentiment": "negative"},
                        1.0, 1.0)]
    quoting = "Say negative when the plot of this movie was a total mess, else positive."
    general = "Read the review of this movie and answer with exactly one word: positive or negative."  # 3 shared words
    for text, reason in ((quoting, "quotes_example"), (general, "")):
        proposer = InstructionProposer(CannedLM([text]), num_proposals=1)
        assert proposer.propose(Sentiment, "Classify the review.", calls) == ([] if reason else [text])
        assert proposer.stats.rejected == ({reason: 1} if reason else {})


def test_off_task_compares_by_stem_and_reads_field_descriptions():
    from dspyrl.optim.prompts.propose import off_task

    class Topic(dspy.Signature):
        """Classify the headline."""

        headline: str = dspy.InputField(desc="a news headline")
        section: Literal["sports", "science"] = dspy.OutputField(desc="the newspaper section")

    assert not off_task("Give the classification of this newspaper item.", Topic, "Classify the headline.")
    assert not off_task("Put each story under the right section.", Topic, "Classify the headline.")
    assert off_task("Write a poem about the ocean at night.", Topic, "Classify the headline.")


def test_zero_proposals_asks_the_lm_nothing():
    lm = CannedLM(["Read the review and answer with exactly one word: positive or negative."])
    proposer = InstructionProposer(lm, num_proposals=0)
    assert proposer.propose(Sentiment, "Classify the review.", CALLS) == []
    assert lm.calls == [] and proposer.stats.asked == 0
