"""Weighted multi-component rewards: one total to optimise, and the per-component breakdown to log.

A reward is any callable `(example, pred, trace=None) -> float | bool | RewardResult`. `WeightedReward` runs named
components, turns each into a number (a failed component counts as 0.0 and marks the whole result as failed, so a
broken judge call is visible instead of silently scoring), and returns

    total = Σ weight_i · score_i              (or divided by Σ weight_i with normalize=True)

together with `components = {name: score_i}` and the components' feedback joined, so the judge's words travel with
the number into rollouts, the run folder and the instruction proposer.

Group rewards: a reward whose `scores_groups` is true (a group-mode judge, a trained reward model, or a WeightedReward
holding one) also has `score_group(example, predictions) -> list[RewardResult]`, and every caller that holds the G
outputs of one example (the rollout engine, LoRA GRPO's TRL reward function) calls it once per group through
`score_group` below. Plain rewards are simply called once per output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from dspyrl.errors import is_lm_failure


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


def scores_groups(reward: Any) -> bool:
    """True for a reward that wants the G outputs of one example in one call (see the module docstring)."""
    return bool(getattr(reward, "scores_groups", False)) and callable(getattr(reward, "score_group", None))


def score_group(reward: Callable[..., Any], example, predictions: list, *, failure_score: float = 0.0) -> list[RewardResult]:
    """Score the outputs of one example: one `score_group` call for a group reward, else one call per output."""
    if scores_groups(reward):
        results = list(reward.score_group(example, list(predictions)))
        if len(results) != len(predictions):
            raise ValueError(f"{type(reward).__name__}.score_group returned {len(results)} results for "
                             f"{len(predictions)} predictions")
    else:
        results = [reward(example, prediction, None) for prediction in predictions]
    return [to_reward_result(result, failure_score=failure_score) for result in results]


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

    @property
    def scores_groups(self) -> bool:
        """A group reward when any component is one (that component then sees each group in one call)."""
        return any(scores_groups(c.reward) for c in self.components)

    def __call__(self, example, pred, trace=None) -> RewardResult:
        return self.score_group(example, [pred], trace)[0]

    def score_group(self, example, predictions: list, trace=None) -> list[RewardResult]:
        """Each component over the whole group (one call for a group component), then Σ weight · score per output."""
        per_component: dict[str, list[RewardResult]] = {}
        for component in self.components:
            try:
                if scores_groups(component.reward):
                    results = score_group(component.reward, example, predictions, failure_score=self.failure_score)
                else:
                    results = [to_reward_result(component.reward(example, pred, trace), failure_score=self.failure_score)
                               for pred in predictions]
            except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
                if not is_lm_failure(err):
                    raise
                results = [RewardResult(self.failure_score, feedback=f"{type(err).__name__}: {err}", failed=True)
                           for _ in predictions]
            per_component[component.name] = results
        return [self._combine({name: results[k] for name, results in per_component.items()})
                for k in range(len(predictions))]

    def _combine(self, results: dict[str, RewardResult]) -> RewardResult:
        scores = {name: result.total for name, result in results.items()}
        feedback = [f"{name}: {result.feedback}" for name, result in results.items() if result.feedback]
        failed = any(result.failed for result in results.values())
        total = sum(scores[c.name] * c.weight for c in self.components)
        if self.normalize:
            weight_sum = sum(abs(c.weight) for c in self.components)
            total = total / weight_sum if weight_sum else 0.0
        return RewardResult(total, scores, "\n".join(feedback), failed)

    def __repr__(self) -> str:
        terms = " + ".join(f"{c.weight:g}·{c.name}" for c in self.components)
        return f"WeightedReward({terms}{', normalized' if self.normalize else ''})"
