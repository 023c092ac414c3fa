"""RewardModule: an LM judge as a DSPy module, with its own LM, a rubric, and a typed judgement.

    judge = RewardModule("Is the answer correct and complete?", judge_lm=dspy.LM("openrouter/..."), reference_field="answer")
    judge(example, pred)                       # a reward: RewardResult(total=score, components={"judge": score}, feedback)
    judge.judge(inputs=..., output=...)        # Judgement(score in [0, 1], feedback)
    judge.compare(inputs=..., output_a=..., output_b=...)   # PairwiseJudgement: A, B or tie, judged in both orders
    RewardModule(rubric, judge_lm=lm, mode="group")         # one call scores the G outputs of one example together
    judge.judge_group(inputs=..., outputs=[...])            # GroupJudgement: a score and a reason per output

Why it is built this way:
- It is a `dspy.Module` whose two predictors (`score`, `pairwise`) use typed signatures, so the judge's own prompt can
  be inspected, saved and even optimized like any program; it never shares the generator's LM (`judge_lm=` is its own).
- A judgement that does not parse, or whose score is outside [0, 1], is retried with a fresh sample (a different
  `rollout_id` at temperature ≥ 0.7, so DSPy's cache cannot hand the same bad answer back); after `retries` it counts
  as a judge failure scoring `failure_score`. Nothing here raises into a run.
- Small judges often get the format half right ("Score: 0.8 because …"): with `lenient=True` a score written plainly
  in an unparseable answer is still read, and only then is the answer retried.
- Judgements are cached in memory by their exact inputs (and the judge LM's identity): the same question, output and
  reference never cost a second LM call in one process. DSPy's own LM cache covers later processes.
- Pairwise mode asks twice with A and B swapped; if the two verdicts disagree, position bias decided, so the result is
  a tie and the disagreement is counted (`inconsistency_rate`).
- Group mode (`mode="group"`, after ART's RULER): GRPO learns from differences inside a group, and judges rank
  outputs shown side by side more consistently than they place one output on an absolute scale. One call shows the
  distinct outputs of one example in a shuffled order (seeded by the group's content, so the same group is shown the
  same way and hits the cache), the typed answer gives a score and a reason per shown number, and the scores are
  mapped back through the recorded order. With `consistency_sample=p` a share p of the groups is asked again in the
  reversed order: the two rankings' agreement is counted (`stats.rank_agreement`) and the reward is the mean of the
  two orders. The rollout engine and LoRA GRPO call a group-mode judge once per group (`scores_groups`).
- Every judge LM call runs on its own copy of the judge LM, whose history gives the call's tokens and cost:
  `stats` counts them apart from the task's calls.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import dspy
import pydantic
from dspy.utils.exceptions import AdapterParseError

from dspyrl.errors import ConfigError, is_lm_failure
from dspyrl.rewards.combine import RewardResult


class JudgeOutput(dspy.Signature):
    """You are a strict, fair grader. Judge the output against the rubric (and the reference answer, if one is given).
    Write brief feedback naming what is right and wrong, then a score from 0.0 (fails the rubric) to 1.0 (fully meets it)."""

    rubric: str = dspy.InputField(desc="what a good output does")
    task_inputs: str = dspy.InputField(desc="the inputs the output was produced from")
    reference: str = dspy.InputField(desc="a reference answer, or '(none)'")
    output: str = dspy.InputField(desc="the output to judge")
    feedback: str = dspy.OutputField(desc="one or two sentences")
    score: float = dspy.OutputField(desc="a number between 0.0 and 1.0")


class PairwiseOutput(dspy.Signature):
    """You are a strict, fair grader. Compare two outputs for the same inputs against the rubric (and the reference
    answer, if one is given). Write brief feedback, then name the better output: A, B, or tie if neither is better."""

    rubric: str = dspy.InputField(desc="what a good output does")
    task_inputs: str = dspy.InputField(desc="the inputs both outputs were produced from")
    reference: str = dspy.InputField(desc="a reference answer, or '(none)'")
    output_a: str = dspy.InputField(desc="output A")
    output_b: str = dspy.InputField(desc="output B")
    feedback: str = dspy.OutputField(desc="one or two sentences")
    winner: Literal["A", "B", "tie"] = dspy.OutputField()


class CandidateScore(pydantic.BaseModel):
    # no extra keys, scores in range: a grammar-constrained format turns the JSON schema into what may be written
    model_config = pydantic.ConfigDict(extra="forbid")

    candidate: int = pydantic.Field(description="the candidate's number as shown", ge=1)
    # bounded: under a grammar-constrained format (dspyrl's structured/auto) the schema's maxLength holds a small
    # model's reasons short enough for every candidate's score to fit in the judge's max_tokens
    reason: str = pydantic.Field(description="a short reason", max_length=60)
    # an integer: a JSON number's digits are unbounded, and a small model under a grammar wrote 0.1111… to max_tokens
    score: int = pydantic.Field(description="0 (fails the rubric) to 10 (fully meets it)", ge=0, le=10)


class GroupJudgeOutput(dspy.Signature):
    """You are a strict, fair grader. Several candidate outputs for the same inputs are shown, each after its number in
    brackets. Judge them against the rubric (and the reference answer, if one is given) and against each other: for each
    candidate give a short reason and a score from 0 to 10, higher for better candidates, equal for equally good ones."""

    rubric: str = dspy.InputField(desc="what a good output does")
    task_inputs: str = dspy.InputField(desc="the inputs every candidate was produced from")
    reference: str = dspy.InputField(desc="a reference answer, or '(none)'")
    candidates: str = dspy.InputField(desc="the candidate outputs: [1] ..., [2] ..., and so on")
    judgements: list[CandidateScore] = dspy.OutputField(desc="one entry per candidate")


MODES = ("sample", "group")


@dataclass
class Judgement:
    """The judge's verdict on one output. `failed` judgements carry the configured failure score."""

    score: float
    feedback: str
    failed: bool = False
    attempts: int = 0  # LM attempts made (0 for a cache hit)
    error: str | None = None


