"""Group-mode judging: one judge call per group on the tiny local model and through `dspyrl serve` (counted), scores
mapped back to the right outputs under shuffling (a judge over HTTP whose replies are a function of what it is shown),
unparseable judgements retried then counted, the consistency re-ask, and the rollout engine's one call per group."""

from __future__ import annotations

import json
import re
import threading

import dspy
import pytest

from dspyrl.lm.local import Generation
from dspyrl.rewards.combine import WeightedReward, scores_groups
from dspyrl.rewards.judge import RewardModule, rank_agreement
from dspyrl.rollout import run_rollouts
from tests.rewards.test_judge import chat, last_user, scripted_lm

EXAMPLES = [dspy.Example(question=q, answer=a).with_inputs("question")
            for q, a in [("capital of France?", "Paris"), ("capital of Italy?", "Rome"), ("capital of Spain?", "Madrid")]]


def shown_candidates(text: str) -> list[tuple[int, str]]:
    """(shown number, output) pairs from the judge prompt's candidates field (DSPy's chat format or dspyrl's compact
    layout, which the structured format writes)."""
    body = re.split(r"\[\[ ## candidates ## \]\]\n|^candidates:\n", text, flags=re.MULTILINE)[1]
    body = body.split("\n\nRespond with the corresponding output fields")[0]
    parts = re.split(r"(?:^|\n\n)\[(\d+)\]\n", body)[1:]
    return [(int(k), t) for k, t in zip(parts[::2], parts[1::2])]


def reply_in_format(prompt: str, judgements: list[dict]) -> str:
    """The judgements written the way the prompt asks: DSPy's chat fields, or the compact format's line."""
    if "[[ ## candidates ## ]]" in prompt:
        return chat(judgements=json.dumps(judgements))
    return "judgements: " + json.dumps(judgements)


def content_score(output: str) -> float:
    """A fair judge's score: a function of the output only (its length, in tenths, up to 10 characters)."""
    return min(10, len(output.strip())) / 10  # strip: a format may trim what it shows


def fair_reply(messages) -> str:
    prompt = last_user(messages)
    return reply_in_format(prompt, [{"candidate": k, "reason": f"len {len(t)}", "score": round(10 * content_score(t))}
                                    for k, t in shown_candidates(prompt)])


def first_shown_bias_reply(messages) -> str:
    """Scores by shown position only: 10 for the first shown, falling by 2 per position."""
    shown = shown_candidates(last_user(messages))
    return chat(judgements=json.dumps([{"candidate": k, "reason": "first is best", "score": max(0, 10 - 2 * (k - 1))}
                                       for k, _ in shown]))


# ----------------------------------------------------------------------------------------------- pure logic
def test_scores_follow_the_outputs_under_shuffling_and_duplicates_share_one():
    judge = RewardModule("be long", judge_lm=scripted_lm(fair_reply), mode="group")
    outputs = ["a", "bbbbbbbb", "ccc", "a", "dddddddddddddddd"]
    verdict = judge.judge_group(inputs="q", outputs=outputs)
    assert verdict.scores == [content_score(o) for o in outputs]
    assert sorted(verdict.order) == [0, 1, 2, 3] and verdict.distinct == [0, 1, 2, 0, 3]
    assert verdict.reasons[1] == "len 8" and not verdict.failed
    assert judge.stats.groups == 1 and judge.stats.lm_attempts == 1 and judge.stats.lm_calls == 1
    orders = {tuple(judge.judge_group(inputs=f"q{i}", outputs=outputs).order) for i in range(8)}
    assert len(orders) > 1  # the order really is shuffled (seeded by the group's content)


def test_consistency_reask_measures_agreement_and_averages_orders():
    fair = RewardModule("r", judge_lm=scripted_lm(fair_reply), mode="group", consistency_sample=1.0)
    verdict = fair.judge_group(inputs="q", outputs=["aa", "bbbbbb", "cccccccccc"])
    assert verdict.second_order == verdict.order[::-1] and verdict.rank_agreement == 1.0
    assert fair.stats.consistency_checks == 1 and fair.stats.lm_attempts == 2

    biased = RewardModule("r", judge_lm=scripted_lm(first_shown_bias_reply), mode="group", consistency_sample=1.0)
    verdict = biased.judge_group(inputs="q", outputs=["aa", "bbbbbb", "cccccccccc"])
    assert verdict.rank_agreement == 0.0  # the reversed order reverses a pure position ranking
    assert verdict.scores == pytest.approx([0.8, 0.8, 0.8])  # averaging both orders cancels the bias here
    assert biased.stats.position_means == pytest.approx([1.0, 0.8, 0.6])


def test_rank_agreement():
    assert rank_agreement([0.1, 0.5, 0.9], [0.2, 0.3, 0.4]) == 1.0
    assert rank_agreement([0.1, 0.5, 0.9], [0.9, 0.5, 0.1]) == 0.0
    assert rank_agreement([0.5, 0.5], [0.5, 0.5]) == 1.0 and rank_agreement([0.5, 0.5], [0.4, 0.5]) == 0.0


