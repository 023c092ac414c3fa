"""DPO: train a LoRA adapter of a program's local model on preference pairs with TRL's DPOTrainer.

    optimized = LoraDPO(reward, steps=30, run_dir="runs/dpo").compile(program, trainset=train, valset=val)
    optimized = LoraDPO(pairs="prefs.jsonl", steps=30).compile(program)          # pairs written by a person or a judge

Where the pairs come from:
- from GRPO groups: every training example is run `group_size` times at `temperature` through dspyrl.rollout (the same
  rollouts and rewards as the prompt policy and LoRA GRPO); when the best and the worst run of an example differ in
  reward by more than `min_gap`, each predictor call of the best run becomes `chosen` and the same predictor's call in
  the worst run `rejected` — provided both calls saw the same prompt (DPO compares two answers to one prompt; in a
  multi-predictor program a later predictor's prompt differs when an earlier one answered differently, and such calls
  are skipped). The pairs are written to `<run>/pairs.jsonl`, so a resumed run trains on the same pairs.
- from a JSONL file of `{"prompt", "chosen", "rejected"}` rows: `prompt` is a string (sent as one user message) or a
  list of chat messages; `chosen` / `rejected` are strings. A malformed row is a one-line DataError naming the line.

Everything else (run folder, checkpoints without pickle, resume, the adapter, the optimized program, valset scores
before/after) is shared with LoRA GRPO: see dspyrl.optim.weights.base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError, DataError
from dspyrl.optim.weights import base, trl_callbacks
from dspyrl.runs import PAIRS  # the run folder names its files

_ROLES = ("system", "user", "assistant")


@dataclass
class LoraDPOConfig:
    """What shapes a DPO run (written to the run folder's config.json). TRL names where TRL has one."""

    steps: int = setting(30, "optimizer steps (TRL max_steps)", ge=1)
    batch_size: int = setting(4, "pairs per device per step", ge=1)
    gradient_accumulation_steps: int = setting(1, "optimizer steps' gradient accumulation (TRL's)", ge=1)
    learning_rate: float = setting(1e-4, "learning rate of the LoRA weights", gt=0)
    beta: float = setting(0.1, "DPO temperature: how far from the reference (the base model) the policy may move",
                          ge=0)
    loss_type: str = setting("sigmoid", "TRL's: sigmoid | ipo | hinge | ...")
    max_length: int | None = setting(1024, "prompt + answer tokens (TRL truncates beyond)", ge=1)
    lora_r: int = setting(16, "LoRA rank", ge=1)
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / r)", gt=0)
    lora_dropout: float = setting(0.0, "LoRA dropout", ge=0, le=1)
    target_modules: Any = setting("all-linear", "modules LoRA adapts (PEFT's target_modules)")
    modules_to_save: list[str] | None = setting(None, "e.g. [\"lm_head\"]: train it fully (kept tied to the embeddings)")
    group_size: int = setting(4, "runs per training example when pairs come from rollouts", ge=2)
    temperature: float = setting(1.0, "sampling temperature of those runs", ge=0)
    min_gap: float = setting(0.0, "best - worst reward must exceed this for a pair", ge=0)
    failure_reward: float = setting(0.0, "reward of an unparseable completion / a failed run")
    save_every: int = setting(10, "steps between checkpoints (0: none; the final adapter is always saved)", ge=0)
    num_threads: int = setting(4, "concurrent program runs", ge=1)
    seed: int = setting(0, "seed of the training", ge=0)
    trl_args: dict[str, Any] = setting(help="any other trl.DPOConfig field, passed through unchanged",
                                       default_factory=dict)

    def __post_init__(self):  # the ranges `dspyrl finetune` checks at parse time, for library callers too
        check_settings(self)


