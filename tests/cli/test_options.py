"""Issue 18: every bad option or program file is one line naming it, exit 2, before any model or data is loaded.

The model is a path that does not exist: had a command got as far as loading it, the error would name the model."""

from __future__ import annotations

import json

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
    # the reward options (RewardOptions): checked before the run folder is claimed and before any model loads
    (["eval", "sentiment", "--judge-mode", "pairwise"], "argument --judge-mode: invalid choice: 'pairwise'"),
    (["eval", "sentiment", "--judge-mode", "group"], "--judge-mode group needs an LM judge: pass --judge MODEL"),
    (["eval", "sentiment", "--reward-model", "{tmp}/not_a_run"], "not_a_run: not a reward model folder"),
    (["optimize", "sentiment", "--reward-model", "{tmp}/nowhere"], "nowhere: not a reward model folder"),
    (["finetune", "sentiment", "--reward-model", "{tmp}/a_file"], "a_file: not a reward model folder"),
    (["compare", "baseline", "baseline", "--reward-model", "{tmp}/not_a_run", "--judge", NO_MODEL],
     "not_a_run: not a reward model folder"),
    (["finetune", "sentiment", "--judge-mode", "group", "--reward-model", "{tmp}/not_a_run"],
     "--judge-mode group is how an LM judge scores; --reward-model replaces the program's reward"),
    (["optimize", "sentiment", "--reward-model", "{tmp}/not_a_run", "--judge", NO_MODEL],
     "--reward-model replaces the program's reward, so --judge would score nothing"),
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


