"""Issue 18: SIGKILL `dspyrl optimize` at random points and resume: every step is in metrics.jsonl exactly once, and
the counters (tokens, cost, LM and metric calls) come out as an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from tests.cli.test_optimize import PROGRAM

KILLS = 2  # small in the fast suite; raise locally (and vary DSPYRL_KILL_SEED) to hunt for a bad kill point


def _optimize(program, model, out, *extra) -> list[str]:
    return [sys.executable, "-m", "dspyrl.cli", "optimize", str(program), "--model", str(model), "--budget", "56",
            "--out", str(out), "--max-tokens", "4", "--threads", "1", *extra]  # one thread: a run's own cache hits do not depend on timing


def _counters(out) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["tokens"], m["lm_calls"], m["metric_calls"], m["cost"], m["failures"]) for m in rows]


def test_sigkill_at_random_points_never_loses_or_duplicates_a_step(tiny_model_dir, tmp_path):
    program = tmp_path / "reports.py"
    program.write_text(PROGRAM)
    out = tmp_path / "killed"
    # the killed run and its resumes share one DSPy cache (what a user's machine does), the reference run has its own
    env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "cache-killed")}
    rng = random.Random(int(os.environ.get("DSPYRL_KILL_SEED", "0")))
    metrics = out / "metrics.jsonl"
    for _ in range(KILLS):
        resume = ["--resume"] if (out / "checkpoint.json").exists() else []
        proc = subprocess.Popen(_optimize(program, tiny_model_dir, out, *resume), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows_before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # wait for the run to reach the step loop
            if metrics.exists() and len(metrics.read_text().splitlines()) > rows_before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # then a random point inside the next steps
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resume = ["--resume"] if (out / "checkpoint.json").exists() else []
    done = subprocess.run(_optimize(program, tiny_model_dir, out, *resume), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = [row[0] for row in _counters(out)]
    assert steps == list(range(1, summary["steps"] + 1)), steps
    assert summary["steps"] >= 2

    reference = tmp_path / "uninterrupted"
    clean = subprocess.run(_optimize(program, tiny_model_dir, reference), capture_output=True, text=True,
                           env={**os.environ, "DSPY_CACHEDIR": str(tmp_path / "cache-reference")})
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert _counters(out) == _counters(reference)
