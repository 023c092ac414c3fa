"""Issue 18: SIGKILL `dspyrl optimize` at random points, resume, and every step is in metrics.jsonl exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from dspyrl.cli import main
from tests.cli.test_optimize import PROGRAM

KILLS = 2  # small in the fast suite; raise locally to hunt for a bad kill point


def test_sigkill_at_random_points_never_loses_or_duplicates_a_step(tiny_model_dir, tmp_path):
    program = tmp_path / "reports.py"
    program.write_text(PROGRAM)
    out = tmp_path / "run"
    argv = ["optimize", str(program), "--model", str(tiny_model_dir), "--budget", "56", "--out", str(out),
            "--max-tokens", "4", "--threads", "2"]
    rng = random.Random(int(os.environ.get("DSPYRL_KILL_SEED", "0")))
    metrics = out / "metrics.jsonl"
    for kill in range(KILLS):
        resume = ["--resume"] if (out / "checkpoint.json").exists() else []
        proc = subprocess.Popen([sys.executable, "-m", "dspyrl.cli", *argv, *resume], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        rows_before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # wait for the run to reach the step loop
            if metrics.exists() and len(metrics.read_text().splitlines()) > rows_before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # then a random point inside the next steps
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(argv + (["--resume"] if (out / "checkpoint.json").exists() else [])) == 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert steps == list(range(1, summary["steps"] + 1)), steps
    assert summary["steps"] >= 2
