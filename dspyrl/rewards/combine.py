"""Weighted multi-component rewards: one total to optimise, and the per-component breakdown to log.

A reward is any callable `(example, pred, trace=None) -> float | bool | RewardResult`. `WeightedReward` runs named
components, turns each into a number (a failed component counts as 0.0 and marks the whole result as failed, so a
broken judge call is visible instead of silently scoring), and returns

    total = Σ weight_i · score_i              (or divided by Σ weight_i with normalize=True)

together with `components = {name: score_i}` and the components' feedback joined, so the judge's words travel with
the number into rollouts, the run folder and the instruction proposer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class RewardResult:
    """One scored output: the total, each named component, feedback text, and whether scoring failed."""

    total: float
    components: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
    failed: bool = False

    def __float__(self) -> float:
        return float(self.total)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "components": dict(self.components), "feedback": self.feedback, "failed": self.failed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RewardResult:
        return cls(float(data["total"]), dict(data.get("components") or {}), data.get("feedback") or "",
                   bool(data.get("failed")))


def to_reward_result(value: Any, *, failure_score: float = 0.0) -> RewardResult:
    """Any reward's return value as a RewardResult: bools become 0/1, None/NaN/inf/non-numbers become a failure."""
    if isinstance(value, RewardResult):
        if _finite(value.total):
            return value
        return RewardResult(failure_score, dict(value.components), value.feedback, failed=True)
    # dspy.Prediction-style scores (e.g. dspy.evaluate metrics returning Prediction(score=..., feedback=...))
    if hasattr(value, "score") and not isinstance(value, (int, float)):
        result = to_reward_result(getattr(value, "score"), failure_score=failure_score)
        result.feedback = str(getattr(value, "feedback", "") or "")
        return result
    if isinstance(value, bool):
        return RewardResult(float(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return RewardResult(failure_score, failed=True)
    if not _finite(number):
        return RewardResult(failure_score, failed=True)
    return RewardResult(number)


def _finite(number: Any) -> bool:
    try:
        return math.isfinite(float(number))
    except (TypeError, ValueError):
        return False


@dataclass
class RewardComponent:
    """One named term of a weighted reward."""

    name: str
    reward: Callable[..., Any]
    weight: float = 1.0


class WeightedReward:
    """Σ weight · component. Build it from keyword arguments: `WeightedReward(format=(xml_reward, 0.2), correct=(acc, 0.8))`,
    or from a list of `RewardComponent`s. Components that raise count as failed (score 0.0) instead of ending a run."""

    def __init__(self, components: list[RewardComponent] | None = None, *, normalize: bool = False,
                 failure_score: float = 0.0, **named: tuple[Callable[..., Any], float] | Callable[..., Any]):
        self.components = list(components or [])
        for name, spec in named.items():
            reward, weight = spec if isinstance(spec, tuple) else (spec, 1.0)
            self.components.append(RewardComponent(name, reward, float(weight)))
        if not self.components:
            raise ValueError("WeightedReward needs at least one component")
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        self.normalize = normalize
        self.failure_score = failure_score

    @property
    def weights(self) -> dict[str, float]:
        return {c.name: c.weight for c in self.components}

    def __call__(self, example, pred, trace=None) -> RewardResult:
        scores: dict[str, float] = {}
        feedback: list[str] = []
        failed = False
        for component in self.components:
            try:
                result = to_reward_result(component.reward(example, pred, trace), failure_score=self.failure_score)
            except Exception as err:  # a broken component is counted, never fatal
                result = RewardResult(self.failure_score, feedback=f"{type(err).__name__}: {err}", failed=True)
            scores[component.name] = result.total
            failed = failed or result.failed
            if result.feedback:
                feedback.append(f"{component.name}: {result.feedback}")
        total = sum(scores[c.name] * c.weight for c in self.components)
        if self.normalize:
            weight_sum = sum(abs(c.weight) for c in self.components)
            total = total / weight_sum if weight_sum else 0.0
        return RewardResult(total, scores, "\n".join(feedback), failed)

    def __repr__(self) -> str:
        terms = " + ".join(f"{c.weight:g}·{c.name}" for c in self.components)
        return f"WeightedReward({terms}{', normalized' if self.normalize else ''})"
