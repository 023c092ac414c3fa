"""LoRA GRPO through TRL on a real tiny random Llama (tests/tiny_model.py): learning, adapters, resume, bad input.

The tiny model is untrained, so it cannot follow DSPy's `[[ ## field ## ]]` format; `RawAdapter` (the whole completion
is the one output field) keeps the reward about the text itself. With `modules_to_save=["lm_head"]` a few dozen steps
at a high learning rate visibly move a "prefer digits" reward; LoRA alone barely moves a random model.
"""

from __future__ import annotations

import json

import dspy
import pytest

from dspyrl.errors import ConfigError
from dspyrl.lm import local_lm
from dspyrl.optim.weights.grpo import LoraGRPO, ProgramRollouts, LoraGRPOConfig, predictor_messages
from dspyrl.optim.weights.base import load_trainable_model, lora_config, make_args, save_adapter


class RawAdapter(dspy.ChatAdapter):
    """Formats like ChatAdapter; parses the whole completion as every output field (the tiny model knows no format)."""

    def parse(self, signature, completion):
        return {name: completion for name in signature.output_fields}


def digit_share(example, pred, trace=None) -> float:
    text = str(getattr(pred, "answer", "") or "")
    return sum(ch.isdigit() for ch in text) / max(1, len(text))


def questions(n: int = 8) -> list[dspy.Example]:
    return [dspy.Example(question=f"what is {i} plus {i}?", answer=str(2 * i)).with_inputs("question") for i in range(n)]


class TwoSteps(dspy.Module):
    """Two predictors, the second reading the first's output: the multi-predictor case."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.final = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.final(question=question, draft=draft)


def fast(**overrides) -> dict:
    settings = dict(learning_rate=0.05, max_completion_length=8, beta=0.0, modules_to_save=["lm_head"], lora_r=4,
                    num_threads=2, progress=False)
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=8)


def test_digit_reward_rises_in_predictor_mode(tiny_lm, tmp_path):
    optimizer = LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), steps=14, run_dir=tmp_path / "run", **fast())
    optimized = optimizer.compile(dspy.Predict("question -> answer"), trainset=questions(), valset=questions(4))

    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 15))
    rewards = [m["reward_mean"] for m in metrics]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    assert {"loss", "frac_zero_std", "failure_rate", "wall_s"} <= set(metrics[-1])
    assert optimizer.result.details["rollout"] == "predictor"
    assert optimizer.result.val_after > optimizer.result.val_before
    # The optimized program runs on the local model with the saved adapter.
    engine = optimized.named_predictors()[0][1].lm.engine
    assert engine.adapter == str(tmp_path / "run" / "adapter")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    with dspy.context(adapter=RawAdapter()):
        answer = optimized(question="what is 3 plus 3?").answer
    assert digit_share(None, dspy.Prediction(answer=answer)) > 0.5


def test_trl_prompt_is_the_formats_rendering_of_the_predictor_call(tiny_lm):
    predictor = dspy.Predict("question -> answer")
    predictor.demos = [dspy.Example(question="what is 1 plus 1?", answer="2")]
    example = questions(1)[0]
    messages = predictor_messages(predictor, dspy.ChatAdapter(), example)
    assert messages == dspy.ChatAdapter().format(predictor.signature, predictor.demos, {"question": example.question})
    assert any("what is 1 plus 1?" in m["content"] for m in messages)  # the demo is in the prompt
    with pytest.raises(ConfigError, match="input field"):
        predictor_messages(predictor, dspy.ChatAdapter(), dspy.Example(query="x").with_inputs("query"))


def test_program_rollouts_group_calls_per_predictor(tiny_model_dir, tiny_lm):
    """TRL's rollout_func: the g-th row of (example, predictor k) is predictor k's call in run g, with run g's reward."""
    model, tokenizer = load_trainable_model(str(tiny_model_dir))

    class Trainer:  # the two attributes rollout_func reads from TRL's trainer
        class accelerator:
            @staticmethod
            def unwrap_model(m):
                return m

    Trainer.model = model
    cfg = LoraGRPOConfig(max_completion_length=8, num_threads=2, temperature=1.0)
    rollouts = ProgramRollouts(TwoSteps(), questions(2), digit_share, RawAdapter(), str(tiny_model_dir), tokenizer, cfg)
    prompts = [json.dumps({"example": i, "predictor": p}) for i in (0, 1) for p in ("draft", "final") for _ in range(3)]
    out = rollouts(prompts, Trainer)

    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["dspyrl_reward"]) == 12
    texts = [tokenizer.decode(ids) for ids in out["prompt_ids"]]
    for row, prompt in enumerate(prompts):
        example, predictor = json.loads(prompt)["example"], json.loads(prompt)["predictor"]
        assert f"what is {example} plus {example}?" in texts[row]
        asks_for = "answer" if predictor == "final" else "draft"  # the user turn names the predictor's output field
        assert f"starting with the field `[[ ## {asks_for} ## ]]`" in texts[row].split("<|im_start|>user")[-1]
    # One set of 3 runs per example, shared by both predictors: rewards agree row by row.
    for example in (0, 1):
        base = example * 6
        assert out["dspyrl_reward"][base:base + 3] == out["dspyrl_reward"][base + 3:base + 6]
    assert all(r is not None for r in out["dspyrl_reward"])
    assert rollouts.pop_metrics()["failure_rate"] == 0.0


