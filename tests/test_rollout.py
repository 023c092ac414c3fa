"""The rollout engine on a real (tiny, random) local model: groups, call capture, isolation between threads,
failure accounting (parse errors, LM errors over HTTP, broken rewards), configure hooks and caching."""

from __future__ import annotations

import json
import math

import dspy
import pytest

from dspyrl.errors import ConfigError
from dspyrl.rewards.combine import RewardResult
from dspyrl.rollout import run_rollouts


class WholeTextAdapter(dspy.ChatAdapter):
    """Takes the whole completion as every output field of the signature, so an untrained model's text always parses
    (the real ChatAdapter formats the prompt; only parsing is lenient)."""

    def __init__(self):
        super().__init__(use_json_adapter_fallback=False)

    def parse(self, signature, completion):
        return {name: completion.strip() for name in signature.output_fields}


class TwoSteps(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.final = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.final(question=question, draft=draft)


QUESTIONS = ["the movie was great", "the film was boring", "capital of France", "plus minus times"]
EXAMPLES = [dspy.Example(question=q, answer="x").with_inputs("question") for q in QUESTIONS]


def only_empty_response_failures(batch, at_most: int) -> list:
    """An untrained model sometimes stops at once; DSPy rightly calls an empty response a parse failure. Anything else
    is a bug. Returns the successful rollouts."""
    failed = [r for r in batch.rollouts if r.error]
    assert all("empty or null response" in r.error for r in failed), [r.error for r in failed]
    assert len(failed) <= at_most and batch.failures == len(failed)
    return [r for r in batch.rollouts if not r.error]


def length_reward(example, pred, trace=None):
    return min(1.0, len(pred.answer) / 20)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from dspyrl.lm import local_lm

    return local_lm(str(tiny_model_dir), max_tokens=12)


def test_groups_of_samples_with_calls_tokens_and_rewards(lm):
    batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES, length_reward, group_size=3, lm=lm,
                         format=WholeTextAdapter(), temperature=1.0, num_threads=4, progress=False)
    assert len(batch.rollouts) == 12
    ok = only_empty_response_failures(batch, at_most=3)
    assert batch.metric_calls == len(ok)
    assert [(r.example_index, r.sample_index) for r in batch.rollouts] == [(i, s) for i in range(4) for s in range(3)]
    groups = batch.rewards_by_group()
    assert len(groups) == 4 and all(len(g) == 3 for g in groups)
    assert groups == [[r.reward.total for r in batch.rollouts[3 * i: 3 * i + 3]] for i in range(4)]
    # samples of a group are distinct draws (distinct rollout ids at temperature 1)
    answers = [[r.prediction.answer for r in ok if r.example_index == i] for i in range(4)]
    assert any(len(set(group)) > 1 for group in answers)
    for rollout in ok:
        (call,) = rollout.calls
        assert call.predictor == "self"  # DSPy's name for a program that is itself a Predict
        assert call.inputs == {"question": QUESTIONS[rollout.example_index]}
        assert QUESTIONS[rollout.example_index] in call.messages[-1]["content"]
        assert call.outputs == {"answer": rollout.prediction.answer} and not call.failed
        assert rollout.prompt_tokens > 0 and 0 < rollout.completion_tokens <= 12
    assert batch.prompt_tokens == sum(r.prompt_tokens for r in batch.rollouts)
    assert batch.lm_calls == 12
    assert 1 <= batch.truncated <= 12  # an untrained model rarely stops within 12 tokens; each cut-off is counted
    json.dumps([r.to_json() for r in batch.rollouts])  # everything is JSON-able


def test_a_local_models_calls_are_free_and_never_looked_up_in_the_price_map(lm, capfd):
    import litellm

    asked = []
    original = litellm.cost_per_token
    litellm.cost_per_token = lambda *a, **k: asked.append(k.get("model")) or original(*a, **k)
    try:
        batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES[:2], length_reward, lm=lm,
                             format=WholeTextAdapter(), temperature=1.0, rollout_offset=50, progress=False)
    finally:
        litellm.cost_per_token = original
    assert batch.tokens > 0 and batch.cost == 0.0
    assert asked == [] and "Provider List" not in capfd.readouterr().out


def test_rerun_hits_the_cache_and_offset_draws_new_samples(lm):
    program, format = dspy.Predict("question -> answer"), WholeTextAdapter()
    kwargs = dict(group_size=2, lm=lm, format=format, temperature=1.0, progress=False)
    first = run_rollouts(program, EXAMPLES[:2], length_reward, **kwargs)
    only_empty_response_failures(first, at_most=1)
    calls = lm.engine.generate_calls
    again = run_rollouts(program, EXAMPLES[:2], length_reward, **kwargs)
    assert lm.engine.generate_calls == calls  # a replayed rollout costs nothing
    assert [r.calls[0].completion for r in again.rollouts] == [r.calls[0].completion for r in first.rollouts]
    assert again.tokens == 0
    shifted = run_rollouts(program, EXAMPLES[:2], length_reward, rollout_offset=2, **kwargs)
    assert lm.engine.generate_calls > calls
    assert [r.calls[0].completion for r in shifted.rollouts] != [r.calls[0].completion for r in first.rollouts]


