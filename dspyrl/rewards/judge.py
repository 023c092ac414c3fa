"""RewardModule: an LM judge as a DSPy module, with its own LM, a rubric, and a typed judgement.

    judge = RewardModule("Is the answer correct and complete?", judge_lm=dspy.LM("openrouter/..."), reference_field="answer")
    judge(example, pred)                       # a reward: RewardResult(total=score, components={"judge": score}, feedback)
    judge.judge(inputs=..., output=...)        # Judgement(score in [0, 1], feedback)
    judge.compare(inputs=..., output_a=..., output_b=...)   # PairwiseJudgement: A, B or tie, judged in both orders
    RewardModule(rubric, judge_lm=lm, mode="group")         # one call scores the G outputs of one example together
    judge.judge_group(inputs=..., outputs=[...])            # GroupJudgement: a score and a reason per output

Why it is built this way:
- It is a `dspy.Module` whose predictors (`score`, `pairwise`, `group`) use typed signatures, so the judge's own prompt
  can be inspected, saved and even optimized like any program; it never shares the generator's LM (`judge_lm=` is its
  own), nor the program's format: without `format=` a judge on a local model or `dspyrl serve` writes its typed
  answers under a grammar (`auto`: dspyrl's choice/structured formats), so a small judge's verdict always parses; on
  other LMs it keeps the context's format.
- A judgement that does not parse, or whose score is outside [0, 1], is retried with a fresh sample (a different
  `rollout_id` at temperature ≥ 0.7, so DSPy's cache cannot hand the same bad answer back); after `retries` it counts
  as a judge failure scoring `failure_score`. Nothing here raises into a run.
- Small judges often get the format half right ("Score: 0.8 because …"): with `lenient=True` a score written plainly
  in an unparseable answer is still read, and only then is the answer retried.
- Judgements are cached in memory by their exact inputs (and the judge LM's identity): the same question, output and
  reference never cost a second LM call in one process. DSPy's own LM cache covers later processes.
- Pairwise mode asks twice with A and B swapped; if the two verdicts disagree, position bias decided, so the result is
  a tie and the disagreement is counted (`inconsistency_rate`).
- Group mode (`mode="group"`, after ART's RULER; dspyrl.rewards.group_judge): one call scores the G outputs of one
  example, shown in a recorded shuffled order, with an optional consistency re-ask in the reversed order. The rollout
  engine and LoRA GRPO call a group-mode judge once per group (`scores_groups`).
- Every judge LM call runs on its own copy of the judge LM, whose history gives the call's tokens and cost:
  `stats` counts them apart from the task's calls.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError

from dspyrl.errors import ConfigError, is_lm_failure
from dspyrl.lm.usage import entry_cost
from dspyrl.rewards.combine import RewardResult
from dspyrl.rewards.group_judge import (CandidateScore, GroupJudgement, GroupJudgeOutput, GroupJudging,  # noqa: F401
                                        rank_agreement)  # (imported from here before group mode had its own file)


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


class RewardModule(GroupJudging, dspy.Module):
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
        fields = {**self._fields(inputs, reference), "output": str(output)}
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
        base = self._fields(inputs, reference)
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

    # -- the retry loop -------------------------------------------------------------------------------------
    def _fields(self, inputs: dict | str, reference: str | None) -> dict[str, str]:
        """The input fields every judging mode shows: the rubric, the task's inputs and the reference."""
        return {"rubric": self.rubric, "task_inputs": format_inputs(inputs),
                "reference": reference if reference not in (None, "") else "(none)"}

    def format_for(self, lm):
        """The format the judge writes its answers in: `format=`, else `auto` where `lm` takes a grammar (a local model,
        `dspyrl serve`), else None (the context's). The program's format is for the program's own replies."""
        if self.format is not None:
            return self.format
        from dspyrl.formats import resolve_format

        return resolve_format("auto", lm)

    def _ask(self, predictor: dspy.Predict, fields: dict[str, str], read) -> _Answer:
        """Call `predictor` until `read` accepts the answer (a score, or 'A'/'B'/'tie') or the attempts run out."""
        base_lm = self.judge_lm or dspy.settings.lm
        if base_lm is None:
            raise ConfigError("the judge has no LM: pass judge_lm= to RewardModule or configure one with dspy.configure(lm=...)")
        error = None
        judge_format = self.format_for(base_lm)
        for attempt in range(self.retries + 1):
            # a copy per attempt: its own history holds exactly this attempt's LM calls (tokens, cost)
            lm = base_lm.copy() if attempt == 0 else base_lm.copy(
                rollout_id=attempt, temperature=max(0.7, float(base_lm.kwargs.get("temperature") or 0.0)))
            with self._lock:
                self.stats.lm_attempts += 1
            settings = {"lm": lm} if judge_format is None else {"lm": lm, "adapter": judge_format}
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
                self.stats.cost += entry_cost(lm, entry)

    def _key(self, mode: str, fields: dict[str, str]) -> str:
        lm = self.judge_lm or dspy.settings.lm
        identity = [getattr(lm, "model", None), {k: v for k, v in (getattr(lm, "kwargs", {}) or {}).items()
                                                  if k in ("temperature", "max_tokens", "top_p")}]
        blob = json.dumps([mode, fields, identity, type(self.format_for(lm)).__name__], sort_keys=True, default=str)
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
