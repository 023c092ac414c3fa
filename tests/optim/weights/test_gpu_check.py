"""benchmarks/gpu_check.sh on a machine without a GPU: one clear line saying so, then the same LoRA GRPO end to end
(under `accelerate launch --cpu`, on the tiny random model), with its step times and reward printed."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_without_a_gpu_says_so_and_still_trains(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script takes its GPU path (run it by hand)")
    env = {**os.environ, "MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "check"), "STEPS": "2", "THREADS": "1",
           "PYTHON": str(ROOT / ".venv" / "bin" / "python"), "ACCELERATE": str(ROOT / ".venv" / "bin" / "accelerate")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpu_check: no GPU on this machine: running the same LoRA GRPO on the CPU instead")
    assert sum(line.startswith("step ") for line in lines) == 2
    result = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert result["mode"] == "cpu" and result["steps"] == 2 and result["median_step_s"] > 0
