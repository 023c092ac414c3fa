"""What LoRA GRPO and DPO share around a TRL trainer: the program's local model, the run folder, the adapter.

- `local_model_of(program, lm)`: the one local Hugging Face model a program runs on (hosted models cannot be trained);
- `load_trainable_model(spec, adapter)`: a fresh copy of it for the trainer (the LocalEngine's copy is never trained in
  place), continuing an existing adapter when the program already runs with one;
- `RunCallback`: a `transformers.TrainerCallback` that writes each logged step to metrics.jsonl, shows rich progress
  (reward, KL, loss), calls our step callbacks and writes pickle-free checkpoints;
- `train(trainer, run, ...)`: `trainer.train()`, resumed from the last checkpoint when there is one.

Checkpoints. transformers' own checkpoints hold `optimizer.pt`, `scheduler.pt`, `rng_state.pth` and
`training_args.bin`, all written with torch.save (pickle). The repo rule is no pickle, so `save_strategy` stays "no" and
we write our own checkpoint folder in the same layout transformers resumes from, minus the pickles:
    checkpoints/step-000010/  adapter_model.safetensors + adapter_config.json  (PEFT)
                              trainer_state.json                              (transformers, JSON)
                              optimizer.safetensors + optimizer.json          (tensors / everything else)
                              scheduler.json, rng.safetensors, rng.json
`trainer.train(resume_from_checkpoint=folder)` then restores the adapter, the step and the data position (it skips
the batches already seen); it finds no optimizer.pt or rng_state.pth, so `RunCallback` restores the optimizer and
scheduler at `on_train_begin` and the RNG right before the first resumed step. The run folder's checkpoint.json points
at the newest folder and is replaced atomically, so a crash leaves the previous checkpoint usable.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from dspyrl.errors import ConfigError
from dspyrl.runs import RunFolder

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"


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


class LocalWeightsOptimizer(Teleprompter):
    """The compile LoRA GRPO and DPO share; a subclass says what to check (`check`) and how to train (`train_weights`).

    compile: find the program's local model → score the valset (before) → train into `<run>/adapter/` (or resume, or
    skip a finished run) → the student on `local_lm(model, adapter)` → score the valset (after) → save program.json.
    The config (with the score before) is written once; a resumed run reads it back.
    """

    kind = ""
    config_class: Any = None

    def __init__(self, reward=None, config=None, *, lm=None, adapter=None, run_dir=None, resume: bool = False,
                 callbacks=(), progress: bool = True, **settings):
        super().__init__()
        try:
            self.config = dataclasses.replace(config or self.config_class(), **settings)
        except TypeError as err:
            raise ConfigError(f"unknown {self.kind} setting: {err}", hint="settings are: " + ", ".join(
                f.name for f in dataclasses.fields(self.config_class))) from err
        self.reward = reward
        self.lm = lm  # the local LM the program runs on (None: the predictors' own, else dspy.settings.lm)
        self.adapter = adapter  # the DSPy adapter (None: dspy.settings.adapter, else ChatAdapter)
        self.run_dir, self.resume = run_dir, resume
        # Not `self.callbacks`: DSPy calls on_compile_start/end on a teleprompter's `callbacks`; ours see each step.
        self.step_callbacks, self.progress = list(callbacks), progress
        self.result: WeightsResult | None = None

    def check(self, student, trainset) -> dict:
        """Refuse bad input before anything runs; returns JSON-able details for config.json and the result."""
        return {}

    def train_weights(self, student, trainset, spec, start_adapter, adapter, lm, run: RunFolder, resume_from) -> float:
        """Train into `<run>/adapter/`; returns the run's training seconds. `student` has no predictor LMs; `lm` is
        the LM it runs on (the local model, with the adapter it started from)."""
        raise NotImplementedError

    def compile(self, student, *, trainset=None, valset=None, teacher=None, **kwargs):
        cfg = self.config
        spec, start_adapter = local_model_of(student, self.lm)
        details = self.check(student, trainset)
        adapter = self.adapter or dspy.settings.adapter or dspy.ChatAdapter()
        lm, plain = program_lm(student, self.lm), without_lms(student)
        run = RunFolder(self.run_dir or tempfile.mkdtemp(prefix=f"dspyrl-{self.kind}-"), resume=self.resume)
        if self.resume:
            record, resume_from = resume_point(run)
            val_before = run.read_config().get("val_before")
        else:
            record, resume_from = {}, None
            val_before = self.validate(plain, valset, lm, adapter)
            run.write_config({**dataclasses.asdict(cfg), "optimizer": type(self).__name__, "model": spec,
                              "start_adapter": start_adapter, **details, "val_before": val_before})
        if record.get("done"):
            wall = float(record.get("wall_s", 0.0))
        else:
            wall = self.train_weights(plain, trainset, spec, start_adapter, adapter, lm, run, resume_from)
        max_tokens = int((getattr(lm, "kwargs", None) or {}).get("max_tokens") or 256)
        optimized = adapted_program(plain, spec, run.path / ADAPTER, max_tokens=max_tokens)
        val_after = record.get("val_after")
        if val_after is None:
            val_after = self.validate(optimized, valset, program_lm(optimized), adapter)
        run.save_program(optimized)
        run.save_checkpoint({"kind": self.kind, "step": cfg.steps, "dir": None, "done": True, "wall_s": wall,
                             "val_before": val_before, "val_after": val_after})
        self.result = WeightsResult(self.kind, spec, str(run.path / ADAPTER), cfg.steps, val_before, val_after, wall,
                                    details)
        return optimized

    def validate(self, program, valset, lm, adapter) -> float | None:
        """Mean reward of one greedy run per valset example (None without a valset or a reward)."""
        if not valset or self.reward is None:
            return None
        from dspyrl.rollout import run_rollouts

        batch = run_rollouts(program, valset, self.reward, lm=lm, adapter=adapter, num_threads=self.config.num_threads,
                             progress=False, failure_reward=self.config.failure_reward)
        return batch.mean_reward()


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
        raise ConfigError(f"the predictors run on {len(used)} different local models ({', '.join(m for m, _ in used)}); "
                          f"LoRA training updates one model", hint="run every predictor on the same local LM")
    return next(iter(used))


def load_trainable_model(spec: str, adapter: str | None = None):
    """(model, tokenizer) for training: a fresh load, in train mode; an existing adapter is loaded trainable."""
    from dspyrl.lm.models import load_model

    model, tokenizer = load_model(spec)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    model.train()
    return model, tokenizer


def lora_config(r: int, alpha: int, dropout: float, target_modules, modules_to_save):
    """A peft.LoraConfig; when the model ties lm_head to the embeddings, `modules_to_save=["lm_head"]` keeps them tied."""
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


def common_args(output_dir: Path, seed: int) -> dict[str, Any]:
    """TrainingArguments both trainers get: we log every step, save our own checkpoints, and print nothing ourselves."""
    return {"output_dir": str(output_dir), "save_strategy": "no", "logging_steps": 1, "report_to": [],
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


def quiet(trainer) -> None:
    """Drop transformers' stdout printer and tqdm bar: RunCallback shows progress instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


