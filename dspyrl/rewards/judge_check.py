"""Judges you can trust: the numbers to read before optimizing against an LM judge.

    groups = labelled_groups(batch, examples)        # rollouts scored by a reference reward (exact, or a person's)
    report = check_judge(judge, groups)              # per-sample, group and pairwise modes of the same judge

For each mode, on the same outputs:
- agreement with the reference: Spearman's ρ between judge and reference scores over all outputs (scipy), and
  within-group pairwise accuracy: of the output pairs of one example whose reference rewards differ, the share the
  judge orders the same way (a judge tie counts half) — what GRPO's group-relative advantages depend on;
- score compression: the share of within-group pairs the judge scores equal (ties carry no GRPO signal);
- position bias: group mode, the mean score of the output shown first minus its group's mean (0 for a fair judge:
  the order is shuffled) and the mean score at each shown position; pairwise mode, the share of decisive verdicts
  that went to the output shown first (0.5 for a fair judge);
- self-consistency across two orders: group mode re-asks every group in the reversed order (rank agreement: the
  share of output pairs both orders rank alike); pairwise mode asks both orders (the share that agree);
- cost: judge LM calls, tokens and cost per group, from the judge's own stats (never mixed with the task's).
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dspyrl.rewards.judge import RewardModule

MODES = ("sample", "group", "pairwise")


@dataclass
class LabelledGroup:
    """The outputs of one example with the reference reward of each."""

    example: Any
    predictions: list
    reference: list[float]


def labelled_groups(batch, examples: list) -> list[LabelledGroup]:
    """Groups from a RolloutBatch whose reward is the reference; failed runs are left out, as are groups of one."""
    groups: dict[int, LabelledGroup] = {}
    for rollout in batch.rollouts:
        if rollout.error is None and rollout.prediction is not None and not rollout.reward.failed:
            group = groups.setdefault(rollout.example_index, LabelledGroup(examples[rollout.example_index], [], []))
            group.predictions.append(rollout.prediction)
            group.reference.append(float(rollout.reward.total))
    return [groups[i] for i in sorted(groups) if len(groups[i].predictions) > 1]


def check_judge(judge: RewardModule, groups: list[LabelledGroup], *, modes: tuple[str, ...] = MODES,
                pairs_per_group: int = 2, seed: int = 0, threads: int = 4) -> dict[str, Any]:
    """Run the judge in each mode over the labelled groups (module docstring); a fresh copy per mode keeps the stats
    of each mode apart."""
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown judge-check mode(s) {unknown}; known: {MODES}")
    report: dict[str, Any] = {"groups": len(groups), "outputs": sum(len(g.predictions) for g in groups),
                              "reference_ties": _tie_share([g.reference for g in groups])}
    for mode in modes:
        variant = _variant(judge, mode)
        if mode == "pairwise":
            report[mode] = _check_pairwise(variant, groups, pairs_per_group, seed, threads)
        else:
            report[mode] = _check_scores(variant, groups, mode, threads)
        report[mode].update(_cost(variant.stats, len(groups)))
    return report


# ----------------------------------------------------------------------------------------------- scores per output
def _check_scores(judge: RewardModule, groups: list[LabelledGroup], mode: str, threads: int) -> dict[str, Any]:
    def judge_one(group: LabelledGroup):
        if mode == "group":
            return judge.judge_group(inputs=group.example.inputs(), outputs=[judge.output_text(p) for p in group.predictions],
                                     reference=judge.reference_text(group.example))
        return [judge.judge(inputs=group.example.inputs(), output=judge.output_text(p),
                            reference=judge.reference_text(group.example)) for p in group.predictions]

    with ThreadPoolExecutor(max(1, threads)) as pool:
        verdicts = list(pool.map(judge_one, groups))
    if mode == "group":
        # the single-call scores (first order) are what one group call gives; the re-ask measures consistency
        scores = [v.first_scores or v.scores for v in verdicts]
        failed = sum(v.failed for v in verdicts)
    else:
        scores = [[j.score for j in v] for v in verdicts]
        failed = sum(j.failed for v in verdicts for j in v)
    result = {**_agreement(scores, [g.reference for g in groups]), "ties": _tie_share(scores), "failures": failed}
    if mode == "group":
        checked = [v.rank_agreement for v in verdicts if v.rank_agreement is not None]
        result["rank_agreement"] = sum(checked) / len(checked) if checked else None
        result["position_means"] = [round(x, 4) for x in judge.stats.position_means]
        gains = [_first_shown_gain(v) for v in verdicts if not v.failed and len(v.order) > 1]
        result["first_position_gain"] = sum(gains) / len(gains) if gains else None
    return result


def _first_shown_gain(verdict) -> float:
    """Score of the output shown first minus the mean over the distinct outputs shown (first order's scores)."""
    by_distinct = {d: score for d, score in zip(verdict.distinct, verdict.first_scores)}
    return by_distinct[verdict.order[0]] - sum(by_distinct.values()) / len(by_distinct)


def _agreement(scores: list[list[float]], reference: list[list[float]]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    flat_s = [x for group in scores for x in group]
    flat_r = [x for group in reference for x in group]
    rho = None
    if len(set(flat_s)) > 1 and len(set(flat_r)) > 1:
        rho = float(spearmanr(flat_s, flat_r).statistic)
        rho = None if math.isnan(rho) else rho
    right = total = 0.0
    for s, r in zip(scores, reference):
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                if r[i] == r[j]:
                    continue
                total += 1
                judged = (s[i] > s[j]) - (s[i] < s[j])
                right += 0.5 if judged == 0 else float(judged == ((r[i] > r[j]) - (r[i] < r[j])))
    return {"spearman": rho, "pairwise_accuracy": right / total if total else None, "decisive_pairs": int(total)}


def _tie_share(groups: list[list[float]]) -> float | None:
    pairs = [(g[i], g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    return sum(abs(a - b) < 1e-9 for a, b in pairs) / len(pairs) if pairs else None


# ----------------------------------------------------------------------------------------------- pairwise
def _check_pairwise(judge: RewardModule, groups: list[LabelledGroup], pairs_per_group: int, seed: int,
                    threads: int) -> dict[str, Any]:
    rng = random.Random(seed)
    jobs = []
    for group in groups:
        decisive = [(i, j) for i in range(len(group.reference)) for j in range(i + 1, len(group.reference))
                    if group.reference[i] != group.reference[j]]
        for i, j in rng.sample(decisive, min(pairs_per_group, len(decisive))):
            if rng.random() < 0.5:  # which one is shown first is random too
                i, j = j, i
            jobs.append((group, i, j))

    def compare(job):
        group, i, j = job
        return judge.compare(inputs=group.example.inputs(), output_a=judge.output_text(group.predictions[i]),
                             output_b=judge.output_text(group.predictions[j]), reference=judge.reference_text(group.example))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        judgements = list(pool.map(compare, jobs))
    right = 0.0
    for (group, i, j), verdict in zip(jobs, judgements):
        better = "A" if group.reference[i] > group.reference[j] else "B"
        right += 0.5 if verdict.winner == "tie" else float(verdict.winner == better)
    return {"pairs": len(jobs), "accuracy": right / len(jobs) if jobs else None, **pairwise_check(judgements)}


def pairwise_check(judgements: list) -> dict[str, Any]:
    """Position bias, consistency and ties of `RewardModule.compare` verdicts (both orders each): the comparator's
    report shows these for its pairwise judge."""
    judged = [j for j in judgements if not j.failed]
    first_shown = decisive = 0
    for j in judged:
        verdict_a_first, verdict_b_first = j.verdicts  # the second is mapped back to A/B: "B" = shown first there
        for verdict, first in ((verdict_a_first, "A"), (verdict_b_first, "B")):
            if verdict in ("A", "B"):
                decisive += 1
                first_shown += verdict == first
    return {"first_position_rate": first_shown / decisive if decisive else None,
            "consistency": sum(j.consistent for j in judged) / len(judged) if judged else None,
            "ties": sum(j.winner == "tie" for j in judgements) / len(judgements) if judgements else None,
            "failures": len(judgements) - len(judged)}


# ----------------------------------------------------------------------------------------------- helpers
def _variant(judge: RewardModule, mode: str) -> RewardModule:
    """The same judge (rubric, LM, format, fields, retries), in `mode`, with fresh stats and cache."""
    return RewardModule(judge.rubric, judge_lm=judge.judge_lm, format=judge.format, output_fields=judge.output_fields,
                        reference_field=judge.reference_field, retries=judge.retries, failure_score=judge.failure_score,
                        lenient=judge.lenient, cache=judge.cache, name=judge.name,
                        mode="group" if mode == "group" else "sample",
                        consistency_sample=1.0 if mode == "group" else 0.0, seed=judge.seed)


def _cost(stats, n_groups: int) -> dict[str, Any]:
    per = (lambda x: x / n_groups) if n_groups else (lambda x: None)
    return {"judge_calls": stats.lm_calls, "judge_prompt_tokens": stats.prompt_tokens,
            "judge_completion_tokens": stats.completion_tokens, "judge_cost": stats.cost,
            "calls_per_group": per(stats.lm_calls), "tokens_per_group": per(stats.prompt_tokens + stats.completion_tokens)}