def test_parse_failures_are_counted_with_the_failure_reward(lm):
    # ChatAdapter without its JSON retry: the local engine now constrains that retry to the schema, so it would parse
    batch = run_rollouts(dspy.ChainOfThought("question -> answer"), EXAMPLES, length_reward, lm=lm,
                         format=dspy.ChatAdapter(use_json_adapter_fallback=False), failure_reward=-0.5, num_threads=2,
                         progress=False)
    assert batch.failures == 4 and batch.metric_calls == 0
    assert batch.error_types == {"AdapterParseError": 4}
    for rollout in batch.rollouts:
        assert rollout.failed and rollout.prediction is None and rollout.reward.total == -0.5
        assert rollout.error.startswith("AdapterParseError")
        assert rollout.calls and rollout.calls[-1].failed and rollout.calls[-1].completion is not None
    assert batch.lm_calls >= 4


def test_lm_errors_over_http_are_counted_not_raised():
    from dspyrl.lm.hosted import openai_compatible

    dead = openai_compatible("http://127.0.0.1:9/v1", "nobody", num_retries=0, max_tokens=8)
    batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES[:2], length_reward, lm=dead, progress=False)
    assert batch.failures == 2 and all(r.failed for r in batch.rollouts)
    assert all(r.reward.total == 0.0 for r in batch.rollouts)


def test_rewards_that_return_nothing_usable_are_counted(lm):
    def sometimes(example, pred, trace=None):
        if example.question == QUESTIONS[0]:
            return None
        if example.question == QUESTIONS[1]:
            return math.nan
        return RewardResult(0.5, {"a": 0.5})

    batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES, sometimes, lm=lm, format=WholeTextAdapter(),
                         progress=False)
    assert batch.failures == 0 and batch.reward_failures == 2 and batch.metric_calls == 4
    assert batch.rollouts[0].reward.failed and batch.rollouts[1].reward.failed
    assert batch.rollouts[1].reward.total == 0.0
    assert batch.component_means() == {"a": 0.25}  # rollouts whose reward failed count 0 in every component
    assert batch.component_means(["b", "a"]) == {"b": 0.0, "a": 0.25}


def test_configure_sets_prompts_per_rollout_without_leaking(lm):
    program = TwoSteps()

    def configure(copy, example_index, sample_index):
        instruction = f"INSTRUCTION-{example_index}-{sample_index}"
        copy.final.signature = copy.final.signature.with_instructions(instruction)
        return {"final": {"instruction": instruction}}

    batch = run_rollouts(program, EXAMPLES, length_reward, group_size=2, lm=lm, format=WholeTextAdapter(),
                         configure=configure, temperature=0.7, num_threads=4, progress=False)
    ok = only_empty_response_failures(batch, at_most=3)
    for rollout in batch.rollouts:
        expected = f"INSTRUCTION-{rollout.example_index}-{rollout.sample_index}"
        assert rollout.choices == {"final": {"instruction": expected}}
    for rollout in ok:
        expected = f"INSTRUCTION-{rollout.example_index}-{rollout.sample_index}"
        assert rollout.choices == {"final": {"instruction": expected}}
        assert [c.predictor for c in rollout.calls] == ["draft", "final"]
        draft, final = rollout.calls
        assert expected in final.messages[0]["content"] and "INSTRUCTION" not in draft.messages[0]["content"]
        assert final.inputs == {"question": QUESTIONS[rollout.example_index], "draft": draft.outputs["draft"]}
    assert "INSTRUCTION" not in program.final.signature.instructions  # the caller's program is untouched
    assert batch.lm_calls >= 2 * len(ok)


def test_settings_errors():
    with dspy.context(lm=None):
        with pytest.raises(ConfigError, match="no language model"):
            run_rollouts(dspy.Predict("q -> a"), EXAMPLES, length_reward, progress=False)
    with pytest.raises(ConfigError, match="group_size"):
        run_rollouts(dspy.Predict("q -> a"), EXAMPLES, length_reward, group_size=0, progress=False)


def test_best_and_worst_is_the_pair_dpo_and_the_reward_model_both_take():
    from dspyrl.optim.weights.dpo import preference_pairs
    from dspyrl.rewards.reward_model import reward_pairs
    from dspyrl.rollout import PredictorCall, Rollout, best_and_worst

    def run(example, sample, reward, answer, error=None):
        call = PredictorCall("self", [{"role": "user", "content": f"q{example}"}], answer, {"answer": answer})
        return Rollout(example, sample, {}, None if error else dspy.Prediction(answer=answer), [call],
                       RewardResult(reward, {}), error=error)

    rollouts = [run(0, 0, 0.2, "low"), run(0, 1, 0.9, "high"), run(0, 2, 0.5, "mid"),
                run(1, 0, 0.4, "same"), run(1, 1, 0.4, "also"),  # no gap: no pair
                run(2, 0, 0.7, "ok"), run(2, 1, 0.0, "broken", error="AdapterParseError: x")]
    picked = [(i, best.prediction.answer, worst.calls[0].completion, gap) for i, best, worst, gap in best_and_worst(rollouts)]
    assert picked == [(0, "high", "low", pytest.approx(0.7)), (2, "ok", "broken", pytest.approx(0.7))]
    assert best_and_worst(rollouts, min_gap=0.7) == []
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(3)]
    # DPO keeps the failed run as the rejected one; a reward model never sees failed runs, so example 2 has no pair
    assert [(p["chosen"], p["rejected"]) for p in preference_pairs(rollouts)] == [("high", "low"), ("ok", "broken")]
    assert [(p["chosen"], p["rejected"]) for p in reward_pairs(rollouts, examples)] == [("high", "low")]
