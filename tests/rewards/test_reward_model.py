"""RewardModel on the tiny random model: trained from pairs whose chosen output always contains a marker word, it
orders held-out pairs (on prompts it never saw) well above chance, loads back from its folder (safetensors, no
pickle), scores in batches, and is called once per group by the rollout engine."""

from __future__ import annotations

import random

import dspy
import pytest

from dspyrl.errors import ConfigError, ModelError
from dspyrl.rewards.reward_model import (META, RewardModel, RewardModelConfig, reward_pairs, split_pairs,
                                         train_reward_model)

WORDS = "the movie was great boring long film acting answer question short plus minus".split()
MARKER = "Paris"


def marker_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    phrase = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"prompt": [{"role": "user", "content": f"question: {phrase(5)} ({i})"}],
             "chosen": f"{phrase(3)} {MARKER} {phrase(1)}", "rejected": phrase(5)} for i in range(n)]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm"
    config = RewardModelConfig(model=str(tiny_model_dir), out=str(out), steps=24, batch_size=8, held_out=0.25, seed=0)
    return train_reward_model(marker_pairs(48), config, progress=False)


def test_learns_the_marker_and_measures_it_on_held_out_prompts(trained):
    assert trained.train_pairs == 36 and trained.held_out_pairs == 12
    assert trained.held_out_accuracy >= 0.9  # chance is 0.5
    assert trained.held_out_accuracy > trained.accuracy_before


def test_folder_is_safetensors_and_loads_back_scoring_in_batches(trained):
    from pathlib import Path

    folder = Path(trained.path)
    files = {p.name for p in folder.rglob("*") if p.is_file()}
    assert {META, "adapter_model.safetensors", "adapter_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    model = RewardModel(folder, batch_size=4)
    example = dspy.Example(question="the film was short (99)").with_inputs("question")
    fresh = marker_pairs(3, seed=7)  # outputs like the training ones, never seen
    preds = [dspy.Prediction(answer=p[key]) for p in fresh for key in ("chosen", "rejected")]
    results = model.score_group(example, preds)
    assert model.forward_passes == 2 and model.scored == 6  # 6 outputs in batches of 4
    with_marker = [r.total for r, p in zip(results, preds) if MARKER in p.answer]
    without = [r.total for r, p in zip(results, preds) if MARKER not in p.answer]
    assert sum(with_marker) / 3 > sum(without) / 3
    assert all(0.0 < r.total < 1.0 and r.components == {"reward_model": r.total} for r in results)
    # batching does not change a score: one at a time gives the same numbers
    single = [model(example, p).total for p in preds]
    assert single == pytest.approx([r.total for r in results], abs=1e-5)


def test_rollouts_score_a_group_in_one_call(trained, tiny_model_dir):
    from dspyrl.lm import local_lm
    from dspyrl.rollout import run_rollouts
    from tests.rewards.test_group_judge import Echo

    model = RewardModel(trained.path, batch_size=16)
    examples = [dspy.Example(question=q).with_inputs("question") for q in ("one", "two", "three")]
    lm = local_lm(str(tiny_model_dir), max_tokens=6, temperature=1.0)
    batch = run_rollouts(Echo(), examples, model, group_size=4, lm=lm, num_threads=3, progress=False)
    assert batch.failures == 0 and model.forward_passes == 3 and model.scored == 12
    pairs = reward_pairs(batch.rollouts, examples)
    assert pairs and all(p["gap"] > 0 and p["prompt"][0]["content"].startswith("question: ") for p in pairs)


def test_split_keeps_each_prompt_on_one_side():
    pairs = marker_pairs(10) + marker_pairs(10)  # every prompt twice
    train, held = split_pairs(pairs, 0.3, seed=1)
    assert len(held) == 6 and len(train) == 14
    assert not {str(p["prompt"]) for p in train} & {str(p["prompt"]) for p in held}


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ModelError, match="not a reward model folder"):
        RewardModel(tmp_path)
    with pytest.raises(ConfigError, match="at least 2 preference pairs"):
        train_reward_model(marker_pairs(1), RewardModelConfig(out=str(tmp_path / "rm")))
    with pytest.raises(ConfigError, match="held_out"):
        RewardModelConfig(held_out=1.5)
