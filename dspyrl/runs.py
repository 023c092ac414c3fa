"""The run folder: everything a run leaves on disk, and what lets it stop and go on. `RunFolder` names every file
and is the only writer (atomic JSON, fsync'ed JSONL, programs); nothing is pickled.

    runs/<name>/
      fingerprint.json      what made the folder: command, program signature and source hash, data hash, model, config;
                            a run that differs is refused (one line) unless --force
      lock                  held (flock) while a process writes the folder; a crashed run's lock dies with it
      config.json           the run's settings (never an API key)
      metrics.jsonl         one JSON object per step (rewards, loss, KL, calls, tokens, cost, val), appended before
                            the step's checkpoint, so a kill between the two replays the step: never lost, never twice
      checkpoint.json       the latest full state (policy, candidates, RNG, step, counters); the previous one is kept
      checkpoint.prev.json  as checkpoint.prev.json, and a torn checkpoint falls back to it with a one-line warning
      program.json          the program, in DSPy's own save format (`program.load("program.json")`)
      summary.json          the result, one schema for eval, optimize, finetune and compare (SUMMARY_SCHEMA)
      results.jsonl         eval: one line per example       comparison.json  compare: every paired row and the test
      report.html, plots/   `dspyrl report` / compare        adapter/         finetune: the PEFT LoRA folder
      pairs.jsonl           finetune --method dpo: the preference pairs trained on
      checkpoints/, trl/    finetune: resumable trainer checkpoints (safetensors + JSON), TRL's logging folder
      tensorboard/          optional TensorBoard scalars
      cache_keys.jsonl      the DSPy cache entries written since each checkpoint: a resume drops those of the
                            interrupted step, so its replay makes (and counts) the calls an uninterrupted run made
Also here: early stopping on a validation plateau, step callbacks, rich live progress and optional TensorBoard.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dspyrl.errors import ConfigError, MissingExtraError

FINGERPRINT = "fingerprint.json"
LOCK = "lock"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.json"
PREVIOUS_CHECKPOINT = "checkpoint.prev.json"
PROGRAM = "program.json"
SUMMARY = "summary.json"
RESULTS = "results.jsonl"
COMPARISON = "comparison.json"
REPORT = "report.html"
PLOTS = "plots"
ADAPTER = "adapter"
PAIRS = "pairs.jsonl"
TENSORBOARD = "tensorboard"
CACHE_KEYS = "cache_keys.jsonl"

# Config keys that could carry a credential are dropped before anything is written.
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization", "access_token")


# ----------------------------------------------------------------------------------------------- atomic files
def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    write_text_atomic(path, json.dumps(obj, indent=1, default=str))


def write_text_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a file through a temporary one (fsync, rename, fsync the folder): the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w", **({} if isinstance(text, bytes) else
                                                                       {"encoding": "utf-8"})) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # noqa: BLE001 - remove the temp file on any exit, then re-raise
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_folder_atomic(folder: str | Path, write) -> Path:
    """Fill a folder through a temporary one (`write(tmp)`), then swap it in: the old folder or the new, never half."""
    import shutil

    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append rows to a JSONL file and fsync: a kill leaves at most a torn last line, which `read_jsonl` skips."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, default=str) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


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


def rng_state_to_json(rng: Any = random) -> list:
    """A random.Random's (or the `random` module's) state as JSON: no pickle in a checkpoint."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_state_from_json(state: list) -> tuple:
    """The state tuple `setstate` takes, from rng_state_to_json's list."""
    return state[0], tuple(state[1]), state[2]


