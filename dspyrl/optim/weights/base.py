"""What LoRA GRPO and DPO share around a TRL trainer: the program's local model, the run folder, the adapter.

- `local_model_of(program, lm)`: the one local Hugging Face model a program runs on (hosted models cannot be trained);
- `load_trainable_model(spec, adapter_dir)`: a fresh copy of it for the trainer (the LocalEngine's copy is never trained in
  place), continuing an existing adapter when the program already runs with one;
- `LocalWeightsOptimizer`: the compile both share (valset scores before/after, train or resume, the adapted program);
- `save_adapter` / `adapted_program`: the PEFT folder `<run>/adapter/` and the student running on it.

The trainer's run folder (metrics, progress, checkpoints without pickle, resume) is dspyrl.optim.weights.trl_callbacks.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from dspyrl.errors import ConfigError
from dspyrl.optim.weights import trl_callbacks
from dspyrl.runs import ADAPTER, RunFolder  # the run folder names its files


# ----------------------------------------------------------------------------------------------- the optimizer
@dataclass
class WeightsResult:
    """What a weights optimizer's compile leaves on `optimizer.result`."""

    kind: str  # "lora-grpo" | "dpo"
    model: str
    adapter_dir: str
    steps: int
    val_before: float | None = None  # mean reward on the valset before and after (None without valset or reward)
    val_after: float | None = None
    train_wall_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the rollout mode, the number of DPO pairs
    stopped: str = ""  # "cost_cap": training stopped at max_cost, checkpointed (no valset score after; resume goes on)
    usage: dict | None = None  # the optimizer's LM calls, tokens and cost per role (UsageMeter.table), across resumes


