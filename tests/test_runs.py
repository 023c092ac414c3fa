"""The run folder: atomic JSON, RNG state as JSON, secrets scrubbed, resume rules, early stopping, program save/load."""

import json
import random

import dspy
import pytest

from dspyrl.errors import ConfigError, MissingExtraError
from dspyrl.runs import (EarlyStopping, RunFolder, TensorBoardCallback, rng_from_json, rng_state_to_json,
                         scrub_secrets, write_json_atomic)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"step": 1})
    write_json_atomic(target, {"step": 2, "big": list(range(1000))})
    assert json.loads(target.read_text())["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"step": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"bad": float("nan"), "loop": _SelfRef()})
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


class _SelfRef:
    def __str__(self):
        raise ValueError("cannot serialise")


def test_rng_state_survives_json():
    rng = random.Random(7)
    rng.random()
    restored = rng_from_json(json.loads(json.dumps(rng_state_to_json(rng))))
    assert [restored.random() for _ in range(5)] == [rng.random() for _ in range(5)]


def test_secrets_never_reach_the_config_file(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_config({"lm": "openrouter/x", "api_key": "sk-123", "nested": {"OPENAI_API_KEY": "sk-9", "max_tokens": 5}})
    text = (tmp_path / "run" / "config.json").read_text()
    assert "sk-" not in text
    assert json.loads(text) == {"lm": "openrouter/x", "nested": {"max_tokens": 5}}
    assert scrub_secrets([{"password": "x", "a": 1}]) == [{"a": 1}]


def test_resume_rules_and_metrics_truncation(tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        RunFolder(tmp_path / "run", resume=True)
    run = RunFolder(tmp_path / "run")
    run.save_checkpoint({"step": 2})
    for step in (1, 2, 3):
        run.log_metrics({"step": step})
    with pytest.raises(ConfigError, match="already holds a run"):
        RunFolder(tmp_path / "run")
    resumed = RunFolder(tmp_path / "run", resume=True)
    assert resumed.load_checkpoint() == {"step": 2}
    resumed.truncate_metrics(2)
    assert [m["step"] for m in resumed.metrics()] == [1, 2]


def test_program_saves_in_dspy_format_and_loads_back(tmp_path):
    program = dspy.Predict("question -> answer")
    program.signature = program.signature.with_instructions("Answer briefly.")
    program.demos = [dspy.Example(question="1+1?", answer="2")]
    path = RunFolder(tmp_path / "run").save_program(program)
    fresh = dspy.Predict("question -> answer")
    fresh.load(str(path))
    assert fresh.signature.instructions == "Answer briefly."
    assert fresh.demos[0]["answer"] == "2"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["lock", "program.json"]


def test_early_stopping_counts_evaluations_without_improvement():
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert [stopper.update(s) for s in (0.5, 0.6, 0.605, 0.6)] == [False, False, False, True]
    assert EarlyStopping.from_json(stopper.to_json()).best == 0.6
    never = EarlyStopping(patience=0)
    assert not any(never.update(0.1) for _ in range(10))


def test_tensorboard_without_the_package_is_a_typed_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError):
            TensorBoardCallback(tmp_path)
    else:
        callback = TensorBoardCallback(tmp_path)
        callback.on_step_end({"step": 1, "reward_mean": 0.5, "nested": {"kl": 0.1}})
        assert any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------- issue 18: run folders
def test_a_folder_made_by_another_run_is_refused_unless_forced(tmp_path):
    made = {"command": "optimize", "program": "reports", "signatures": {"classify": {"outputs": ["sentiment"]}}}
    RunFolder(tmp_path / "run", fingerprint=made).release()
    other = {**made, "signatures": {"classify": {"outputs": ["label"]}}}  # same shape, a renamed output field
    with pytest.raises(ConfigError, match=r"made by a different run: signatures.classify.outputs"):
        RunFolder(tmp_path / "run", fingerprint=other)
    with pytest.raises(ConfigError, match="made by a different run: command 'optimize' \\(this run: 'eval'\\)"):
        RunFolder(tmp_path / "run", fingerprint={**made, "command": "eval"})
    RunFolder(tmp_path / "run", fingerprint=other, force=True).release()  # --force: written, and recorded
    assert json.loads((tmp_path / "run" / "fingerprint.json").read_text()) == other
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a run")
    with pytest.raises(ConfigError, match="not empty and was not made by a dspyrl run"):
        RunFolder(tmp_path / "mine", fingerprint=made)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a run folder"):
        RunFolder(tmp_path / "file", fingerprint=made)


_HOLD = """
import sys, time
from dspyrl.runs import RunFolder
run = RunFolder(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_one_process_per_folder_and_a_killed_process_leaves_no_stuck_lock(tmp_path):
    import signal
    import subprocess
    import sys

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            RunFolder(folder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunFolder(folder).release()  # the kernel dropped the dead process's lock: no stale lock to clean up by hand


def test_a_torn_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    run.record_step({"step": 1}, {"step": 1})
    run.record_step({"step": 2}, {"step": 2})
    (tmp_path / "run" / "checkpoint.json").write_text('{"step": 3, "pol')  # torn by a crash mid-write
    assert run.load_checkpoint() == {"step": 1}  # the last two are kept: the torn step 2 and the good step 1
    err = capsys.readouterr().err.strip()
    assert "checkpoint.json is torn" in err and "previous checkpoint (step 1)" in err and "\n" not in err
    (tmp_path / "run" / "checkpoint.prev.json").write_text("")
    with pytest.raises(ConfigError, match="torn .* no previous checkpoint"):
        run.load_checkpoint()


def test_a_kill_between_metrics_and_checkpoint_replays_the_step_once(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.record_step({"step": 1}, {"step": 1})
    run.log_metrics({"step": 2})  # killed here: step 2's row is written, its checkpoint is not
    with open(tmp_path / "run" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "rew')  # and a torn row from a kill mid-append
    assert [m["step"] for m in run.metrics()] == [1, 2]
    state = run.load_checkpoint()
    run.truncate_metrics(state["step"])  # what a resume does; then it replays step 2
    run.record_step({"step": 2}, {"step": 2})
    assert [m["step"] for m in run.metrics()] == [1, 2]


def test_the_progress_line_shows_training_time_failures():
    from dspyrl.runs import step_info

    line = step_info({"step": 3, "reward_mean": 0.5, "kl": 0.01, "failures": 2, "val_score": None})
    assert line.startswith("step 3  reward 0.5  KL 0.01") and "failed runs 2" in line
    assert "failed 25%" in step_info({"step": 1, "loss": 0.2, "failure_rate": 0.25})  # the TRL trainers' metrics
    assert "fail" not in step_info({"step": 1, "failures": 0})
