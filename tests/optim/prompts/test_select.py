"""Selection on evidence (pure logic: per-example scores in, a decision out; scipy does the statistics)."""

from dspyrl.optim.prompts.select import complexity, decide, minibatch_rows, paired_difference

START = {"p": {"instruction": "Classify the review.", "demos": [], "format": None}}
NEW_INSTRUCTION = {"p": {"instruction": "Say positive or negative.", "demos": [], "format": None}}
CHOICE_FORMAT = {"p": {"instruction": "Classify the review.", "demos": [], "format": "choice"}}
CHOICE_AND_DEMOS = {"p": {"instruction": "Say positive or negative.", "demos": [{"review": "a", "sentiment": "b"}] * 4,
                          "format": "choice"}}


def record(values, scores):
    return {"values": values, "scores": {str(i): float(s) for i, s in enumerate(scores)}}


def test_complexity_counts_changed_slots_then_instructions_then_demos():
    assert complexity(START["p"] and START, START) == (0, 0, 0)
    assert complexity(CHOICE_FORMAT, START) == (1, 0, 0)
    assert complexity(NEW_INSTRUCTION, START) == (1, 1, 0)
    assert complexity(CHOICE_AND_DEMOS, START) == (3, 1, 4)
    assert complexity(CHOICE_FORMAT, START) < complexity(NEW_INSTRUCTION, START) < complexity(CHOICE_AND_DEMOS, START)


def test_a_tie_with_the_starting_program_keeps_the_starting_program():
    start = record(START, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    tied = record(NEW_INSTRUCTION, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    adopt, reason, diff = decide(start=start, incumbent=start, candidate=tied, confidence=0.9)
    assert not adopt and diff["mean_diff"] == 0.0 and "starting program" in reason


def test_a_small_noisy_gain_is_not_evidence_but_a_clear_one_is():
    start = record(START, [0] * 10)
    one_more = record(NEW_INSTRUCTION, [1] + [0] * 9)  # 1 of 10 rows: the interval reaches 0
    assert not decide(start=start, incumbent=start, candidate=one_more, confidence=0.9)[0]
    many_more = record(CHOICE_FORMAT, [1] * 8 + [0] * 2)
    adopt, _, diff = decide(start=start, incumbent=start, candidate=many_more, confidence=0.9)
    assert adopt and diff["ci_low"] > 0 and diff["mean_diff"] == 0.8


def test_within_noise_of_the_incumbent_the_simpler_program_wins_and_the_more_complex_one_does_not():
    start = record(START, [0] * 10)
    complex_winner = record(CHOICE_AND_DEMOS, [1] * 9 + [0])
    simple_winner = record(CHOICE_FORMAT, [1] * 8 + [0] * 2)  # one row worse: within noise of the complex one
    adopt, reason, _ = decide(start=start, incumbent=complex_winner, candidate=simple_winner, confidence=0.9)
    assert adopt and "simpler" in reason
    adopt, _, _ = decide(start=start, incumbent=simple_winner, candidate=complex_winner, confidence=0.9)
    assert not adopt  # one more row right is noise, and it changes three slots instead of one


def test_paired_difference_uses_only_rows_both_were_scored_on():
    a = {"0": 1.0, "1": 0.0, "2": 0.0}
    b = {"1": 1.0, "2": 1.0}
    diff = paired_difference(a, b, confidence=0.9)
    assert diff["n"] == 2 and diff["mean_diff"] == 1.0
    assert paired_difference(a, {"0": 1.0}, confidence=0.9)["test"].startswith("none")


def test_the_minibatch_takes_half_its_rows_where_the_incumbent_fails_and_rotates_through_both_parts():
    scores = {str(i): 1.0 for i in range(12)}
    scores["3"] = scores["9"] = 0.0  # the incumbent solves 10 of 12 rows
    rows = [str(i) for i in range(12)]
    first = minibatch_rows(scores, rows, 4, cursor=0)
    assert first == ["3", "9", "0", "1"]  # both failures (where a gain can show), then two solved rows
    later = minibatch_rows(scores, rows, 4, cursor=4)
    assert later[:2] == ["3", "9"] and later[2:] == ["5", "6"]  # the solved part moves on; the 2 failures stay in
    # more failures than half the minibatch: half are failures, rotating; a fully solved or fully failed valset: any row
    scores = {str(i): float(i % 3 == 0) for i in range(12)}  # solves rows 0, 3, 6, 9
    assert sum(scores[r] == 0 for r in minibatch_rows(scores, rows, 4, cursor=1)) == 2
    assert minibatch_rows({r: 0.0 for r in rows}, rows, 4, cursor=2) == ["2", "3", "4", "5"]
    # continuous rewards: "fails" is below the incumbent's best row
    graded = {r: 0.2 for r in rows} | {"0": 1.0, "1": 1.0}
    assert minibatch_rows(graded, rows, 4, cursor=0) == ["2", "3", "0", "1"]
