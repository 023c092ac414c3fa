"""`dspyrl finetune` with a hosted judge on an OpenRouter-speaking server: --estimate before any call, --max-cost stops
LoRA GRPO between steps (checkpointed, one line), --resume with a higher cap goes on with the spend carried over,
--report-to tensorboard / wandb (offline) write into the run folder, and no canary key lands anywhere."""

import json
import textwrap

import pytest

from dspyrl.cli.main import main
from tests.lm.openrouter_server import OpenRouterServer
from tests.lm.test_hosted_cli import CANARY, _no_canary_anywhere, canary_keys  # noqa: F401 (a fixture)

JUDGED = textwrap.dedent('''
    import dspy

    DESCRIPTION = "test program: every run is scored by an LM judge"


    def build_program():
        return dspy.Predict("review -> sentiment")


    def build_reward(judge_lm=None):
        judge = dspy.Predict("review, answer -> verdict")

        def reward(example, pred, trace=None):
            with dspy.context(lm=judge_lm, adapter=dspy.ChatAdapter()):  # the judge is asked in DSPy's own format
                verdict = judge(review=example.review, answer=pred.sentiment).verdict
            return 0.5 * float(verdict == example.sentiment) + 0.5 * float(pred.sentiment == example.sentiment)

        return reward


    def load_examples():
        return [dspy.Example(review=f"review number {i}", sentiment="positive" if i % 2 else "negative")
                .with_inputs("review") for i in range(20)]
''')


@pytest.fixture()
def judge_server(canary_keys):
    answers = {f"review number {i}": "positive" if i % 2 else "negative" for i in range(20)}
    with OpenRouterServer(key=CANARY, answers=answers) as running:
        yield running


def test_finetune_estimate_cap_resume_and_report_to(judge_server, tiny_model_dir, tmp_path, capsys):
    program = tmp_path / "judged.py"
    program.write_text(JUDGED)
    out = tmp_path / "run"
    base = ["finetune", str(program), "--model", str(tiny_model_dir), "--judge", "openrouter/acme/judge-mid",
            "--api-base", judge_server.base_url, "--steps", "6", "--num-generations", "2", "--max-tokens", "8",
            "--format", "compact", "--threads", "2", "--save-every", "0", "--no-cache", "--out", str(out)]
    assert main([*base, "--estimate", "--max-cost", "0.0027"]) == 0
    estimate = capsys.readouterr().out
    assert "estimate (no LM was called)" in estimate and "judge" in estimate and "cap: $0.0027" in estimate
    assert "free (local model)" in estimate  # the task model trains in-process
    assert not judge_server.received and not out.exists()

    assert main([*base, "--max-cost", "0.0027", "--report-to", "tensorboard"]) == 0
    capped = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "checkpoint.json").read_text())
    usage = summary["finetune_usage"]
    per_step = 2 * usage["judge"]["cost"] / usage["judge"]["calls"]  # one step: G = 2 judged completions
    with capsys.disabled():
        print(f"\ncapped finetune: cap $0.0027, LoRA GRPO spent ${usage['total']['cost']:.6f} in {summary['steps']} of "
              f"6 steps; the whole command ${summary['usage']['total']['cost']:.6f}, server billed "
              f"${judge_server.billed:.6f}")
    assert summary["stopped"] == "cost_cap" and 1 <= summary["steps"] < 6 and "test_after" not in summary["scores"]
    assert record["stopped"] == "cost_cap" and not record["done"] and (out / record["dir"]).is_dir()
    assert usage["judge"]["cost_source"] == "provider" and usage["task"]["cost"] == 0.0  # the local model is free
    assert usage["total"]["cost"] < 0.0027 + per_step
    assert summary["usage"]["total"]["cost"] == pytest.approx(judge_server.billed, rel=1e-6)
    assert "stopped at the cost cap" in capped.out and "--resume" in capped.out
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, summary["steps"] + 1))
    assert 0 < rows[0]["cost"] < rows[-1]["cost"] <= usage["total"]["cost"]  # each step's spend so far, in USD

    assert main([*base, "--resume", "--max-cost", "1", "--report-to", "wandb"]) == 0
    resumed = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    with capsys.disabled():
        print(f"resumed: cap $1, LoRA GRPO spent ${summary['finetune_usage']['total']['cost']:.6f} in total, "
              f"{summary['steps']} steps")
    assert summary["stopped"] == "" and summary["steps"] == 6 and "test_after" in summary["scores"]
    assert summary["finetune_usage"]["total"]["cost"] > usage["total"]["cost"]  # carried over and grown
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert json.loads((out / "checkpoint.json").read_text())["done"]
    assert any((out / "wandb").rglob("*.wandb"))
    assert "stopped at the cost cap" not in resumed.out
    _no_canary_anywhere(out, estimate, capped.out, capped.err, resumed.out, resumed.err)


def test_the_judge_running_out_of_credits_mid_training_stops_finetune_at_once(judge_server, tiny_model_dir, tmp_path,
                                                                              capsys):
    """402 during LoRA GRPO's scoring of completions (not only in the test scoring around it): one line, exit 2."""
    program = tmp_path / "judged.py"
    program.write_text(JUDGED)
    argv = ["finetune", str(program), "--model", str(tiny_model_dir), "--judge", "openrouter/acme/judge-mid",
            "--api-base", judge_server.base_url, "--steps", "20", "--num-generations", "2", "--max-tokens", "8",
            "--format", "compact", "--threads", "2", "--save-every", "0", "--no-cache"]
    judge_server.credits = 0.003  # the test and val scorings before training cost ~$0.0028; step 1 crosses it
    code = main([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    metrics = (tmp_path / "run" / "metrics.jsonl")
    steps = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    assert code == 2 and "out of credits" in err and "\n" not in err and CANARY not in err
    assert steps < 3  # stopped in the step that met the 402, not after 20 steps of failed scores
    assert judge_server.outcomes().get("402", 0) <= 2  # the calls in flight then (2 threads), never retried
