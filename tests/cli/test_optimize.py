"""`dspyrl optimize` on the real tiny local model: baseline → GRPO → optimized, a run folder, resume, errors."""

import json
import textwrap

from dspyrl.cli import main

PROGRAM = textwrap.dedent('''
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    DESCRIPTION = "test program: reports the prompt it ran with"


    class ReportsItsPrompt(dspy.Module):
        def __init__(self):
            super().__init__()
            self.classify = dspy.Predict("review -> sentiment")

        def forward(self, review):
            try:
                self.classify(review=review)
            except AdapterParseError:
                pass
            return dspy.Prediction(n_demos=len(self.classify.demos))


    def build_program():
        return ReportsItsPrompt()


    def build_reward(judge_lm=None):
        return lambda example, pred, trace=None: float(pred.n_demos > 0)


    def load_examples():
        return [dspy.Example(review=f"review {i}", sentiment="positive" if i % 2 else "negative").with_inputs("review")
                for i in range(20)]
''')


def test_optimize_writes_a_run_folder_and_improves_the_held_out_score(tiny_model_dir, tmp_path, capsys):
    program = tmp_path / "reports.py"
    program.write_text(PROGRAM)
    out = tmp_path / "run"
    args = ["optimize", str(program), "--model", str(tiny_model_dir), "--budget", "56", "--out", str(out),
            "--max-tokens", "4", "--threads", "4"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"]["test_before"]["score"] == 0.0 and summary["scores"]["test_after"]["score"] == 1.0
    assert summary["metric_calls"] <= 56 and summary["steps"] >= 2
    assert {"config.json", "metrics.jsonl", "checkpoint.json", "program.json"} <= {p.name for p in out.iterdir()}
    printed = capsys.readouterr().out
    assert "GRPO-optimized" in printed and "demos (4)" in printed

    assert main(args) == 2  # the folder holds a run: refuse to overwrite it
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # nothing left to do: resumes, validates, rewrites the program
    assert json.loads((out / "summary.json").read_text())["steps"] == summary["steps"]


def test_optimize_errors_are_one_line_and_exit_2(capsys):
    assert main(["optimize", "no_such_program"]) == 2
    assert "unknown program 'no_such_program'" in capsys.readouterr().err
    assert main(["optimize", "sentiment", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_a_run_folder_refuses_another_program_or_command_before_any_work(tiny_model_dir, tmp_path, capsys):
    """issue 18: resuming with a program of the same shape (a renamed output field), and optimize --out on an eval
    folder, once overwrote the folder's files and exited 0."""
    program = tmp_path / "reports.py"
    program.write_text(PROGRAM)
    out = tmp_path / "run"
    args = ["optimize", str(program), "--model", str(tiny_model_dir), "--budget", "40", "--out", str(out),
            "--max-tokens", "4", "--threads", "2"]
    assert main(args) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "lock"}
    program.write_text(PROGRAM.replace('"review -> sentiment"', '"review -> label"'))
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "was made by a different run" in err and "signatures" in err and "\n" not in err.strip()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "lock"} == files

    evaluated = tmp_path / "eval"
    assert main(["eval", "sentiment", "--model", str(tiny_model_dir), "--limit", "2", "--max-tokens", "4",
                 "--out", str(evaluated)]) == 0
    summary = (evaluated / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["optimize", "sentiment", "--model", str(tiny_model_dir), "--out", str(evaluated)]) == 2
    assert "command 'eval' (this run: 'optimize')" in capsys.readouterr().err
    assert (evaluated / "summary.json").read_bytes() == summary
