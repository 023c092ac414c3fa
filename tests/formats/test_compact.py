"""CompactAdapter: every field type we use round-trips, messy small-model replies parse, ambiguous ones do not."""

import enum
from typing import Literal

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from dspyrl.formats import CompactAdapter
from dspyrl.lm import local_lm


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Everything(dspy.Signature):
    """Answer every field."""

    question: str = dspy.InputField(desc="what is asked")
    answer: str = dspy.OutputField()
    count: int = dspy.OutputField(desc="how many")
    score: float = dspy.OutputField()
    ok: bool = dspy.OutputField()
    label: Literal["spam", "ham"] = dspy.OutputField()
    color: Color = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField(desc="a short review")
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


class Topic(dspy.Signature):
    """Classify the headline."""

    headline: str = dspy.InputField()
    topic: Literal["sports", "world", "world cup", "science"] = dspy.OutputField()


@pytest.mark.parametrize("outputs", [
    {"answer": "Paris", "count": 3, "score": 0.25, "ok": True, "label": "spam", "color": Color.RED,
     "tags": ["a", "b, with comma", "c"]},
    {"answer": "two\nlines: with a colon", "count": -7, "score": 1e-3, "ok": False, "label": "ham",
     "color": Color.GREEN, "tags": []},
])
def test_every_field_type_round_trips(outputs):
    format = CompactAdapter()
    text = format.format_assistant_message_content(Everything, outputs)
    assert format.parse(Everything, text) == outputs


def test_prompt_is_short_plain_text_with_demos_as_pairs():
    format = CompactAdapter()
    messages = format.format(Sentiment, [{"review": "great film", "sentiment": "positive"}], {"review": "dull plot"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "Classify the sentiment of the review." in system and "The sentiment is one of: positive or negative." in system
    assert system.endswith("Reply with one line:\nsentiment: <sentiment>")  # labels not on the line a model copies
    assert "[[ ##" not in system and len(system) < 200
    assert messages[1]["content"] == "review: great film" and messages[2]["content"] == "sentiment: positive"
    assert messages[3]["content"] == "review: dull plot"


@pytest.mark.parametrize("reply, expected", [
    ("sentiment: positive", "positive"),
    ("Positive", "positive"),
    ("  NEGATIVE.  ", "negative"),
    ("The sentiment of this review is positive.", "positive"),
    ("```\nsentiment: negative\n```", "negative"),
    ("```json\n{\"sentiment\": \"Positive\"}\n```", "positive"),
    ("**Sentiment:** Negative", "negative"),
    ("[[ ## sentiment ## ]]\nnegative\n\n[[ ## completed ## ]]", "negative"),
    ("Sentiment: positive\nExplanation: the reviewer is happy, nothing negative here.", "positive"),
    ("positive. Definitely positive!", "positive"),
])
def test_lenient_parser_accepts_messy_replies(reply, expected):
    assert CompactAdapter().parse(Sentiment, reply) == {"sentiment": expected}


@pytest.mark.parametrize("reply", [
    "positive or negative",
    "It is not negative, it is positive.",
    "I cannot tell.",
    "",
    "sentiment: neutral",
])
def test_lenient_parser_rejects_ambiguous_or_missing_labels(reply):
    with pytest.raises(AdapterParseError, match="CompactAdapter"):
        CompactAdapter().parse(Sentiment, reply)


def test_a_label_inside_a_longer_label_is_not_a_second_mention():
    format = CompactAdapter()
    assert format.parse(Topic, "topic: world cup") == {"topic": "world cup"}
    assert format.parse(Topic, "This is about the world cup final") == {"topic": "world cup"}
    with pytest.raises(AdapterParseError):
        format.parse(Topic, "sports or science")


def test_numbers_bools_and_lists_are_read_leniently_but_not_guessed():
    class Numbers(dspy.Signature):
        q: str = dspy.InputField()
        n: int = dspy.OutputField()

    class Flags(dspy.Signature):
        q: str = dspy.InputField()
        ok: bool = dspy.OutputField()
        items: list[str] = dspy.OutputField()

    format = CompactAdapter()
    assert format.parse(Numbers, "The answer is 1,024.") == {"n": 1024}
    with pytest.raises(AdapterParseError, match="several numbers"):
        format.parse(Numbers, "either 3 or 4")
    assert format.parse(Flags, "ok: Yes\nitems:\n- milk\n- eggs") == {"ok": True, "items": ["milk", "eggs"]}
    assert format.parse(Flags, "OK: false\nitems: milk, eggs") == {"ok": False, "items": ["milk", "eggs"]}
    with pytest.raises(AdapterParseError, match="no value for items"):
        format.parse(Flags, "ok: yes")


def test_on_a_real_local_model_the_prompt_reaches_the_model_and_failures_are_typed(tiny_model_dir):
    lm = local_lm(str(tiny_model_dir), max_tokens=12, cache=False)
    with dspy.context(lm=lm, adapter=CompactAdapter()):
        try:
            prediction = dspy.Predict(Sentiment)(review="great film")
            assert prediction.sentiment in ("positive", "negative")
        except AdapterParseError as err:  # random weights usually babble: the failure must be the typed signal
            assert "CompactAdapter" in str(err)
    sent = lm.history[-1]["messages"]
    assert sent[-1] == {"role": "user", "content": "review: great film"}
    assert "sentiment: <sentiment>" in sent[0]["content"]


def test_a_list_of_objects_is_shown_with_the_objects_keys():
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    class People(dspy.Signature):
        """List the people."""

        text: str = dspy.InputField()
        people: list[Person] = dspy.OutputField()
        tags: list[str] = dspy.OutputField()

    prompt = "\n".join(m["content"] for m in CompactAdapter().format(People, [], {"text": "Ann, 31."}))
    assert '<JSON list, e.g. [{"name": "a", "age": 1}]>' in prompt  # not a list of strings
    assert '<JSON list, e.g. ["a", "b"]>' in prompt