@dataclass
class PairwiseJudgement:
    winner: Literal["A", "B", "tie"]
    consistent: bool  # both orders agreed (a disagreement is reported as a tie)
    feedback: str = ""
    failed: bool = False  # at least one of the two orders failed to give a verdict
    verdicts: tuple[str | None, str | None] = (None, None)  # (A-first verdict, B-first verdict mapped back to A/B)


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


@dataclass
class _Answer:
    """What one predictor call (with its retries) produced: a checked value, or a failure."""

    value: Any
    feedback: str
    failed: bool
    attempts: int
    error: str | None = None


@dataclass
class JudgeStats:
    judgements: int = 0
    cache_hits: int = 0
    lm_attempts: int = 0
    failures: int = 0
    comparisons: int = 0
    inconsistent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    lm_calls: int = 0  # LM requests the judge made (a format's own JSON retry is a second call)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    groups: int = 0  # group judgements (one call each, plus retries and consistency re-asks)
    consistency_checks: int = 0
    rank_agreement_sum: float = 0.0
    position_score_sum: list[float] = field(default_factory=list)  # by shown position (0 = first shown)
    position_count: list[int] = field(default_factory=list)

    @property
    def rank_agreement(self) -> float | None:
        return self.rank_agreement_sum / self.consistency_checks if self.consistency_checks else None

    @property
    def position_means(self) -> list[float]:
        """Mean group-mode score at each shown position: with shuffled orders, a fair judge's are about equal."""
        return [s / n if n else 0.0 for s, n in zip(self.position_score_sum, self.position_count)]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failure_rate": self.failure_rate, "inconsistency_rate": self.inconsistency_rate,
                "rank_agreement": self.rank_agreement, "position_means": self.position_means}

    @property
    def inconsistency_rate(self) -> float:
        return self.inconsistent / self.comparisons if self.comparisons else 0.0

    @property
    def failure_rate(self) -> float:
        """Failed verdicts over verdicts asked for: single judgements, groups, and both orders of each comparison."""
        asked = self.judgements + self.groups + 2 * self.comparisons
        return self.failures / asked if asked else 0.0


