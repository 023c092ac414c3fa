"""The CLI on OpenRouter (eval, optimize with a reflection model): --api-base, --max-cost, --estimate, --report-to, and
canary keys that never show up in anything a run writes or prints (run folder, TensorBoard, W&B offline files)."""

from pathlib import Path

import pytest

from dspyrl.cli.main import main
from dspyrl.program_file import load_program_file
from tests.lm.openrouter_server import OpenRouterServer

CANARY = "sk-or-v1-canary-7f3e9c1b2a4d6e8f"
OTHER_CANARIES = {"OPENAI_API_KEY": "sk-openai-canary-0a1b2c3d4e", "ANTHROPIC_API_KEY": "sk-ant-canary-5f6e7d8c9b"}


@pytest.fixture()
def canary_keys(monkeypatch):
    """Canary keys in the environment (OpenRouter's and others'), and W&B kept offline and quiet."""
    monkeypatch.setenv("OPENROUTER_API_KEY", CANARY)
    for name, value in OTHER_CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture()
def server(canary_keys):
    spec = load_program_file("sentiment")
    with OpenRouterServer(key=CANARY, answers={ex.review: ex.sentiment for ex in spec.load_examples()}) as running:
        yield running


def _no_canary_anywhere(folder: Path, *texts: str) -> None:
    canaries = [CANARY, *OTHER_CANARIES.values()]
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files
    for file in files:
        data = file.read_bytes()
        assert not any(c.encode() in data for c in canaries), f"a key was written to {file}"
    for text in texts:
        assert not any(c in text for c in canaries)