class LoraDPO(base.LocalWeightsOptimizer):
    """Preference optimization of LoRA weights (module docstring). `pairs`: a JSONL path or a list of pair dicts."""

    kind = "dpo"
    config_class = LoraDPOConfig

    def __init__(self, reward=None, config: LoraDPOConfig | None = None, *, pairs=None, **kwargs):
        super().__init__(reward, config, **kwargs)
        self.pairs = pairs

    def check(self, student, trainset) -> dict:
        if self.pairs is None and (not trainset or self.reward is None):
            raise ConfigError("DPO needs preference pairs: pass pairs= (a JSONL file) or a trainset and a reward to "
                              "build them from rollouts")
        if isinstance(self.pairs, (str, Path)):
            self.pairs = load_pairs(self.pairs)  # read and checked now: a bad file fails before anything runs
        return {"pairs_from": "file" if self.pairs is not None else "rollouts"}

    def train_weights(self, student, trainset, spec, start_adapter, format, lm, run, resume_from):
        from datasets import Dataset
        import trl

        cfg = self.config
        pairs_file = run.file(PAIRS)
        if resume_from is not None and pairs_file.exists():
            pairs = load_pairs(pairs_file)
        else:
            pairs = self.pairs if self.pairs is not None else self.pairs_from_rollouts(student, trainset, format, lm)
            run.write_jsonl(PAIRS, pairs)
        if not pairs:
            raise ConfigError(f"no preference pairs: in every group of {cfg.group_size} runs the best and worst reward "
                              f"were within min_gap={cfg.min_gap}",
                              hint="raise group_size or temperature, lower min_gap, or pass a pairs file")
        rows = [{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                 "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
        model, tokenizer = base.load_trainable_model(spec, start_adapter)
        settings = {**base.common_args(run.path / "trl", cfg.seed, self.report_to), "max_steps": cfg.steps,
                    "per_device_train_batch_size": cfg.batch_size,
                    "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
                    "learning_rate": cfg.learning_rate, "beta": cfg.beta, "loss_type": [cfg.loss_type],
                    "max_length": cfg.max_length}
        callback = trl_callbacks.run_callback(run, kind=self.kind, total_steps=cfg.steps, save_every=cfg.save_every,
                                            progress=self.progress, step_callbacks=self.step_callbacks,
                                            resume_from=resume_from, meter=self.meter)
        with trl_callbacks.quiet_trl():
            args = base.make_args(trl.DPOConfig, settings, cfg.trl_args)
            trainer = trl.DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer,
                                 peft_config=None if start_adapter else base.lora_config(
                                     cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules,
                                     cfg.modules_to_save))
            trl_callbacks.train(trainer, run, callback, resume_from)
            run.save_adapter(trainer.model)
        return callback.wall_s

    def pairs_from_rollouts(self, student, trainset, format, lm) -> list[dict]:
        """Run every example `group_size` times on `lm` and pair the best run against the worst (module docstring)."""
        from dspyrl.rollout import run_rollouts

        cfg = self.config
        batch = run_rollouts(student, trainset, self.reward, group_size=cfg.group_size, lm=lm, format=format,
                             num_threads=cfg.num_threads, progress=self.progress, temperature=cfg.temperature,
                             failure_reward=cfg.failure_reward, description="rollouts for DPO pairs")
        return preference_pairs(batch.rollouts, min_gap=cfg.min_gap)


def preference_pairs(rollouts, *, min_gap: float = 0.0) -> list[dict]:
    """Best-vs-worst pairs per example from scored rollouts (see the module docstring); failed runs take part (a
    failed run's completion may be the rejected one)."""
    from dspyrl.rollout import best_and_worst

    pairs = []
    for index, best, worst, gap in best_and_worst(rollouts, min_gap=min_gap):
        for chosen in best.calls:
            rejected = next((c for c in worst.calls
                             if c.predictor == chosen.predictor and c.messages == chosen.messages), None)
            if rejected is None or not chosen.completion or not rejected.completion:
                continue
            if chosen.completion == rejected.completion:
                continue
            pairs.append({"prompt": chosen.messages, "chosen": chosen.completion, "rejected": rejected.completion,
                          "predictor": chosen.predictor, "example_index": index, "gap": gap})
    return pairs


def load_pairs(path: str | Path) -> list[dict]:
    """Read `{prompt, chosen, rejected}` rows; prompts become chat messages. Bad rows raise a one-line DataError."""
    from dspyrl.data import DataSpec, load_examples

    path = Path(path).expanduser()
    spec = DataSpec(input_keys=("prompt",), required=("chosen", "rejected"), types={"chosen": str, "rejected": str},
                    id_key=None)
    examples = load_examples(path, spec)
    lines = _row_lines(path, len(examples))
    pairs = []
    for example, line in zip(examples, lines):
        pairs.append({"prompt": _prompt_messages(example["prompt"], str(path), line),
                      "chosen": example["chosen"], "rejected": example["rejected"]})
    return pairs


def _prompt_messages(prompt: Any, file: str, line: int) -> list[dict]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("is an empty string", file=file, line=line, field="prompt")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        for position, message in enumerate(prompt):
            if not (isinstance(message, dict) and message.get("role") in _ROLES
                    and isinstance(message.get("content"), str)):
                raise DataError(f"message {position} must be {{\"role\": one of {'/'.join(_ROLES)}, "
                                f"\"content\": text}}", file=file, line=line, field="prompt")
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise DataError(f"expected text or a list of chat messages, got {type(prompt).__name__}",
                    file=file, line=line, field="prompt")


def _row_lines(path: Path, count: int) -> list:
    """The file line of each row, for error messages (JSONL: non-blank lines; other formats: the row number)."""
    if path.suffix == ".jsonl":
        text = path.read_text(encoding="utf-8-sig")
        return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()][:count]
    return list(range(1, count + 1))


DPO = LoraDPO  # the name of the first release
