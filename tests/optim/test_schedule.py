"""The prompts → weights → prompts schedule on the real tiny random Llama: phases chain, one run folder, resume mid-phase."""

from __future__ import annotations

import json

import dspy
import pytest

from dspyrl.errors import ConfigError
from dspyrl.lm import local_lm
from dspyrl.optim.weights.dpo import LoraDPOConfig
from dspyrl.optim.prompts.grpo import GRPOConfig
from dspyrl.optim.weights.grpo import LoraGRPOConfig
from dspyrl.optim.schedule import Phase, Schedule, parse_phases
from tests.optim.weights.test_grpo import RawAdapter, digit_share, questions

LORA = dict(learning_rate=0.05, max_completion_length=8, beta=0.0, modules_to_save=["lm_head"], lora_r=4, num_threads=2)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=8)


def test_parse_phases():
    assert parse_phases("prompts, lora,prompts") == [Phase("prompts"), Phase("lora"), Phase("prompts")]
    assert parse_phases(["dpo", ("lora", {"steps": 3})]) == [Phase("dpo"), Phase("lora", {"steps": 3})]
    with pytest.raises(ConfigError, match="unknown schedule phase 'weights'"):
        parse_phases("prompts,weights")
    with pytest.raises(ConfigError, match="no phases"):
        parse_phases([])


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompts_lora_prompts_resumes_inside_the_lora_phase(tiny_lm, tmp_path):
    class Interrupt(Exception):
        pass

    class StopInLora:
        def on_step_end(self, metrics):
            if metrics.get("phase") == "lora-grpo" and metrics["step"] == 2:
                raise Interrupt

    def schedule(**kwargs):
        return Schedule(digit_share, "prompts,lora,prompts", lm=tiny_lm, format=RawAdapter(),
                        prompts=GRPOConfig(max_metric_calls=10, batch_size=2, group_size=2, num_threads=2),
                        lora=LoraGRPOConfig(steps=4, save_every=1, **LORA), run_dir=tmp_path / "run", progress=False,
                        **kwargs)

    program, train, val = dspy.Predict("question -> answer"), questions(6), questions(2)
    with pytest.raises(Interrupt):
        schedule(callbacks=[StopInLora()]).compile(program, trainset=train, valset=val)
    run = tmp_path / "run"
    assert (run / "1-prompts" / "program.json").is_file()
    assert json.loads((run / "2-lora" / "checkpoint.json").read_text())["step"] == 2  # written before callbacks run
    first_phase_metrics = (run / "1-prompts" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        schedule().compile(program, trainset=train, valset=val)

    resumed = schedule(resume=True)
    optimized = resumed.compile(program, trainset=train, valset=val)
    assert [p["kind"] for p in resumed.phases_done] == ["prompts", "lora", "prompts"]
    assert (run / "1-prompts" / "metrics.jsonl").read_text() == first_phase_metrics  # the finished phase did no work
    assert [m["step"] for m in _lines(run / "2-lora" / "metrics.jsonl")] == [1, 2, 3, 4]
    # The last prompt phase optimized prompts for the adapted model.
    third = json.loads((run / "3-prompts" / "config.json").read_text())
    assert third["lm"].startswith(f"local/{tiny_lm.engine.model_spec}+{run / '2-lora' / 'adapter'}@")
    # The result is the earliest phase output no later one beats with paired evidence; the evidence is recorded.
    record = json.loads((run / "checkpoint.json").read_text())
    assert [entry["phase"] for entry in record["selection"]] == [1, 2, 3]
    adopted = [entry for entry in record["selection"] if entry["adopted"]]
    assert all(entry["vs_incumbent"]["ci_low"] > 0 for entry in adopted)
    assert record["best_phase"] == (adopted[-1]["phase"] if adopted else 0)
    assert (run / "program.json").is_file()
    if record["best_phase"] >= 2:
        assert next(p for _, p in optimized.named_predictors()).lm.engine.adapter == str(run / "2-lora" / "adapter")


def test_dpo_phase_continues_the_adapter_of_the_lora_phase(tiny_lm, tmp_path):
    schedule = Schedule(digit_share, "lora,dpo", lm=tiny_lm, format=RawAdapter(),
                        lora=LoraGRPOConfig(steps=2, **{**LORA, "learning_rate": 1e-3}),  # samples still differ
                        dpo=LoraDPOConfig(steps=2, batch_size=2, learning_rate=1e-2, lora_r=4, num_threads=2),
                        run_dir=tmp_path / "run", progress=False)
    schedule.compile(dspy.Predict("question -> answer"), trainset=questions(6), valset=questions(2))
    dpo_config = json.loads((tmp_path / "run" / "2-dpo" / "config.json").read_text())
    assert dpo_config["start_adapter"] == str(tmp_path / "run" / "1-lora" / "adapter")
    assert (tmp_path / "run" / "2-dpo" / "adapter" / "adapter_model.safetensors").is_file()
    assert len(_lines(tmp_path / "run" / "2-dpo" / "metrics.jsonl")) == 2


def test_prompts_phase_after_lora_runs_on_the_tuned_weights(tiny_lm, tmp_path, monkeypatch):
    """The prompts phase after a LoRA phase is handed the adapted LM, every LM call it makes is served by the model with
    that adapter, and the weights in that model are the trained ones (not PEFT's identity start)."""
    import torch
    from dspy.utils.callback import BaseCallback
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from dspyrl.optim.prompts.grpo import GRPO

    seen = {"phase_lms": [], "engines": [], "inside": False}
    original_compile = GRPO.compile

    def recording_compile(self, *args, **kwargs):
        seen["phase_lms"].append(self.lm)
        seen["inside"] = True
        try:
            return original_compile(self, *args, **kwargs)
        finally:
            seen["inside"] = False

    class EngineRecorder(BaseCallback):
        def on_lm_start(self, call_id, instance, inputs):
            if seen["inside"]:
                seen["engines"].append(getattr(instance, "engine", None))

    monkeypatch.setattr(GRPO, "compile", recording_compile)
    schedule = Schedule(digit_share, "lora,prompts", lm=tiny_lm, format=RawAdapter(),
                        prompts=GRPOConfig(max_metric_calls=6, batch_size=2, group_size=2, num_threads=2),
                        lora=LoraGRPOConfig(steps=3, save_every=0, **LORA), run_dir=tmp_path / "run", progress=False)
    with dspy.context(callbacks=[EngineRecorder()]):
        schedule.compile(dspy.Predict("question -> answer"), trainset=questions(6), valset=questions(2))
    adapter = tmp_path / "run" / "1-lora" / "adapter"
    (phase_lm,) = seen["phase_lms"]
    assert phase_lm is not tiny_lm and phase_lm.engine.adapter == str(adapter)
    assert seen["engines"] and all(engine is phase_lm.engine for engine in seen["engines"])
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    in_model = get_peft_model_state_dict(phase_lm.engine.model)
    lora_b = [name for name in saved if "lora_B" in name]
    assert lora_b and saved.keys() == in_model.keys()
    assert all(torch.equal(saved[name], in_model[name].cpu()) for name in saved)
    assert any(saved[name].abs().sum() > 0 for name in lora_b)  # B starts at zero: non-zero means trained


class FixedAnswers(dspy.Module):
    """Answers from a table, no LM call: a phase output whose valset scores the test sets exactly."""

    def __init__(self, answers):
        super().__init__()
        self.answers = answers

    def forward(self, question):
        return dspy.Prediction(answer=self.answers[question])


def test_a_later_phase_is_kept_only_with_paired_evidence(tiny_lm):
    def right(example, prediction, trace=None):
        return float(prediction.answer == example.answer)

    def candidates(val, better_on):
        start = FixedAnswers({ex.question: "wrong" for ex in val})
        later = FixedAnswers({ex.question: ex.answer if i < better_on else "wrong" for i, ex in enumerate(val)})
        return [(None, 0, start, tiny_lm), (None, 1, later, tiny_lm)]

    schedule = Schedule(right, "prompts,lora", lm=tiny_lm, progress=False)
    few = questions(3)  # better on 1 of 3 rows: within noise, the start stays (the old rule kept the later phase)
    schedule.selection = []
    mean, phase, _, _ = schedule._select(candidates(few, 1), few)
    assert (phase, mean) == (0, 0.0) and schedule.selection[0]["adopted"] is False
    many = questions(12)  # better on every row: supported, adopted
    schedule.selection = []
    mean, phase, _, _ = schedule._select(candidates(many, 12), many)
    assert (phase, mean) == (1, 1.0) and schedule.selection[0]["vs_incumbent"]["ci_low"] > 0
