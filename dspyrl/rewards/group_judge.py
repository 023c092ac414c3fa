"""Group-relative judging (after ART's RULER): one judge call scores the G outputs of one example side by side.

    judge = RewardModule(rubric, judge_lm=lm, mode="group", consistency_sample=0.25)
    judge.judge_group(inputs=..., outputs=[...])     # GroupJudgement: a score and a reason per output
    judge.score_group(example, predictions)          # what the rollout engine and LoRA GRPO call, once per group

Why it is built this way:
- GRPO learns from differences inside a group, and judges rank outputs shown side by side more consistently than they
  place one output on an absolute scale.
- One call shows the distinct outputs of one example (identical ones share a score) in a shuffled order, seeded by the
  group's content so the same group is shown the same way and hits the cache; the typed answer gives a score and a
  reason per shown number, and the scores are mapped back through the recorded order.
- The typed answer (`judgements_type(n)`) is what a grammar-constrained format writes under: on a local judge or
  `dspyrl serve` the judge's default format (`auto`: dspyrl's structured format) decodes exactly n entries, entry k
  for candidate k, integer scores 0-10, short reasons, so every reply parses. Other judges are read by their format,
  and a half-formatted reply ("[2] ... 7" lines, a bare JSON list) is still read when `lenient`.
- With `consistency_sample=p` a share p of the groups is asked again in the reversed order: the two rankings'
  agreement is counted (`stats.rank_agreement`) and the reward is the mean of the two orders. Mean scores by shown
  position (`stats.position_means`) expose a position bias.

`GroupJudging` holds these methods; `RewardModule` (dspyrl.rewards.judge) inherits them and supplies the retry loop
(`_ask`), the cache, the stats and the LM.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Annotated

import dspy
import pydantic


class CandidateScore(pydantic.BaseModel):
    # no extra keys, scores in range: a grammar-constrained format turns the JSON schema into what may be written
    model_config = pydantic.ConfigDict(extra="forbid")

    candidate: int = pydantic.Field(description="the candidate's number as shown", ge=1)
    # bounded: under a grammar-constrained format (dspyrl's structured/auto) the schema's maxLength holds a small
    # model's reasons short enough for every candidate's score to fit in the judge's max_tokens
    reason: str = pydantic.Field(description="a short reason", max_length=60)
    # an integer: a JSON number's digits are unbounded, and a small model under a grammar wrote 0.1111… to max_tokens
    score: int = pydantic.Field(description="0 (fails the rubric) to 10 (fully meets it)", ge=0, le=10)


@functools.lru_cache(maxsize=64)
def judgements_type(n: int):
    """The judgements of n shown candidates: read as `list[CandidateScore]` (any order, checked by `read_group`); its
    JSON schema, which a grammar-constrained format writes under, holds exactly n entries with entry k's `candidate`
    fixed to k. So every shown number gets one score by construction: under a schema without these bounds the tiny
    random model wrote `[]`, and SmolLM2-135M went on past the shown candidates ([3], [4], … for two) until
    max_tokens cut the reply."""
    item = CandidateScore.model_json_schema()
    number = item["properties"]["candidate"]
    entries = [{**item, "properties": {**item["properties"], "candidate": {**number, "const": k}}}
               for k in range(1, n + 1)]
    schema = {"type": "array", "prefixItems": entries, "items": False, "minItems": n, "maxItems": n}
    return Annotated[list[CandidateScore], pydantic.Field(min_length=n, max_length=n), pydantic.WithJsonSchema(schema)]


class GroupJudgeOutput(dspy.Signature):
    """You are a strict, fair grader. Several candidate outputs for the same inputs are shown, each after its number in
    brackets. Judge them against the rubric (and the reference answer, if one is given) and against each other: for each
    candidate give a short reason and a score from 0 to 10, higher for better candidates, equal for equally good ones."""

    rubric: str = dspy.InputField(desc="what a good output does")
    task_inputs: str = dspy.InputField(desc="the inputs every candidate was produced from")
    reference: str = dspy.InputField(desc="a reference answer, or '(none)'")
    candidates: str = dspy.InputField(desc="the candidate outputs: [1] ..., [2] ..., and so on")
    judgements: list[CandidateScore] = dspy.OutputField(desc="one entry per candidate")


@dataclass
class GroupJudgement:
    """The judge's verdict on the outputs of one example, in the order they were given."""

    scores: list[float]
    reasons: list[str]
    order: list[int]  # order[p] = index of the distinct output shown at position p + 1
    failed: bool = False
    attempts: int = 0  # LM attempts made (0 for a cache hit)
    error: str | None = None
    second_order: list[int] | None = None  # the consistency re-ask's order, when this group was checked
    rank_agreement: float | None = None  # share of output pairs both orders ranked alike (ties alike)
    distinct: list[int] = field(default_factory=list)  # distinct[k] = which distinct output candidate k is
    first_scores: list[float] | None = None  # the first order's scores alone (differs from `scores` when re-asked)


