"""RewardModel: a Bradley–Terry reward model trained from preference pairs, usable everywhere a reward is.

    result = train_reward_model(load_pairs("pairs.jsonl"), RewardModelConfig(model="smollm2", out="runs/rm"))
    result.held_out_accuracy                     # share of held-out pairs it orders like the person/reward that made them
    reward = dspyrl.RewardModel("runs/rm")       # reward(example, pred) -> RewardResult; score_group batches a group

Training is TRL's `RewardTrainer` (loss -log σ(r_chosen - r_rejected)) on `AutoModelForSequenceClassification` over the
local model, with a PEFT LoRA adapter; the new one-logit `score` head is trained fully (`modules_to_save=["score"]`),
since LoRA on a random head could not learn it. The folder holds `reward_model.json` (base model, settings, accuracy)
and `adapter/` (PEFT safetensors, the score head included): no pickle, no copy of the base weights.

What the model reads is one chat: the pair's prompt messages, then the output as the assistant's turn. As a program's
reward the prompt is the example's inputs ("name: value" lines, as the LM judge shows them) and the output is the
prediction's fields (without the reasoning); `reward_pairs` builds pairs from rollouts in exactly that form (the best vs
the worst output of each group), so a model trained on them scores what it was trained on. A pairs file may hold any
prompt messages (DPO's `{prompt, chosen, rejected}` rows, read by the same `load_pairs`). Sequences are cut from the
left to `max_length` tokens: the score is read at the last token, so the output's end is what must stay.

The reward is σ(logit) in (0, 1), a monotone squash of the Bradley–Terry logit so means and tables read like other
rewards; GRPO's group-relative advantages depend only on the order within a group anyway. Scoring is batched: a group's
outputs go through the model in one forward pass (`score_group`, which the rollout engine and LoRA GRPO call once per
group); concurrent callers take turns on the model.
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError, ModelError
from dspyrl.rewards.combine import RewardResult

META = "reward_model.json"
ADAPTER = "adapter"


@dataclass(kw_only=True)
class RewardModelConfig:
    """How a reward model is trained (written to its folder's reward_model.json)."""

    model: str = setting("smollm2", "local base model: 'smollm2', a model folder or a cached Hugging Face id")
    out: str = setting("runs/rm", "folder for the reward model (reward_model.json + adapter/)")
    steps: int = setting(60, "optimizer steps", ge=1)
    batch_size: int = setting(8, "pairs per step", ge=1)
    learning_rate: float = setting(1e-3, "AdamW learning rate (LoRA + the score head)", gt=0)
    lora_r: int = setting(16, "LoRA rank", ge=1)
    lora_alpha: int = setting(32, "LoRA alpha", ge=1)
    max_length: int = setting(512, "tokens of prompt + output the model reads (cut from the left)", ge=8)
    held_out: float = setting(0.2, "share of prompts kept out of training to measure pairwise accuracy", ge=0, le=0.9)
    center_rewards: float = setting(0.01, "TRL center_rewards_coefficient: keeps logits near zero (0: off)", ge=0)
    seed: int = setting(0, "seed of the split, the score head's initialisation and the data order")
    force: bool = setting(False, "replace a reward model already in --out")
    trl_args: dict[str, Any] = field(default_factory=dict)  # any other trl.RewardConfig field, passed through

    def __post_init__(self):
        check_settings(self)


@dataclass
class RewardModelResult:
    path: str
    train_pairs: int
    held_out_pairs: int
    held_out_accuracy: float | None  # after training; None without held-out pairs
    accuracy_before: float | None  # the untrained (random) score head on the same pairs
    train_accuracy: float | None  # TRL's running accuracy over the last logged steps
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- the reward
class RewardModel:
    """A trained reward model as a reward `(example, pred, trace=None) -> RewardResult` (module docstring)."""

    scores_groups = True  # the rollout engine hands it a whole group: one batched forward pass

    def __init__(self, path: str | Path, *, batch_size: int = 16, output_fields: list[str] | None = None,
                 name: str = "reward_model"):
        self.path = Path(path).expanduser()
        meta_file = self.path / META
        if not meta_file.is_file():
            raise ModelError(f"{self.path} is not a reward model folder: it has no {META}",
                             hint="train one with: dspyrl train-reward PAIRS.jsonl --out FOLDER")
        self.meta = json.loads(meta_file.read_text())
        self.batch_size = max(1, int(batch_size))
        self.output_fields = output_fields
        self.name = name
        self.max_length = int(self.meta.get("max_length") or 512)
        self.model, self.tokenizer = _load_scorer(self.meta["model"], self.path / ADAPTER)
        self.model.eval()
        self.forward_passes = 0  # batched forward passes (tests and benchmarks read it)
        self.scored = 0  # outputs scored
        self._lock = threading.Lock()

    def __call__(self, example, pred, trace=None) -> RewardResult:
        return self.score_group(example, [pred])[0]

    def score_group(self, example, predictions: list) -> list[RewardResult]:
        prompt = example_prompt(example)
        logits = self.score([prompt] * len(predictions), [prediction_output(p, self.output_fields) for p in predictions])
        return [RewardResult(p, {self.name: p}) for p in (_sigmoid(x) for x in logits)]

    def score(self, prompts: list[list[dict]], outputs: list[str]) -> list[float]:
        """The Bradley–Terry logit of each (prompt messages, output), in batches of `batch_size`."""
        import torch

        encoded = [encode_chat(self.tokenizer, prompt, output, self.max_length) for prompt, output in zip(prompts, outputs)]
        logits: list[float] = []
        with self._lock, torch.no_grad():
            for start in range(0, len(encoded), self.batch_size):
                batch = self.tokenizer.pad({"input_ids": encoded[start:start + self.batch_size]}, return_tensors="pt")
                out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                logits += [float(x) for x in out.logits.squeeze(-1).reshape(-1)]
                self.forward_passes += 1
            self.scored += len(encoded)
        return logits

    def pairwise_accuracy(self, pairs: list[dict]) -> float | None:
        """Share of pairs whose chosen output scores above the rejected one (a tie counts half)."""
        return pairwise_accuracy(self.score, pairs)

    def __repr__(self) -> str:
        return f"RewardModel({str(self.path)!r}, base={self.meta.get('model')!r})"


def example_prompt(example) -> list[dict]:
    """The prompt a reward model reads for a program's example: its inputs as 'name: value' lines."""
    from dspyrl.rewards.judge import format_inputs

    inputs = example.inputs() if hasattr(example, "inputs") else example
    return [{"role": "user", "content": format_inputs(inputs if isinstance(inputs, str) else dict(inputs))}]


def prediction_output(pred, fields: list[str] | None = None) -> str:
    """The output a reward model reads for a prediction: what the LM judge sees (every field but the reasoning)."""
    from dspyrl.rewards.judge import prediction_text

    return prediction_text(pred, fields)


def encode_chat(tokenizer, prompt: list[dict], output: str, max_length: int) -> list[int]:
    """Token ids of prompt + output as the assistant's turn, through the model's chat template; the last
    `max_length` kept (training and scoring both encode through here)."""
    text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": output}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids[-max_length:])


def pairwise_accuracy(score, pairs: list[dict]) -> float | None:
    if not pairs:
        return None
    chosen = score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(pairs)


# ----------------------------------------------------------------------------------------------- pairs
def reward_pairs(rollouts, examples: list, *, output_fields: list[str] | None = None, min_gap: float = 0.0) -> list[dict]:
    """Best-vs-worst pairs per example from scored rollouts, in the form a RewardModel reads (module docstring).

    Unlike DPO's pairs (a predictor's formatted prompt and raw completion) these are the example's inputs and the
    prediction's fields, because that is what a reward sees. Failed runs are left out (a reward never sees them);
    equal outputs make no pair. The best and worst of a group are chosen as DPO chooses them (`best_and_worst`)."""
    from dspyrl.rollout import best_and_worst

    scored = [r for r in rollouts if r.prediction is not None and r.error is None]
    pairs = []
    for index, best, worst, gap in best_and_worst(scored, min_gap=min_gap):
        chosen, rejected = (prediction_output(r.prediction, output_fields) for r in (best, worst))
        if chosen != rejected:
            pairs.append({"prompt": example_prompt(examples[index]), "chosen": chosen, "rejected": rejected,
                          "example_index": index, "gap": gap})
    return pairs


def split_pairs(pairs: list[dict], held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) with every prompt on one side only, so held-out accuracy is on prompts never trained on."""
    by_prompt: dict[str, list[dict]] = {}
    for pair in pairs:
        by_prompt.setdefault(json.dumps(pair["prompt"], sort_keys=True), []).append(pair)
    keys = sorted(by_prompt)
    random.Random(seed).shuffle(keys)
    n_held = int(round(held_out * len(keys)))
    if held_out > 0 and len(keys) > 1:
        n_held = min(max(n_held, 1), len(keys) - 1)
    held = [p for k in keys[:n_held] for p in by_prompt[k]]
    train = [p for k in keys[n_held:] for p in by_prompt[k]]
    return train, held


# ----------------------------------------------------------------------------------------------- training
def train_reward_model(pairs: list[dict], config: RewardModelConfig | None = None, *, progress: bool = True,
                       step_callbacks=()) -> RewardModelResult:
    """Train a reward model on `pairs` ({prompt: messages, chosen, rejected}) and save it in `config.out`."""
    import time

    config = config or RewardModelConfig()
    out = Path(config.out)
    if (out / META).exists() and not config.force:
        raise ConfigError(f"{out} already holds a reward model", hint="choose another --out or pass --force")
    if len(pairs) < 2:
        raise ConfigError(f"a reward model needs at least 2 preference pairs, got {len(pairs)}")
    train, held = split_pairs(pairs, config.held_out, config.seed)
    started = time.perf_counter()
    from datasets import Dataset
    import trl
    from peft import LoraConfig
    from transformers import set_seed

    from dspyrl.optim.weights import base, trl_callbacks
    from dspyrl.runs import RunFolder, write_json_atomic

    run = RunFolder(out)
    run.write_config({"kind": "reward-model", **asdict(config)})
    (out / "metrics.jsonl").unlink(missing_ok=True)
    set_seed(config.seed)  # the new score head's initial weights
    model, tokenizer = _load_scorer(config.model, None)
    peft_config = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                             target_modules="all-linear", modules_to_save=["score"])
    rows = [{"chosen_ids": encode_chat(tokenizer, p["prompt"], p["chosen"], config.max_length),
             "rejected_ids": encode_chat(tokenizer, p["prompt"], p["rejected"], config.max_length)} for p in train]
    settings = {**base.common_args(out / "trl", config.seed), "max_steps": config.steps,
                "per_device_train_batch_size": config.batch_size, "learning_rate": config.learning_rate,
                "gradient_checkpointing": False,  # TRL's default; on CPU and small models it only costs time
                "max_length": None,  # encode_chat already cut every sequence
                "center_rewards_coefficient": config.center_rewards or None}
    callback = trl_callbacks.run_callback(run, kind="reward-model", total_steps=config.steps, save_every=0,
                                        progress=progress, step_callbacks=step_callbacks)
    with trl_callbacks.quiet_trl():
        args = base.make_args(trl.RewardConfig, settings, config.trl_args)
        trainer = trl.RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                    processing_class=tokenizer, peft_config=peft_config)
        before = pairwise_accuracy(_scorer_fn(trainer.model, tokenizer, config.max_length), held)
        trl_callbacks.train(trainer, run, callback, None)
        base.save_adapter(trainer.model, out / ADAPTER)
    logged = [m["accuracy"] for m in run.metrics() if "accuracy" in m][-5:]
    meta = {"model": config.model, "max_length": config.max_length, "train_pairs": len(train),
            "held_out_pairs": len(held), "seed": config.seed}
    write_json_atomic(out / META, meta)
    held_out_accuracy = RewardModel(out).pairwise_accuracy(held)  # measured on the saved folder, as users load it
    result = RewardModelResult(str(out), len(train), len(held), held_out_accuracy, before,
                               sum(logged) / len(logged) if logged else None, time.perf_counter() - started)
    write_json_atomic(out / META, {**meta, **result.to_json()})
    return result


def _scorer_fn(model, tokenizer, max_length: int):
    """`score(prompts, outputs)` over a model being trained (eval mode for the call, then back)."""
    import torch

    def score(prompts, outputs):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = []
                for prompt, output in zip(prompts, outputs):
                    ids = torch.tensor([encode_chat(tokenizer, prompt, output, max_length)])
                    logits.append(float(model(input_ids=ids).logits.reshape(-1)[0]))
                return logits
        finally:
            model.train(was_training)

    return score


def _load_scorer(spec: str, adapter: Path | None):
    """(sequence-classification model with one logit, tokenizer) for `spec`, with a trained adapter applied."""
    from dspyrl.lm.models import require_local_extra, resolve_model_path

    require_local_extra()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(spec)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized": expected, it is the head we train
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype="float32")
    except Exception as err:  # noqa: BLE001 - any load error of the folder becomes one ModelError line
        raise ModelError(f"could not load {path} as a reward model base: {str(err).splitlines()[0]}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not padding
    if adapter is not None:
        from peft import PeftModel

        if not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"reward model adapter {adapter} is missing", hint="train the reward model again")
        model = PeftModel.from_pretrained(model, adapter)
    return model, tokenizer


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
