"""Your own program, end to end: a signature, a module, an LM-judge reward with a rubric, weighted components,
then GRPO on the prompts and the held-out gain.

    python examples/custom_program.py

Runs on the embedded SmolLM2 by default (DSPYRL_MODEL picks another local model, DSPYRL_JUDGE_MODEL a judge such as
'openrouter/openai/gpt-4o-mini'; DSPYRL_BUDGET the metric-call budget, default 60).
"""

import os

import dspy

import dspyrl
from dspyrl.lm import lm_from_spec
from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.judge import RewardModule
from dspyrl.rewards.metrics import length_penalty
from dspyrl.rollout import run_rollouts


# 1. The task: a typed signature and a module, as in any DSPy program.
class Headline(dspy.Signature):
    """Write a short, factual headline for the news snippet."""

    snippet: str = dspy.InputField()
    headline: str = dspy.OutputField(desc="at most 10 words")


class HeadlineWriter(dspy.Module):
    def __init__(self):
        super().__init__()
        self.write = dspy.Predict(Headline)

    def forward(self, snippet):
        return self.write(snippet=snippet)


SNIPPETS = [
    "The city council voted on Tuesday to add 40 km of protected bike lanes by 2027.",
    "A local bakery won the national bread prize for its rye sourdough, beating 300 entries.",
    "Heavy rain closed the northern motorway for six hours; no one was hurt.",
    "The museum reopened after a two-year renovation with a new wing for modern art.",
    "Researchers found that the river's salmon population doubled since the dam was removed.",
    "The school board approved free breakfast for all primary pupils starting in September.",
    "A 12-year-old chess player from the town became the country's youngest grandmaster.",
    "The airport will add night flights to three cities after a two-year pause.",
    "Volunteers planted 5,000 trees along the canal over the weekend.",
    "The hospital opened a new children's ward with 30 beds.",
    "Power was restored to 8,000 homes after a storm damaged lines overnight.",
    "The library will lend tools, from drills to ladders, starting next month.",
]
examples = [dspy.Example(snippet=s).with_inputs("snippet") for s in SNIPPETS]
train, val, test = examples[:6], examples[6:9], examples[9:]

# 2. The models: the task model, and a judge (a stronger hosted model is better; the local one works offline).
model = os.environ.get("DSPYRL_MODEL", "smollm2")
lm = lm_from_spec(model, max_tokens=40)
judge_lm = lm_from_spec(os.environ.get("DSPYRL_JUDGE_MODEL", model), max_tokens=120)
dspy.configure(lm=lm)

# 3. The reward: an LM judge with a rubric (typed Judgement(score, feedback), retried, cached), plus a length term.
judge = RewardModule(
    "Score 1.0 for a headline that states the snippet's main fact accurately in at most 10 words, "
    "0.5 for a vague or wordy one, 0.0 for one that is wrong or unrelated.",
    judge_lm=judge_lm, output_fields=["headline"])
reward = WeightedReward(
    judge=(judge, 0.8),
    brevity=(lambda example, pred, trace=None: length_penalty(pred.headline, max_words=10), 0.2))

# 4. GRPO on the prompts (instruction candidates proposed from high/low-advantage runs + judge feedback, demo sets).
optimizer = dspyrl.GRPO(reward, max_metric_calls=int(os.environ.get("DSPYRL_BUDGET", "60")), group_size=2,
                        batch_size=3, run_dir="runs/custom_headlines")
optimized = optimizer.compile(HeadlineWriter(), trainset=train, valset=val)


def mean_reward(program):
    # Through the rollout engine: concurrent, and an LM or parse failure scores 0 instead of stopping the script.
    batch = run_rollouts(program, test, reward, num_threads=4, progress=False)
    return sum(r.reward.total for r in batch.rollouts) / len(test)


print(f"held-out reward: baseline {mean_reward(HeadlineWriter()):.3f}  optimized {mean_reward(optimized):.3f}")
s = judge.stats
print(f"judge: {s.judgements} judgements, {s.cache_hits} cache hits, {s.failures} failures; run folder runs/custom_headlines")
