"""Optimize a program's prompts with GRPO on a hosted model through OpenRouter.

    export OPENROUTER_API_KEY=sk-or-...            # never written to the run folder
    export OPENROUTER_MODEL=meta-llama/llama-3.1-8b-instruct
    python examples/openrouter_prompt_grpo.py

Any OpenAI-compatible server works too (vLLM, llama.cpp, or our own `dspyrl serve`): set
DSPYRL_BASE_URL=http://127.0.0.1:8000/v1 and the model name it serves in OPENROUTER_MODEL.
Budget knob: DSPYRL_BUDGET (metric calls, default 120).
"""

import os

import dspy

import dspyrl
from dspyrl.data import split_examples
from dspyrl.program_file import load_program_file
from dspyrl.rollout import run_rollouts

# 1. The model: OpenRouter through LiteLLM, or any OpenAI-compatible endpoint.
base_url = os.environ.get("DSPYRL_BASE_URL")
if base_url:
    lm = dspyrl.openai_compatible(base_url, os.environ.get("OPENROUTER_MODEL", "smollm2"), max_tokens=64)
else:
    lm = dspyrl.openrouter(max_tokens=256)  # fails at once, naming OPENROUTER_API_KEY, if the key is missing
dspy.configure(lm=lm)

# 2. A ready program (signature + module + reward + data); yours works the same way, see custom_program.py.
sentiment = load_program_file("sentiment")
train, val, test = split_examples(sentiment.load_examples(), seed=0)
reward = sentiment.build_reward()

# 3. GRPO over instructions, demo sets and the output format; every metric call counts against the budget.
optimizer = dspyrl.GRPO(reward, max_metric_calls=int(os.environ.get("DSPYRL_BUDGET", "120")),
                        group_size=4, batch_size=4, run_dir="runs/openrouter_sentiment")
optimized = optimizer.compile(sentiment.build_program(), trainset=train, valset=val)

# 4. Held-out score, then save with DSPy's own format (load it back with program.load(path)).
# run_rollouts is dspyrl's evaluator: concurrent, and a failed LM call or unparseable reply scores 0 (and is counted)
# instead of stopping the run.
def accuracy(program):
    batch = run_rollouts(program, test, reward, num_threads=4, progress=False)
    return sum(r.reward.total for r in batch.rollouts) / len(test), batch.failures


for name, program in (("baseline", sentiment.build_program()), ("optimized", optimized)):
    score, failures = accuracy(program)
    print(f"held-out accuracy {name}: {score:.1%} ({failures} failed runs)")
optimized.save("runs/openrouter_sentiment/optimized_program.json")
print("saved runs/openrouter_sentiment/optimized_program.json")
