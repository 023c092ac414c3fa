"""Per-predictor formats on the tiny local model: each predictor is formatted by its own choice, and the choice
survives DSPy's save and load."""

from typing import Literal

import dspy
import pytest

from dspyrl.formats.per_predictor import (FORMAT_ATTRIBUTE, predictor_formats, set_format,
                                           use_predictor_formats)
from dspyrl.lm import local_lm
from dspyrl.rewards import as_reward
from dspyrl.rollout import run_rollouts
from dspyrl.runs import RunFolder


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


class Rewrite(dspy.Signature):
    """Rewrite the review in five words."""

    review: str = dspy.InputField()
    short: str = dspy.OutputField()


class TwoSteps(dspy.Module):
    def __init__(self):
        super().__init__()
        self.rewrite = dspy.Predict(Rewrite)
        self.classify = dspy.Predict(Sentiment)

    def forward(self, review):
        short = self.rewrite(review=review).short
        return self.classify(review=short or review)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=8, temperature=0.0)


def _messages_by_predictor(batch) -> dict[str, str]:
    return {call.predictor: "\n".join(m["content"] for m in call.messages or []) for call in batch.rollouts[0].calls}


def test_each_predictor_is_formatted_by_its_own_choice_in_rollouts(tiny_lm):
    examples = [dspy.Example(review="great film", sentiment="positive").with_inputs("review")]
    reward = as_reward(lambda ex, pred, trace=None: float(pred.sentiment == ex.sentiment))

    def run(program):
        chat = dspy.ChatAdapter(use_json_adapter_fallback=False)  # a failed parse keeps the chat-format messages
        return run_rollouts(program, examples, reward, lm=tiny_lm, format=chat, progress=False, num_threads=1)

    program = TwoSteps()
    set_format(program.rewrite, "compact")
    set_format(program.classify, "choice")
    batch = run(program)
    rollout = batch.rollouts[0]
    assert rollout.error is None, rollout.error  # compact parses the random model's text; choice cannot fail
    messages = _messages_by_predictor(batch)
    assert "short: <text>" in messages["rewrite"] and "[[ ##" not in messages["rewrite"]
    assert "[[ ##" not in messages["classify"]
    assert rollout.prediction.sentiment in ("positive", "negative")

    set_format(program.classify, None)  # unpinned: the context's ChatAdapter formats it
    messages = _messages_by_predictor(run(program))
    assert "[[ ## sentiment ## ]]" in messages["classify"] and "[[ ##" not in messages["rewrite"]


def test_the_choice_survives_dspy_save_and_load(tmp_path):
    program = TwoSteps()
    set_format(program.classify, "compact")
    path = RunFolder(tmp_path / "run").save_program(program)
    loaded = TwoSteps()
    loaded.load(str(path))  # DSPy's own load, nothing from dspyrl
    assert predictor_formats(loaded) == {"classify": "compact"}
    set_format(loaded.classify, None)
    assert not hasattr(loaded.classify, FORMAT_ATTRIBUTE) and predictor_formats(loaded) == {}

    single = dspy.Predict(Sentiment)  # a bare Predict: DSPy saves its state as the whole file
    set_format(single, "choice")
    path = RunFolder(tmp_path / "single").save_program(single)
    loaded = dspy.Predict(Sentiment)
    loaded.load(str(path))
    assert predictor_formats(loaded) == {"self": "choice"}


def test_a_format_that_does_not_apply_is_refused():
    with pytest.raises(ValueError, match="does not apply"):
        set_format(dspy.Predict(Rewrite), "choice")


def test_use_predictor_formats_routes_a_direct_call(tiny_lm):
    program = dspy.Predict(Sentiment)
    set_format(program, "choice")
    with dspy.context(lm=tiny_lm, adapter=dspy.ChatAdapter()), use_predictor_formats(program):
        prediction = program(review="awful")
    assert prediction.sentiment in ("positive", "negative")
    assert "[[ ##" not in "\n".join(m["content"] for m in tiny_lm.history[-1]["messages"] or [])


def test_a_pinned_format_holds_on_a_plain_call_and_after_load_program(tiny_lm, tmp_path):
    from dspyrl import load_program

    def prompt_of_a_plain_call(program) -> str:
        from dspy.utils.exceptions import AdapterParseError

        with dspy.context(lm=tiny_lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):  # no routing context
            try:
                program(review="a plain call")
            except AdapterParseError:  # the random model's reply in the chat format; the prompt is what we check
                pass
        return "\n".join(m["content"] for m in tiny_lm.history[-1]["messages"])

    program = dspy.Predict(Sentiment)
    set_format(program, "choice")
    assert "[[ ##" not in prompt_of_a_plain_call(program)  # constrained choice: no chat-format field markers
    path = RunFolder(tmp_path / "run").save_program(program)
    assert "[[ ## sentiment ## ]]" in prompt_of_a_plain_call(dspy.Predict(Sentiment))  # the default, for contrast
    loaded = load_program(dspy.Predict(Sentiment), path)
    assert "[[ ##" not in prompt_of_a_plain_call(loaded)
    assert "callbacks" not in path.read_text()  # the pin is not part of the saved program
