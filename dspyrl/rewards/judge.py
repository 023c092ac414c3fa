"""RewardModule: an LM judge as a DSPy module, with its own LM, a rubric, and a typed judgement.

    judge = RewardModule("Is the answer correct and complete?", judge_lm=dspy.LM("openrouter/..."), reference_field="answer")
    judge(example, pred)                       # a reward: RewardResult(total=score, components={"judge": score}, feedback)
    judge.judge(inputs=..., output=...)        # Judgement(score in [0, 1], feedback)
    judge.compare(inputs=..., output_a=..., output_b=...)   # PairwiseJudgement: A, B or tie, judged in both orders

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
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError

from dspyrl.errors import ConfigError
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

    @property
    def inconsistency_rate(self) -> float:
        return self.inconsistent / self.comparisons if self.comparisons else 0.0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.judgements if self.judgements else 0.0


_SCORE_IN_TEXT = re.compile(r"score\W{0,12}?(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_WINNER_IN_TEXT = re.compile(r"winner\W{0,12}?\b(A|B|tie)\b", re.IGNORECASE)


class RewardModule(dspy.Module):
    """An LM judge usable as a reward `(example, pred, trace=None) -> RewardResult`; see the module docstring."""

    def __init__(self, rubric: str, *, judge_lm: dspy.LM | None = None, format: Any = None,
                 output_fields: list[str] | None = None, reference_field: str | None = None, retries: int = 2,
                 failure_score: float = 0.0, lenient: bool = True, cache: bool = True, name: str = "judge"):
        super().__init__()
        if not rubric or not rubric.strip():
            raise ConfigError("a RewardModule needs a non-empty rubric")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
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
        self.stats = JudgeStats()
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- as a reward ----------------------------------------------------------------------------------------
    def forward(self, example, pred, trace=None) -> RewardResult:
        judgement = self.judge(inputs=example.inputs() if hasattr(example, "inputs") else example,
                               output=self.output_text(pred), reference=self._reference(example))
        return RewardResult(judgement.score, {self.name: judgement.score}, judgement.feedback, judgement.failed)

    def output_text(self, pred) -> str:
        """The prediction fields the judge sees: `output_fields`, or every field except the reasoning."""
        items = dict(pred.items()) if hasattr(pred, "items") else {"output": pred}
        names = self.output_fields or [k for k in items if k != "reasoning"]
        if len(names) == 1:
            return str(items.get(names[0], ""))
        return "\n".join(f"{name}: {items.get(name, '')}" for name in names)

    def _reference(self, example) -> str | None:
        if not self.reference_field:
            return None
        value = example.get(self.reference_field) if hasattr(example, "get") else None
        return None if value is None else str(value)

    # -- one output -----------------------------------------------------------------------------------------
    def judge(self, *, inputs: dict | str, output: str, reference: str | None = None) -> Judgement:
        """Score one output in [0, 1]; never raises for LM or parse problems."""
        fields = {"rubric": self.rubric, "task_inputs": _format_inputs(inputs),
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
        base = {"rubric": self.rubric, "task_inputs": _format_inputs(inputs),
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

    # -- the retry loop -------------------------------------------------------------------------------------
    def _ask(self, predictor: dspy.Predict, fields: dict[str, str], read) -> _Answer:
        """Call `predictor` until `read` accepts the answer (a score, or 'A'/'B'/'tie') or the attempts run out."""
        base_lm = self.judge_lm or dspy.settings.lm
        if base_lm is None:
            raise ConfigError("the judge has no LM: pass judge_lm= to RewardModule or configure one with dspy.configure(lm=...)")
        error = None
        for attempt in range(self.retries + 1):
            lm = base_lm if attempt == 0 else base_lm.copy(
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
            except Exception as err:  # LM errors after dspy.LM's own retries; counted, never raised
                value, problem, feedback = None, f"lm: {type(err).__name__}: {' '.join(str(err).split())[:200]}", ""
            if problem is None:
                return _Answer(value, feedback, False, attempt + 1)
            error = problem
            with self._lock:
                kind = problem.split(":", 1)[0]
                self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        return _Answer(None, f"judge failed: {error}", True, self.retries + 1, error)

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


def _feedback_from_text(text: str | None) -> str:
    text = " ".join(str(text or "").split())
    return text[:300]


def _format_inputs(inputs: dict | str) -> str:
    if isinstance(inputs, str):
        return inputs
    return "\n".join(f"{key}: {value}" for key, value in dict(inputs).items())
