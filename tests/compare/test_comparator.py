"""ModelComparator: paired runs through the rollout engine, the judge's swap logic, the outputs, the CLI, bad input."""

import json

import dspy
import pytest
from dspy.utils import DummyLM

from dspyrl.cli import main
from dspyrl.compare import (Arm, ComparisonConfig, ModelComparator, check_examples, program_input_fields,
                            resolve_arm, summarize_pairwise)
from dspyrl.errors import ConfigError, DataError
from dspyrl.program_file import load_program_file
from dspyrl.rewards.judge import PairwiseJudgement, RewardModule
from dspyrl_programs import sentiment
from tests.compare.test_report import check_page_in_chromium, chromium_binary

GOLD = {example.review: example.sentiment for example in sentiment.load_examples()}


class AlwaysSays(dspy.Module):
    """A program that answers without an LM: one fixed label (right on half of the balanced sentiment set)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def forward(self, review: str):
        return dspy.Prediction(sentiment=self.label)


class KnowsTheAnswer(dspy.Module):
    """A program that answers without an LM: always right."""

    def forward(self, review: str):
        return dspy.Prediction(sentiment=GOLD[review])


def unused_lm():
    return DummyLM([])  # these programs never call it; run_rollouts only needs one to exist


# ----------------------------------------------------------------------------------------------- statistics wiring
def test_a_known_effect_is_detected_through_the_rollout_engine():
    examples = sentiment.load_examples()
    comparator = ModelComparator(Arm(AlwaysSays("positive"), unused_lm(), "always positive"),
                                 Arm(KnowsTheAnswer(), unused_lm(), "oracle"), examples,
                                 reward=sentiment.exact_label, progress=False)
    result = comparator.run()
    assert result.stats.mean_a == 0.5 and result.stats.mean_b == 1.0
    assert result.stats.mcnemar == {"b_only": 24, "a_only": 0, "p_value": pytest.approx(2 * 0.5 ** 24)}
    assert result.verdict.startswith("B (oracle) beats A (always positive) by +50.0 points [")
    assert result.verdict.endswith("p < 0.001 (McNemar, n = 48)")
    assert [row["reward_b"] for row in result.examples] == [1.0] * 48
    assert result.examples[1]["output_a"] == {"sentiment": "positive"} and result.examples[1]["reward_a"] == 0.0
    assert result.cost["A"]["lm_calls"] == 0 and result.cost["A"]["parse_failure_rate"] == 0.0


def test_identical_arms_give_no_significant_difference():
    examples = sentiment.load_examples()[:20]
    result = ModelComparator(Arm(KnowsTheAnswer(), unused_lm()), Arm(KnowsTheAnswer(), unused_lm()), examples,
                             reward=sentiment.exact_label, progress=False).run()
    assert result.verdict.startswith("no significant difference: B − A = +0.0 points")
    assert result.stats.p_value == 1.0


# ----------------------------------------------------------------------------------------------- pairwise judge
def test_a_judge_that_always_prefers_the_first_position_yields_only_ties():
    examples = sentiment.load_examples()[:6]
    # A canned judge is fine here: this checks the swap logic, not a model. It names output A (the first) every time.
    first_lover = DummyLM({"output_a": {"feedback": "The first output is better.", "winner": "A"}})
    judge = RewardModule("Which label is right?", judge_lm=first_lover)
    result = ModelComparator(Arm(AlwaysSays("positive"), unused_lm()), Arm(KnowsTheAnswer(), unused_lm()), examples,
                             reward=sentiment.exact_label, judge=judge, progress=False).run()
    assert (result.judge["b_wins"], result.judge["a_wins"], result.judge["ties"]) == (0, 0, 6)
    assert result.judge["inconsistency"] == 1.0 and result.judge["win_rate_b"] == 0.5
    assert result.judge["failures"] == 0
    assert all(row["judge"] == "tie" and row["judge_verdicts"] == ["A", "B"] for row in result.examples)
    assert result.judge["mean_length_a"] == len("positive")


def test_pairwise_summary_counts_wins_ties_as_half_and_failures():
    judgements = [PairwiseJudgement("B", True, verdicts=("B", "B")), PairwiseJudgement("B", True, verdicts=("B", "B")),
                  PairwiseJudgement("A", True, verdicts=("A", "A")), PairwiseJudgement("tie", False, verdicts=("A", "B")),
                  PairwiseJudgement("tie", False, failed=True, verdicts=("A", None))]
    summary = summarize_pairwise(judgements, [10, 20, 30, 40, 50], [1, 2, 3, 4, 5])
    assert (summary["b_wins"], summary["a_wins"], summary["ties"], summary["failures"]) == (2, 1, 2, 1)
    assert summary["win_rate_b"] == pytest.approx((2 + 0.5 * 2) / 5)
    assert summary["inconsistency"] == pytest.approx(1 / 4)  # over the four judged in both orders
    assert (summary["mean_length_a"], summary["mean_length_b"]) == (30.0, 3.0)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_one_line_errors():
    good = sentiment.load_examples()[:3]
    arm = Arm(KnowsTheAnswer(), unused_lm())
    with pytest.raises(DataError, match="no examples to compare on"):
        ModelComparator(arm, arm, [], reward=sentiment.exact_label)
    with pytest.raises(DataError, match="at least 2 examples"):
        ModelComparator(arm, arm, good[:1], reward=sentiment.exact_label)
    mismatched = [dspy.Example(text="great", sentiment="positive").with_inputs("text")] * 2
    with pytest.raises(DataError, match="example 0 lacks input 'review' that arm A's program needs") as info:
        ModelComparator(arm, arm, mismatched, reward=sentiment.exact_label)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no input fields set"):
        check_examples([dspy.Example(review="x")] * 2, [arm])
    with pytest.raises(ConfigError, match="reward must be a callable"):
        ModelComparator(arm, arm, good, reward=None)
    with pytest.raises(ConfigError, match="judge must be a dspyrl RewardModule"):
        ModelComparator(arm, arm, good, reward=sentiment.exact_label, judge=lambda *a: 1.0)
    with pytest.raises(ConfigError, match="arm B must be a dspy.Module"):
        ModelComparator(arm, "not a program", good, reward=sentiment.exact_label)


def test_program_input_fields_come_from_forward_or_the_only_predictor():
    assert program_input_fields(KnowsTheAnswer()) == ["review"]
    assert program_input_fields(sentiment.build_program()) == ["review"]
    assert program_input_fields(dspy.ChainOfThought("question, context -> answer")) == ["question", "context"]


def test_arm_specs_resolve_without_loading_a_model_for_saved_programs(tmp_path):
    program_file = load_program_file("sentiment")
    lm = DummyLM([])
    cache = {("smollm2", None): lm}  # pre-filled: resolving must reuse it, not load SmolLM2
    saved = sentiment.build_program()
    saved.signature = saved.signature.with_instructions("Reply with one word: positive or negative.")
    saved.lm = dspy.LM("openai/some-other-model")  # saved with the program; the arm's LM must win
    saved.save(str(tmp_path / "program.json"))
    from_folder = resolve_arm(str(tmp_path), program_file=program_file, lm_cache=cache)
    from_file = resolve_arm(str(tmp_path / "program.json"), program_file=program_file, lm_cache=cache)
    baseline = resolve_arm("baseline", program_file=program_file, lm_cache=cache)
    for arm in (from_folder, from_file):
        assert arm.program.signature.instructions == "Reply with one word: positive or negative." and arm.lm is lm
        assert arm.program.lm is None
    lora_run = tmp_path / "lora-run"
    (lora_run / "adapter").mkdir(parents=True)
    (lora_run / "adapter" / "adapter_config.json").write_text("{}")
    cache[("smollm2", str(lora_run / "adapter"))] = lora_lm = DummyLM([])
    from_lora_run = resolve_arm(str(lora_run), program_file=program_file, lm_cache=cache)
    assert from_lora_run.lm is lora_lm and "LoRA adapter" in from_lora_run.description
    assert baseline.program.signature.instructions == sentiment.ClassifySentiment.instructions
    with pytest.raises(ConfigError, match="saved program .*missing.json does not exist"):
        resolve_arm(str(tmp_path / "missing.json"), program_file=program_file, lm_cache=cache)
    (tmp_path / "other.json").write_text(json.dumps({"some.other.predictor": {"demos": []}}))
    with pytest.raises(ConfigError, match="not a saved state of the 'sentiment' program"):
        resolve_arm(str(tmp_path / "other.json"), program_file=program_file, lm_cache=cache)


@pytest.mark.parametrize("argv, message", [
    (["compare", "baseline", "baseline", "--program", "no_such_program"], "unknown program 'no_such_program'"),
    (["compare", "baseline", "baseline", "--data", "{empty}"], "dataset is empty"),
    (["compare", "baseline", "baseline", "--data", "{mismatched}"], "field 'review'"),
    (["compare", "baseline", "baseline", "--data", "{tmp}/nope.jsonl"], "file not found"),
    (["report", "{tmp}/nope"], "does not exist"),
])
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "mismatched.jsonl").write_text(json.dumps({"text": "great", "sentiment": "positive"}) + "\n")
    paths = {"empty": tmp_path / "empty.jsonl", "mismatched": tmp_path / "mismatched.jsonl", "tmp": tmp_path}
    argv = [arg.format(**paths) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- end to end, real model
def test_end_to_end_on_the_tiny_local_model_writes_every_output(tiny_model_dir, tmp_path):
    from dspyrl.lm import local_lm

    lm = local_lm(str(tiny_model_dir), max_tokens=8)
    baseline = sentiment.build_program()
    terse = dspy.Predict(sentiment.ClassifySentiment.with_instructions(
        "Read the review carefully and answer with exactly one word, positive or negative, and nothing else."))
    judge = RewardModule("Which output names the review's sentiment correctly?", judge_lm=lm, retries=0)
    examples = sentiment.load_examples()[:4]
    result = ModelComparator(Arm(baseline, lm, "baseline"), Arm(terse, lm, "terse"), examples,
                             reward=sentiment.exact_label, judge=judge,
                             config=ComparisonConfig(progress=False, num_threads=4)).run()
    report = result.save(tmp_path)

    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["verdict"] == result.verdict and saved["stats"]["n"] == 4 and len(saved["examples"]) == 4
    for arm in ("A", "B"):
        cost = saved["cost"][arm]
        assert cost["lm_calls"] >= 4 and cost["prompt_tokens"] > 0 and cost["completion_tokens"] > 0
        assert cost["cost"] == 0.0  # in-process model: known to be free
        assert 0 < cost["latency_p50_s"] <= cost["latency_p95_s"]
        assert 0.0 <= cost["parse_failure_rate"] <= 1.0
    # the two instructions really reached the model: B's longer instruction costs more prompt tokens per call
    assert saved["cost"]["B"]["prompt_tokens"] / saved["cost"]["B"]["lm_calls"] > \
        saved["cost"]["A"]["prompt_tokens"] / saved["cost"]["A"]["lm_calls"]
    # a random model cannot follow the judge's format: every comparison is a counted failure, scored as a tie
    judge_summary = saved["judge"]
    assert judge_summary["b_wins"] + judge_summary["a_wins"] + judge_summary["ties"] == 4
    assert judge_summary["failures"] == sum(None in row["judge_verdicts"] for row in saved["examples"])
    assert judge_summary["failures"] >= 1  # its verdicts are noise that rarely even parses
    assert saved["judge"]["mean_length_a"] > 0
    assert report.read_text().count("data:image/png;base64,") == 2
    if chromium_binary():
        check_page_in_chromium(report, tmp_path)


def test_cli_compare_then_report_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    tuned = sentiment.build_program()
    tuned.signature = tuned.signature.with_instructions("Answer positive or negative.")
    tuned.demos = [dspy.Example(review="Great fun!", sentiment="positive")]
    tuned.save(str(tmp_path / "tuned.json"))
    out = tmp_path / "ab"
    argv = ["compare", "baseline", str(tmp_path / "tuned.json"), "--model", str(tiny_model_dir), "--split", "all",
            "--limit", "2", "--max-tokens", "8", "--threads", "2", "--judge", str(tiny_model_dir), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["verdict"] in " ".join(printed.split()) or saved["verdict"].split(":")[0] in printed
    assert saved["arms"]["B"]["name"] == "tuned" and saved["settings"]["program"] == "sentiment"
    assert saved["stats"]["n"] == 2 and saved["settings"]["judge"] == str(tiny_model_dir)
    assert saved["judge"]["a_wins"] + saved["judge"]["b_wins"] + saved["judge"]["ties"] == 2
    first_report = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == first_report
    capsys.readouterr()
    assert main(argv) == 2  # issue 18: an earlier comparison in --out is not silently replaced
    err = capsys.readouterr().err
    assert "already holds a comparison" in err and "--force" in err
    assert (out / "report.html").read_text() == first_report


def test_one_program_on_two_lms_in_process_and_over_http(tiny_model_dir, tmp_path):
    """A: the tiny model in-process. B: the same model behind `dspyrl serve`, reached through LiteLLM over HTTP with
    an API key. Same greedy model, so the same completions; the key must not reach the outputs."""
    from dspyrl.lm import local_lm, openai_compatible
    from dspyrl.lm.server import serve_in_thread

    server = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    try:
        in_process = local_lm(str(tiny_model_dir), max_tokens=8)
        over_http = openai_compatible(server.base_url, "tiny", api_key="sk-test-secret-0000", temperature=0.0,
                                      max_tokens=8)
        program = sentiment.build_program()
        # one format for both arms, without ChatAdapter's JSON retry: in-process, that retry is schema-constrained
        # (the local engine honours response_format); over HTTP it is not, so the arms would be asked differently
        chat = dspy.ChatAdapter(use_json_adapter_fallback=False)
        result = ModelComparator(Arm(program, in_process, "in-process", format=chat),
                                 Arm(program, over_http, "served", format=chat),
                                 sentiment.load_examples()[:3], reward=sentiment.exact_label, progress=False).run()
        result.save(tmp_path)
    finally:
        server.stop()
    assert [row["raw_a"] for row in result.examples] == [row["raw_b"] for row in result.examples]
    assert result.verdict.startswith("no significant difference")
    assert result.cost["A"]["cost"] == 0.0 and result.cost["B"]["cost"] is None  # LiteLLM has no price for it
    assert result.cost["B"]["lm_calls"] >= 3
    for name in ("comparison.json", "report.html"):
        assert "sk-test-secret-0000" not in (tmp_path / name).read_text()


HAND_IMPROVED_DEMOS = [("The pizza was fresh and the service was quick.", "positive"),
                       ("My phone case snapped the day it arrived.", "negative"),
                       ("A heartwarming story with a brilliant lead actor.", "positive"),
                       ("The train was late and the seats were filthy.", "negative")]


@pytest.mark.slow
def test_cli_compare_on_smollm2_baseline_vs_hand_improved(tmp_path, capsys):
    """The real job: `dspyrl compare` on the embedded SmolLM2, the sentiment program as written vs a hand-improved
    instruction + four label-balanced demos of our own (not in the data set)."""
    improved = sentiment.build_program()
    improved.signature = improved.signature.with_instructions(
        "Decide whether the review is positive or negative. Answer with exactly one word: positive or negative.")
    improved.demos = [dspy.Example(review=r, sentiment=s) for r, s in HAND_IMPROVED_DEMOS]
    improved.save(str(tmp_path / "hand_improved.json"))
    out = tmp_path / "ab"
    assert main(["compare", "baseline", str(tmp_path / "hand_improved.json"), "--split", "all", "--limit", "16",
                 "--max-tokens", "64", "--out", str(out)]) == 0
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["stats"]["n"] == 16 and saved["stats"]["binary"]
    assert saved["verdict"].startswith(("no significant difference", "B (hand_improved) beats", "A (baseline) beats"))
    for arm in ("A", "B"):
        assert saved["cost"][arm]["lm_calls"] >= 16 and saved["cost"][arm]["completion_tokens"] > 0
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    print(saved["verdict"])


def test_a_saved_program_of_another_program_with_the_same_predictor_names_is_refused(tmp_path):
    """issue 18: same predictor name, a renamed output field: DSPy loads it without complaint, every B run fails."""
    import dspy

    class Renamed(dspy.Signature):
        """Classify the review."""

        review: str = dspy.InputField()
        label: str = dspy.OutputField()

    other = dspy.Predict(Renamed)
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(ConfigError, match="not a saved state of the 'sentiment' program: predictor self has fields "
                                          "review, label, the program's has review, sentiment"):
        resolve_arm(str(tmp_path / "other.json"), program_file=load_program_file("sentiment"), lm_cache={})
