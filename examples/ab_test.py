"""A/B test: is the optimized program really better than the baseline? Paired statistics + an HTML report.

    python examples/ab_test.py [OPTIMIZED_PROGRAM_JSON]

Compares the ready `sentiment` program as written (A) with a saved, optimized version of it (B) on the embedded
SmolLM2 — by default the one examples/openrouter_prompt_grpo.py or `dspyrl optimize sentiment` saved. Without one,
B is the baseline with three hand-picked demos, so the script always runs. DSPYRL_MODEL picks another model.
"""

import os
import sys
from pathlib import Path

import dspy

import dspyrl
from dspyrl.compare import Arm
from dspyrl.data import split_examples
from dspyrl.program_file import load_program_file

sentiment = load_program_file("sentiment")
_, _, test = split_examples(sentiment.load_examples(), seed=0)
lm = dspyrl.local_lm(os.environ.get("DSPYRL_MODEL", "smollm2"), max_tokens=64)

baseline = sentiment.build_program()
optimized = sentiment.build_program()
saved = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/openrouter_sentiment/optimized_program.json")
if saved.is_file():
    optimized.load(str(saved))  # DSPy's own format
    label = f"optimized ({saved})"
else:
    optimized.demos = sentiment.load_examples()[:3]  # a hand-made variant, so the example runs stand-alone
    label = "3 demos"

comparison = dspyrl.ModelComparator(
    Arm(baseline, lm, name="baseline"), Arm(optimized, lm, name=label), test,
    reward=sentiment.build_reward(), seed=0)
result = comparison.run()
result.print_table()
print(result.verdict)
out = result.save("runs/ab_sentiment")  # comparison.json + report.html with plots
print(f"report: {out}")  # save() returns the report.html path