class GroupJudging:
    """RewardModule's group mode (module docstring). Expects of the class: `group` (a Predict of GroupJudgeOutput),
    `_fields`, `_key`, `_ask`, `_memo`, `_lock`, `stats`, `cache`, `failure_score`, `seed`, `consistency_sample`."""

    def judge_group(self, *, inputs: dict | str, outputs: list[str], reference: str | None = None) -> GroupJudgement:
        """Score the outputs of one example in one call, shown in a recorded shuffled order; never raises for LM or
        parse problems (a failure gives every output `failure_score`)."""
        texts = [str(o) for o in outputs]
        distinct = list(dict.fromkeys(texts))  # identical outputs are shown once and share a score
        which = [distinct.index(t) for t in texts]
        base = self._fields(inputs, reference)
        key = self._key("group", {**base, "distinct": json.dumps(distinct)})
        with self._lock:
            self.stats.groups += 1
            cached = self._memo.get(key) if self.cache else None
            if cached is not None:
                self.stats.cache_hits += 1
        if cached is None:
            cached = self._judge_distinct(base, distinct, key)
            with self._lock:
                if cached.failed:
                    self.stats.failures += 1
                if self.cache and not (cached.failed and cached.error and cached.error.startswith("lm:")):
                    self._memo[key] = cached
            attempts = cached.attempts
        else:
            attempts = 0
        first = cached.first_scores or cached.scores
        return GroupJudgement([cached.scores[k] for k in which], [cached.reasons[k] for k in which], list(cached.order),
                              cached.failed, attempts, cached.error, cached.second_order, cached.rank_agreement, which,
                              [first[k] for k in which])

    def _judge_distinct(self, base: dict[str, str], distinct: list[str], key: str) -> GroupJudgement:
        rng = random.Random(int(key[:16], 16) ^ self.seed)
        order = list(range(len(distinct)))
        rng.shuffle(order)
        first = self._ask_order(base, distinct, order)
        if first.failed:
            n = len(distinct)
            return GroupJudgement([self.failure_score] * n, [first.feedback] * n, order, True, first.attempts,
                                  first.error)
        scores, reasons = first.value
        first_scores = list(scores)
        attempts = first.attempts
        second_order, agreement = None, None
        if len(distinct) > 1 and rng.random() < self.consistency_sample:
            second_order = order[::-1]
            second = self._ask_order(base, distinct, second_order)
            attempts += second.attempts
            if not second.failed:  # a failed re-ask leaves the first answer standing, and is not an agreement
                agreement = rank_agreement(scores, second.value[0])
                scores = [(a + b) / 2 for a, b in zip(scores, second.value[0])]
                with self._lock:
                    self.stats.consistency_checks += 1
                    self.stats.rank_agreement_sum += agreement
        return GroupJudgement(scores, reasons, order, False, attempts, None, second_order, agreement,
                              first_scores=first_scores)

    def _ask_order(self, base: dict[str, str], distinct: list[str], order: list[int]):
        """One group call with the outputs shown in `order`; the answer's value is (scores, reasons) per distinct output."""
        shown = "\n\n".join(f"[{p + 1}]\n{distinct[k]}" for p, k in enumerate(order))
        n = len(order)
        signature = self.group.signature.with_updated_fields("judgements", type_=judgements_type(n))
        answer = self._ask(self.group, {**base, "candidates": shown, "signature": signature},
                           lambda out, raw: read_group(out, raw, n))
        if answer.failed:
            return answer
        by_position = answer.value  # [(score, reason)] by shown position
        scores, reasons = [0.0] * n, [""] * n
        for position, k in enumerate(order):
            scores[k], reasons[k] = by_position[position]
        with self._lock:
            stats = self.stats
            grow = n - len(stats.position_count)
            if grow > 0:
                stats.position_score_sum += [0.0] * grow
                stats.position_count += [0] * grow
            for position, (score, _) in enumerate(by_position):
                stats.position_score_sum[position] += score
                stats.position_count[position] += 1
        return dataclasses.replace(answer, value=(scores, reasons))