def test_a_wrong_candidate_set_is_retried_then_a_failure():
    replies = iter([chat(judgements=json.dumps([{"candidate": 1, "reason": "x", "score": 5}])),  # one of two
                    chat(judgements=json.dumps([{"candidate": 1, "reason": "x", "score": 5},
                                                {"candidate": 2, "reason": "y", "score": 15}]))])  # out of range
    last = []  # DSPy's ChatAdapter asks once more (its JSON fallback) after a reply it cannot parse: repeat the last

    def reply(messages):
        last[:] = [next(replies, None) or last[0]]
        return last[0]

    judge = RewardModule("r", judge_lm=scripted_lm(reply), mode="group", retries=1, failure_score=0.25)
    results = judge.score_group(EXAMPLES[0], [dspy.Prediction(answer="x"), dspy.Prediction(answer="y")])
    assert [r.total for r in results] == [0.25, 0.25] and all(r.failed for r in results)
    assert judge.stats.failures == 1 and judge.stats.lm_attempts == 2
    assert sum(judge.stats.errors.values()) == 2  # the wrong candidate set, then the score out of range


def test_lenient_reading_of_numbered_lines():
    judge = RewardModule("r", judge_lm=scripted_lm(lambda m: "[1] weak answer 2\n[2] good: 9"), mode="group")
    assert judge.judge_group(inputs="q", outputs=["x", "y"]).failed is False
    assert sorted(judge.judge_group(inputs="q", outputs=["x", "y"]).scores) == [0.2, 0.9]


def test_weighted_reward_with_a_group_judge_is_a_group_reward():
    judge = RewardModule("r", judge_lm=scripted_lm(fair_reply), mode="group", output_fields=["answer"], name="judge")
    reward = WeightedReward(judge=(judge, 0.5), exact=(lambda e, p, t=None: float(p.answer == e.answer), 0.5))
    assert scores_groups(reward) and not scores_groups(RewardModule("r", judge_lm=judge.judge_lm))
    results = reward.score_group(EXAMPLES[0], [dspy.Prediction(answer="Paris"), dspy.Prediction(answer="Lyon")])
    assert [r.components for r in results] == [{"judge": content_score("Paris"), "exact": 1.0},
                                              {"judge": content_score("Lyon"), "exact": 0.0}]
    assert judge.stats.groups == 1


# ----------------------------------------------------------------------------------------------- the rollout engine
class Echo(dspy.Module):
    """One real LM call per run whose raw text is the answer: a random model's text never fails to parse."""

    def forward(self, question):
        return dspy.Prediction(answer=dspy.settings.lm(f"Answer briefly: {question}")[0])


@pytest.fixture(scope="module")
def tiny_task_lm(tiny_model_dir):
    from dspyrl.lm import local_lm

    return local_lm(str(tiny_model_dir), max_tokens=6, temperature=1.0)


def test_rollouts_call_a_group_judge_once_per_group_on_the_tiny_model(tiny_task_lm, tiny_model_dir):
    from dspyrl.lm import local_lm

    # room for every candidate's entry: the reply is decoded under the judgements' grammar (the judge's default
    # format on a local model), so even a random model's verdict parses
    judge_lm = local_lm(str(tiny_model_dir), max_tokens=400, temperature=1.0)
    judge = RewardModule("Is the answer right?", judge_lm=judge_lm, mode="group", retries=1, failure_score=0.125)
    replies = ReplyRecorder()
    with dspy.context(callbacks=[replies]):
        batch = run_rollouts(Echo(), EXAMPLES, judge, group_size=4, lm=tiny_task_lm, num_threads=4, progress=False)
    assert batch.failures == 0 and len(batch.rollouts) == 12
    assert judge.stats.groups == 3  # one group judgement per example, not one per output
    assert judge.stats.lm_attempts == 3 and judge.stats.failures == 0 and batch.reward_failures == 0
    # judge tokens are the judge's: counted in its stats, not in the task's batch counters
    assert judge.stats.prompt_tokens > 0 and judge.stats.lm_calls == 3
    assert batch.lm_calls == 12
    # each output got the score its shown number got in the judge's own reply, wherever the shuffle put it
    checked = 0
    for prompt, reply in replies.calls:
        given = {e["candidate"]: e["score"] / 10 for e in json.loads(reply.split("judgements: ", 1)[1])}
        shown = dict(shown_candidates(prompt))
        assert sorted(given) == sorted(shown) == list(range(1, len(shown) + 1))
        index = next(i for i, e in enumerate(EXAMPLES) if f"question: {e.question}\n" in prompt)
        for rollout in (r for r in batch.rollouts if r.example_index == index):
            number = next(k for k, text in shown.items() if text == rollout.prediction.answer.strip())
            assert rollout.reward.total == given[number]
            checked += 1
    assert checked == 12 and len(replies.calls) == 3