# ----------------------------------------------------------------------------------------------- the adapter
def save_adapter(model, folder: Path) -> Path:
    """Save the trained ("default") adapter as a PEFT folder, atomically (temp folder, then rename)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, selected_adapters=["default"])
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


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


# ----------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: Path, model, optimizer, scheduler, state) -> None:
    """One resumable checkpoint folder (layout in the module docstring); no pickle."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    state.save_to_json(str(folder / "trainer_state.json"))
    tensors, rest = {}, {}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(index), {})[key] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    _write_json(folder / "optimizer.json", {"param_groups": optimizer_state["param_groups"], "state": rest})
    if scheduler is not None:
        _write_json(folder / "scheduler.json", scheduler.state_dict())
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(folder / "rng.safetensors"))
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    _write_json(folder / "rng.json", {"python": [version, list(internal), gauss],
                                      "numpy": [kind, keys.tolist(), position, has_gauss, cached]})


def restore_optimizer(folder: Path, optimizer, scheduler) -> None:
    from safetensors.torch import load_file

    saved = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in saved["state"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    if scheduler is not None and (folder / "scheduler.json").exists():
        scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))


def restore_rng(folder: Path) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    saved = json.loads((folder / "rng.json").read_text())
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):  # 0-d tensors / numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} into a checkpoint")


# ----------------------------------------------------------------------------------------------- the callback
# TRL's log keys → the names the prompt policy's metrics use, so one report reads both.
_RENAMES = {"reward": "reward_mean", "frac_reward_zero_std": "frac_zero_std", "rewards/margins": "reward_margin",
            "rewards/accuracies": "reward_accuracy"}


