"""Label-balanced demo sets for classification fields.

Small models copy the majority label of their demos (measured: with 5 demos drawn at random, SmolLM2 gave one label
for every input). A demo set with every label equally often, in shuffled order, removes that shortcut; the prompt
policy offers such sets among its demo candidates, and benchmarks/small_models.py uses them.
"""

from __future__ import annotations

import json
import random


def balanced_demo_set(pool: list, k: int, rng: random.Random, label: str | None = None) -> list:
    """k demos from `pool` (dicts or dspy.Examples): round-robin over the values of `label` when given (shuffled
    within and across labels, and the result shuffled: no label always last, small models lean towards the most
    recent demo's label), else a plain sample. The one balanced-demo builder (prompt GRPO passes its checkpointed rng)."""
    if not pool or k <= 0:
        return []
    if label is None:
        return rng.sample(pool, min(k, len(pool)))
    by_label: dict[str, list] = {}
    for demo in pool:
        by_label.setdefault(json.dumps(_value(demo, label), default=str), []).append(demo)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_label.items())]
    rng.shuffle(queues)
    chosen: list = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop())
    rng.shuffle(chosen)
    return chosen


def label_balanced_demos(examples: list, field: str, k: int = 5, seed: int = 0) -> list:
    """k examples whose `field` labels are as equal in count as k allows, in a shuffled order (seeded); examples
    without the field are skipped."""
    pool = [example for example in examples if _value(example, field) is not None]
    return balanced_demo_set(pool, k, random.Random(seed), field)


def _value(item, field: str):
    return item.get(field) if hasattr(item, "get") else getattr(item, field, None)
