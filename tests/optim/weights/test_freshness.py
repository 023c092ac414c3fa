"""Nothing stale: retrained weights saved to the same adapter folder are what the next load serves, and the LoRA
reward function scores in the caller's DSPy context (a judge that reads dspy.settings.lm sees the caller's LM)."""

from __future__ import annotations

import dspy
import torch

from dspyrl.lm import local_lm
from dspyrl.optim.weights.base import load_trainable_model, lora_config, save_adapter
from dspyrl.optim.weights.grpo import PredictorReward
from tests.optim.weights.test_grpo import RawAdapter

MESSAGES = [{"role": "user", "content": "what is 2 plus 2?"}]


def _save_random_adapter(model_dir, folder, seed: int):
    from peft import get_peft_model

    base, _ = load_trainable_model(str(model_dir))
    config = lora_config(4, 8, 0.0, "all-linear", ["lm_head"])
    config.init_lora_weights = False  # random B: the weights change the output from the first token
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        peft_model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(3.0 + seed)
    save_adapter(peft_model, folder)


def test_rewritten_adapter_folder_serves_the_new_weights_in_the_same_process(tiny_model_dir, tmp_path):
    folder = tmp_path / "adapter"
    _save_random_adapter(tiny_model_dir, folder, seed=1)
    first_lm = local_lm(str(tiny_model_dir), adapter=str(folder), max_tokens=12)  # cached: the DSPy cache is on
    first = first_lm(messages=MESSAGES)[0]
    _save_random_adapter(tiny_model_dir, folder, seed=2)  # "train more", save to the same path
    second_lm = local_lm(str(tiny_model_dir), adapter=str(folder), max_tokens=12)
    second = second_lm(messages=MESSAGES)[0]
    fresh = local_lm(str(tiny_model_dir), adapter=str(folder), max_tokens=12, cache=False)(messages=MESSAGES)[0]
    assert second_lm.engine is not first_lm.engine and second_lm.model != first_lm.model
    assert second == fresh and second != first


def test_lora_reward_function_sees_the_callers_dspy_context():
    caller_lm = dspy.LM("openai/the-callers-judge")
    seen = []

    def judge_like(example, pred, trace=None):
        seen.append(dspy.settings.lm)
        return 1.0

    examples = [dspy.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(4)]
    reward = PredictorReward(judge_like, examples, dspy.Signature("question -> answer"), RawAdapter(), 0.0,
                             num_threads=4)
    with dspy.context(lm=caller_lm):
        scores = reward(prompts=[""] * 4, completions=["1", "2", "3", "4"], example_index=[0, 1, 2, 3])
    assert scores == [1.0] * 4 and len(seen) == 4 and all(lm is caller_lm for lm in seen)


def test_a_bug_in_the_reward_stops_lora_scoring():
    def buggy(example, pred, trace=None):
        return example["label"]  # KeyError

    examples = [dspy.Example(question="q", answer="a").with_inputs("question")]
    reward = PredictorReward(buggy, examples, dspy.Signature("question -> answer"), RawAdapter(), 0.0, num_threads=1)
    try:
        reward(prompts=[""], completions=["x"], example_index=[0])
    except KeyError:
        return
    raise AssertionError("the reward's KeyError was swallowed")
