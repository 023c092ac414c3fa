"""Which validated prompt GRPO returns: evidence first, then simplicity.

A candidate prompt (the policy's most likely one, scored on the valset) replaces the incumbent only when its paired
per-example scores support it: the `confidence` paired-bootstrap interval of (candidate − incumbent) lies above 0,
and so does its interval against the starting program (a chain of small, noisy wins never drifts away from the start).
When the difference from the incumbent is within noise (the interval contains 0) the simpler of the two is kept:
fewer slots changed from the starting program, then the original instruction, then fewer demos. The starting program
is the simplest there is, so within noise of it nothing replaces it; ties never go to "the later, more trained" prompt,
which is how a garbled proposal of a 135M model once won a 100%-vs-100% tie.

The valset loop GRPO runs (`validate`, `consider`) is here too: a new prompt is scored on a valset minibatch first and
on the whole valset only when it beats the incumbent there (GEPA's order), every prompt's scores are bought once, and
an adopted prompt is retried with each changed slot put back, so a change that did not earn its place goes again.

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


# ------------------------------------------------------------------------------------------------ the valset loop
# GRPO's state keeps one validation record per distinct prompt ({step, values, scores: {row: score}, score, verdict,
# complexity}); `score_rows(record, rows)` buys a record's missing rows (GRPO runs the program and counts the budget).

BUDGET_SPENT = "not scored: the budget is spent"


def validate(state, values: dict, config, *, n_rows: int, score_rows) -> float:
    """Score the prompt `values` (`consider`); when it replaces the incumbent, also try the incumbent with each changed
    slot put back as it started, so a change that did not earn its place goes again (within noise the simpler program
    wins). Returns the prompt's mean score on the rows it was scored on.

    Every call counts for early stopping, on the incumbent's score: a prompt that does not replace it is a plateau."""
    record, adopted = consider(state, values, config, n_rows=n_rows, score_rows=score_rows)
    while adopted:  # one slot back at a time, while the budget keeps a full validation for the final prompt
        adopted = False
        for variant in reverted(state.best["values"], state.val_history[0]["values"]):
            if state.metric_calls + 2 * n_rows > config.max_metric_calls:
                break
            if consider(state, variant, config, n_rows=n_rows, score_rows=score_rows)[1]:
                adopted = True
                break
    if state.early.update(state.best["score"]) and not state.stopped:
        state.stopped = "early_stop"
    return mean_score(record["scores"], list(record["scores"]))


def consider(state, values: dict, config, *, n_rows: int, score_rows) -> tuple[dict, bool]:
    """Score a prompt on a valset minibatch first, on the whole valset only when it beats the incumbent on those rows
    (or ties it and is simpler); it replaces the incumbent only on paired evidence (`decide`). Returns its record and
    whether it replaced the incumbent."""
    record = record_of(state, values, create=True)
    incumbent = record_of(state, state.best["values"]) if state.best else None
    rows = [str(i) for i in range(n_rows)]
    if incumbent is None:  # the starting program, on the whole valset: what every candidate is compared with
        score_rows(record, rows)
        record["verdict"] = "the starting program"
        state.best = {"step": state.step, "score": record["score"], "values": record["values"]}
        return record, False
    if record is incumbent or record.get("verdict") not in ("", BUDGET_SPENT):  # known: never bought twice
        return record, False
    if state.metric_calls + len(rows) - len(record["scores"]) > config.max_metric_calls:
        # the last steps spent the reserve (the prompt they start from was scored): the incumbent stands; not a final
        # verdict, so a run resumed with a larger budget scores it
        record["verdict"] = BUDGET_SPENT
        return record, False
    if 0 < config.val_minibatch < len(rows) and len(record["scores"]) < len(rows):
        mini = minibatch_rows(incumbent["scores"], rows, config.val_minibatch, state.val_cursor)
        state.val_cursor = (state.val_cursor + config.val_minibatch) % len(rows)
        score_rows(record, mini)
        mine, theirs = mean_score(record["scores"], mini), mean_score(incumbent["scores"], mini)
        simpler = tuple(record["complexity"]) < tuple(incumbent["complexity"])
        if mine < theirs or (mine == theirs and not simpler):  # a simpler equal may still win within noise
            record["verdict"] = "not better than the incumbent on a minibatch"
            return record, False
    score_rows(record, rows)
    adopt, reason, vs_incumbent = decide(start=state.val_history[0], incumbent=incumbent, candidate=record,
                                         confidence=config.select_confidence, seed=config.seed)
    record.update(verdict=reason, vs_incumbent=vs_incumbent)
    if adopt:
        state.best = {"step": state.step, "score": record["score"], "values": record["values"]}
    return record, adopt


def minibatch_rows(incumbent_scores: dict[str, float], rows: list[str], k: int, cursor: int) -> list[str]:
    """The k valset rows a new candidate is scored on first: up to half of them rows the incumbent scores below its
    best (the only rows where a candidate can show a gain), the rest rows it solves (where it can show a loss); each
    part rotates with `cursor`. Random rows would often be rows the incumbent solves, and there an equal candidate is
    turned away unless simpler: an incumbent at 10 of 12 on the valset passes a random 4-row minibatch perfectly 42% of
    the time, and every candidate drawn then is rejected without a chance to show what it fixes."""
    top = max(incumbent_scores[r] for r in rows)
    weak = [r for r in rows if incumbent_scores[r] < top]
    solved = [r for r in rows if incumbent_scores[r] >= top]
    n_weak = min(len(weak), max(k - len(solved), (k + 1) // 2))

    def rotated(pool: list[str], n: int) -> list[str]:
        return [pool[(cursor + i) % len(pool)] for i in range(n)]

    return rotated(weak, n_weak) + rotated(solved, min(len(solved), k - n_weak))


def record_of(state, values: dict, create: bool = False) -> dict | None:
    """The validation record of a prompt (one per distinct prompt: its scores are reused, never re-bought)."""
    key = values_key(values)
    record = next((r for r in state.val_history if values_key(r["values"]) == key), None)
    if record is None and create:
        record = {"step": state.step, "values": values, "scores": {}, "score": None, "verdict": "",
                  "complexity": list(complexity(values, state.val_history[0]["values"] if state.val_history
                                                else values))}
        state.val_history.append(record)
    return record


def reverted(values: dict, start: dict) -> list[dict]:
    """`values` with one changed slot put back to its starting value, for each changed slot (instructions last: the
    format and demos are the cheap levers, and the instruction is what a reader of the program sees)."""
    changed = [(p, s) for p, slots in values.items() for s, v in slots.items()
               if values_key(v) != values_key(start.get(p, {}).get(s))]
    variants = []
    for predictor, slot in sorted(changed, key=lambda ps: ps[1] == "instruction"):
        variant = {p: dict(slots) for p, slots in values.items()}
        variant[predictor][slot] = start[predictor][slot]
        variants.append(variant)
    return variants


def mean_score(scores: dict[str, float], rows: list[str]) -> float:
    return sum(scores[r] for r in rows) / len(rows) if rows else 0.0
