"""Which validated prompt GRPO returns: evidence first, then simplicity.

A candidate prompt (the policy's most likely one, scored on the valset) replaces the incumbent only when its paired
per-example scores support it: the `confidence` paired-bootstrap interval of (candidate − incumbent) lies above 0,
and so does its interval against the starting program (a chain of small, noisy wins never drifts away from the start).
When the difference from the incumbent is within noise (the interval contains 0) the simpler of the two is kept:
fewer slots changed from the starting program, then the original instruction, then fewer demos. The starting program
is the simplest there is, so within noise of it nothing replaces it; ties never go to "the later, more trained" prompt,
which is how a garbled proposal of a 135M model once won a 100%-vs-100% tie.

scipy does the statistics (dspyrl.compare.stats). Scores are plain numbers per valset row; a row missing from either
side is left out of that comparison.
"""

from __future__ import annotations

import json
from typing import Any

from dspyrl.compare.stats import paired_statistics


def complexity(values: dict[str, dict[str, Any]], start: dict[str, dict[str, Any]]) -> tuple[int, int, int]:
    """(slots changed from the start, instructions changed, demos shown): smaller is simpler."""
    changed = instructions = demos = 0
    for predictor, slots in values.items():
        for slot, value in slots.items():
            if _key(value) != _key(start.get(predictor, {}).get(slot)):
                changed += 1
                instructions += slot == "instruction"
        demos += len(slots.get("demos") or [])
    return changed, instructions, demos


def paired_difference(a: dict[str, float], b: dict[str, float], *, confidence: float, seed: int = 0) -> dict:
    """b − a on the rows both were scored on: mean difference, its paired-bootstrap interval, the paired test."""
    rows = sorted(set(a) & set(b), key=int)
    x, y = [a[r] for r in rows], [b[r] for r in rows]
    if len(rows) < 2:  # too few rows for an interval: the difference itself, with no claim of evidence
        diff = (sum(y) - sum(x)) / len(rows) if rows else 0.0
        return {"n": len(rows), "mean_diff": diff, "ci_low": diff, "ci_high": diff, "confidence": confidence,
                "p_value": 1.0, "test": "none (fewer than 2 rows)", "mean_a": sum(x) / max(1, len(x)),
                "mean_b": sum(y) / max(1, len(y))}
    s = paired_statistics(x, y, seed=seed, confidence=confidence, n_resamples=2000)
    return {"n": s.n, "mean_diff": s.mean_diff, "ci_low": s.ci_low, "ci_high": s.ci_high, "confidence": confidence,
            "p_value": s.p_value, "test": s.test, "mean_a": s.mean_a, "mean_b": s.mean_b}


def supported(difference: dict) -> bool:
    """The evidence says b is better than a: the whole interval is above 0 (and there were rows to compare)."""
    return difference["n"] >= 2 and difference["ci_low"] > 0


def decide(*, start: dict, incumbent: dict, candidate: dict, confidence: float, seed: int = 0) -> tuple[bool, str, dict]:
    """Whether `candidate` replaces `incumbent`; each is a validation record {"values", "scores"} and `start` is the
    starting program's. Returns (adopt, reason, the candidate − incumbent difference)."""
    vs_incumbent = paired_difference(incumbent["scores"], candidate["scores"], confidence=confidence, seed=seed)
    vs_start = (vs_incumbent if incumbent is start else
                paired_difference(start["scores"], candidate["scores"], confidence=confidence, seed=seed))
    if not supported(vs_start):
        return False, "not better than the starting program beyond noise", vs_incumbent
    if supported(vs_incumbent):
        return True, "better than the incumbent beyond noise", vs_incumbent
    within_noise = vs_incumbent["ci_low"] <= 0 <= vs_incumbent["ci_high"]
    if within_noise and complexity(candidate["values"], start["values"]) < complexity(incumbent["values"], start["values"]):
        return True, "as good as the incumbent within noise, and simpler", vs_incumbent
    return False, "not better than the incumbent beyond noise", vs_incumbent


def values_key(values: Any) -> str:
    return _key(values)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