def rng_from_json(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate(rng_state_from_json(state))
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
    except BaseException:  # noqa: BLE001 - remove the temp folder on any exit, then re-raise
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def scrub_secrets(config: Any) -> Any:
    """A copy of a (nested) config without any key that names a credential, and with the user:password part of any
    URL in it replaced by '***'."""
    if isinstance(config, dict):
        return {k: scrub_secrets(v) for k, v in config.items()
                if not any(word in str(k).lower() for word in _SECRET_WORDS)}
    if isinstance(config, (list, tuple)):
        return [scrub_secrets(v) for v in config]
    if isinstance(config, str) and "@" in config:
        return _URL_USERINFO.sub(r"\1***@", config)
    return config


_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def has_url_credential(text: str) -> bool:
    """Whether `text` holds a URL with a user:password part (which would be logged and saved with the run)."""
    return bool(_URL_USERINFO.search(text))


# ----------------------------------------------------------------------------------------------- the folder
# This process's locks, by folder: a flock belongs to one open file, so a second RunFolder on the same folder in the
# same process (the CLI's, then the optimizer's) shares the first one's instead of locking itself out.
# Each entry is [fd, users, checkpoint index]; the index (None before the first checkpoint) labels the DSPy cache
# entries written since that checkpoint (see _record_cache_puts).
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()
_LEDGER_GUARD = threading.Lock()


class RunFolder:
    """One run's folder (see the module docstring); the only code that names or writes its files.

    `resume=False` refuses a folder that already holds a run (a checkpoint); `resume=True` needs one. `fingerprint`
    (JSON-able: what makes this run this run) is recorded on first use and compared on every later one: a folder made
    by another command, program, data, model or config is refused, one line, unless `force=True`. While the object
    lives the folder is locked (flock) against other processes; the kernel drops the lock of a killed process."""

    def __init__(self, path: str | Path, *, resume: bool = False, fingerprint: dict | None = None,
                 force: bool = False):
        self.path = Path(path)
        self.resume = resume
        self._locked = False
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run folder", hint="choose a folder for --out")
        has_checkpoint = (self.path / CHECKPOINT).exists() or (self.path / PREVIOUS_CHECKPOINT).exists()
        if not resume and has_checkpoint and fingerprint is None:
            raise ConfigError(f"run folder {self.path} already holds a run",
                              hint="resume it (--resume / resume=True) or choose another folder")
        if resume and not has_checkpoint:
            raise ConfigError(f"nothing to resume in {self.path}: it has no {CHECKPOINT}",
                              hint="start the run without --resume")
        self.created = not self.path.exists()  # by this object: `discard` may remove it again
        self.path.mkdir(parents=True, exist_ok=True)
        first = self._lock()
        if resume and first:
            # The interrupted step's answers are in DSPy's cache, usage-free: drop them so its replay calls the
            # LM again and the counters come out as an uninterrupted run's (its earlier hits stay hits).
            index = self._checkpoint_index()
            self._drop_cache_entries(since=index)
            self._set_index(index)
        if fingerprint is not None:
            self._claim(fingerprint, force=force)
            if not resume and has_checkpoint:
                raise ConfigError(f"run folder {self.path} already holds a run",
                                  hint="resume it (--resume / resume=True) or choose another folder")

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (a name from this module: CONFIG, SUMMARY, ADAPTER, ...)."""
        return self.path / name

    # ------------------------------------------------------------------------------------------ who made it
    def _claim(self, fingerprint: dict, *, force: bool) -> None:
        fingerprint = json.loads(json.dumps(fingerprint, default=str))  # compare what is on disk with what would be
        file = self.path / FINGERPRINT
        try:
            recorded = json.loads(file.read_text()) if file.exists() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = {}
        if recorded is None:
            others = [p.name for p in self.path.iterdir() if p.name != LOCK]
            if others and not force:
                raise ConfigError(f"{self.path} is not empty and was not made by a dspyrl run "
                                  f"(it holds {', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''})",
                                  hint="choose another --out, or pass --force to write into it anyway")
        elif recorded != fingerprint and not force:
            raise ConfigError(f"run folder {self.path} was made by a different run: "
                              f"{'; '.join(_differences(recorded, fingerprint)[:3])}",
                              hint="choose another --out, or pass --force to write into it anyway")
        if recorded != fingerprint:
            write_json_atomic(file, fingerprint)

    # ------------------------------------------------------------------------------------------ one writer at a time
    def _lock(self) -> bool:
        """Take (or share, in this process) the folder's lock; True when this process had not held it."""
        key = self.path.resolve()
        with _HELD_GUARD:
            held = _HELD.get(key)
            first = held is None
            if held is None:
                fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise ConfigError(f"run folder {self.path} is in use by another process (pid {owner})",
                                      hint="wait for it to finish, or choose another --out") from None
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                held = _HELD[key] = [fd, 0, None]
            held[1] += 1
        self._key, self._locked = key, True
        return first

    def release(self) -> None:
        """Let other processes write the folder (also when the object is garbage-collected or the process dies)."""
        if not getattr(self, "_locked", False):
            return
        self._locked = False
        with _HELD_GUARD:
            held = _HELD[self._key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[self._key]
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])

    def discard(self) -> None:
        """Release the folder, and remove it when this object created it: a run refused before it began (a model
        spec that does not resolve) leaves no empty folder behind. Only the fingerprint and the lock can be in it."""
        self.release()
        if self.created and {p.name for p in self.path.iterdir()} <= {FINGERPRINT, LOCK}:
            shutil.rmtree(self.path, ignore_errors=True)

    def __del__(self):
        self.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------------------------------ config, metrics
    def write_config(self, config: dict) -> None:
        write_json_atomic(self.path / CONFIG, scrub_secrets(config))

    def read_config(self) -> dict:
        file = self.path / CONFIG
        return json.loads(file.read_text()) if file.exists() else {}

    def log_metrics(self, metrics: dict) -> None:
        append_jsonl(self.path / METRICS, [metrics])

    def metrics(self) -> list[dict]:
        """The metric rows (a torn last line, left by a kill mid-append, is skipped)."""
        from dspyrl.data import read_jsonl

        file = self.path / METRICS
        return [row for _, row in read_jsonl(file, torn_last_line=True)] if file.exists() else []

    def truncate_metrics(self, last_step: int) -> None:
        """On resume: keep one row per step up to the checkpoint's; what follows is replayed (the interrupted step)."""
        kept, seen = [], set()
        for row in self.metrics():
            step = row.get("step", 0)
            if step <= last_step and step not in seen:
                seen.add(step)
                kept.append(row)
        write_text_atomic(self.path / METRICS, "".join(json.dumps(m, default=str) + "\n" for m in kept))

    # ------------------------------------------------------------------------------------------ checkpoints
    def record_step(self, state: dict, metrics: dict) -> None:
        """A step's metrics, then its checkpoint. Killed between the two, a resume (from the older checkpoint) drops
        the step's row and replays the step: every step lands in metrics.jsonl exactly once."""
        self.log_metrics(metrics)
        self.save_checkpoint(state)

    def save_checkpoint(self, state: dict) -> None:
        """Replace checkpoint.json atomically, keeping the one before as checkpoint.prev.json."""
        index = (_HELD[self._key][2] or self._checkpoint_index()) + 1
        text = json.dumps({**state, "_checkpoint": index}, indent=1, default=str)
        current = self.path / CHECKPOINT
        if current.exists():
            os.replace(current, self.path / PREVIOUS_CHECKPOINT)
        write_text_atomic(current, text)
        self._set_index(index)

    def load_checkpoint(self) -> dict | None:
        """The newest readable checkpoint; a torn or missing checkpoint.json falls back to the previous one (warning)."""
        problem = None
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
            file = self.path / name
            try:
                state = json.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                problem = problem or "missing"
                continue
            except (json.JSONDecodeError, UnicodeDecodeError):
                problem = problem or "torn (not valid JSON)"
                continue
            if name == PREVIOUS_CHECKPOINT:
                print(f"dspyrl: warning: {self.path / CHECKPOINT} is {problem}; resuming from the previous checkpoint "
                      f"(step {state.get('step')})", file=sys.stderr)
            state.pop("_checkpoint", None)
            return state
        if problem and problem != "missing":
            raise ConfigError(f"cannot resume {self.path}: {CHECKPOINT} is {problem} and there is no previous "
                              f"checkpoint", hint="start a new run folder")
        return None

    # ------------------------------------------------------------------------------------------ the cache ledger
    def _checkpoint_index(self) -> int:
        """The index of the checkpoint a resume starts from (load_checkpoint's choice, without its warning)."""
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
            try:
                return int(json.loads((self.path / name).read_text(encoding="utf-8")).get("_checkpoint", 0))
            except (OSError, ValueError, AttributeError):
                continue
        return 0

    def _set_index(self, index: int) -> None:
        with _HELD_GUARD:
            _HELD[self._key][2] = index
        _record_cache_puts()

    def _drop_cache_entries(self, *, since: int) -> None:
        file = self.path / CACHE_KEYS
        if not file.exists():
            return
        from dspyrl.data import read_jsonl

        rows = [row for _, row in read_jsonl(file, torn_last_line=True)]
        stale = {row["key"] for row in rows if row.get("after", 0) >= since}
        if stale:
            import dspy

            cache = dspy.cache
            for key in stale:
                if getattr(cache, "enable_disk_cache", False):
                    cache.disk_cache.delete(key)
                if getattr(cache, "enable_memory_cache", False):
                    with cache._lock:
                        cache.memory_cache.pop(key, None)
        write_text_atomic(file, "".join(json.dumps(row) + "\n" for row in rows if row["key"] not in stale))

    # ------------------------------------------------------------------------------------------ results
    def save_program(self, program, name: str = PROGRAM) -> Path:
        return save_program(program, self.path / name)

    def save_adapter(self, model) -> Path:
        """adapter/: the trained ("default") PEFT LoRA adapter, swapped in atomically."""
        return write_folder_atomic(self.path / ADAPTER,
                                   lambda tmp: model.save_pretrained(tmp, selected_adapters=["default"]))

    def write_summary(self, summary: dict) -> dict:
        """summary.json, in the one schema every command writes (SUMMARY_SCHEMA); returns what was written."""
        summary = {"schema": SUMMARY_SCHEMA_VERSION, **summary, "run_folder": str(self.path)}
        missing = [key for key in SUMMARY_SCHEMA["required"] if key not in summary]
        if missing:  # a bug in the command, not bad input
            raise ValueError(f"summary.json misses {', '.join(missing)}")
        write_json_atomic(self.path / SUMMARY, summary)
        return summary

    def write_jsonl(self, name: str, rows: list[dict]) -> Path:
        """A whole JSONL file (results.jsonl, pairs.jsonl), written atomically."""
        write_text_atomic(self.path / name, "".join(json.dumps(row, default=str) + "\n" for row in rows))
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Any other JSON file of the folder (comparison.json, ...), written atomically."""
        write_json_atomic(self.path / name, obj)
        return self.path / name

    def write_text(self, name: str, text: str | bytes) -> Path:
        """A report asset (report.html, plots/*.png), written atomically."""
        write_text_atomic(self.path / name, text)
        return self.path / name


def _record_cache_puts() -> None:
    """Once per DSPy cache object: note every entry it stores in the ledger of each run folder this process holds
    (with the folder's latest checkpoint index), so a resume can drop what the interrupted step cached."""
    import dspy

    cache = dspy.cache
    if getattr(cache, "_dspyrl_ledger", False):
        return
    original = cache.put

    def put(request, value, ignored_args_for_cache_key=None, enable_memory_cache=True):
        original(request, value, ignored_args_for_cache_key, enable_memory_cache)
        with _HELD_GUARD:
            targets = [(path, held[2]) for path, held in _HELD.items() if held[2] is not None]
        if not targets:
            return
        try:
            key = cache.cache_key(request, ignored_args_for_cache_key)
        except Exception:  # noqa: BLE001 - DSPy itself skips caching such a request
            return
        with _LEDGER_GUARD:
            for path, index in targets:
                with open(path / CACHE_KEYS, "a", encoding="utf-8") as handle:  # a kill keeps what the OS has
                    handle.write(json.dumps({"after": index, "key": key}) + "\n")

    cache.put = put
    cache._dspyrl_ledger = True


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old == new:
        return []
    show = lambda v: (repr(v)[:40] + "…") if len(repr(v)) > 41 else repr(v)  # noqa: E731
    return [f"{prefix.rstrip('.')} {show(old)} (this run: {show(new)})"]


def content_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (data rows, source text) for a fingerprint."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- summary.json
SUMMARY_SCHEMA_VERSION = 1
_SCORE = {"type": "object", "required": ["score", "n", "failures"],
          "properties": {"score": {"type": "number"}, "n": {"type": "integer", "minimum": 0},
                         "failures": {"type": "integer", "minimum": 0},
                         "ci95": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                         "wall_s": {"type": "number"}}}
# The one shape of summary.json (JSON Schema). Command-specific keys (eval's components, optimize's best_val,
# finetune's adapter_dir, compare's test) may follow the common ones.
SUMMARY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dspyrl summary.json",
    "type": "object",
    "required": ["schema", "command", "program", "model", "format", "data", "run_folder", "scores", "lm_calls",
                 "tokens", "cost", "wall_s"],
    "properties": {
        "schema": {"const": SUMMARY_SCHEMA_VERSION},
        "command": {"enum": ["eval", "optimize", "finetune", "compare"]},
        "program": {"type": "string"}, "model": {"type": "string"}, "format": {"type": ["string", "null"]},
        "data": {"type": "string"}, "run_folder": {"type": "string"},
        # eval: {"eval"}; optimize/finetune: {"test_before", "test_after"}; compare: {"A", "B"} (held-out scores)
        "scores": {"type": "object", "minProperties": 1, "additionalProperties": _SCORE},
        # every LM call the command made (scoring and training), their tokens (prompt + completion) and cost
        "lm_calls": {"type": "integer", "minimum": 0}, "tokens": {"type": "integer", "minimum": 0},
        "cost": {"type": "number", "minimum": 0},
        "wall_s": {"type": "number", "minimum": 0},
    },
}


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
        for key, value in flatten_metrics(metrics).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()


def flatten_metrics(metrics: dict, prefix: str = "") -> dict:
    """{"reward_components": {"judge": 0.5}} → {"reward_components/judge": 0.5} (TensorBoard tags, report columns)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- live progress
@dataclass
class LiveProgress:
    """dspyrl's one progress line (rich): a bar over `total` `unit`s (metric calls, steps, runs), the elapsed time, and
    what the last step said (reward, KL, loss, val, failures so far). Used by prompt GRPO, the TRL trainers and the
    rollout engine; `enabled=False` makes it a no-op.

        with LiveProgress(300, description="GRPO") as live:
            live.update(used, metrics)      # or live.advance() once per finished unit
    """

    total: int
    enabled: bool = True
    description: str = "GRPO"
    unit: str = "metric calls"
    completed: int = 0
    _progress: Any = field(default=None, repr=False)
    _task: Any = field(default=None, repr=False)

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(self.unit), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed,
                                                 info="")
        return self

    def update(self, completed: int, metrics: dict | None = None) -> None:
        if not self._progress:
            return
        fields = {"info": step_info(metrics)} if metrics else {}
        self._progress.update(self._task, completed=min(completed, self.total), **fields)

    def advance(self, amount: int = 1) -> None:
        if self._progress:
            self._progress.advance(self._task, amount)

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.__exit__(*exc)
            self._progress = None


def step_info(metrics: dict) -> str:
    """The progress line's text for one step's metrics: what is there of step, reward, KL, loss, margin, val and the
    failed runs so far (training-time failures show while training, not only in metrics.jsonl)."""
    parts = [f"step {metrics['step']}"] if "step" in metrics else []
    for label, key in (("reward", "reward_mean"), ("KL", "kl"), ("loss", "loss"), ("margin", "reward_margin"),
                       ("val", "val_score")):
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool):
            parts.append(f"{label} {metrics[key]:.4g}")
    if metrics.get("failures"):
        parts.append(f"[red]failed runs {metrics['failures']}[/red]")
    elif metrics.get("failure_rate"):
        parts.append(f"[red]failed {metrics['failure_rate']:.0%}[/red]")
    return "  ".join(parts)
