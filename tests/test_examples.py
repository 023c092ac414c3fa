"""Every example in examples/ runs as written — on the tiny model (so it is fast), hosted ones against `dspyrl serve`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dspyrl.lm.server import serve_in_thread

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cwd: Path, env: dict, *args: str) -> str:
    full_env = {**os.environ, **env}
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    handle = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    yield handle
    handle.stop()


def test_openrouter_example_against_our_server(tmp_path, tiny_server, monkeypatch):
    out = run_example("openrouter_prompt_grpo.py", tmp_path, {
        "DSPYRL_BASE_URL": tiny_server.base_url, "OPENROUTER_MODEL": "tiny", "DSPYRL_BUDGET": "40"})
    assert "held-out accuracy" in out
    saved = tmp_path / "runs/openrouter_sentiment/optimized_program.json"
    assert saved.is_file()
    assert "OPENROUTER_API_KEY" not in saved.read_text()


def test_openrouter_example_without_key_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "DSPYRL_BASE_URL")}
    env["OPENROUTER_MODEL"] = "meta-llama/llama-3.1-8b-instruct"
    result = subprocess.run([sys.executable, str(EXAMPLES / "openrouter_prompt_grpo.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "OPENROUTER_API_KEY" in result.stderr


def test_ab_test_example_writes_the_report(tmp_path, tiny_model_dir):
    out = run_example("ab_test.py", tmp_path, {"DSPYRL_MODEL": str(tiny_model_dir)})
    assert "no significant difference" in out or "beats" in out
    assert (tmp_path / "runs/ab_sentiment/report.html").is_file()
    assert (tmp_path / "runs/ab_sentiment/comparison.json").is_file()


def test_custom_program_example(tmp_path, tiny_model_dir):
    out = run_example("custom_program.py", tmp_path, {"DSPYRL_MODEL": str(tiny_model_dir), "DSPYRL_BUDGET": "30"})
    assert "held-out reward" in out and "judge:" in out
    assert (tmp_path / "runs/custom_headlines/metrics.jsonl").is_file()


def test_local_lora_grpo_example(tmp_path, tiny_model_dir):
    out = run_example("local_lora_grpo.py", tmp_path, {
        "DSPYRL_MODEL": str(tiny_model_dir), "DSPYRL_STEPS": "2", "DSPYRL_TRAIN_HEAD": "1"})
    assert "val reward: before" in out and "served adapter says:" in out
    assert (tmp_path / "runs/lora_math/adapter/adapter_config.json").is_file()


def test_the_readme_library_snippet_runs(tmp_path, tiny_model_dir):
    """README.md's Python block, as written, with only the model (the tiny one) and the budget swapped in."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    snippet = readme.split("## The library", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'dspyrl.local_lm("smollm2")' in snippet and "max_metric_calls=150" in snippet
    snippet = snippet.replace('dspyrl.local_lm("smollm2")', f'dspyrl.local_lm({str(tiny_model_dir)!r})')
    snippet = snippet.replace("max_metric_calls=150", "max_metric_calls=40")
    script = tmp_path / "readme_snippet.py"
    script.write_text(snippet)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=dict(os.environ), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "sentiment.json").is_file() and (tmp_path / "runs/sent-lib/metrics.jsonl").is_file()
    assert "beats" in result.stdout or "no significant difference" in result.stdout
