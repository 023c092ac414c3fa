"""The iso_date program: distinct seeded rows in every style, and a reward that is exact per field (pure logic)."""

import datetime

import dspy

from dspyrl.program_file import load_program_file


def test_rows_are_distinct_valid_dates_in_every_style():
    program = load_program_file("iso_date")
    rows = program.load_examples()
    assert len(rows) == 60 and len({r.text for r in rows}) == 60
    assert all(datetime.date.fromisoformat(r.iso_date) for r in rows)
    assert any("US style" in r.text for r in rows) and any(" of " in r.text for r in rows)
    assert rows == program.load_examples()  # seeded


def test_reward_gives_partial_credit_per_field():
    program = load_program_file("iso_date")
    reward = program.build_reward()
    example = dspy.Example(text="March 5, 2024", iso_date="2024-03-05").with_inputs("text")
    score = lambda text: reward(example, dspy.Prediction(iso_date=text)).total  # noqa: E731
    assert score("2024-03-05") == 1.0
    assert abs(score("2024-03-06") - (0.2 + 0.8 * 2 / 3)) < 1e-9
    assert abs(score("The date is 2024-05-03.") - 0.8 / 3) < 1e-9  # not the format; only the year is right
    assert score("5 March 2024") == 0.0
