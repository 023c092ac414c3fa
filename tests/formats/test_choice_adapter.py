"""ChoiceAdapter on the tiny local model, which candidates exist, the policy's format menu, balanced demos."""

import enum
from collections import Counter
from typing import Literal

import dspy
import pytest

from dspyrl.formats import (ChoiceAdapter, CompactAdapter, format_choices_for, choice_outputs, guided_choice_route,
                             label_balanced_demos, resolve_format)
from dspyrl.lm import local_lm


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"
    ANGRY = "angry"


class TwoFlags(dspy.Signature):
    text: str = dspy.InputField()
    spam: bool = dspy.OutputField()
    mood: Mood = dspy.OutputField()


class FreeText(dspy.Signature):
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def test_choice_outputs_cover_literal_enum_bool_and_their_product():
    assert choice_outputs(Sentiment) == [{"sentiment": "positive"}, {"sentiment": "negative"}]
    product = choice_outputs(TwoFlags)
    assert len(product) == 6 and {"spam": False, "mood": Mood.ANGRY} in product
    assert choice_outputs(FreeText) is None
    assert choice_outputs(TwoFlags, max_choices=5) is None


def test_format_menu_offers_choice_only_where_it_applies():
    assert set(format_choices_for(Sentiment)) == {"chat", "json", "compact", "choice", "structured"}
    assert set(format_choices_for(FreeText)) == {"chat", "json", "compact", "structured"}
    menu = format_choices_for(Sentiment)
    assert isinstance(menu["choice"](), ChoiceAdapter) and isinstance(menu["compact"](), CompactAdapter)
    assert menu["chat"]().use_json_adapter_fallback is False


def test_routes_local_server_and_hosted():
    assert guided_choice_route(dspy.LM("openai/gpt-4o-mini", api_key="x")) is None
    assert guided_choice_route(dspy.LM("openai/tiny", api_base="http://127.0.0.1:9/v1", api_key="x")) == "server"
    assert not ChoiceAdapter().applies(dspy.LM("openrouter/meta/llama", api_key="x"), Sentiment)
    # dspyrl's OpenRouter LMs name their address (api_base): still hosted, no vLLM fields sent there
    openrouter = dspy.LM("openrouter/meta/llama", api_base="https://openrouter.ai/api/v1", api_key="x")
    assert guided_choice_route(openrouter) is None and resolve_format("auto", openrouter) is None


def _direct_best(lm, format, signature, inputs):
    messages = format.format(signature, [], inputs)
    replies = [format.format_assistant_message_content(signature, o) for o in choice_outputs(signature)]
    scores = lm.engine.choice_logprobs(messages, replies)
    return choice_outputs(signature)[max(range(len(scores)), key=scores.__getitem__)]


@pytest.mark.parametrize("text_format", [CompactAdapter(), dspy.ChatAdapter(), dspy.JSONAdapter()],
                         ids=["compact", "chat", "json"])
def test_greedy_choice_is_the_best_scored_reply_in_any_format(tiny_model_dir, text_format):
    lm = local_lm(str(tiny_model_dir), cache=False)
    format = ChoiceAdapter(text_format)
    for signature, inputs in ((Sentiment, {"review": "what a film"}), (TwoFlags, {"text": "buy now!!"})):
        with dspy.context(lm=lm, adapter=format):
            prediction = dspy.Predict(signature)(**inputs)
        expected = _direct_best(lm, text_format, signature, inputs)
        assert {k: prediction[k] for k in expected} == expected
        assert lm.history[-1]["request"].config.extensions["guided_choice"][0].startswith(
            text_format.format_assistant_message_content(signature, choice_outputs(signature)[0])[:5])


def test_sampled_choices_vary_across_rollouts_and_stay_valid(tiny_model_dir):
    lm = local_lm(str(tiny_model_dir), cache=True)
    with dspy.context(lm=lm, adapter=ChoiceAdapter()):
        # On the tiny model the two sentiment replies are near 50/50, so 24 draws all alike would be a bug.
        labels = [dspy.Predict(Sentiment)(review="hello", config={"rollout_id": i, "temperature": 2.0}).sentiment
                  for i in range(24)]
        again = [dspy.Predict(Sentiment)(review="hello", config={"rollout_id": i, "temperature": 2.0}).sentiment
                 for i in range(24)]
        group = dspy.Predict(TwoFlags, n=8, temperature=2.0)(text="hello").completions
    assert set(labels) == {"positive", "negative"}, "a GRPO group needs samples that differ"
    assert again == labels, "a rollout id names one cached draw (a resumed run gets the same samples)"
    assert len(group.mood) == 8 and all(isinstance(m, Mood) and isinstance(s, bool) for m, s in zip(group.mood, group.spam))


def test_non_finite_signatures_fall_back_to_the_text_format(tiny_model_dir):
    lm = local_lm(str(tiny_model_dir), max_tokens=6, cache=False)
    with dspy.context(lm=lm, adapter=ChoiceAdapter()):
        prediction = dspy.Predict(FreeText)(question="hi?")  # one str field: anything parses
    assert isinstance(prediction.answer, str)
    entry = lm.history[-1]
    assert "request" not in entry and entry["messages"][-1]["content"] == "question: hi?"  # a plain compact call


def test_label_balanced_demos_balance_labels_and_vary_with_seed():
    examples = [dspy.Example(x=str(i), y=label).with_inputs("x")
                for i, label in enumerate(["a"] * 20 + ["b"] * 3 + ["c"] * 7)]
    demos = label_balanced_demos(examples, "y", k=6, seed=1)
    assert Counter(d.y for d in demos) == {"a": 2, "b": 2, "c": 2}
    assert len({d.x for d in demos}) == 6
    few = label_balanced_demos(examples, "y", k=2, seed=0)
    assert len(few) == 2 and len({d.y for d in few}) == 2
    assert {d.x for d in label_balanced_demos(examples, "y", k=6, seed=2)} != {d.x for d in demos}
    counts = Counter(d.y for d in label_balanced_demos(examples, "y", k=12, seed=0))
    assert counts["b"] == 3 and counts["a"] + counts["c"] == 9 and abs(counts["a"] - counts["c"]) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("program_name, floor", [("sentiment", 0.8), ("topic", 0.6)])
def test_smollm2_classifies_by_constrained_choice(program_name, floor):
    """The embedded model, zero-shot: every reply parses (by construction) and accuracy is far above chance."""
    from dspyrl.program_file import load_program_file
    from dspyrl.rollout import run_rollouts

    program_file = load_program_file(program_name)
    examples = program_file.load_examples()[::3]  # 16 / 20 rows, every label
    batch = run_rollouts(program_file.build_program(), examples, program_file.build_reward(),
                         lm=local_lm("smollm2", cache=False), format=ChoiceAdapter(), progress=False)
    assert batch.failures == 0
    assert batch.mean_reward() >= floor
