"""The benchmark scripts keep working: a tiny rollout-throughput run over HTTP (no model needed)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rollout_throughput_benchmark_runs_and_cached_reruns_hit_no_server(capsys):
    rollouts = load("rollouts")
    assert rollouts.main(["--concurrency", "4", "--delay", "0.05", "--examples", "12"]) == 0
    out = capsys.readouterr().out
    assert "dspy.Evaluate" in out and "cached re-runs made 0 server calls" in out


def test_slow_server_answers_after_its_delay():
    import time

    import dspy

    rollouts = load("rollouts")
    server = rollouts.SlowChatServer(0.1)
    try:
        from dspyrl.lm.hosted import openai_compatible

        lm = openai_compatible(server.base_url, "slow", cache=False, num_retries=0)
        started = time.perf_counter()
        with dspy.context(lm=lm):
            answer = dspy.Predict("question -> answer")(question="hi").answer
        assert answer == "fine" and server.requests == 1 and time.perf_counter() - started >= 0.1
    finally:
        server.stop()
