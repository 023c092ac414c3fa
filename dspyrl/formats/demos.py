"""Label-balanced demo sets for classification fields.

Small models copy the majority label of their demos (measured: with 5 demos drawn at random, SmolLM2 gave one label
for every input). A demo set with every label equally often, in shuffled order, removes that shortcut; the prompt
policy offers such sets among its demo candidates, and benchmarks/small_models.py uses them.
"""

from __future__ import annotations

import random
from collections import defaultdict


def label_balanced_demos(examples: list, field: str, k: int = 5, seed: int = 0) -> list:
    """k examples whose `field` labels are as equal in count as k allows, in a shuffled order.

    Labels are taken round-robin (in a seeded random label order, so with k < number of labels different seeds cover
    different labels); examples without the field are skipped.
    """
    rng = random.Random(seed)
    by_label: dict[str, list] = defaultdict(list)
    for example in examples:
        value = example.get(field) if hasattr(example, "get") else getattr(example, field, None)
        if value is not None:
            by_label[str(value)].append(example)
    labels = sorted(by_label)
    rng.shuffle(labels)
    for label in labels:
        rng.shuffle(by_label[label])
    chosen, round_index = [], 0
    while len(chosen) < k and any(round_index < len(by_label[label]) for label in labels):
        for label in labels:
            if len(chosen) < k and round_index < len(by_label[label]):
                chosen.append(by_label[label][round_index])
        round_index += 1
    rng.shuffle(chosen)  # no label always last: small models lean towards the most recent demo's label
    return chosen
