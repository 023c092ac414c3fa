"""DPO through TRL's DPOTrainer on the real tiny random Llama: pairs from a file or from rollouts, and bad pair files."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest

from dspyrl.errors import ConfigError, DataError
from dspyrl.lm import local_lm
from dspyrl.optim.weights.dpo import DPO, load_pairs, preference_pairs
from dspyrl.rewards.combine import RewardResult
from dspyrl.rollout import PredictorCall, Rollout
from tests.optim.weights.test_grpo import RawAdapter, digit_share, questions

DATA = Path(__file__).resolve().parents[2] / "data" / "dpo"


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=8)


def fast(**overrides) -> dict:
    settings = dict(learning_rate=1e-2, batch_size=2, modules_to_save=["lm_head"], lora_r=4, num_threads=2,
                    progress=False)
    settings.update(overrides)
    return settings


def test_dpo_on_a_few_pairs_lowers_its_loss(tiny_lm, tmp_path):
    optimizer = DPO(pairs=DATA / "good.jsonl", lm=tiny_lm, steps=8, run_dir=tmp_path / "run", **fast(batch_size=4))
    optimized = optimizer.compile(dspy.Predict("question -> answer"))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 8
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference at the start
    assert sum(losses[-2:]) / 2 < 0.5 * losses[0], losses
    assert metrics[-1]["reward_accuracy"] == 1.0 and metrics[-1]["reward_margin"] > 0
    assert optimizer.result.details == {"pairs_from": "file"}
    assert next(p for _, p in optimized.named_predictors()).lm.engine.adapter == str(tmp_path / "run" / "adapter")
    assert len((tmp_path / "run" / "pairs.jsonl").read_text().splitlines()) == 4


def test_pairs_from_rollouts_prefer_the_higher_reward(tiny_lm, tmp_path):
    optimizer = DPO(digit_share, lm=tiny_lm, format=RawAdapter(), steps=4, group_size=4, run_dir=tmp_path / "run",
                    **fast())
    optimizer.compile(dspy.Predict("question -> answer"), trainset=questions(), valset=questions(2))
    pairs = [json.loads(line) for line in (tmp_path / "run" / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "random samples of 8 tokens should differ in digit share"
    for pair in pairs:
        chosen = digit_share(None, dspy.Prediction(answer=pair["chosen"]))
        rejected = digit_share(None, dspy.Prediction(answer=pair["rejected"]))
        assert chosen - rejected == pytest.approx(pair["gap"]) and pair["gap"] > 0
        assert pair["prompt"][-1]["role"] == "user" and "plus" in pair["prompt"][-1]["content"]
    assert optimizer.result.details == {"pairs_from": "rollouts"}
    assert optimizer.result.val_before is not None and optimizer.result.val_after is not None


def _rollout(example, sample, reward, calls):
    return Rollout(example, sample, {}, None, calls, RewardResult(reward))


def _call(predictor, prompt, completion):
    return PredictorCall(predictor, [{"role": "user", "content": prompt}], completion, {"x": completion})


def test_preference_pairs_need_a_gap_and_the_same_prompt():
    rollouts = [
        _rollout(0, 0, 1.0, [_call("a", "p0", "good"), _call("b", "from good", "B good")]),
        _rollout(0, 1, 0.2, [_call("a", "p0", "bad"), _call("b", "from bad", "B bad")]),
        _rollout(1, 0, 0.5, [_call("a", "p1", "x")]),
        _rollout(1, 1, 0.5, [_call("a", "p1", "y")]),  # equal rewards: no pair
        _rollout(2, 0, 0.9, [_call("a", "p2", "same")]),
        _rollout(2, 1, 0.1, [_call("a", "p2", "same")]),  # identical answers: no pair
    ]
    pairs = preference_pairs(rollouts)
    assert [(p["predictor"], p["chosen"], p["rejected"]) for p in pairs] == [("a", "good", "bad")]
    assert pairs[0]["gap"] == pytest.approx(0.8)  # predictor b saw different prompts, so it gave no pair
    assert preference_pairs(rollouts, min_gap=0.8) == []


def test_pairs_file_rows_become_chat_prompts():
    pairs = load_pairs(DATA / "good.jsonl")
    assert len(pairs) == 4
    assert pairs[0]["prompt"] == [{"role": "user", "content": "what is 1 plus 1?"}]
    assert pairs[1]["prompt"][0] == {"role": "system", "content": "Answer with digits."}


@pytest.mark.parametrize("name, where, words", [
    ("bad_json.jsonl", "bad_json.jsonl:2", "invalid JSON"),
    ("missing_rejected.jsonl", "missing_rejected.jsonl:3", "field 'rejected'"),
    ("bad_prompt.jsonl", "bad_prompt.jsonl:2", "field 'prompt'"),
])
def test_bad_pairs_file_is_a_one_line_error(name, where, words):
    with pytest.raises(DataError) as err:
        load_pairs(DATA / name)
    message = str(err.value)
    assert where in message and words in message and "\n" not in message


def test_cli_finetune_dpo_with_a_bad_pairs_file(tiny_model_dir, capsys, tmp_path):
    from dspyrl.cli import main

    code = main(["finetune", "sentiment", "--model", str(tiny_model_dir), "--method", "dpo",
                 "--pairs", str(DATA / "bad_json.jsonl"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dspyrl finetune: error:") and "bad_json.jsonl:2" in err and "\n" not in err


def test_dpo_without_pairs_or_reward_is_refused(tiny_lm):
    with pytest.raises(ConfigError, match="preference pairs"):
        DPO(lm=tiny_lm, progress=False).compile(dspy.Predict("question -> answer"), trainset=questions())