def test_two_predictor_program_trains_through_rollout_func(tiny_lm, tmp_path):
    """End to end through TRL's rollout_func. (Whether the reward rises here depends on exact sampled token ids: with
    re-tokenized text a random byte-level model's garbage bytes do not round-trip; see ProgramRollouts.)"""
    optimizer = LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), steps=4, run_dir=tmp_path / "run", **fast())
    optimized = optimizer.compile(TwoSteps(), trainset=questions(), valset=questions(4))
    assert optimizer.result.details == {"predictors": ["draft", "final"], "rollout": "program", "trainset_size": 8}
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(0.0 <= m["reward_mean"] <= 1.0 and m["failure_rate"] == 0.0 for m in metrics)
    assert metrics[0]["completions/mean_length"] > 0
    assert all(p.lm.engine.adapter == str(tmp_path / "run" / "adapter") for _, p in optimized.named_predictors())
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))["base_model.model.lm_head.weight"]
    assert not bool((trained == tiny_lm.engine.model.lm_head.weight.detach()).all())  # the updates reached the weights


def test_saved_adapter_loads_back_with_identical_greedy_output(tiny_model_dir, tmp_path):
    import torch
    from peft import get_peft_model

    from dspyrl.lm.models import load_model

    base, tokenizer = load_trainable_model(str(tiny_model_dir))
    config = lora_config(4, 8, 0.0, "all-linear", ["lm_head"])
    config.init_lora_weights = False  # random B: the adapter changes the outputs from the first token
    torch.manual_seed(1)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        peft_model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(3.0)
    peft_model.eval()
    folder = save_adapter(peft_model, tmp_path / "adapter")

    ids = tokenizer("<|im_start|>user\nwhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")
    greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        expected = peft_model.generate(**ids, **greedy)[0].tolist()
        loaded, _ = load_model(str(tiny_model_dir), adapter=str(folder))
        assert loaded.generate(**ids, **greedy)[0].tolist() == expected
        plain, _ = load_model(str(tiny_model_dir))
        assert plain.generate(**ids, **greedy)[0].tolist() != expected  # the adapter matters
    # The same text through the DSPy LM with the adapter (and through `dspyrl serve --adapter`, over HTTP).
    from dspyrl.lm.server import serve_in_thread
    from dspyrl.lm.hosted import openai_compatible

    messages = [{"role": "user", "content": "what is 2 plus 2?"}]
    in_process = local_lm(str(tiny_model_dir), adapter=str(folder), max_tokens=12, cache=False)(messages=messages)[0]
    assert in_process == tokenizer.decode(expected[ids["input_ids"].shape[1]:], skip_special_tokens=True)
    server = serve_in_thread(str(tiny_model_dir), adapter=str(folder))
    try:
        served = openai_compatible(server.base_url, "tiny", max_tokens=12, temperature=0.0, cache=False)
        assert served(messages=messages)[0] == in_process
    finally:
        server.stop()