def test_eval_on_openrouter_writes_and_prints_no_key(server, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "sentiment", "--model", "openrouter/acme/task-small", "--api-base", server.base_url,
                 "--limit", "6", "--timeout", "5", "--num-retries", "1", "--no-cache", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert len(server.received) >= 6 and all(r.headers["Authorization"] == f"Bearer {CANARY}" for r in server.received)
    import json

    usage = json.loads((out / "summary.json").read_text())["usage"]  # per role, from OpenRouter's usage.cost
    assert usage["task"]["calls"] == 6 and usage["task"]["cost_source"] == "provider"
    assert usage["total"]["cost"] == pytest.approx(server.billed, rel=1e-6)
    _no_canary_anywhere(out, printed.out, printed.err)


def test_optimize_capped_with_a_reflection_model_then_resumed(server, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["optimize", "sentiment", "--model", "openrouter/acme/task-small", "--api-base", server.base_url,
            "--reflection-model", "openrouter/acme/reflect-large", "--budget", "60", "--threads", "4",
            "--out", str(out)]
    assert main([*base, "--estimate", "--max-cost", "0.004"]) == 0
    estimate = capsys.readouterr().out
    assert "estimate" in estimate and "reflection" in estimate and not server.received and not out.exists()

    assert main([*base, "--max-cost", "0.004", "--report-to", "tensorboard"]) == 0
    capped = capsys.readouterr()
    assert "stopped at the cost cap" in capped.out
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "cost_cap"
    assert "test_after" not in summary["scores"]  # no spend past the cap
    assert "test split not scored again" in " ".join(capped.out.split())
    usage = summary["optimize_usage"]
    assert usage["task"]["calls"] >= 1 and usage["task"]["cost_source"] == "provider"
    assert usage["total"]["cost"] < 0.004 + usage["total"]["cost"] / max(1, summary["steps"])  # within a step
    assert summary["usage"]["total"]["cost"] == pytest.approx(server.billed, rel=1e-6)
    assert list((out / "tensorboard").iterdir())

    assert main([*base, "--max-cost", "0.05", "--resume", "--report-to", "wandb"]) == 0
    resumed = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimize_usage"]["total"]["cost"] > usage["total"]["cost"]  # carried over and grown
    assert summary["steps"] > 1 and summary["stopped"] != "cost_cap" and "test_after" in summary["scores"]
    assert summary["optimize_usage"]["reflection"]["calls"] >= 1  # the proposer's calls, booked to their role
    assert summary["optimize_usage"]["reflection"]["cost_source"] == "provider"
    assert any((out / "wandb").rglob("*.wandb"))
    _no_canary_anywhere(out, capped.out, capped.err, resumed.out, resumed.err, estimate)


def test_a_credential_in_a_model_url_is_refused_in_one_line(tmp_path, capsys):
    code = main(["eval", "sentiment", "--model", "openai-compatible:http://me:sk-in-url-12345678@127.0.0.1:9/v1:m",
                 "--out", str(tmp_path / "x")])
    printed = capsys.readouterr()
    assert code == 2 and "credential" in printed.err and len(printed.err.strip().splitlines()) == 1
    assert "sk-in-url" not in printed.err + printed.out and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------- compare
def test_compare_arms_get_the_hosted_settings(server, tmp_path, capsys):
    """--api-base, --timeout/--num-retries and --no-cache reach both arms (and the judge): the arms talk to the
    server at all, a hang costs one timeout instead of the 60 s default, and a rerun with --no-cache asks again."""
    import json
    import time

    server.fault = lambda i, body: "hang" if i == 0 else None
    argv = ["compare", "openrouter/acme/task-small", "openrouter/acme/judge-mid", "--api-base", server.base_url,
            "--judge", "openrouter/acme/judge-mid", "--limit", "4", "--timeout", "1", "--num-retries", "1",
            "--threads", "2", "--no-cache"]
    started = time.perf_counter()
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    wall = time.perf_counter() - started
    first = capsys.readouterr()
    assert server.outcomes()["hang"] == 1 and wall < 30
    requests = len(server.received)
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    second = capsys.readouterr()
    assert len(server.received) >= 2 * requests - 1  # asked again, not replayed from DSPy's cache
    assert {r.body["model"] for r in server.received} == {"acme/task-small", "acme/judge-mid"}
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["usage"]["judge"]["calls"] >= 4 and summary["usage"]["task"]["cost_source"] == "provider"
    spent = summary["usage"]["total"]["cost"]
    assert spent == pytest.approx(server.billed - json.loads((tmp_path / "one" / "summary.json").read_text())
                                  ["usage"]["total"]["cost"], rel=1e-6)
    assert "spent: task" in second.out and "judge" in second.out
    _no_canary_anywhere(tmp_path, first.out, first.err, second.out, second.err)


def test_compare_estimate_then_capped_names_the_unscored_rows(server, tmp_path, capsys):
    import json

    out = tmp_path / "cmp"
    argv = ["compare", "openrouter/acme/task-small", "openrouter/acme/judge-mid", "--api-base", server.base_url,
            "--split", "all", "--threads", "2", "--out", str(out)]
    assert main([*argv, "--estimate", "--max-cost", "0.002"]) == 0
    estimate = capsys.readouterr().out
    assert "task (A)" in estimate and "task (B)" in estimate and "cap: $0.0020" in estimate
    assert not server.received and not out.exists()

    assert main([*argv, "--max-cost", "0.002"]) == 0
    capped = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    comparison = json.loads((out / "comparison.json").read_text())
    scored, unscored = summary["scores"]["A"]["n"], summary["unscored"]
    with capsys.disabled():
        print(f"\ncapped compare: cap $0.002, spent ${summary['usage']['total']['cost']:.6f} (billed "
              f"${server.billed:.6f}), {scored} of 48 examples scored")
    assert summary["stopped"] == "cost_cap" and 2 <= scored < 48 and unscored == list(range(scored, 48))
    assert summary["verdict"].startswith("no verdict: stopped at the cost cap") and "beats" not in summary["verdict"]
    assert comparison["verdict"] == summary["verdict"] and len(comparison["examples"]) == scored
    spent = summary["usage"]["total"]["cost"]
    assert spent == pytest.approx(server.billed, rel=1e-6)
    wave = spent / (scored / 2)  # one wave: 2 examples on both arms
    assert spent < 0.002 + wave
    assert "stopped at the cost cap" in capped.out and f"examples {scored}+ not run by either arm" in capped.out
    assert "no verdict" in (out / "report.html").read_text()

    requests = len(server.received)  # as the message says: a higher cap over the same folder, the rows run replayed
    assert main([*argv, "--force", "--max-cost", "1"]) == 0
    again = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "" and summary["unscored"] == [] and summary["scores"]["A"]["n"] == 48
    assert len(server.received) - requests == 2 * (48 - scored)  # only the examples not run before were asked
    assert summary["usage"]["task"]["cached"] == 2 * scored and not summary["verdict"].startswith("no verdict")
    _no_canary_anywhere(out, capped.out, capped.err, estimate, again.out, again.err)
