#!/usr/bin/env bash
# LoRA GRPO on a GPU: the benchmark's LoRA config (r=16 all-linear, 4 samples a prompt) under `accelerate launch`,
# with TRL's vLLM generation in colocate mode and bf16, for a handful of steps; prints step time and reward.
#
#     bash benchmarks/gpu_check.sh                   # STEPS=5 MODEL=smollm2 PROGRAM=math_xml by default
#     STEPS=10 MODEL=HuggingFaceTB/SmolLM2-360M-Instruct bash benchmarks/gpu_check.sh
#
# On a machine without a CUDA GPU (or without vLLM) it says so in one line and runs the same training end to end on
# the CPU instead (no vLLM, float32, dspyrl's shared-prompt generation, 2 short steps), so the script itself is tested
# wherever it runs. vLLM is not a dependency of dspyrl: on a GPU machine `pip install vllm` first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ACCELERATE=${ACCELERATE:-.venv/bin/accelerate}
export LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
has_vllm=$("$PY" -c "import importlib.util; print(int(importlib.util.find_spec('vllm') is not None))")
if [[ "$gpus" -gt 0 && "$has_vllm" == 1 ]]; then
  MODE=gpu; STEPS=${STEPS:-5}; MAX_TOKENS=${MAX_TOKENS:-64}
  echo "gpu_check: $gpus CUDA GPU(s): $("$PY" -c "import torch; print(torch.cuda.get_device_name(0))"); TRL vLLM colocate + bf16, $STEPS steps"
  LAUNCH=("$ACCELERATE" launch --num_processes 1 --num_machines 1 --dynamo_backend no --mixed_precision bf16)
else
  MODE=cpu; STEPS=${STEPS:-2}; MAX_TOKENS=${MAX_TOKENS:-16}
  if [[ "$gpus" -gt 0 ]]; then why="vLLM is not installed (pip install vllm)"; else why="no GPU on this machine"; fi
  echo "gpu_check: $why: running the same LoRA GRPO on the CPU instead (no vLLM, float32, $STEPS steps of $MAX_TOKENS tokens); the GPU figures need a GPU"
  LAUNCH=("$ACCELERATE" launch --num_processes 1 --num_machines 1 --dynamo_backend no --num_cpu_threads_per_process ${THREADS:-2} --cpu --mixed_precision no)
fi

OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
SCRIPT="$OUT/gpu_check.py"
cat > "$SCRIPT" <<'PYTHON'
import json, os, statistics, sys, time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from dspyrl.data import split_examples
from dspyrl.formats import CompactAdapter
from dspyrl.lm import local_lm
from dspyrl.optim.weights.grpo import LoraGRPO
from dspyrl.program_file import load_program_file

mode, steps, max_tokens, out = os.environ["MODE"], int(os.environ["STEPS"]), int(os.environ["MAX_TOKENS"]), Path(os.environ["OUT"])
spec = load_program_file(os.environ.get("PROGRAM", "math_xml"))
train, _, _ = split_examples(spec.load_examples(), seed=0)
trl_args = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3, "bf16": True} if mode == "gpu" else {}
lm = local_lm(os.environ.get("MODEL", "smollm2"), max_tokens=max_tokens)
started = time.perf_counter()
optimizer = LoraGRPO(spec.build_reward(), lm=lm, format=CompactAdapter(), run_dir=out / "run", steps=steps,
                     num_generations=4, learning_rate=3e-4, beta=0.0, max_completion_length=max_tokens, lora_r=16,
                     lora_alpha=32, save_every=0, seed=0, trl_args=trl_args, progress=False)
optimizer.compile(spec.build_program(), trainset=train)
metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
for m in metrics:
    print(f"step {m['step']}: {m.get('step_time', float('nan')):.2f} s, reward {m.get('reward_mean', float('nan')):.3f}, "
          f"{m.get('completions/mean_length', float('nan')):.0f} completion tokens")
times = [m["step_time"] for m in metrics[1:] if "step_time" in m] or [m.get("step_time", 0.0) for m in metrics]
result = {"mode": mode, "steps": len(metrics), "median_step_s": statistics.median(times),
          "mean_reward": statistics.mean(m.get("reward_mean", 0.0) for m in metrics),
          "process_wall_s": time.perf_counter() - started, "trl_args": trl_args}
(out / "gpu_check.json").write_text(json.dumps(result, indent=1))
print(f"gpu_check ({mode}): median step {result['median_step_s']:.2f} s (first step excluded when there are more), "
      f"mean reward {result['mean_reward']:.3f}, {result['process_wall_s']:.0f} s in all; {out / 'gpu_check.json'}")
PYTHON
MODE=$MODE STEPS=$STEPS MAX_TOKENS=$MAX_TOKENS OUT=$OUT "${LAUNCH[@]}" "$SCRIPT"