def test_interrupted_run_resumes_to_the_same_adapter(tiny_lm, tmp_path):
    from safetensors.torch import load_file

    class Interrupt(Exception):
        pass

    class StopAt:
        def on_step_end(self, metrics):
            if metrics["step"] == 4:
                raise Interrupt

    settings = fast(steps=6, save_every=3, beta=0.02)
    program, train = dspy.Predict("question -> answer"), questions()
    LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "a", **settings).compile(program, trainset=train)
    with pytest.raises(Interrupt):
        LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "b", callbacks=[StopAt()],
                 **settings).compile(program, trainset=train)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 3
    with pytest.raises(ConfigError, match="already holds a run"):  # no silent overwrite
        LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "b", **settings)\
            .compile(program, trainset=train)
    LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "b", resume=True, **settings)\
        .compile(program, trainset=train)

    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # the interrupted step 4 is logged once
    uninterrupted = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert uninterrupted.keys() == resumed.keys()
    assert all(bool((uninterrupted[k] == resumed[k]).all()) for k in uninterrupted)  # bit for bit
    pickles = [p for p in (tmp_path / "b").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert pickles == []


def test_hosted_model_cannot_be_lora_trained():
    program = dspy.Predict("question -> answer")
    program.set_lm(dspy.LM("openrouter/meta-llama/llama-3.1-8b-instruct"))
    with pytest.raises(ConfigError) as err:
        LoraGRPO(digit_share, progress=False).compile(program, trainset=questions())
    assert "hosted model" in str(err.value) and "\n" not in str(err.value)


def test_settings_are_checked_and_trl_fields_pass_through():
    from trl import GRPOConfig

    with pytest.raises(ConfigError, match="unknown lora-grpo setting"):
        LoraGRPO(digit_share, stepz=3)
    with pytest.raises(ConfigError, match="rollout"):
        LoraGRPOConfig(rollout="predictor").rollout_mode(2)
    args = make_args(GRPOConfig, {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False, "max_steps": 3},
                     {"vllm_mode": "colocate", "num_iterations": 2, "gradient_checkpointing": True})
    assert (args.vllm_mode, args.num_iterations, args.gradient_checkpointing) == ("colocate", 2, True)
    with pytest.raises(ConfigError, match="unknown GRPOConfig field"):
        make_args(GRPOConfig, {"output_dir": "/tmp/x"}, {"vllm_moed": "colocate"})


def test_cli_finetune_refuses_a_hosted_model(capsys):
    from dspyrl.cli import main

    code = main(["finetune", "sentiment", "--model", "openai-compatible:http://127.0.0.1:9/v1:some-model", "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dspyrl finetune: error:") and "hosted model" in err and "\n" not in err


def test_cli_finetune_writes_a_run_with_a_servable_adapter(tiny_model_dir, tmp_path, capsys):
    from dspyrl.cli import main

    out = tmp_path / "run"
    code = main(["finetune", "sentiment", "--model", str(tiny_model_dir), "--steps", "2", "--max-tokens", "8",
                 "--format", "compact", "--num-generations", "2", "--threads", "2", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["format"], summary["steps"]) == ("grpo", "compact", 2)
    assert summary["rollout"] == "predictor"
    scores = summary["scores"]  # summary.json's one schema (dspyrl.runs.SUMMARY_SCHEMA)
    assert {"score", "n", "failures"} <= set(scores["test_before"]) and scores["test_after"]["n"] == 14
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "program.json").is_file()
    assert json.loads((out / "program.json").read_text())["dspyrl_format"] == "compact"  # as it was trained
    assert [m["step"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    printed = capsys.readouterr().out
    assert "LoRA GRPO" in printed and f"--adapter {out / 'adapter'}" in printed.replace("\n", "")


@pytest.mark.slow
def test_smollm2_lora_grpo_two_steps_end_to_end(tmp_path):
    """The real embedded model: two steps of math_xml, the adapter saved, the program answering with it."""
    from dspyrl_programs import math_xml

    train = math_xml.load_examples()[:4]
    lm = local_lm("smollm2", max_tokens=48)
    optimizer = LoraGRPO(math_xml.build_reward(), lm=lm, steps=2, max_completion_length=48, run_dir=tmp_path / "run",
                         progress=False)
    optimized = optimizer.compile(math_xml.build_program(), trainset=train)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    prediction = optimized(question=train[0].question)
    assert isinstance(prediction.response, str)
