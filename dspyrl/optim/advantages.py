"""Group-relative advantages: the one GRPO core shared by the prompt policy and the LoRA update.

Every example is answered G times (a *group*); a sample's advantage is how much better it did than its own group:
    A = (r - mean(group)) / (std(group) + eps)      GRPO (DeepSeekMath)
    A =  r - mean(group)                            Dr. GRPO ("unscaled"): no std division, so easy groups with a
                                                    tiny spread do not get their noise blown up to unit scale
A group whose rewards are all equal carries no signal (every advantage is 0); `frac_zero_std` reports how many groups
were like that, because a run where most groups are flat is not learning, whatever its mean reward says.

std is the unbiased (n-1) sample std, the same as TRL's GRPOTrainer (torch.std), so both policies see one scale.

Credit between the modules of a composed program (`module_advantages`). A run's one reward follows from every
predictor's prompt choice at once. Run-wide credit gives each predictor's choice the run's advantage. Per-module credit
gives predictor k its run's advantage only in groups where k's own choice varied: where k chose the same prompt in every
sample, the differences in reward came from the other predictors (or the LM's sampling), and say nothing about k's
choice. Its `counted` mask says which samples carry signal for k, so an update can average k's term over those alone.
(With a group-mean baseline and ratio 1, an unvaried choice already gets zero gradient from its group, because the
advantages of a group sum to 0; the two differ once the update's ratios move and in how each predictor's term is
averaged. benchmarks/composed.py measures which learns better.)
Measured (60 simulated 2- and 3-step pipelines, paired): per-module credit puts more mass on the best instructions than
run-wide credit (+0.058 / +0.045, p = 0.001 / 0.004), but no more than run-wide credit with twice the step size
(+0.004 / +0.021, p = 0.60 / 0.19), and the program it returns is not better (−0.015 / +0.019 expected reward, p = 0.28 /
0.38). Its gain is a larger effective step where groups are flat, not better credit, so run-wide stays the default.
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


@dataclass
class ModuleAdvantages:
    """One predictor's per-module credit: advantages shaped like the rewards, and which samples carry signal for it."""

    advantages: list[list[float]]
    counted: list[list[bool]]  # True where the sample's group varied this predictor's choice and its rewards spread
    frac_zero: float  # fraction of groups that carry no signal for this predictor

    def flat(self) -> list[float]:
        return [a for group in self.advantages for a in group]

    def flat_counted(self) -> list[bool]:
        return [c for group in self.counted for c in group]


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


def module_advantages(rewards_by_group: list[list[float]], choices_by_group: list[list[dict]], *, scale: bool = True,
                      eps: float = 1e-4, zero_std_tol: float = 1e-8) -> dict[str, ModuleAdvantages]:
    """Per-module credit (module docstring): predictor name -> its advantages and counted mask.

    `choices_by_group[g][j]` is sample j's choice in group g as {predictor name: anything comparable with ==} (the
    prompt policy's slot indices); it must have the rewards' shape. A predictor missing from a sample's choice counts
    as choosing None."""
    if [len(g) for g in choices_by_group] != [len(g) for g in rewards_by_group]:
        raise ValueError("choices_by_group must have the same shape as rewards_by_group")
    run = group_advantages(rewards_by_group, scale=scale, eps=eps, zero_std_tol=zero_std_tol)
    names = list(dict.fromkeys(name for group in choices_by_group for choice in group for name in choice))
    out = {}
    for name in names:
        advantages, counted, silent = [], [], 0
        for g, group in enumerate(choices_by_group):
            picks = [choice.get(name) for choice in group]
            signal = len(picks) > 1 and any(p != picks[0] for p in picks[1:]) and run.group_stds[g] > zero_std_tol
            silent += not signal
            advantages.append(list(run.advantages[g]) if signal else [0.0] * len(group))
            counted.append([signal] * len(group))
        out[name] = ModuleAdvantages(advantages, counted, silent / len(choices_by_group) if choices_by_group else 0.0)
    return out
