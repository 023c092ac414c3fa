"""Plain metric functions, and the two bridges that make any DSPy metric a reward and any reward a DSPy metric.

Two layers:
- text scorers `(predicted_text, gold_text) -> float` or `(text) -> float`: exact match after normalisation, token F1,
  regex and XML format checks, numeric answer extraction, a length penalty;
- `field_reward(scorer, field)` turns a text scorer into a reward `(example, pred, trace=None)` that compares one
  prediction field with the same (or another) field of the example.

Normalisation follows the SQuAD convention (lower case, drop punctuation and the articles a/an/the, squeeze spaces),
because that is what "exact match" means in most QA papers and in `dspy.evaluate.answer_exact_match`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Callable

from dspyrl.rewards.combine import RewardResult, to_reward_result

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A number as people write it in answers: optional sign, thousands separators, decimals, or a simple fraction.
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


# ----------------------------------------------------------------------------------------------- text scorers
def normalize_text(text: Any) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = str(text or "").lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predicted: Any, gold: Any) -> float:
    """1.0 when the normalised texts are equal. `gold` may be a list of acceptable answers."""
    golds = gold if isinstance(gold, (list, tuple, set)) else [gold]
    return float(any(normalize_text(predicted) == normalize_text(g) for g in golds))


def token_f1(predicted: Any, gold: Any) -> float:
    """SQuAD token F1 between the normalised texts (best over a list of golds)."""
    golds = gold if isinstance(gold, (list, tuple, set)) else [gold]
    return max((_f1(normalize_text(predicted).split(), normalize_text(g).split()) for g in golds), default=0.0)


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens and not gold_tokens:
        return 1.0
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def matches_regex(text: Any, pattern: str, *, full: bool = False) -> float:
    """1.0 when the regex is found in the text (or matches all of it with full=True); DOTALL so `.` spans lines."""
    text = str(text or "")
    match = re.fullmatch(pattern, text.strip(), re.DOTALL) if full else re.search(pattern, text, re.DOTALL)
    return float(match is not None)


def extract_xml(text: Any, tag: str) -> str | None:
    """The content of the first `<tag>…</tag>` (stripped), or None."""
    match = re.search(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", str(text or ""), re.DOTALL)
    return match.group(1).strip() if match else None


def xml_format(text: Any, tags: tuple[str, ...] = ("reasoning", "answer"), *, strict: bool = False) -> float:
    """Fraction of `tags` present as non-empty `<tag>…</tag>` blocks, in the given order.

    With strict=True the text must consist of exactly those blocks (whitespace between them allowed) and the score is
    0 or 1; the default partial credit gives GRPO a gradient before the model gets the whole format right.
    """
    text = str(text or "")
    if strict:
        body = r"\s*".join(rf"<{re.escape(t)}>(?:(?!<{re.escape(t)}>).)+?</{re.escape(t)}>" for t in tags)
        return float(re.fullmatch(rf"\s*{body}\s*", text, re.DOTALL) is not None)
    found, position = 0, 0
    for tag in tags:
        match = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL).search(text, position)
        if match and match.group(1).strip():
            found += 1
            position = match.end()
    return found / len(tags) if tags else 1.0


def extract_number(text: Any, *, last: bool = True) -> float | None:
    """The last (or first) number written in the text: '1,234' → 1234.0, '-3.5' → -3.5, '3/4' → 0.75; None if none."""
    matches = _NUMBER.findall(str(text or ""))
    if not matches:
        return None
    raw = (matches[-1] if last else matches[0]).replace(",", "")
    try:
        if "/" in raw:
            numerator, denominator = raw.split("/")
            return float(numerator) / float(denominator) if float(denominator) != 0 else None
        return float(raw)
    except ValueError:
        return None


def numeric_match(predicted: Any, gold: Any, *, tolerance: float = 1e-6) -> float:
    """1.0 when the number extracted from `predicted` equals `gold` (a number or text holding one) within tolerance."""
    value = extract_number(predicted)
    target = gold if isinstance(gold, (int, float)) and not isinstance(gold, bool) else extract_number(gold)
    if value is None or target is None:
        return 0.0
    return float(abs(value - float(target)) <= tolerance * max(1.0, abs(float(target))))


def length_penalty(text: Any, *, max_words: int, hard_limit: int | None = None) -> float:
    """1.0 up to `max_words` words, then falling linearly to 0.0 at `hard_limit` (default 2 × max_words).

    Used as a positive component ("brevity") so it can be weighted like any other reward.
    """
    words = len(str(text or "").split())
    hard_limit = hard_limit or 2 * max_words
    if words <= max_words:
        return 1.0
    if words >= hard_limit:
        return 0.0
    return 1.0 - (words - max_words) / (hard_limit - max_words)


# ----------------------------------------------------------------------------------------------- rewards over fields
def field_reward(scorer: Callable[..., float], field: str, gold_field: str | None = None, **scorer_kwargs):
    """A reward comparing `pred.<field>` with `example.<gold_field or field>` through a text scorer.

    For a scorer that reads only the prediction (e.g. `xml_format`, `length_penalty`), pass `gold_field=""`.
    """
    gold_name = field if gold_field is None else gold_field

    def reward(example, pred, trace=None) -> float:
        predicted = _get(pred, field)
        if not gold_name:
            return scorer(predicted, **scorer_kwargs)
        return scorer(predicted, _get(example, gold_name), **scorer_kwargs)

    reward.__name__ = f"{getattr(scorer, '__name__', 'score')}[{field}]"
    return reward


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    try:
        return getattr(obj, name)
    except AttributeError:
        return None


# ----------------------------------------------------------------------------------------------- metric ⇄ reward
def as_reward(fn: Callable[..., Any], *, failure_score: float = 0.0) -> Callable[..., RewardResult]:
    """Any DSPy metric or reward `(example, pred, trace=None)` as a reward that always returns a RewardResult.

    None, NaN, ±inf and non-numbers become `failure_score` with failed=True; bools become 0/1. Exceptions propagate:
    the rollout engine counts them as failed metric calls, with the error message kept.
    """

    def reward(example, pred, trace=None) -> RewardResult:
        return to_reward_result(fn(example, pred, trace), failure_score=failure_score)

    reward.__name__ = getattr(fn, "__name__", "reward")
    reward.__wrapped__ = fn
    return reward


def as_metric(reward: Callable[..., Any]) -> Callable[..., float]:
    """Any reward as a DSPy metric returning a float (for dspy.Evaluate, BootstrapFewShot, MIPROv2, …)."""

    def metric(example, pred, trace=None) -> float:
        return to_reward_result(reward(example, pred, trace)).total

    metric.__name__ = getattr(reward, "__name__", "metric")
    metric.__wrapped__ = reward
    return metric