class ReplyRecorder(dspy.utils.callback.BaseCallback):
    """(last user message, reply text) of every LM call."""

    def __init__(self):
        self.calls, self._prompts, self._lock = [], {}, threading.Lock()

    def on_lm_start(self, call_id, instance, inputs):
        from dspyrl.lm.local import request_to_messages

        request = inputs.get("prompt")  # the formats call the LM with one canonical Request
        if hasattr(request, "config"):
            self._prompts[call_id] = last_user(request_to_messages(request))

    def on_lm_end(self, call_id, outputs, exception=None):
        prompt = self._prompts.pop(call_id, None)
        if prompt is not None and exception is None and "candidates" in prompt:
            with self._lock:
                self.calls.append((prompt, outputs.text))


# ----------------------------------------------------------------------------------------------- over HTTP
def shown_outputs_judge(model_dir):
    """A real LocalEngine (tokenizer, context checks) behind `dspyrl serve` whose replies are a fair judgement of what
    the prompt shows, computed instead of sampled from the random model; it counts the requests."""
    from dspyrl.lm.local import LocalEngine

    class ShownOutputsJudge(LocalEngine):
        requests = 0
        _count_lock = threading.Lock()

        def generate(self, messages, n=1, settings=None, **kwargs):
            with self._count_lock:
                self.requests += 1
            text = fair_reply(messages)
            return [Generation(text, 50, 20, "stop") for _ in range(n)]

    return ShownOutputsJudge(str(model_dir))


def test_group_judge_over_http_maps_scores_back_and_makes_one_call_per_group(tiny_task_lm, tiny_model_dir):
    from dspyrl.lm import openai_compatible
    from dspyrl.lm.server import serve_in_thread

    engine = shown_outputs_judge(tiny_model_dir)
    handle = serve_in_thread(engine=engine, served_name="judge")
    try:
        judge_lm = openai_compatible(handle.base_url, "judge", temperature=0.0, cache=False)
        judge = RewardModule("r", judge_lm=judge_lm, mode="group", output_fields=["answer"])
        batch = run_rollouts(Echo(), EXAMPLES, judge, group_size=4, lm=tiny_task_lm, num_threads=4, progress=False)
    finally:
        handle.stop()
    assert engine.requests == 3 and judge.stats.groups == 3 and judge.stats.lm_calls == 3
    assert batch.reward_failures == 0
    for rollout in batch.rollouts:  # each output got the score of its own text, wherever it was shown
        assert rollout.reward.total == content_score(rollout.prediction.answer)
    assert judge.stats.prompt_tokens == 150 and judge.stats.completion_tokens == 60


def test_tiny_model_judge_over_http_is_retried_then_counted(tiny_model_dir):
    from dspyrl.lm import openai_compatible
    from dspyrl.lm.server import serve_in_thread

    handle = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    try:
        judge_lm = openai_compatible(handle.base_url, "tiny", temperature=0.0, max_tokens=12, cache=False)
        judge = RewardModule("r", judge_lm=judge_lm, mode="group", retries=2)
        results = judge.score_group(EXAMPLES[1], [dspy.Prediction(answer=a) for a in ("Rome", "Milan", "Rome")])
    finally:
        handle.stop()
    assert all(r.failed and r.total == 0.0 for r in results)
    assert judge.stats.groups == 1 and judge.stats.lm_attempts == 3 and judge.stats.failures == 1
    assert judge.stats.prompt_tokens > 0  # usage came back over HTTP and was counted as the judge's


def test_lora_grpo_reward_function_groups_a_trl_batch_by_example():
    """TRL hands the reward function a whole batch (prompts × G); a group reward sees each example's group once."""
    from dspyrl.optim.weights.grpo import PredictorReward

    judge = RewardModule("r", judge_lm=scripted_lm(fair_reply), mode="group", output_fields=["answer"])
    signature = dspy.Signature("question -> answer")
    reward_fn = PredictorReward(judge, EXAMPLES, signature, dspy.ChatAdapter(), failure_reward=-1.0, num_threads=2)
    answers = ["Paris", "Paris is it", "Lyon", "nonsense without fields", "Rome", "Rome!", "Milan x", "R"]
    completions = [[{"role": "assistant", "content": a if a.startswith("nonsense") else chat(answer=a)}]
                   for a in answers]
    rewards = reward_fn(prompts=[None] * 8, completions=completions, example_index=[0, 0, 0, 0, 1, 1, 1, 1])
    assert judge.stats.groups == 2  # two examples, two judge calls for eight completions
    assert rewards[3] == -1.0  # the unparseable completion keeps the failure reward and is not shown to the judge
    assert [r for i, r in enumerate(rewards) if i != 3] == [content_score(a) for i, a in enumerate(answers) if i != 3]
