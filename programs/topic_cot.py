"""topic_cot: the `topic` task (a news headline into one of five sections) with `dspy.ChainOfThought`.

The same 60 headlines and exact-label reward as `topic`; the program reasons before it answers. With a free-text
`reasoning` field in front of the label, constrained choice over the whole reply no longer applies: the label has to
be written and parsed, which is what ChainOfThought classification asks of a small model (the benchmark's
"ChainOfThought classification" family).
"""

from __future__ import annotations

import dspy

from dspyrl_programs import topic

DESCRIPTION = "5-way topic of a news headline, answered with ChainOfThought (the 60 rows of `topic`)."

LABELS = topic.LABELS


def build_program() -> dspy.Module:
    return dspy.ChainOfThought(topic.ClassifyTopic)


def build_reward(judge_lm=None):
    return topic.exact_label


def load_examples() -> list[dspy.Example]:
    return topic.load_examples()