class LocalWeightsOptimizer(Teleprompter):
    """The compile LoRA GRPO and DPO share; a subclass says what to check (`check`) and how to train (`train_weights`).

    compile: find the program's local model → score the valset (before) → train into `<run>/adapter/` (or resume, or
    skip a finished run) → the student on `local_lm(model, adapter)` → score the valset (after) → program.json.
    The config (with the score before) is written once; a resumed run reads it back.

    `max_cost` (USD) caps the LM calls the run makes (the reward's judge: the trained model is local, and free), checked
    after every training step (trl_callbacks' module docstring); stopped there, the result says `stopped="cost_cap"`,
    the run is not marked done, and `resume=True` with a higher cap continues from the checkpoint, spend carried over.
    `report_to` ("none", "tensorboard", "wandb") is TRL's report_to, written into the run folder.
    """

    kind = ""
    config_class: Any = None

    def __init__(self, reward=None, config=None, *, lm=None, format=None, run_dir=None, resume: bool = False,
                 callbacks=(), progress: bool = True, max_cost: float | None = None, report_to: str = "none",
                 **settings):
        super().__init__()
        try:
            self.config = dataclasses.replace(config or self.config_class(), **settings)
        except TypeError as err:
            raise ConfigError(f"unknown {self.kind} setting: {err}", hint="settings are: " + ", ".join(
                f.name for f in dataclasses.fields(self.config_class))) from err
        self.reward = reward
        self.lm = lm  # the local LM the program runs on (None: the predictors' own, else dspy.settings.lm)
        self.format = format  # the DSPy format (None: dspy.settings.adapter, else ChatAdapter)
        self.run_dir, self.resume = run_dir, resume
        # Not `self.callbacks`: DSPy calls on_compile_start/end on a teleprompter's `callbacks`; ours see each step.
        self.step_callbacks, self.progress = list(callbacks), progress
        self.max_cost, self.report_to = max_cost, report_to
        self.meter = None  # the run's UsageMeter (max_cost's), during and after compile
        self.result: WeightsResult | None = None

    def check(self, student, trainset) -> dict:
        """Refuse bad input before anything runs; returns JSON-able details for config.json and the result."""
        return {}

    def train_weights(self, student, trainset, spec, start_adapter, format, lm, run: RunFolder, resume_from) -> float:
        """Train into `<run>/adapter/`; returns the run's training seconds. `student` has no predictor LMs; `lm` is
        the LM it runs on (the local model, with the adapter it started from)."""
        raise NotImplementedError

    def compile(self, student, *, trainset=None, valset=None, teacher=None, **kwargs):
        from dspyrl.lm.usage import UsageMeter

        spec, start_adapter = local_model_of(student, self.lm)
        details = self.check(student, trainset)
        run = RunFolder(self.run_dir or tempfile.mkdtemp(prefix=f"dspyrl-{self.kind}-"), resume=self.resume)
        spent = (run.load_checkpoint() or {}).get("usage") if self.resume else None
        self.meter = UsageMeter(max_cost=self.max_cost, spent=spent)
        with self.meter.active():
            optimized = self._compile(student, trainset, valset, spec, start_adapter, details, run)
        self.result.usage = self.meter.table()
        return optimized

    def _compile(self, student, trainset, valset, spec, start_adapter, details, run):
        cfg = self.config
        format = self.format or dspy.settings.adapter or dspy.ChatAdapter()
        lm, plain = program_lm(student, self.lm), without_lms(student)
        if self.resume:
            saved = run.read_config()
            changed = sorted(k for k, v in details.items() if saved.get(k) != v)
            if changed or saved.get("model") != spec:
                raise ConfigError(f"cannot resume {run.path}: it was started with another "
                                  f"{', '.join(changed) or 'model'}", hint="resume with the same program, model and data")
            record, resume_from = trl_callbacks.resume_point(run)
            val_before = saved.get("val_before")
        else:
            record, resume_from = {}, None
            val_before = self.validate(plain, valset, lm, format)
            run.write_config({**dataclasses.asdict(cfg), "optimizer": type(self).__name__, "model": spec,
                              "start_adapter": start_adapter, **details, "val_before": val_before})
        stopped = ""
        if record.get("done"):
            wall = float(record.get("wall_s", 0.0))
        elif resume_from is not None and self.meter.over_cap(projected=float(record.get("step_cost") or 0.0)):
            stopped, wall = "cost_cap", float(record.get("wall_s", 0.0))  # resumed under a cap already reached
        else:
            if record.get("stopped"):  # continuing: the record says "stopped" again only if this session stops too
                run.save_checkpoint({**record, "stopped": ""})
            with trl_callbacks.reporting(run.path, self.report_to):
                wall = self.train_weights(plain, trainset, spec, start_adapter, format, lm, run, resume_from)
            stopped = (run.load_checkpoint() or {}).get("stopped") or ""
        max_tokens = int((getattr(lm, "kwargs", None) or {}).get("max_tokens") or 256)
        optimized = adapted_program(plain, spec, run.path / ADAPTER, max_tokens=max_tokens)
        if stopped:  # not done: no valset score after (it would spend past the cap), no done record
            step = int((run.load_checkpoint() or {}).get("step") or 0)
            self.result = WeightsResult(self.kind, spec, str(run.path / ADAPTER), step, val_before, None, wall,
                                        details, stopped=stopped)
            return optimized
        val_after = record.get("val_after")
        if val_after is None:
            val_after = self.validate(optimized, valset, program_lm(optimized), format)
        run.save_program(optimized)
        run.save_checkpoint({"kind": self.kind, "step": cfg.steps, "dir": None, "done": True, "wall_s": wall,
                             "val_before": val_before, "val_after": val_after, "usage": self.meter.to_json()})
        self.result = WeightsResult(self.kind, spec, str(run.path / ADAPTER), cfg.steps, val_before, val_after, wall,
                                    details)
        return optimized

    def validate(self, program, valset, lm, format) -> float | None:
        """Mean reward of one greedy run per valset example (None without a valset or a reward)."""
        if not valset or self.reward is None:
            return None
        from dspyrl.score import score_program

        scored, _ = score_program(program, valset, self.reward, lm, format=format,
                                  num_threads=self.config.num_threads, failure_reward=self.config.failure_reward)
        return scored["mean_reward"]


