"""Issue 18: every bad option or program file is one line naming it, exit 2, before any model or data is loaded.

The model is a path that does not exist: had a command got as far as loading it, the error would name the model."""

from __future__ import annotations

import pytest

from dspyrl.cli import main

NO_MODEL = "/nonexistent/model"

FREE_TEXT = '''
import dspy
def build_program():
    return dspy.Predict("question -> answer")
def build_reward(judge_lm=None):
    return lambda example, pred, trace=None: 1.0
def load_examples():
    return [dspy.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(10)]
'''
FILES = {
    "free_text.py": FREE_TEXT,
    "import_fails.py": "import dspy\nimport no_such_module_anywhere\n",
    "returns_none.py": FREE_TEXT.replace('return dspy.Predict("question -> answer")', "pass"),
    "no_examples.py": FREE_TEXT.replace("for i in range(10)]", "for i in range(0)]"),
}

CASES = [  # (argv, what the one line says)
    (["optimize", "sentiment", "--group-size", "0"], "argument --group-size: must be at least 1, got 0"),
    (["optimize", "sentiment", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["optimize", "sentiment", "--budget", "-3"], "argument --budget: must be at least 1, got -3"),
    (["eval", "sentiment", "--max-tokens", "0"], "argument --max-tokens: must be at least 1, got 0"),
    (["eval", "sentiment", "--max-tokens", "-5"], "argument --max-tokens: must be at least 1, got -5"),
    (["eval", "sentiment", "--temperature", "-1"], "argument --temperature: must be at least 0.0, got -1.0"),
    (["eval", "sentiment", "--threads", "x"], "argument --threads: expected an integer, got 'x'"),
    (["compare", "baseline", "baseline", "--limit", "-1"], "argument --limit: must be at least 1, got -1"),
    (["finetune", "sentiment", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["finetune", "sentiment", "--steps", "-1"], "argument --steps: must be at least 1, got -1"),
    (["finetune", "sentiment", "--num-generations", "1"], "argument --num-generations: must be at least 2, got 1"),
    (["finetune", "sentiment", "--format", "choice"], "argument --format: invalid choice: 'choice'"),
    (["eval", "sentiment", "--format", "fancy"], "argument --format: invalid choice: 'fancy'"),
    (["eval", "sentiment", "--out", "{tmp}/a_file"], "a_file is a file, not a run folder"),
    (["compare", "baseline", "baseline", "--out", "{tmp}/a_file"], "a_file is a file, not a run folder"),
    (["optimize", "sentiment", "--out", "{tmp}/a_file"], "a_file is a file, not a run folder"),
    (["eval", "{tmp}/free_text.py", "--format", "choice"], "--format choice does not apply to predictor self"),
    (["optimize", "{tmp}/free_text.py", "--format", "choice"], "--format choice does not apply to predictor self"),
    (["compare", "baseline", "baseline", "--program", "{tmp}/free_text.py", "--format", "choice"],
     "--format choice does not apply to predictor self"),
    (["eval", "{tmp}/import_fails.py"], "import_fails.py:2: the program file failed to import: ModuleNotFoundError"),
    (["optimize", "{tmp}/returns_none.py"], "returns_none.py: build_program() returned NoneType, not a dspy.Module"),
    (["eval", "{tmp}/no_examples.py"], "no_examples.py: load_examples() returned no examples"),
    (["optimize", "sentiment", "--out", "{tmp}/not_a_run"], "not_a_run is not empty and was not made by a dspyrl run"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(argv[:4]) for argv, _ in CASES])
def test_bad_options_and_program_files_are_one_line_exit_2_before_any_model_loads(tmp_path, capsys, argv, message):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "a_file").write_text("already here")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.md").write_text("mine")
    argv = [arg.format(tmp=tmp_path) for arg in argv] + ["--model", NO_MODEL]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert "\n" not in err and "Traceback" not in err and NO_MODEL not in err
    assert (tmp_path / "a_file").read_text() == "already here"  # nothing touched


def test_help_shows_the_config_dataclass_defaults(capsys):
    from dspyrl.optim.prompts.grpo import GRPOConfig

    assert main(["optimize", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {GRPOConfig.max_metric_calls})" in text and "--budget" in text
    assert "completion limit of the judge LM, the same in every command (default: 256)" in text
