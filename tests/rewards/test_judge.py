"""RewardModule: failure counting and retries on a real (tiny, random) local model; the judgement cache; the parsing
path and pairwise swap logic with a scripted engine (pure logic); and, marked slow, the parsing path on SmolLM2."""

from __future__ import annotations

import re

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from dspyrl.errors import ConfigError, LMFailure
from dspyrl.lm.local import request_to_messages
from dspyrl.rewards.judge import RewardModule

EXAMPLE = dspy.Example(question="What is the capital of France?", answer="Paris").with_inputs("question")


class ScriptedEngine:
    """A DSPy engine whose reply is a function of the chat messages: for testing parsing logic only."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        text = self.reply(request_to_messages(request))
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=10, output_tokens=5, total_tokens=15))

    def close(self):
        pass


def scripted_lm(reply) -> dspy.LM:
    return dspy.LM("scripted/judge", engine=ScriptedEngine(reply), cache=False, num_retries=0)


def chat(**fields) -> str:
    return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items()) + "[[ ## completed ## ]]"


def last_user(messages) -> str:
    return messages[-1]["content"]


# ----------------------------------------------------------------------------------------------- real tiny model
@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from dspyrl.lm import local_lm

    return local_lm(str(tiny_model_dir), max_tokens=12)


def test_unparseable_judge_is_retried_then_counted_as_failure(tiny_lm):
    # no JSON fallback: the local engine constrains JSONAdapter's replies to the schema, which always parse
    judge = RewardModule("Is the answer correct?", judge_lm=tiny_lm, reference_field="answer", retries=2,
                         failure_score=0.125, format=dspy.ChatAdapter(use_json_adapter_fallback=False))
    before = tiny_lm.engine.generate_calls
    result = judge(EXAMPLE, dspy.Prediction(answer="Paris"))
    assert result.failed and result.total == 0.125 and result.components == {"judge": 0.125}
    assert "judge failed" in result.feedback
    assert judge.stats.lm_attempts == 3 and judge.stats.failures == 1
    # retries used distinct rollout ids at temperature > 0, so each attempt really ran the model (not DSPy's cache)
    assert tiny_lm.engine.generate_calls - before >= 3


def test_cache_hit_makes_no_second_lm_call(tiny_lm):
    judge = RewardModule("Is the answer correct?", judge_lm=tiny_lm, retries=0)
    judge(EXAMPLE, dspy.Prediction(answer="Lyon"))
    calls_before, judge_calls_before = tiny_lm.engine.generate_calls, judge.stats.lm_calls
    again = judge(EXAMPLE, dspy.Prediction(answer="Lyon"))
    assert tiny_lm.engine.generate_calls == calls_before and judge.stats.lm_calls == judge_calls_before
    assert judge.stats.cache_hits == 1 and again.failed
    judge(EXAMPLE, dspy.Prediction(answer="Marseille"))  # a different output is a new judgement
    assert judge.stats.lm_calls > judge_calls_before and tiny_lm.engine.generate_calls > calls_before


def test_judge_needs_an_lm_and_a_rubric():
    with pytest.raises(ConfigError):
        RewardModule("  ")
    with dspy.context(lm=None):
        with pytest.raises(ConfigError, match="judge has no LM"):
            RewardModule("rubric").judge(inputs="q", output="a")


# ----------------------------------------------------------------------------------------------- parsing logic
def test_typed_judgement_is_parsed():
    lm = scripted_lm(lambda m: chat(feedback="Correct capital.", score="0.9"))
    judge = RewardModule("Is the answer correct?", judge_lm=lm, reference_field="answer")
    result = judge(EXAMPLE, dspy.Prediction(reasoning="long thoughts", answer="Paris"))
    assert result.total == 0.9 and not result.failed and result.feedback == "Correct capital."
    assert judge.stats.lm_attempts == 1


def test_judge_sees_rubric_inputs_reference_and_only_the_answer():
    seen = []
    lm = scripted_lm(lambda m: seen.append(last_user(m)) or chat(feedback="ok", score="1"))
    RewardModule("Be right.", judge_lm=lm, reference_field="answer")(
        EXAMPLE, dspy.Prediction(reasoning="SECRET-REASONING", answer="Paris"))
    prompt = seen[0]
    assert "Be right." in prompt and "capital of France" in prompt and "Paris" in prompt
    assert "SECRET-REASONING" not in prompt


def test_out_of_range_score_is_retried_then_accepted():
    replies = iter([chat(feedback="great", score="8"), chat(feedback="great", score="0.8")])
    engine_lm = scripted_lm(lambda m: next(replies))
    judge = RewardModule("r", judge_lm=engine_lm, retries=2)
    judgement = judge.judge(inputs={"q": "x"}, output="y")
    assert judgement.score == 0.8 and judgement.attempts == 2 and not judgement.failed
    assert judge.stats.errors == {"invalid": 1}  # the out-of-range answer was counted as a bad answer
    assert judge.stats.lm_attempts == 2


def test_lenient_reading_of_a_half_formatted_answer():
    lm = scripted_lm(lambda m: "The answer is right. Score: 0.75")
    judgement = RewardModule("r", judge_lm=lm).judge(inputs="q", output="a")
    assert judgement.score == 0.75 and not judgement.failed
    strict = RewardModule("r", judge_lm=scripted_lm(lambda m: "Score: 0.75"), lenient=False, retries=1)
    assert strict.judge(inputs="q", output="a").failed


def test_lm_errors_are_counted_and_not_cached():
    def explode(messages):
        raise LMFailure("503 upstream")

    judge = RewardModule("r", judge_lm=scripted_lm(explode), retries=1, failure_score=0.0)
    first = judge.judge(inputs="q", output="a")
    assert first.failed and first.error.startswith("lm:")
    judge.judge(inputs="q", output="a")
    assert judge.stats.cache_hits == 0 and judge.stats.lm_attempts == 4


def test_a_bug_in_the_judge_lm_is_not_a_failure():
    def broken(messages):
        raise KeyError("my bug")

    with pytest.raises(Exception, match="my bug"):
        RewardModule("r", judge_lm=scripted_lm(broken), retries=1).judge(inputs="q", output="a")


# ----------------------------------------------------------------------------------------------- pairwise
def _output(messages, which):
    match = re.search(rf"\[\[ ## output_{which} ## \]\]\n(.*?)\n\n", last_user(messages), re.DOTALL)
    return match.group(1)


def test_pairwise_consistent_winner_survives_the_swap():
    # A fair judge: prefers the output that says Paris, wherever it stands.
    lm = scripted_lm(lambda m: chat(feedback="f", winner="A" if "Paris" in _output(m, "a") else "B"))
    judge = RewardModule("Correct capital?", judge_lm=lm)
    result = judge.compare(inputs=EXAMPLE.inputs(), output_a="Lyon", output_b="Paris")
    assert result.winner == "B" and result.consistent and result.verdicts == ("B", "B")
    assert judge.stats.inconsistency_rate == 0.0


def test_pairwise_position_bias_becomes_a_tie_and_is_counted():
    lm = scripted_lm(lambda m: chat(feedback="first is better", winner="A"))  # always picks the first shown
    judge = RewardModule("Correct capital?", judge_lm=lm)
    result = judge.compare(inputs=EXAMPLE.inputs(), output_a="Lyon", output_b="Paris")
    assert result.winner == "tie" and not result.consistent and result.verdicts == ("A", "B")
    judge.compare(inputs=EXAMPLE.inputs(), output_a="Rome", output_b="Paris")
    fair = scripted_lm(lambda m: chat(feedback="f", winner="tie"))
    judge.judge_lm = fair
    judge.compare(inputs=EXAMPLE.inputs(), output_a="Nice", output_b="Paris")
    assert judge.stats.comparisons == 3 and judge.stats.inconsistent == 2
    assert judge.stats.inconsistency_rate == pytest.approx(2 / 3)


def test_pairwise_failure_is_a_tie_flagged_failed():
    judge = RewardModule("r", judge_lm=scripted_lm(lambda m: "no idea"), retries=0)
    result = judge.compare(inputs="q", output_a="x", output_b="y")
    assert result.winner == "tie" and result.failed and not result.consistent
    assert judge.stats.inconsistent == 0  # a failure is not an inconsistency


# ----------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_judge_parses_or_counts_every_judgement():
    from dspyrl.lm import local_lm

    lm = local_lm("smollm2", max_tokens=96)
    judge = RewardModule("The answer names the correct capital city.", judge_lm=lm, reference_field="answer", retries=2)
    results = [judge(EXAMPLE, dspy.Prediction(answer=a)) for a in ("Paris", "Berlin", "Paris, France")]
    assert all(0.0 <= r.total <= 1.0 for r in results)
    assert judge.stats.judgements == 3
    assert judge.stats.failures == sum(r.failed for r in results)
    assert judge.stats.lm_attempts >= 3
    parsed = [r for r in results if not r.failed]
    assert parsed, f"SmolLM2 never produced a parseable judgement: {[r.feedback for r in results]}"