def test_every_command_gives_the_task_model_the_same_completion_limit(capsys):
    """`dspyrl eval` once defaulted to 256 tokens where optimize and compare gave 128: an eval of a compiled program
    then did not reproduce the test score optimize had printed for it."""
    from dspyrl.cli.compare import CompareConfig
    from dspyrl.cli.eval import EvalConfig
    from dspyrl.cli.finetune import FinetuneConfig
    from dspyrl.cli.optimize import OptimizeConfig

    limits = {c.__name__: c.__dataclass_fields__["max_tokens"].default
              for c in (EvalConfig, OptimizeConfig, CompareConfig, FinetuneConfig)}
    assert len(set(limits.values())) == 1, limits
    assert main(["eval", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"completion limit of the task model (default: {limits['EvalConfig']})" in text


MODEL_CASES = [  # (argv, the option the one line names); the default run folder is under runs/ in the cwd
    (["optimize", "sentiment", "--model", "nosuch/thing"], "--model: unknown model 'nosuch/thing'"),
    (["optimize", "sentiment", "--judge", "{tmp}/no_model_here"], "--judge: unknown model"),
    (["optimize", "sentiment", "--reflection-model", "openai-compatible:nothing"],
     "--reflection-model: model spec 'openai-compatible:nothing' must look like"),
    (["eval", "sentiment", "--model", "{tmp}/a_file"], "--model: model path"),
    (["finetune", "sentiment", "--model", "{tmp}/empty_folder"], "--model: model folder"),
    (["compare", "baseline", "baseline", "--judge", "nosuch/judge"], "--judge: unknown model 'nosuch/judge'"),
]


@pytest.mark.parametrize("argv, message", MODEL_CASES, ids=[" ".join(argv[:4]) for argv, _ in MODEL_CASES])
def test_a_model_spec_that_does_not_resolve_leaves_no_run_folder(tmp_path, monkeypatch, capsys, argv, message):
    # the folder is claimed first (its own errors come first, as above) and discarded again when a spec is refused
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty_folder").mkdir()
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # an existing run folder named with --out is never removed, only released
    out = tmp_path / "mine"
    assert main([arg.format(tmp=tmp_path) for arg in argv] + ["--out", str(out)]) == 2
    assert not out.exists()
    out.mkdir()
    (out / "fingerprint.json").write_text("{}")
    assert main([arg.format(tmp=tmp_path) for arg in argv] + ["--out", str(out), "--force"]) == 2
    assert out.is_dir()


# ----------------------------------------------------------------------------------------------- the reward options
@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A reward model trained for two steps on the tiny model: what it has learnt does not matter here, only that the
    commands score with it."""
    from dspyrl.rewards.reward_model import RewardModelConfig, train_reward_model
    from tests.rewards.test_reward_model import marker_pairs

    out = tmp_path_factory.mktemp("rm") / "rm"
    train_reward_model(marker_pairs(8), RewardModelConfig(model=str(tiny_model_dir), out=str(out), steps=2,
                                                          batch_size=4), progress=False)
    return out


def _json(path):
    return json.loads(path.read_text())


def test_eval_and_compare_score_with_a_reward_model(tiny_model_dir, reward_model_dir, tmp_path):
    import dspy

    from dspyrl.program_file import load_program_file
    from dspyrl.rewards import RewardModel

    out = tmp_path / "eval"
    assert main(["eval", "sentiment", "--model", str(tiny_model_dir), "--reward-model", str(reward_model_dir),
                 "--limit", "3", "--out", str(out)]) == 0
    summary = _json(out / "summary.json")
    assert set(summary["components"]) == {"reward_model"} and summary["reward_failures"] == 0
    assert _json(out / "config.json")["reward_model"] == str(reward_model_dir)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    examples = load_program_file("sentiment").load_examples()[:3]
    model = RewardModel(reward_model_dir)  # what the command scored with: the folder's model, not the exact label
    for row, example in zip(rows, examples):
        expected = model(example, dspy.Prediction(**row["prediction"])).total
        assert row["reward"]["total"] == pytest.approx(expected, abs=1e-6) and 0.0 < expected < 1.0

    compared = tmp_path / "compare"
    assert main(["compare", "baseline", "baseline", "--model", str(tiny_model_dir), "--reward-model",
                 str(reward_model_dir), "--limit", "3", "--out", str(compared)]) == 0
    comparison = _json(compared / "comparison.json")
    assert comparison["settings"]["reward_model"] == str(reward_model_dir) and comparison["stats"]["n"] == 3
    assert all(0.0 < row["reward_a"] < 1.0 for row in comparison["examples"])  # σ(logit), not the exact label's 0/1


def test_eval_judge_mode_group_makes_one_judge_call_per_example(tiny_model_dir, tmp_path):
    runs = {}
    for mode in ("per-sample", "group"):
        out = tmp_path / mode
        assert main(["eval", "qa_cot", "--model", str(tiny_model_dir), "--judge", str(tiny_model_dir), "--judge-mode",
                     mode, "--limit", "2", "--max-tokens", "12", "--judge-max-tokens", "200", "--out", str(out)]) == 0
        runs[mode] = _json(out / "summary.json")["judge_stats"]["judge"]
    scored = 2 - _json(tmp_path / "group" / "summary.json")["failures"]  # a run whose answer did not parse is not judged
    assert runs["group"]["mode"] == "group" and runs["group"]["groups"] == scored and runs["group"]["judgements"] == 0
    assert runs["per-sample"]["mode"] == "sample" and runs["per-sample"]["groups"] == 0
    # under the judge's grammar (its default format on a local model) the random judge's verdicts parse
    assert runs["group"]["failures"] == 0 and runs["group"]["lm_calls"] == scored


def test_finetune_trains_against_a_reward_model(tiny_model_dir, reward_model_dir, tmp_path):
    program = tmp_path / "free_text.py"  # a free-text answer: the compact format reads any reply, so runs are scored
    program.write_text(FREE_TEXT)  # its own reward is 1.0 for every run
    out = tmp_path / "run"
    args = ["finetune", str(program), "--model", str(tiny_model_dir), "--steps", "1", "--max-tokens", "8", "--format",
            "compact", "--num-generations", "2", "--threads", "2", "--out", str(out)]
    assert main(args + ["--reward-model", str(reward_model_dir)]) == 0
    summary = _json(out / "summary.json")
    for split in ("test_before", "test_after"):  # a σ(logit) mean: the reward model scored, not the program's 1.0
        assert summary["scores"][split]["failures"] == 0 and 0.0 < summary["scores"][split]["score"] < 1.0
    assert [m["step"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1]
    # another reward is another run: resuming it with the program's own reward is refused
    assert main(args + ["--steps", "2", "--resume"]) == 2


def test_optimize_scores_with_a_reward_model(tiny_model_dir, reward_model_dir, tmp_path):
    program = tmp_path / "free_text.py"
    program.write_text(FREE_TEXT)  # its own reward is 1.0 for every run
    out = tmp_path / "run"
    assert main(["optimize", str(program), "--model", str(tiny_model_dir), "--reward-model", str(reward_model_dir),
                 "--budget", "8", "--group-size", "2", "--batch-size", "1", "--max-tokens", "8", "--format",
                 "compact", "--fixed-format", "--out", str(out)]) == 0
    scores = _json(out / "summary.json")["scores"]
    assert all(0.0 < entry["score"] < 1.0 for entry in scores.values()), scores  # σ(logit) means, not 1.0


def test_judge_estimate_counts_one_call_per_group_in_group_mode():
    from types import SimpleNamespace

    from dspyrl.cli.options import judge_estimate

    options = SimpleNamespace(judge="openrouter/acme/judge", max_tokens=50, judge_max_tokens=100, judge_mode="per-sample")
    sample = judge_estimate(options, 32, 4, 10, prompt=200)
    assert (sample.calls, sample.prompt_tokens_per_call) == (42, 250)
    options.judge_mode = "group"
    group = judge_estimate(options, 32, 4, 10, prompt=200)
    assert group.calls == 8 + 10  # 8 groups of 4 training runs, then the valset and test runs one at a time
    assert group.prompt_tokens_per_call == (8 * (200 + 4 * 50) + 10 * 250) // 18
