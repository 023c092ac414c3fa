"""Judge-check statistics on synthetic judges with a known position bias (a programmatic dspy.LM: pure logic of the
statistics), and `dspyrl judge-check` end to end: a program on the tiny local model, judged over HTTP by `dspyrl serve`."""

from __future__ import annotations

import json
import re

import dspy
import pytest

from dspyrl.rewards.judge import RewardModule
from dspyrl.rewards.judge_check import LabelledGroup, check_judge, pairwise_check
from tests.rewards.test_group_judge import content_score, shown_candidates, shown_outputs_judge
from tests.rewards.test_judge import chat, last_user, scripted_lm


def _field(text: str, name: str) -> str:
    return re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[ ## |\n\nRespond with)", text, re.DOTALL).group(1)


def synthetic_judge(*, biased: bool):
    """Fair: scores an output by its length (the reference below). Biased: the output shown first always wins —
    1.0 for it and 0.5 for the rest in group mode, "A" in pairwise mode; its per-sample scores stay fair."""

    def reply(messages):
        text = last_user(messages)
        if "[[ ## candidates ## ]]" in text:
            shown = shown_candidates(text)
            scores = {k: (10 if k == 1 else 5) if biased else round(10 * content_score(t)) for k, t in shown}
            return chat(judgements=json.dumps([{"candidate": k, "reason": "r", "score": s} for k, s in scores.items()]))
        if "[[ ## output_a ## ]]" in text:
            a, b = content_score(_field(text, "output_a")), content_score(_field(text, "output_b"))
            return chat(feedback="f", winner="A" if biased or a > b else "B" if b > a else "tie")
        return chat(feedback="f", score=str(content_score(_field(text, "output"))))

    return RewardModule("longer is better", judge_lm=scripted_lm(reply), output_fields=["answer"])


def groups(n: int = 6) -> list[LabelledGroup]:
    out = []
    for i in range(n):
        answers = [("x" * (1 + (i + 3 * k) % 7)) + str(k) for k in range(4)]  # four distinct lengths
        out.append(LabelledGroup(dspy.Example(question=f"q{i}").with_inputs("question"),
                                 [dspy.Prediction(answer=a) for a in answers], [content_score(a) for a in answers]))
    return out


def test_a_fair_judge_agrees_and_shows_no_position_bias():
    report = check_judge(synthetic_judge(biased=False), groups(), pairs_per_group=3)
    for mode in ("sample", "group"):
        assert report[mode]["spearman"] == pytest.approx(1.0) and report[mode]["pairwise_accuracy"] == 1.0
        assert report[mode]["ties"] == report["reference_ties"]
    assert report["group"]["rank_agreement"] == 1.0
    assert report["pairwise"]["accuracy"] == 1.0 and report["pairwise"]["first_position_rate"] == 0.5
    assert report["pairwise"]["consistency"] == 1.0 and report["pairwise"]["ties"] == 0.0
    # cost per mode, from the judge's own stats: one call per output, one per group (+ the re-ask), two per pair
    assert report["sample"]["calls_per_group"] == 4 and report["group"]["calls_per_group"] == 2
    assert report["pairwise"]["judge_calls"] == 2 * report["pairwise"]["pairs"] == 36


def test_a_first_position_judge_is_reported_as_biased():
    report = check_judge(synthetic_judge(biased=True), groups(), pairs_per_group=3)
    group = report["group"]
    assert group["first_position_gain"] == pytest.approx(1.0 - (1.0 + 3 * 0.5) / 4)  # 0.375 above the group mean
    assert group["position_means"] == [1.0, 0.5, 0.5, 0.5]
    assert group["rank_agreement"] == pytest.approx(1 / 6)  # only the two never-first outputs keep their order
    assert group["ties"] == pytest.approx(0.5)  # three equal scores per group: 3 of 6 pairs tie
    pairwise = report["pairwise"]
    assert pairwise["first_position_rate"] == 1.0 and pairwise["consistency"] == 0.0
    assert pairwise["ties"] == 1.0 and pairwise["accuracy"] == 0.5  # every verdict flips with the order: all ties
    assert report["sample"]["pairwise_accuracy"] == 1.0  # one output at a time, there is no position to favour


def test_pairwise_check_counts_only_decisive_verdicts():
    from dspyrl.rewards.judge import PairwiseJudgement

    verdicts = [PairwiseJudgement("A", True, verdicts=("A", "A")), PairwiseJudgement("tie", False, verdicts=("A", "B")),
                PairwiseJudgement("tie", True, verdicts=("tie", "tie")), PairwiseJudgement("tie", False, failed=True)]
    check = pairwise_check(verdicts)
    # decisive: A (first shown), A (second shown in the swapped order), A (first), B (first in the swapped order)
    assert check["first_position_rate"] == 0.75 and check["consistency"] == pytest.approx(2 / 3)
    assert check["ties"] == 0.75 and check["failures"] == 1


# ----------------------------------------------------------------------------------------------- the command
PROGRAM = '''
import dspy

class Echo(dspy.Module):
    def forward(self, question):
        return dspy.Prediction(answer=dspy.settings.lm("Answer: " + question)[0])

def build_program():
    return Echo()

def load_examples():
    return [dspy.Example(question=q).with_inputs("question") for q in ("one", "two", "three")]

def build_reward(judge_lm=None):
    def longer(example, pred, trace=None):
        return min(10, len(pred.answer.strip())) / 10
    return longer
'''


def test_judge_check_command_on_the_tiny_model_with_a_judge_over_http(tmp_path, tiny_model_dir, capsys):
    from dspyrl.cli.main import main
    from dspyrl.lm.server import serve_in_thread

    program = tmp_path / "echo.py"
    program.write_text(PROGRAM)
    engine = shown_outputs_judge(tiny_model_dir)
    handle = serve_in_thread(engine=engine, served_name="judge")
    try:
        code = main(["judge-check", str(program), "--model", str(tiny_model_dir), "--judge",
                     f"openai-compatible:{handle.base_url}:judge", "--group-size", "3", "--max-tokens", "6",
                     "--modes", "group", "--out", str(tmp_path / "jc")])
    finally:
        handle.stop()
    assert code == 0
    report = json.loads((tmp_path / "jc" / "judge_check.json").read_text())["report"]
    assert report["groups"] == 3 and report["group"]["failures"] == 0
    assert report["group"]["rank_agreement"] == 1.0 and report["group"]["pairwise_accuracy"] in (None, 1.0)
    assert engine.requests == report["group"]["judge_calls"] == 6  # one call per group and its reversed re-ask
    assert "judge check" in capsys.readouterr().out


def test_judge_check_command_rejects_bad_modes(capsys):
    from dspyrl.cli.main import main

    assert main(["judge-check", "math_xml", "--judge", "smollm2", "--modes", "group,vibes"]) == 2
    assert "vibes" in capsys.readouterr().err


def test_the_comparators_judge_summary_and_report_carry_the_check():
    from dspyrl.compare.comparator import summarize_pairwise
    from dspyrl.compare.report import _judge_table
    from dspyrl.rewards.judge import PairwiseJudgement

    first_lover = [PairwiseJudgement("tie", False, verdicts=("A", "B")) for _ in range(4)]
    summary = summarize_pairwise(first_lover, [3] * 4, [5] * 4)
    assert summary["check"] == {"first_position_rate": 1.0, "consistency": 0.0, "ties": 1.0, "failures": 0}
    html = _judge_table(summary, ("A", "B"))
    assert ("judge check: decisive verdicts for the output shown first (0.5 = no position bias)</td>"
            '<td class="num">1</td>') in html
