"""The run folder: everything a long optimization leaves on disk, and what lets it stop and go on.

    runs/<name>/
      config.json       the optimizer's settings (never an API key)
      metrics.jsonl     one JSON object per step: rewards, loss, KL, entropy, frac_zero_std, calls, tokens, cost, val
      checkpoint.json   the latest full state (policy, candidates, RNG, step, budget used), rewritten atomically
      program.json      the optimized program, in DSPy's own save format (`program.load("program.json")`)

Checkpoints are written to a temporary file, fsync'ed and renamed over the old one, so a crash at any moment leaves
either the previous checkpoint or the new one, never half of one. Nothing is pickled: JSON only.
Also here: early stopping on a validation plateau, step callbacks, rich live progress and optional TensorBoard.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dspyrl.errors import ConfigError, MissingExtraError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.json"
PROGRAM = "program.json"

# Config keys that could carry a credential are dropped before anything is written.
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization", "access_token")


# ----------------------------------------------------------------------------------------------- atomic files
def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=1, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def save_program(program, path: str | Path) -> Path:
    """DSPy's own `program.save(path)` (state JSON), plus each predictor's learned format (`dspyrl_format`), which DSPy
    does not save but its `load` restores (Predict.load_state sets unknown state keys as attributes). Written through
    a temporary file, so a crash never leaves half a program."""
    from dspyrl.formats.per_predictor import FORMAT_ATTRIBUTE, predictor_formats

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".json", dir=target.parent)
    os.close(fd)
    try:
        program.save(tmp)
        formats = predictor_formats(program)
        if formats:
            state = json.loads(Path(tmp).read_text())
            for name, value in formats.items():  # a bare Predict's state is the whole file, not a "self" entry
                (state if name == "self" else state[name])[FORMAT_ATTRIBUTE] = value
            Path(tmp).write_text(json.dumps(state, indent=2, ensure_ascii=False))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def scrub_secrets(config: Any) -> Any:
    """A copy of a (nested) config without any key that names a credential."""
    if isinstance(config, dict):
        return {k: scrub_secrets(v) for k, v in config.items()
                if not any(word in str(k).lower() for word in _SECRET_WORDS)}
    if isinstance(config, (list, tuple)):
        return [scrub_secrets(v) for v in config]
    return config


# ----------------------------------------------------------------------------------------------- the folder
class RunFolder:
    """One run's folder (see the module docstring). `resume=False` refuses to overwrite a folder that has a checkpoint."""

    def __init__(self, path: str | Path, *, resume: bool = False):
        self.path = Path(path)
        self.resume = resume
        if not resume and (self.path / CHECKPOINT).exists():
            raise ConfigError(f"run folder {self.path} already holds a run",
                              hint="resume it (--resume / resume=True) or choose another folder")
        if resume and not (self.path / CHECKPOINT).exists():
            raise ConfigError(f"nothing to resume in {self.path}: it has no {CHECKPOINT}",
                              hint="start the run without --resume")
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.path / CONFIG, scrub_secrets(config))

    def read_config(self) -> dict:
        file = self.path / CONFIG
        return json.loads(file.read_text()) if file.exists() else {}

    def log_metrics(self, metrics: dict) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(metrics, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def metrics(self) -> list[dict]:
        file = self.path / METRICS
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_step: int) -> None:
        """On resume: forget metric lines written after the checkpoint (the step that was interrupted)."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= last_step]
        file = self.path / METRICS
        tmp = file.with_name(f".{METRICS}.tmp")
        tmp.write_text("".join(json.dumps(m, default=str) + "\n" for m in kept))
        os.replace(tmp, file)

    def save_checkpoint(self, state: dict) -> None:
        write_json_atomic(self.path / CHECKPOINT, state)

    def load_checkpoint(self) -> dict | None:
        file = self.path / CHECKPOINT
        return json.loads(file.read_text()) if file.exists() else None

    def save_program(self, program, name: str = PROGRAM) -> Path:
        return save_program(program, self.path / name)


# ----------------------------------------------------------------------------------------------- stopping, callbacks
@dataclass
class EarlyStopping:
    """Stop when the validation score has not improved by more than `min_delta` for `patience` evaluations (0: off)."""

    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    evals_without_improvement: int = 0

    def update(self, score: float) -> bool:
        """Record one validation score; True means stop."""
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.evals_without_improvement = score, 0
        else:
            self.evals_without_improvement += 1
        return bool(self.patience) and self.evals_without_improvement >= self.patience

    def to_json(self) -> dict:
        return {"patience": self.patience, "min_delta": self.min_delta, "best": self.best,
                "evals_without_improvement": self.evals_without_improvement}

    @classmethod
    def from_json(cls, state: dict) -> EarlyStopping:
        return cls(**state)


class StepCallback(Protocol):
    """Anything with `on_step_end(metrics)`; it sees each step's metrics after the checkpoint is written."""

    def on_step_end(self, metrics: dict) -> None: ...


class TensorBoardCallback:
    """Writes every numeric metric as a TensorBoard scalar (needs the `tensorboard` package)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise MissingExtraError("tensorboard", "tensorboard") from err
        self.writer = SummaryWriter(str(log_dir))

    def on_step_end(self, metrics: dict) -> None:
        step = int(metrics.get("step", 0))
        for key, value in _flatten(metrics).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()


def _flatten(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- live progress
@dataclass
class LiveProgress:
    """A one-line rich progress bar over the metric-call budget, updated after every step (off: a no-op)."""

    budget: int
    enabled: bool = True
    description: str = "GRPO"
    _progress: Any = field(default=None, repr=False)
    _task: Any = field(default=None, repr=False)

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("metric calls"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.budget, info="")
        return self

    def update(self, used: int, metrics: dict | None = None) -> None:
        if not self._progress:
            return
        info = ""
        if metrics:
            info = f"step {metrics.get('step')}  reward {metrics.get('reward_mean', 0):.3f}"
            if metrics.get("val_score") is not None:
                info += f"  val {metrics['val_score']:.3f}"
        self._progress.update(self._task, completed=min(used, self.budget), info=info)

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.__exit__(*exc)