# ----------------------------------------------------------------------------------------------- the local model
def local_model_of(program, lm=None) -> tuple[str, str | None]:
    """(model spec, adapter folder or None) of the local model every predictor of `program` runs on.

    A predictor's own LM wins over `lm`, which wins over dspy.settings.lm, as in DSPy itself.
    """
    from dspyrl.lm.local import LocalEngine

    default = lm if lm is not None else dspy.settings.lm
    used = {}
    for name, predictor in program.named_predictors():
        predictor_lm = predictor.lm if predictor.lm is not None else default
        if predictor_lm is None:
            raise ConfigError(f"predictor '{name}' has no LM", hint="pass lm=dspyrl.local_lm(...) or --model smollm2")
        engine = getattr(predictor_lm, "engine", None)
        if not isinstance(engine, LocalEngine):
            raise ConfigError(f"predictor '{name}' runs on '{predictor_lm.model}', a hosted model whose weights cannot "
                              f"be LoRA-trained here",
                              hint="run the program on a local model: --model smollm2, a local folder or a cached "
                                   "Hugging Face id (dspyrl.local_lm(...) in Python)")
        used[(engine.model_spec, engine.adapter)] = name
    if not used:
        raise ConfigError("the program has no predictors (no dspy.Predict inside)")
    if len(used) > 1:
        models = ", ".join(model for model, _ in used)
        raise ConfigError(f"the predictors run on {len(used)} different local models ({models}); LoRA training "
                          f"updates one model", hint="run every predictor on the same local LM")
    return next(iter(used))


def load_trainable_model(spec: str, adapter_dir: str | None = None):
    """(model, tokenizer) for training: a fresh load, in train mode; an existing PEFT adapter is loaded trainable."""
    from dspyrl.lm.models import load_model

    model, tokenizer = load_model(spec)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    model.train()
    return model, tokenizer


def lora_config(r: int, alpha: int, dropout: float, target_modules, modules_to_save):
    """A peft.LoraConfig. With tied embeddings, `modules_to_save=["lm_head"]` trains lm_head and keeps the tie."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                      modules_to_save=list(modules_to_save) if modules_to_save else None,
                      ensure_weight_tying=bool(modules_to_save), task_type="CAUSAL_LM")


def cpu_defaults() -> dict[str, Any]:
    """TrainingArguments that differ on a machine without an accelerator (TRL's defaults assume one)."""
    import torch

    if torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return {}
    return {"use_cpu": True, "bf16": False}


def common_args(output_dir: Path, seed: int, report_to: str = "none") -> dict[str, Any]:
    """TrainingArguments both trainers get: we log every step, save our own checkpoints, and print nothing ourselves;
    `report_to` is TRL's (trl_callbacks.reporting points it into the run folder)."""
    return {"output_dir": str(output_dir), "save_strategy": "no", "logging_steps": 1,
            "report_to": [] if report_to == "none" else [report_to],
            "disable_tqdm": True, "log_level": "error", "seed": seed, "data_seed": seed, **cpu_defaults()}


def make_args(config_class, settings: dict[str, Any], passthrough: dict[str, Any]):
    """`config_class(**settings, **passthrough)`; an unknown pass-through field is a one-line ConfigError."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(passthrough) - known)
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} field(s): {', '.join(unknown)}",
                          hint=f"see the {config_class.__module__.split('.')[0]} docs for {config_class.__name__}")
    try:
        return config_class(**{**settings, **passthrough})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid {config_class.__name__}: {str(err).splitlines()[0]}") from err


# ----------------------------------------------------------------------------------------------- the adapter
def save_adapter(model, folder: Path) -> Path:
    """Save the trained ("default") adapter as a PEFT folder, atomically (dspyrl.runs.write_folder_atomic)."""
    from dspyrl.runs import write_folder_atomic

    return write_folder_atomic(folder, lambda tmp: model.save_pretrained(tmp, selected_adapters=["default"]))


def program_lm(program, lm=None):
    """The LM `program` runs on, as DSPy resolves it: a predictor's own LM, else `lm`, else dspy.settings.lm."""
    return next((p.lm for _, p in program.named_predictors() if p.lm is not None), None) or lm or dspy.settings.lm


def without_lms(program):
    """A copy of `program` whose predictors carry no LM of their own, so the LM handed to run_rollouts (with its
    temperature and per-sample rollout ids, or the model being trained) is the one that runs. Attached LMs are
    shared by the copy, never copied: deep-copying a local LM copies the model's weights before failing."""
    copied = copy.deepcopy(program, {id(p.lm): p.lm for _, p in program.named_predictors() if p.lm is not None})
    copied.set_lm(None)
    return copied


def adapted_program(student, spec: str, adapter_dir: Path | str, *, max_tokens: int = 256):
    """A copy of `student` whose predictors all run on the local model with the adapter (DSPy's own set_lm)."""
    from dspyrl.lm import local_lm

    program = without_lms(student)
    program.set_lm(local_lm(spec, adapter=str(adapter_dir), temperature=0.0, max_tokens=max_tokens))
    return program