_SCORE_IN_TEXT = re.compile(r"score\W{0,12}?(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_WINNER_IN_TEXT = re.compile(r"winner\W{0,12}?\b(A|B|tie)\b", re.IGNORECASE)
_JSON_LIST_IN_TEXT = re.compile(r"\[\s*\{.*\}\s*\]", re.DOTALL)
# "[2] ... score: 7" or "2: 7" on one line (0-10), as small judges write it when the typed format slips
_CANDIDATE_LINE = re.compile(r"^\W*(?:candidate\s*)?\[?(\d+)\]?\s*[:.)\-]?[^\n]*?(?:score\W{0,12})?\b(\d+(?:\.\d+)?)\s*$",
                             re.IGNORECASE | re.MULTILINE)


class RewardModule(dspy.Module):
    """An LM judge usable as a reward `(example, pred, trace=None) -> RewardResult`; see the module docstring."""

    def __init__(self, rubric: str, *, judge_lm: dspy.LM | None = None, format: Any = None,
                 output_fields: list[str] | None = None, reference_field: str | None = None, retries: int = 2,
                 failure_score: float = 0.0, lenient: bool = True, cache: bool = True, name: str = "judge",
                 mode: str = "sample", consistency_sample: float = 0.0, seed: int = 0):
        super().__init__()
        if not rubric or not rubric.strip():
            raise ConfigError("a RewardModule needs a non-empty rubric")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if mode not in MODES:
            raise ConfigError(f"judge mode must be one of {', '.join(MODES)}, got '{mode}'")
        if not 0.0 <= consistency_sample <= 1.0:
            raise ConfigError(f"consistency_sample must be in [0, 1], got {consistency_sample}")
        self.mode = mode
        self.consistency_sample = consistency_sample
        self.seed = seed
        self.rubric = rubric.strip()
        self.judge_lm = judge_lm
        self.format = format
        self.output_fields = output_fields
        self.reference_field = reference_field
        self.retries = retries
        self.failure_score = failure_score
        self.lenient = lenient
        self.cache = cache
        self.name = name
        self.score = dspy.Predict(JudgeOutput)
        self.pairwise = dspy.Predict(PairwiseOutput)
        self.group = dspy.Predict(GroupJudgeOutput)
        self.stats = JudgeStats()
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- as a reward ----------------------------------------------------------------------------------------
    @property
    def scores_groups(self) -> bool:
        return self.mode == "group"

    def forward(self, example, pred, trace=None) -> RewardResult:
        if self.mode == "group":
            return self.score_group(example, [pred])[0]
        judgement = self.judge(inputs=example.inputs() if hasattr(example, "inputs") else example,
                               output=self.output_text(pred), reference=self.reference_text(example))
        return RewardResult(judgement.score, {self.name: judgement.score}, judgement.feedback, judgement.failed)

    def score_group(self, example, predictions: list) -> list[RewardResult]:
        """The outputs of one example, judged together in one call (see the module docstring); in sample mode, one
        judgement per output."""
        if self.mode != "group":
            return [self(example, pred) for pred in predictions]
        verdict = self.judge_group(inputs=example.inputs() if hasattr(example, "inputs") else example,
                                   outputs=[self.output_text(p) for p in predictions],
                                   reference=self.reference_text(example))
        return [RewardResult(score, {self.name: score}, reason, verdict.failed)
                for score, reason in zip(verdict.scores, verdict.reasons)]

    def output_text(self, pred) -> str:
        """The prediction fields the judge sees: `output_fields`, or every field except the reasoning."""
        return prediction_text(pred, self.output_fields)

    def reference_text(self, example) -> str | None:
        if not self.reference_field:
            return None
        value = example.get(self.reference_field) if hasattr(example, "get") else None
        return None if value is None else str(value)

    # -- one output -----------------------------------------------------------------------------------------
    def judge(self, *, inputs: dict | str, output: str, reference: str | None = None) -> Judgement:
        """Score one output in [0, 1]; never raises for LM or parse problems."""
        fields = {"rubric": self.rubric, "task_inputs": format_inputs(inputs),
                  "reference": reference if reference not in (None, "") else "(none)", "output": str(output)}
        key = self._key("score", fields)
        with self._lock:
            self.stats.judgements += 1
            if self.cache and key in self._memo:
                self.stats.cache_hits += 1
                cached = self._memo[key]
                return Judgement(cached.score, cached.feedback, cached.failed, 0, cached.error)
        answer = self._ask(self.score, fields, _read_score)
        judgement = Judgement(self.failure_score if answer.failed else answer.value, answer.feedback, answer.failed,
                              answer.attempts, answer.error)
        with self._lock:
            if judgement.failed:
                self.stats.failures += 1
            if self.cache and not (judgement.failed and judgement.error and judgement.error.startswith("lm:")):
                self._memo[key] = judgement  # transient LM errors are not remembered; bad answers are
        return judgement

    # -- two outputs ----------------------------------------------------------------------------------------
    def compare(self, *, inputs: dict | str, output_a: str, output_b: str, reference: str | None = None) -> PairwiseJudgement:
        """A vs B, asked in both orders; a disagreement between the orders is a tie."""
        base = {"rubric": self.rubric, "task_inputs": format_inputs(inputs),
                "reference": reference if reference not in (None, "") else "(none)"}
        first = self._pairwise_verdict({**base, "output_a": str(output_a), "output_b": str(output_b)})
        second = self._pairwise_verdict({**base, "output_a": str(output_b), "output_b": str(output_a)})
        swapped_back = {"A": "B", "B": "A", "tie": "tie"}.get(second.value) if not second.failed else None
        verdict_a = first.value if not first.failed else None
        failed = verdict_a is None or swapped_back is None
        consistent = not failed and verdict_a == swapped_back
        winner = verdict_a if consistent else "tie"
        with self._lock:
            self.stats.comparisons += 1
            if not failed and not consistent:
                self.stats.inconsistent += 1
        feedback = "\n".join(f for f in (first.feedback, second.feedback) if f)
        return PairwiseJudgement(winner, consistent, feedback, failed, (verdict_a, swapped_back))

    def _pairwise_verdict(self, fields: dict[str, str]) -> _Answer:
        key = self._key("pairwise", fields)
        with self._lock:
            if self.cache and key in self._memo:
                self.stats.cache_hits += 1
                return self._memo[key]
        verdict = self._ask(self.pairwise, fields, _read_winner)
        with self._lock:
            if verdict.failed:
                self.stats.failures += 1
            if self.cache and not (verdict.failed and verdict.error and verdict.error.startswith("lm:")):
                self._memo[key] = verdict
        return verdict

    # -- a group of outputs ---------------------------------------------------------------------------------
    def judge_group(self, *, inputs: dict | str, outputs: list[str], reference: str | None = None) -> GroupJudgement:
        """Score the outputs of one example in one call, shown in a recorded shuffled order; never raises for LM or
        parse problems (a failure gives every output `failure_score`)."""
        texts = [str(o) for o in outputs]
        distinct = list(dict.fromkeys(texts))  # identical outputs are shown once and share a score
        which = [distinct.index(t) for t in texts]
        base = {"rubric": self.rubric, "task_inputs": format_inputs(inputs),
                "reference": reference if reference not in (None, "") else "(none)"}
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

    def _ask_order(self, base: dict[str, str], distinct: list[str], order: list[int]) -> _Answer:
        """One group call with the outputs shown in `order`; the answer's value is (scores, reasons) per distinct output."""
        shown = "\n\n".join(f"[{p + 1}]\n{distinct[k]}" for p, k in enumerate(order))
        # exactly n judgements in the output type: a grammar-constrained format then cannot stop after the first one
        n = len(order)
        signature = self.group.signature.with_updated_fields(
            "judgements", type_=Annotated[list[CandidateScore], pydantic.Field(min_length=n, max_length=n)])
        answer = self._ask(self.group, {**base, "candidates": shown, "signature": signature},
                           lambda out, raw: _read_group(out, raw, n))
        if answer.failed:
            return answer
        by_position = answer.value  # [(score, reason)] by shown position
        scores, reasons = [0.0] * len(order), [""] * len(order)
        for position, k in enumerate(order):
            scores[k], reasons[k] = by_position[position]
        with self._lock:
            stats = self.stats
            grow = len(order) - len(stats.position_count)
            if grow > 0:
                stats.position_score_sum += [0.0] * grow
                stats.position_count += [0] * grow
            for position, (score, _) in enumerate(by_position):
                stats.position_score_sum[position] += score
                stats.position_count[position] += 1
        return _Answer((scores, reasons), answer.feedback, False, answer.attempts)

    # -- the retry loop -------------------------------------------------------------------------------------
    def _ask(self, predictor: dspy.Predict, fields: dict[str, str], read) -> _Answer:
        """Call `predictor` until `read` accepts the answer (a score, or 'A'/'B'/'tie') or the attempts run out."""
        base_lm = self.judge_lm or dspy.settings.lm
        if base_lm is None:
            raise ConfigError("the judge has no LM: pass judge_lm= to RewardModule or configure one with dspy.configure(lm=...)")
        error = None
        for attempt in range(self.retries + 1):
            # a copy per attempt: its own history holds exactly this attempt's LM calls (tokens, cost)
            lm = base_lm.copy() if attempt == 0 else base_lm.copy(
                rollout_id=attempt, temperature=max(0.7, float(base_lm.kwargs.get("temperature") or 0.0)))
            with self._lock:
                self.stats.lm_attempts += 1
            settings = {"lm": lm} if self.format is None else {"lm": lm, "adapter": self.format}
            try:
                with dspy.context(**settings):
                    prediction = predictor(**fields)
                value, problem = read(dict(prediction.items()), None)
                problem = problem and f"invalid: {problem}"  # parsed, but e.g. a score outside [0, 1]
                feedback = str(prediction.get("feedback") or "")
            except AdapterParseError as err:
                value, problem = (read({}, err.lm_response) if self.lenient else (None, "unparseable answer"))
                feedback = _feedback_from_text(err.lm_response)
                problem = problem and f"parse: {problem}"
            except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
                if not is_lm_failure(err):
                    raise
                value, problem, feedback = None, f"lm: {type(err).__name__}: {' '.join(str(err).split())[:200]}", ""
            self._count_usage(lm)
            if problem is None:
                return _Answer(value, feedback, False, attempt + 1)
            error = problem
            with self._lock:
                kind = problem.split(":", 1)[0]
                self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        return _Answer(None, f"judge failed: {error}", True, self.retries + 1, error)

    def _count_usage(self, lm) -> None:
        entries = list(getattr(lm, "history", None) or [])
        with self._lock:
            for entry in entries:
                usage = entry.get("usage") or {}  # empty on a cache hit: a cached answer costs nothing
                self.stats.lm_calls += 1
                self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
                self.stats.cost += float(entry.get("cost") or 0.0) if usage else 0.0

    def _key(self, mode: str, fields: dict[str, str]) -> str:
        lm = self.judge_lm or dspy.settings.lm
        identity = [getattr(lm, "model", None), {k: v for k, v in (getattr(lm, "kwargs", {}) or {}).items()
                                                  if k in ("temperature", "max_tokens", "top_p")}]
        blob = json.dumps([mode, fields, identity, type(self.format).__name__], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _read_score(outputs: dict, raw_text: str | None):
    """(score, None) if acceptable, else (None, why)."""
    value = outputs.get("score")
    if value is None and raw_text is not None:
        match = _SCORE_IN_TEXT.search(raw_text)
        if not match:
            return None, "no score in the answer"
        value = match.group(1)
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None, f"score {value!r} is not a number"
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return None, f"score {score:g} is outside [0, 1]"
    return score, None


def _read_winner(outputs: dict, raw_text: str | None):
    value = outputs.get("winner")
    if value is None and raw_text is not None:
        match = _WINNER_IN_TEXT.search(raw_text)
        if not match:
            return None, "no winner in the answer"
        value = match.group(1)
    normalized = {"a": "A", "b": "B", "tie": "tie"}.get(str(value).strip().lower())
    if normalized is None:
        return None, f"winner {value!r} is not A, B or tie"
    return normalized, None


def _read_group(outputs: dict, raw_text: str | None, n: int):
    """([(score, reason)] by shown position 1..n, None) if every candidate got one score in [0, 1], else (None, why)."""
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
    """Per-candidate scores in a half-formatted answer: a JSON list of objects, else '[k] ... 0.7' lines."""
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


def judges_in(reward) -> dict[str, RewardModule]:
    """The RewardModule judges inside a reward: itself, or the components of a WeightedReward, by name."""
    if isinstance(reward, RewardModule):
        return {reward.name: reward}
    return {c.name: c.reward for c in getattr(reward, "components", []) if isinstance(c.reward, RewardModule)}


def prediction_text(pred, fields: list[str] | None = None) -> str:
    """A prediction as a judge or reward model reads it: `fields` (default: all but the reasoning), one as its bare
    value, several as 'name: value' lines."""
    items = dict(pred.items()) if hasattr(pred, "items") else {"output": pred}
    names = fields or [k for k in items if k != "reasoning"]
    if len(names) == 1:
        return str(items.get(names[0], ""))
    return "\n".join(f"{name}: {items.get(name, '')}" for name in names)


def _feedback_from_text(text: str | None) -> str:
    text = " ".join(str(text or "").split())
    return text[:300]


def format_inputs(inputs: dict | str) -> str:
    if isinstance(inputs, str):
        return inputs
    return "\n".join(f"{key}: {value}" for key, value in dict(inputs).items())
