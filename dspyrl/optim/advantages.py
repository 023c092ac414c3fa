"""Group-relative advantages: the one GRPO core shared by the prompt policy and the LoRA update.

Every example is answered G times (a *group*); a sample's advantage is how much better it did than its own group:
    A = (r - mean(group)) / (std(group) + eps)      GRPO (DeepSeekMath)
    A =  r - mean(group)                            Dr. GRPO ("unscaled"): no std division, so easy groups with a
                                                    tiny spread do not get their noise blown up to unit scale
A group whose rewards are all equal carries no signal (every advantage is 0); `frac_zero_std` reports how many groups
were like that, because a run where most groups are flat is not learning, whatever its mean reward says.

std is the unbiased (n-1) sample std, the same as TRL's GRPOTrainer (torch.std), so both policies see one scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class GroupAdvantages:
    advantages: list[list[float]]  # same shape as the rewards: one list per group
    group_means: list[float]
    group_stds: list[float]
    frac_zero_std: float  # fraction of groups whose rewards were all (numerically) equal

    def flat(self) -> list[float]:
        return [a for group in self.advantages for a in group]


def group_advantages(rewards_by_group: list[list[float]], *, scale: bool = True, eps: float = 1e-4,
                     zero_std_tol: float = 1e-8) -> GroupAdvantages:
    """Advantages for each sample relative to its group (see module docstring); `scale=False` is Dr. GRPO."""
    advantages, means, stds, flat_groups = [], [], [], 0
    for group in rewards_by_group:
        rewards = [float(r) for r in group]
        if not rewards:
            advantages.append([])
            means.append(0.0)
            stds.append(0.0)
            flat_groups += 1
            continue
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1)) if len(rewards) > 1 else 0.0
        means.append(mean)
        stds.append(std)
        if std <= zero_std_tol:  # no spread: no signal, and dividing by eps would only amplify float noise
            flat_groups += 1
            advantages.append([0.0] * len(rewards))
        elif scale:
            advantages.append([(r - mean) / (std + eps) for r in rewards])
        else:
            advantages.append([r - mean for r in rewards])
    frac = flat_groups / len(rewards_by_group) if rewards_by_group else 0.0
    return GroupAdvantages(advantages, means, stds, frac)
