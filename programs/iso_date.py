"""iso_date: rewrite a date written the way people write it ("the 5th of March, 2024", "3/5/2024 (US)") as ISO 8601.

A generative rewrite with an exact checker, not a label: the answer is free text, scored by what it gets right.
`iso_format` (0.2): the reply is exactly YYYY-MM-DD; `fields` (0.8): the share of year, month and day that are the
true ones (read from the first YYYY-MM-DD found in the reply), so a reply with the right year and month but the wrong
day earns 0.2·1 + 0.8·2/3. The dates come from our own seeded generator in ten written styles (no download, answers
exact); one worked example is attached as a demo, as in math_xml, because a 135M model needs to see the layout once.
"""

from __future__ import annotations

import datetime
import random
import re

import dspy

from dspyrl.rewards.combine import WeightedReward

DESCRIPTION = "Rewrite a written date as YYYY-MM-DD (our own generator), format + per-field exactness reward."

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


class NormalizeDate(dspy.Signature):
    """Rewrite the date as YYYY-MM-DD (four-digit year, two-digit month, two-digit day). Reply with the date only."""

    text: str = dspy.InputField(desc="a date as a person wrote it")
    iso_date: str = dspy.OutputField(desc="YYYY-MM-DD")


WORKED_EXAMPLE = dspy.Example(text="the 9th of July, 2021", iso_date="2021-07-09").with_inputs("text")


def build_program() -> dspy.Module:
    program = dspy.Predict(NormalizeDate)
    program.demos = [WORKED_EXAMPLE]
    return program


def iso_format(example, pred, trace=None) -> float:
    """1.0 when the whole reply is one YYYY-MM-DD date (surrounding whitespace ignored)."""
    return float(bool(ISO.fullmatch(str(getattr(pred, "iso_date", "") or "").strip())))


def fields(example, pred, trace=None) -> float:
    """Share of year, month, day equal to the true date's, in the first YYYY-MM-DD of the reply (0 without one)."""
    found = ISO.search(str(getattr(pred, "iso_date", "") or ""))
    if not found:
        return 0.0
    return sum(a == b for a, b in zip(found.groups(), example.iso_date.split("-"))) / 3


def build_reward(judge_lm=None):
    # No judge: the answer is exact, so checking it is cheaper and more reliable than asking a model.
    return WeightedReward(iso_format=(iso_format, 0.2), fields=(fields, 0.8))


# ----------------------------------------------------------------------------------------------- the generator
def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


_STYLES = [
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    lambda d: f"{d.day}-{MONTHS[d.month - 1][:3]}-{d.year}",
    lambda d: f"{d.year}/{d.month}/{d.day}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year} (day first)",
    lambda d: f"{d.month}/{d.day}/{d.year} (US style, month first)",
    lambda d: f"{MONTHS[d.month - 1]} the {_ordinal(d.day)}, {d.year}",
    lambda d: f"{d.year}, {MONTHS[d.month - 1]} {d.day}",
]


def generate_dates(n: int = 60, seed: int = 0) -> list[dspy.Example]:
    """`n` distinct written dates between 1950 and 2049, the styles taken in turn; `iso_date` is the answer."""
    rng = random.Random(seed)
    start, days = datetime.date(1950, 1, 1), (datetime.date(2049, 12, 31) - datetime.date(1950, 1, 1)).days
    seen, examples = {WORKED_EXAMPLE.text}, []
    while len(examples) < n:
        date = start + datetime.timedelta(days=rng.randrange(days + 1))
        text = _STYLES[len(examples) % len(_STYLES)](date)
        if text in seen:
            continue
        seen.add(text)
        examples.append(dspy.Example(text=text, iso_date=date.isoformat()).with_inputs("text"))
    return examples


def load_examples() -> list[dspy.Example]:
    return generate_dates(60, seed=0)