class RunCallback:
    """metrics.jsonl + rich progress + pickle-free checkpoints + our step callbacks, from TRL's per-step logs.

    Built as a transformers.TrainerCallback subclass at run time (see `run_callback`) so transformers is imported
    only when training.
    """

    def __init__(self, run: RunFolder, *, kind: str, total_steps: int, save_every: int, progress: bool,
                 step_callbacks=(), resume_from: Path | None = None, extra_metrics=None):
        self.run, self.kind, self.total_steps, self.save_every = run, kind, total_steps, save_every
        self.step_callbacks = list(step_callbacks)
        self.resume_from = resume_from
        self.extra_metrics = extra_metrics  # () -> dict merged into each step's metrics (e.g. reward components)
        self.started = time.perf_counter()
        self.wall_before = 0.0  # training time of the run before a resume
        self.last_step = 0
        self._restore_rng = resume_from is not None
        self._progress = _StepProgress(kind, total_steps) if progress else None

    @property
    def wall_s(self) -> float:
        """Training seconds of the whole run, across resumes."""
        return self.wall_before + time.perf_counter() - self.started

    # transformers events -------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        self.started = time.perf_counter()
        if self.resume_from is not None:
            restore_optimizer(self.resume_from, optimizer, lr_scheduler)
            self.wall_before = float(self.run.load_checkpoint().get("wall_s", 0.0))
        if self._progress:
            self._progress.start(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        if self._restore_rng:  # after transformers skipped the seen batches: the next draw is the one it would have been
            restore_rng(self.resume_from)
            self._restore_rng = False

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        logs = dict(logs or {})
        if "loss" not in logs or state.global_step <= self.last_step:
            return  # the end-of-training summary, or a repeated log of the same step
        self.last_step = state.global_step
        metrics = {"step": state.global_step, "phase": self.kind}
        for key, value in logs.items():
            metrics[_RENAMES.get(key, key)] = value
        if self.extra_metrics:
            metrics.update(self.extra_metrics())
        metrics["wall_s"] = self.wall_s
        self.run.log_metrics(metrics)
        if self.save_every and (state.global_step % self.save_every == 0 or state.global_step >= self.total_steps):
            self.checkpoint(state, model, optimizer, lr_scheduler, metrics["wall_s"])
        if self._progress:
            self._progress.update(metrics)
        for callback in self.step_callbacks:
            callback.on_step_end(metrics)

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress:
            self._progress.stop()

    # checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint(self, state, model, optimizer, scheduler, wall_s: float) -> None:
        folder = self.run.path / CHECKPOINTS / f"step-{state.global_step:06d}"
        shutil.rmtree(folder, ignore_errors=True)
        save_checkpoint(folder, model, optimizer, scheduler, state)
        self.run.save_checkpoint({"kind": self.kind, "step": state.global_step, "dir": str(folder.relative_to(self.run.path)),
                                  "done": False, "wall_s": wall_s})
        for old in (self.run.path / CHECKPOINTS).iterdir():  # the pointer moved: older folders are not needed
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)


def run_callback(*args, **kwargs):
    """A RunCallback that is also a transformers.TrainerCallback."""
    from transformers import TrainerCallback

    cls = type("DspyrlRunCallback", (RunCallback, TrainerCallback), {})
    return cls(*args, **kwargs)


def resume_point(run: RunFolder) -> tuple[dict, Path | None]:
    """The run's checkpoint record and, when it is mid-training, the folder to resume from."""
    record = run.load_checkpoint() or {}
    if record.get("done") or not record.get("dir"):
        return record, None
    folder = run.path / record["dir"]
    if not (folder / "trainer_state.json").exists():
        raise ConfigError(f"cannot resume {run.path}: checkpoint folder {folder} is missing or incomplete",
                          hint="start the run again without --resume")
    return record, folder


def train(trainer, run: RunFolder, callback: RunCallback, resume_from: Path | None) -> None:
    """Train (resuming from `resume_from` when given); metrics after the checkpoint are dropped first."""
    if resume_from is not None:
        step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
        run.truncate_metrics(step)
        callback.last_step = step
    trainer.add_callback(callback)
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)


@contextlib.contextmanager
def quiet_trl():
    """Around building and running a TRL trainer: transformers 5 deprecation renames inside TRL, TRL's "experimental"
    note on rollout_func and datasets' tokenizing bars are noise for our users (not theirs to fix)."""
    import datasets

    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*rollout_func.*experimental.*")
            yield
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()


class _StepProgress:
    """One rich progress line: step k/N, reward, KL, loss, elapsed."""

    def __init__(self, kind: str, total: int):
        self.kind, self.total = kind, total
        self._progress = self._task = None

    def start(self, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn(f"[bold]{self.kind}[/bold] step"), MofNCompleteColumn(), BarColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
        self._progress.start()
        self._task = self._progress.add_task(self.kind, total=self.total, completed=done, info="")

    def update(self, metrics: dict) -> None:
        if self._progress is None:
            return
        parts = []
        for label, key in (("reward", "reward_mean"), ("KL", "kl"), ("loss", "loss"), ("margin", "reward_margin")):
            if isinstance(metrics.get(key), (int, float)):
                parts.append(f"{label} {metrics[key]:.4g}")
        self._progress.update(self._task, completed=metrics["step"], info="  ".join(parts))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
