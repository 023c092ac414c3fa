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


def test_prompt_opt_merges_runs_split_across_processes_into_one_table_and_paired_test(tmp_path, capsys):
    import json

    prompt_opt = load("prompt_opt")

    def row(seed, optimizer, scores, pass_name="fixed"):
        return {"family": "classification", "seed": seed, "optimizer": optimizer, "scores": scores, "failed": 0,
                "metric_calls": 10, "lm_calls": 10, "wall_s": 1.0, "note": "", "prompts": None, "pass": pass_name}

    # one process per seed; GRPO's row counts in both passes
    first = [row(0, "grpo", [1, 1, 1, 0], "both"), row(0, "bfrs", [0, 1, 0, 0])]
    (tmp_path / "s0.json").write_text(json.dumps({"runs": first, "verdicts": [], "argv": ["seed 0"]}))
    # the second file ran seed 0's bfrs again (the same rows): counted once, not twice
    (tmp_path / "s1.json").write_text(json.dumps([row(1, "grpo", [1, 1, 0, 1], "both"), row(1, "bfrs", [1, 0, 0, 0]),
                                                  row(0, "bfrs", [0, 1, 0, 0])]))
    out = tmp_path / "merged.json"
    assert prompt_opt.main(["--merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 0" in printed and "(unfinished)" in printed
    merged = json.loads(out.read_text())
    assert len(merged["runs"]) == 4  # seed 0's bfrs once
    (verdict,) = merged["verdicts"]
    assert verdict["best_other"] == "bfrs" and verdict["grpo"] == 0.75 and verdict["best_other_mean"] == 0.25
    assert abs(verdict["mean_diff"] - 0.5) < 1e-9  # paired over the 8 (seed, row) pairs of both files


def test_prompt_opt_a_passes_own_grpo_row_replaces_an_older_run_counted_in_both_passes(tmp_path):
    import json

    prompt_opt = load("prompt_opt")

    def row(optimizer, scores, pass_name):
        return {"family": "extraction", "seed": 0, "optimizer": optimizer, "scores": scores, "failed": 0,
                "metric_calls": 10, "lm_calls": 10, "wall_s": 1.0, "note": "", "prompts": None, "pass": pass_name}

    # an older file: one GRPO run from ChatAdapter for both passes; a newer one: GRPO from the fixed pass's format
    (tmp_path / "old.json").write_text(json.dumps([row("grpo", [0, 0, 1, 1], "both"), row("bfrs", [1, 0, 0, 0], "fixed"),
                                                   row("bfrs", [0, 0, 0, 0], "default")]))
    (tmp_path / "new.json").write_text(json.dumps([row("grpo", [1, 1, 1, 1], "fixed")]))
    out = tmp_path / "merged.json"
    assert prompt_opt.main(["--merge", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--json", str(out)]) == 0
    verdicts = {v["pass"]: v for v in json.loads(out.read_text())["verdicts"]}
    assert verdicts["fixed"]["grpo"] == 1.0  # the fixed pass's own run, not the mean of both runs (0.75)
    assert verdicts["default"]["grpo"] == 0.5  # the default pass still counts the older run
