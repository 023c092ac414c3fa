"""LoRA GRPO on the embedded model (TRL GRPOTrainer + PEFT, on CPU), then serve the adapter over HTTP.

    python examples/local_lora_grpo.py

Trains a LoRA adapter of SmolLM2-135M-Instruct on the ready `math_xml` program (XML format 0.2 + correct answer 0.8):
a 135M model learns the format fast and the arithmetic hardly at all, so watch the `format` component rise.
Knobs: DSPYRL_MODEL (another local model), DSPYRL_STEPS (default 30; ~4 s a step here).
"""

import os

import dspy
import httpx

import dspyrl
from dspyrl.data import split_examples
from dspyrl.lm.server import serve_in_thread
from dspyrl.optim.weights.grpo import LoraGRPO
from dspyrl.program_file import load_program_file

model = os.environ.get("DSPYRL_MODEL", "smollm2")
dspy.configure(lm=dspyrl.local_lm(model, max_tokens=64))  # the program's local model is the one that is trained

math_xml = load_program_file("math_xml")
train, val, _ = split_examples(math_xml.load_examples(), seed=0)

# Every trl.GRPOConfig field passes through trl_args (e.g. {"use_vllm": True} under `accelerate launch` on GPUs).
optimizer = LoraGRPO(
    math_xml.build_reward(), steps=int(os.environ.get("DSPYRL_STEPS", "30")), num_generations=4,
    learning_rate=3e-4, max_completion_length=48, run_dir="runs/lora_math",
    # A random test model needs its output layer trained to move at all; real models learn with plain LoRA.
    modules_to_save=["lm_head"] if os.environ.get("DSPYRL_TRAIN_HEAD") else None)
optimized = optimizer.compile(math_xml.build_program(), trainset=train, valset=val[:8])
result = optimizer.result
print(f"val reward: before {result.val_before:.3f}  after {result.val_after:.3f}  ({result.steps} steps, "
      f"{result.train_wall_s:.0f} s); adapter in {result.adapter_dir}")

# The adapter is a plain PEFT folder: serve it (same as `dspyrl serve --adapter runs/lora_math/adapter`) and ask it.
server = serve_in_thread(model, adapter=result.adapter_dir, served_name="smollm2-math")
reply = httpx.post(f"{server.base_url}/chat/completions", timeout=120, json={
    "model": "smollm2-math", "max_tokens": 48,
    "messages": [{"role": "user", "content": val[0].question}]}).json()
print("served adapter says:", reply["choices"][0]["message"]["content"][:200])
server.stop()
