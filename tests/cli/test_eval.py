"""`dspyrl eval` end to end on a real (tiny, random) local model: in-process, through `dspyrl serve` over HTTP as a
hosted-style dspy.LM, and with an LM judge; the run folder's files; and (slow) the ready programs on SmolLM2."""

from __future__ import annotations

import json

import dspy
import pytest

from dspyrl.cli import main
from dspyrl.cli.eval import EvalConfig, evaluate
from dspyrl.program_file import load_program_file


def _read_run(folder):
    summary = json.loads((folder / "summary.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return summary, config, rows


def test_eval_cli_on_a_local_model_writes_the_run_folder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "programs/math_xml.py", "--model", str(tiny_model_dir), "--limit", "3", "--max-tokens", "12",
                 "--out", str(out)])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0
    assert "mean reward" in printed and "format" in printed and "correct" in printed and str(out) in printed
    summary, config, rows = _read_run(out)
    assert summary["examples"] == 3 and len(rows) == 3
    assert set(summary["components"]) == {"format", "correct"}
    # an untrained model cannot follow the format: every failure is counted, not hidden
    assert summary["failures"] + sum(1 for r in rows if not r["failed"]) == 3
    assert summary["failures"] == sum(1 for r in rows if r["error"])
    assert summary["prompt_tokens"] > 0 and summary["lm_calls"] >= 3
    assert 0 <= summary["truncated"] <= summary["lm_calls"]
    assert "LM response was truncated" not in captured.err  # counted in the table instead of one warning per call
    assert config["program"] == "programs/math_xml.py" and config["model"] == str(tiny_model_dir)
    first = rows[0]
    assert first["inputs"]["question"] and isinstance(first["gold"]["answer"], int)
    assert first["calls"] and first["calls"][0]["messages"][0]["role"] == "system"
    program = load_program_file("math_xml").build_program()
    program.load(str(out / "program.json"))
    assert program.demos  # the worked example was saved with the program

    # the same folder again is refused, one line, exit 2: the same evaluation, or (here) another one
    assert main(["eval", "math_xml", "--model", str(tiny_model_dir), "--limit", "1", "--out", str(out)]) == 2
    assert "was made by a different run" in capsys.readouterr().err
    assert main(["eval", "programs/math_xml.py", "--model", str(tiny_model_dir), "--limit", "3", "--max-tokens", "12",
                 "--out", str(out)]) == 2
    assert "already holds an evaluation" in capsys.readouterr().err


def test_eval_format_choice_never_fails_to_parse(tiny_model_dir, tmp_path):
    out = tmp_path / "choice"
    code = main(["eval", "sentiment", "--model", str(tiny_model_dir), "--limit", "4", "--format", "choice",
                 "--out", str(out)])
    assert code == 0
    summary, config, rows = _read_run(out)
    assert config["format"] == "choice"
    # the random model cannot write a parseable reply on its own, but a choice among the labels always parses
    assert summary["failures"] == 0 and {r["prediction"]["sentiment"] for r in rows} <= {"positive", "negative"}
    assert "[[ ##" not in rows[0]["calls"][0]["messages"][-1]["content"]


def test_eval_through_dspyrl_serve_as_a_hosted_model(tiny_model_dir, tmp_path, monkeypatch):
    from dspyrl.lm.server import serve_in_thread

    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test-secret-0123456789")
    server = serve_in_thread(str(tiny_model_dir))
    try:
        summary = evaluate(EvalConfig(program="sentiment", model=f"openai-compatible:{server.base_url}:tiny",
                                      limit=4, max_tokens=8, out=str(tmp_path / "hosted"), threads=2))
    finally:
        server.stop()
    assert summary["examples"] == 4 and summary["lm_calls"] >= 4
    assert summary["prompt_tokens"] > 0  # usage came back over HTTP
    for file in (tmp_path / "hosted").iterdir():
        assert "sk-test-secret" not in file.read_text()


def test_eval_with_an_lm_judge_reports_judge_stats(tiny_model_dir, tmp_path):
    from dspyrl.lm import local_lm
    from tests.test_rollout import WholeTextAdapter

    lm = local_lm(str(tiny_model_dir), max_tokens=8)
    with dspy.context(adapter=WholeTextAdapter()):  # the program's answers parse; the judge's do not
        summary = evaluate(EvalConfig(program="qa_cot", model="tiny", judge="tiny", limit=2, format=None,
                                      out=str(tmp_path / "judged")), lm=lm, judge_lm=lm)
    assert set(summary["components"]) == {"f1", "judge"}
    stats = summary["judge_stats"]["judge"]
    assert summary["failures"] < 2 and stats["judgements"] == 2 - summary["failures"]  # one judgement per answer
    assert stats["failures"] == summary["reward_failures"]


def test_eval_config_errors(tmp_path, capsys):
    assert main(["eval", "no_such_program", "--out", str(tmp_path / "x")]) == 2
    assert "unknown program 'no_such_program'" in capsys.readouterr().err
    assert main(["eval", "sentiment", "--threads", "0", "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("program", ["sentiment", "math_xml"])
def test_ready_programs_on_smollm2(program, tmp_path):
    summary = evaluate(EvalConfig(program=program, model="smollm2", limit=8, max_tokens=160, threads=8,
                                  out=str(tmp_path / program)))
    assert summary["examples"] == 8
    assert 0.0 <= summary["mean_reward"] <= 1.0
    assert summary["failures"] < 8, "SmolLM2 should answer at least some examples in a parseable form"
