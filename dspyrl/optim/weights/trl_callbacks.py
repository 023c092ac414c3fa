"""A TRL trainer's run folder: per-step metrics, rich progress, checkpoints without pickle, and resume.

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

Cost cap. With a `meter` (dspyrl.lm.usage.UsageMeter) that has a cap, every step's metrics carry the run's LM spend
(`cost`, USD so far: the reward's judge, say) and no step starts that the last step's cost says would reach the cap: training
stops there, checkpointed whatever `save_every` says, and checkpoint.json keeps the spend, the last step's cost and
`stopped: "cost_cap"` so a resume with a higher cap carries the spend on.

Reporting. `reporting(run_dir, report_to)` around the trainer points TRL's own `report_to` integrations into the run
folder: TensorBoard events in <run>/tensorboard, a W&B run in <run>/wandb (WANDB_MODE=offline keeps it on disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from dspyrl.errors import ConfigError, MissingExtraError
from dspyrl.runs import RunFolder, rng_state_from_json, rng_state_to_json, write_text_atomic

CHECKPOINTS = "checkpoints"


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
    _write_json(folder / "rng.json", {"python": rng_state_to_json(random),
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
    random.setstate(rng_state_from_json(saved["python"]))
    kind, keys, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def _fsync_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, default=_json_default))


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
                 step_callbacks=(), resume_from: Path | None = None, extra_metrics=None, meter=None):
        self.run, self.kind, self.total_steps, self.save_every = run, kind, total_steps, save_every
        self.step_callbacks = list(step_callbacks)
        self.resume_from = resume_from
        self.extra_metrics = extra_metrics  # () -> dict merged into each step's metrics (e.g. reward components)
        self.started = time.perf_counter()
        self.wall_before = 0.0  # training time of the run before a resume
        self.last_step = 0
        self._restore_rng = resume_from is not None
        self._progress = _StepProgress(kind, total_steps) if progress else None
        self.meter = meter  # the run's LM usage and its cap (module docstring), or None
        self.stopped = ""  # "cost_cap" once the cap stopped training
        self._spent, self.step_cost = 0.0, 0.0  # spend at the last step's end; what the last step cost

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
        if self.meter is not None:
            self._spent = self.meter.cost
        if self._progress:
            self._progress.start(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        if self._restore_rng:  # after transformers skipped the seen batches: the next draw is the one it would be
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
        if self.meter is not None:
            spent = self.meter.cost
            self.step_cost, self._spent = spent - self._spent, spent
            metrics["cost"] = spent  # USD so far, as prompt GRPO's metrics have it
            if state.global_step < self.total_steps and self.meter.over_cap(projected=self.step_cost):
                self.stopped, control.should_training_stop = "cost_cap", True
        self.run.log_metrics(metrics)
        if self.stopped or (self.save_every and (state.global_step % self.save_every == 0
                                                 or state.global_step >= self.total_steps)):
            self.checkpoint(state, model, optimizer, lr_scheduler, metrics["wall_s"])
        if self._progress:
            self._progress.update(metrics)
        for callback in self.step_callbacks:
            callback.on_step_end(metrics)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the progress line (also when training raised)."""
        if self._progress:
            self._progress.stop()

    # checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint(self, state, model, optimizer, scheduler, wall_s: float) -> None:
        folder = self.run.path / CHECKPOINTS / f"step-{state.global_step:06d}"
        shutil.rmtree(folder, ignore_errors=True)
        save_checkpoint(folder, model, optimizer, scheduler, state)
        _fsync_files(folder)  # on disk before the pointer moves to it
        previous = (self.run.load_checkpoint() or {}).get("dir")
        spend = {} if self.meter is None else {"usage": self.meter.to_json(), "step_cost": self.step_cost,
                                               "stopped": self.stopped}
        self.run.save_checkpoint({"kind": self.kind, "step": state.global_step, "done": False, "wall_s": wall_s,
                                  "dir": str(folder.relative_to(self.run.path)), **spend})
        # the pointer moved; the folder of the previous pointer (checkpoint.prev.json) stays, for a torn checkpoint.json
        keep = {folder, self.run.path / previous} if previous else {folder}
        for old in (self.run.path / CHECKPOINTS).iterdir():
            if old not in keep:
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


def quiet(trainer) -> None:
    """Drop transformers' stdout printer and tqdm bar: RunCallback shows progress instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def train(trainer, run: RunFolder, callback: RunCallback, resume_from: Path | None) -> None:
    """Train (resuming from `resume_from` when given); metrics after the checkpoint are dropped first."""
    if resume_from is not None:
        step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
        run.truncate_metrics(step)
        callback.last_step = step
    trainer.add_callback(callback)
    quiet(trainer)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    finally:
        callback.close()


REPORT_TO = ("none", "tensorboard", "wandb")


@contextlib.contextmanager
def reporting(run_dir: Path, report_to: str = "none"):
    """Around a trainer with TrainingArguments(report_to=[report_to]): TRL's integration writes into the run folder
    (module docstring); the environment it reads is restored after, and a W&B run is finished (its files complete)."""
    if report_to not in REPORT_TO:
        raise ConfigError(f"report_to must be one of {', '.join(REPORT_TO)}, got '{report_to}'")
    if report_to == "none":
        yield
        return
    if report_to == "wandb":
        # Started here, in the run folder, rather than by transformers' callback from WANDB_DIR: W&B reads its
        # environment once per process, so after an earlier W&B run in the same process (a notebook, a test session)
        # the callback's run went to that run's folder. The callback uses a run that is already started.
        run = start_wandb_run(run_dir) if _wandb().run is None else None
        try:
            yield
        finally:
            if run is not None:
                run.finish()
        return
    try:
        import tensorboard  # noqa: F401 (transformers' TensorBoard integration needs it)
    except ImportError as err:
        raise MissingExtraError("tensorboard", "tensorboard") from err
    saved = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved


def _wandb():
    try:
        import wandb
    except ImportError as err:
        raise MissingExtraError("wandb", "wandb") from err
    return wandb


def start_wandb_run(run_dir, config: dict | None = None, **settings):
    """A W&B run in `run_dir`/wandb (WANDB_MODE=offline keeps it on disk), its config scrubbed of credentials like the
    run folder's: the one place dspyrl starts a W&B run (LoRA phases here, prompt GRPO through cli.options)."""
    from dspyrl.runs import scrub_secrets

    os.makedirs(run_dir, exist_ok=True)
    return _wandb().init(project=os.environ.get("WANDB_PROJECT", "dspyrl"), dir=str(run_dir),
                         config=scrub_secrets(config or {}), save_code=False, **settings)


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
    """The run's progress line over training steps (dspyrl.runs.LiveProgress)."""

    def __init__(self, kind: str, total: int):
        from dspyrl.runs import LiveProgress

        self._live = LiveProgress(total, description=kind, unit="steps")

    def start(self, done: int) -> None:
        self._live.completed = done
        self._live.__enter__()

    def update(self, metrics: dict) -> None:
        self._live.update(metrics["step"], metrics)

    def stop(self) -> None:
        self._live.__exit__(None, None, None)