_JSON_LIST_IN_TEXT = re.compile(r"\[\s*\{.*\}\s*\]", re.DOTALL)
# "[2] ... score: 7" or "2: 7" on one line (0-10), as small judges write it when the typed format slips
_CANDIDATE_LINE = re.compile(r"^\W*(?:candidate\s*)?\[?(\d+)\]?\s*[:.)\-]?[^\n]*?(?:score\W{0,12})?\b(\d+(?:\.\d+)?)\s*$",
                             re.IGNORECASE | re.MULTILINE)


def read_group(outputs: dict, raw_text: str | None, n: int):
    """([(score, reason)] by shown position 1..n, None) if every candidate got one score in [0, 10] (returned on the
    reward scale, [0, 1]), else (None, why). `raw_text` is an unparseable reply, read leniently."""
    entries = outputs.get("judgements")
    if entries is None and raw_text is not None:
        entries = _group_entries_from_text(raw_text)
        if entries is None:
            return None, "no per-candidate scores in the answer"
    rows = []
    for entry in entries or []:
        item = entry.model_dump() if hasattr(entry, "model_dump") else entry
        if not isinstance(item, dict):
            return None, f"judgement {item!r} is not an object"
        rows.append(item)
    numbers = [row.get("candidate") for row in rows]
    if sorted(str(x) for x in numbers) != sorted(str(p) for p in range(1, n + 1)):
        return None, f"scores for candidates {numbers}, expected each of 1..{n} once"
    by_position: list = [None] * n
    for row in rows:
        try:
            score = float(row.get("score"))
        except (TypeError, ValueError):
            return None, f"score {row.get('score')!r} is not a number"
        if not math.isfinite(score) or not 0.0 <= score <= 10.0:
            return None, f"score {score:g} is outside [0, 10]"
        by_position[int(row["candidate"]) - 1] = (score / 10.0,  # the reward scale is [0, 1]
                                                  " ".join(str(row.get("reason") or "").split())[:300])
    return by_position, None


def _group_entries_from_text(text: str) -> list[dict] | None:
    """Per-candidate scores in a half-formatted answer: a JSON list of objects, else '[k] ... 7' lines."""
    match = _JSON_LIST_IN_TEXT.search(text)
    if match:
        try:
            loaded = json.loads(match.group(0))
            if isinstance(loaded, list):
                return loaded
        except ValueError:
            pass
    lines = _CANDIDATE_LINE.findall(text)
    return [{"candidate": int(k), "score": v, "reason": ""} for k, v in lines] if lines else None


def rank_agreement(first: list[float], second: list[float]) -> float:
    """Share of pairs (i, j) that two score lists order alike (<, > or =); 1.0 for fewer than two items."""
    pairs = [(i, j) for i in range(len(first)) for j in range(i + 1, len(first))]
    if not pairs:
        return 1.0
    sign = lambda x: (x > 1e-9) - (x < -1e-9)  # noqa: E731
    return sum(sign(first[i] - first[j]) == sign(second[i] - second[j]) for i, j in pairs) / len(pairs)
