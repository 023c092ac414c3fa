"""The structured format on the tiny random model: whatever the model would have written, the reply parses."""

from typing import Literal

import dspy
import pytest

from dspyrl.formats import AutoFormat, ChoiceAdapter, StructuredAdapter, format_choices_for, resolve_format
from dspyrl.formats.structured import reply_grammar
from dspyrl.lm import local_lm
from tests.lm.torch_threads import one_torch_thread  # noqa: F401



class Sentiment(dspy.Signature):
    """Classify the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()


class Extract(dspy.Signature):
    """Extract the order."""

    text: str = dspy.InputField()
    customer: str = dspy.OutputField()
    quantity: int = dspy.OutputField()
    express: bool = dspy.OutputField()
    size: Literal["small", "large"] = dspy.OutputField()


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), cache=False, temperature=1.0, max_tokens=200)


def test_chain_of_thought_keeps_reasoning_free_and_the_label_in_its_values(lm):
    program = dspy.ChainOfThought(Sentiment)
    format = StructuredAdapter(max_text_tokens=24)
    with dspy.context(lm=lm, adapter=format):
        predictions = [program(review=f"review {i}: the film was long") for i in range(8)]
    for p in predictions:
        assert p.sentiment in ("positive", "negative", "neutral")
        assert isinstance(p.reasoning, str) and p.reasoning.strip()
    reasonings = {p.reasoning for p in predictions}
    assert len(reasonings) == 8, "free text is sampled freely, not picked from a list"
    assert not reasonings & {"positive", "negative", "neutral"}


def test_every_typed_field_parses(lm):
    with dspy.context(lm=lm, adapter=StructuredAdapter(max_text_tokens=12)):
        outs = [dspy.Predict(Extract)(text=f"order {i}") for i in range(6)]
    for o in outs:
        assert isinstance(o.customer, str) and o.customer
        assert isinstance(o.quantity, int) and isinstance(o.express, bool) and o.size in ("small", "large")


def test_the_grammar_sent_is_the_signatures(lm):
    grammar = reply_grammar(dspy.ChainOfThought(Sentiment).predict.signature, max_text_tokens=24)
    assert grammar.startswith('start: "reasoning: " f0 "\\nsentiment: " f1')
    assert 'f1: "positive" | "negative" | "neutral"' in grammar and "f0[max_tokens=24]" in grammar
    with dspy.context(lm=lm, adapter=StructuredAdapter(max_text_tokens=24)):
        dspy.ChainOfThought(Sentiment)(review="fine")
    sent = lm.history[-1]
    assert "reasoning:" in sent["outputs"][0] and "\nsentiment: " in sent["outputs"][0]


def test_a_fields_constraints_reach_the_grammar(lm):
    """`Annotated[list[int], Field(min_length=3, max_length=3)]` keeps its bounds in the field's metadata, not in its
    annotation: the grammar must still hold them, or a model may write [] (as a small judge did)."""
    from typing import Annotated

    import pydantic

    signature = dspy.Signature("text -> numbers").with_updated_fields(
        "numbers", type_=Annotated[list[int], pydantic.Field(min_length=3, max_length=3)])
    assert '"minItems": 3' in reply_grammar(signature) and '"maxItems": 3' in reply_grammar(signature)
    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        replies = [dspy.Predict(signature)(text=f"count {i}").numbers for i in range(4)]
    assert all(len(r) == 3 and all(isinstance(x, int) for x in r) for r in replies)


def test_auto_is_choice_for_labels_structured_otherwise_and_dspys_default_on_hosted(lm):
    auto = resolve_format("auto", lm)
    assert isinstance(auto, AutoFormat)
    assert isinstance(auto.pick(Sentiment), ChoiceAdapter)
    assert isinstance(auto.pick(dspy.ChainOfThought(Sentiment).predict.signature), StructuredAdapter)
    hosted = dspy.LM("openrouter/some/model")
    assert resolve_format("auto", hosted) is None
    assert isinstance(resolve_format("structured", lm), StructuredAdapter)
    assert "structured" in format_choices_for(Extract) and "choice" not in format_choices_for(Extract)


def test_structured_on_a_hosted_lm_writes_the_compact_format():
    assert StructuredAdapter().applies(dspy.LM("openrouter/some/model"), Extract) is False


def test_structured_on_a_hosted_model_is_a_cli_error_not_a_fallback():
    from dspyrl.cli.options import check_format
    from dspyrl.errors import ConfigError

    with pytest.raises(ConfigError, match="--format structured needs a model that takes a grammar"):
        check_format("structured", dspy.Predict(Extract), dspy.LM("openrouter/some/model"))


def test_the_extract_program_always_parses_under_structured(lm):
    from dspyrl.program_file import load_program_file
    from dspyrl.rollout import run_rollouts

    extract = load_program_file("extract")
    examples = extract.load_examples()
    assert len(examples) == 40 and all(isinstance(e.age, int) for e in examples)
    gold, reward = examples[0], extract.build_reward()
    assert reward(gold, dspy.Prediction(name=" maria", age=34, city="LISBON")) == 1.0
    assert reward(gold, dspy.Prediction(name="Maria", age=35, city="Lisbon")) == 0.0
    batch = run_rollouts(extract.build_program(), examples[:6], extract.build_reward(), lm=lm,
                         format=StructuredAdapter(), num_threads=6, progress=False)
    assert batch.failures == 0 and all(isinstance(r.prediction.age, int) for r in batch.rollouts)


@pytest.mark.slow
def test_smollm2_never_fails_to_parse_under_structured():
    from dspyrl.formats import resolve_format
    from dspyrl.program_file import load_program_file
    from dspyrl.rollout import run_rollouts

    smollm2 = local_lm("smollm2", max_tokens=96)
    for name in ("extract", "topic_cot"):
        program_file = load_program_file(name)
        batch = run_rollouts(program_file.build_program(), program_file.load_examples()[:8], program_file.build_reward(),
                             lm=smollm2, format=resolve_format("auto", smollm2), num_threads=8, progress=False)
        assert batch.failures == 0, batch.error_types
