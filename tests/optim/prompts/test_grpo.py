"""dspyrl.GRPO end to end on the real tiny local model: learning, save/load, resume, proposals, LM failures over HTTP.

The tiny model is random, so its outputs are gibberish; the program below still makes a real LM call per run, then
reports which prompt it ran with, so the reward can prefer one instruction and demo choice and the test can check that
the policy learns it — through the real rollout engine, rewards, advantages, update and run folder.
"""

import json
import random
from typing import Literal

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from dspyrl.errors import ConfigError
from dspyrl.lm import local_lm
from dspyrl.optim.prompts.grpo import GRPO

TARGET = "Answer with one word."
OTHERS = ["Be verbose and explain.", "Write a poem about it."]


class ReportsItsPrompt(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("review -> sentiment")

    def forward(self, review):
        try:
            self.classify(review=review)
        except AdapterParseError:  # gibberish from the random model; LM errors still propagate
            pass
        return dspy.Prediction(instruction=self.classify.signature.instructions, n_demos=len(self.classify.demos))


def prefers_target_with_demos(example, pred, trace=None) -> float:
    return 0.5 * float(pred.instruction == TARGET) + 0.5 * float(pred.n_demos > 0)


def dataset(n=12):
    return [dspy.Example(review=f"review number {i}", sentiment="positive" if i % 2 else "negative").with_inputs("review")
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=6)


def make(lm, run_dir, **settings):
    options = dict(lm=lm, instructions=[TARGET, *OTHERS], max_metric_calls=72, group_size=4, batch_size=2, lr=1.5,
                   propose_every=0, eval_every=2, run_dir=run_dir, progress=False, num_threads=4, seed=0)
    options.update(settings)
    return GRPO(prefers_target_with_demos, **options)


@pytest.fixture(autouse=True)
def no_json_fallback():
    """One LM call per run: the random model never satisfies ChatAdapter, and a JSON retry would only double the cost."""
    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        yield


def as_dicts(demos):
    return [d.toDict() if hasattr(d, "toDict") else dict(d) for d in demos]


def test_compile_shifts_the_policy_toward_the_rewarded_prompt_and_saves_a_dspy_program(tiny_lm, tmp_path):
    data = dataset()
    optimizer = make(tiny_lm, tmp_path / "run")
    optimized = optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    state = optimizer.state

    assert state.policy.probability("classify", "instruction", TARGET) > 0.6  # started at 1/4
    demo_probs = state.policy.slots["classify"]["demos"].probs()
    assert demo_probs[0] < 0.2  # the original (empty) demo set started at 1/3
    assert optimized.classify.signature.instructions == TARGET and len(optimized.classify.demos) == 4
    assert state.best["score"] == 1.0 and state.val_history[0]["score"] == 0.0  # the starting program is scored first
    assert state.metric_calls <= 72 and state.stopped == "budget"

    reloaded = ReportsItsPrompt()
    reloaded.load(str(tmp_path / "run" / "program.json"))
    assert reloaded.classify.signature.instructions == TARGET
    assert as_dicts(reloaded.classify.demos) == as_dicts(optimized.classify.demos)

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, state.step + 1))
    for key in ("reward_mean", "reward_std", "surrogate_loss", "kl", "entropy", "frac_zero_std", "metric_calls",
                "lm_calls", "tokens", "cost", "val_score"):
        assert key in lines[0]
    assert lines[-1]["reward_mean"] > lines[0]["reward_mean"]
    assert lines[-1]["lm_calls"] > 0 and lines[-1]["tokens"] > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["max_metric_calls"] == 72 and config["predictors"] == ["classify"]


def test_resume_continues_from_the_last_step_with_the_same_budget_accounting(tiny_lm, tmp_path):
    data = dataset()
    full = make(tiny_lm, tmp_path / "full")
    full.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])

    class Interrupt(Exception):
        pass

    class StopAtStep3:
        def on_step_end(self, metrics):
            if metrics["step"] == 3:
                raise Interrupt

    with pytest.raises(Interrupt):
        make(tiny_lm, tmp_path / "cut", callbacks=[StopAtStep3()]).compile(
            ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    checkpoint = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert checkpoint["step"] == 3

    with pytest.raises(ConfigError, match="already holds a run"):
        make(tiny_lm, tmp_path / "cut").compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])

    seen_steps = []

    class Record:
        def on_step_end(self, metrics):
            seen_steps.append(metrics["step"])

    resumed = make(tiny_lm, tmp_path / "cut", resume=True, callbacks=[Record()])
    resumed.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    assert seen_steps and seen_steps[0] == 4  # no step was redone
    assert resumed.state.step == full.state.step
    assert resumed.state.metric_calls == full.state.metric_calls
    assert resumed.state.best == full.state.best
    for slot_name in ("instruction", "demos"):
        a, b = resumed.state.policy.slots["classify"][slot_name], full.state.policy.slots["classify"][slot_name]
        assert a.candidates == b.candidates and a.logits == pytest.approx(b.logits)
    lines = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, full.state.step + 1))

    with pytest.raises(ConfigError, match="another program or trainset"):
        make(tiny_lm, tmp_path / "cut", resume=True).compile(ReportsItsPrompt(), trainset=data[:6], valset=data[8:])


def test_garbage_proposals_from_the_tiny_model_are_counted_and_skipped(tiny_lm):
    data = dataset()
    optimizer = make(tiny_lm, None, propose_every=1, max_metric_calls=2 * 4 + 2 * 8, num_proposals=3,
                     proposal_max_tokens=24, learn_format=False)  # chat only: nothing the random model says parses
    optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    stats = optimizer.state.proposals
    assert optimizer.state.step == 2 and stats.asked == 6
    assert stats.accepted + sum(stats.rejected.values()) == stats.asked
    proposed = [o for o in optimizer.state.policy.slots["classify"]["instruction"].origins if o.startswith("proposed")]
    assert len(proposed) == stats.accepted
    # the random model's outputs never parse, so no run could become a bootstrapped demo
    assert not any(o.startswith("bootstrapped") for o in optimizer.state.policy.slots["classify"]["demos"].origins)


def test_high_reward_runs_become_a_label_balanced_bootstrapped_demo_set():
    from dspyrl.optim.prompts.grpo import GRPOState
    from dspyrl.optim.prompts.policy import PromptPolicy
    from dspyrl.rewards.combine import RewardResult
    from dspyrl.rollout import PredictorCall, Rollout

    class Sentiment(dspy.Signature):
        review: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()

    program = dspy.Predict(Sentiment)
    optimizer = GRPO(prefers_target_with_demos, num_demos=2, progress=False)
    state = GRPOState(policy=PromptPolicy.from_program(program), rng=random.Random(0))
    for i, (label, reward) in enumerate([("positive", 1.0), ("positive", 1.0), ("negative", 1.0), ("negative", 0.0)]):
        call = PredictorCall("self", None, f"[[ ## sentiment ## ]]\n{label}", {"sentiment": label})
        rollout = Rollout(i, 0, {}, None, [call], RewardResult(reward))
        optimizer._collect_demo(state, program, call, {"review": f"text {i}"}, rollout)
    assert state.demo_pool["self"] == [{"review": "text 0", "sentiment": "positive"},
                                       {"review": "text 1", "sentiment": "positive"},
                                       {"review": "text 2", "sentiment": "negative"}]  # the 0-reward run is not kept
    assert optimizer._propose(program, state, {}, lm=None) == 1
    slot = state.policy.slots["self"]["demos"]
    assert slot.origins[-1] == "bootstrapped@0"
    assert sorted(d["sentiment"] for d in slot.candidates[-1]) == ["negative", "positive"]


def test_a_budget_too_small_for_one_step_is_a_config_error(tiny_lm):
    with pytest.raises(ConfigError, match="too small"):
        make(tiny_lm, None, max_metric_calls=10).compile(ReportsItsPrompt(), trainset=dataset()[:8],
                                                         valset=dataset()[8:])
    with pytest.raises(ConfigError, match="unknown GRPO setting"):
        GRPO(prefers_target_with_demos, group_sise=3)


class FlakyEngine:
    """The real tiny-model engine behind the real HTTP server, failing every request whose input mentions '3'."""

    def __init__(self, engine):
        self.engine, self.default_max_tokens, self.failed = engine, engine.default_max_tokens, 0

    def __getattr__(self, name):  # everything but generate is the real engine's (tokenizer, grammars, ...)
        return getattr(self.engine, name)

    def generate(self, messages, n=1, settings=None, **kwargs):
        if "number 3" in messages[-1]["content"] or "number 7" in messages[-1]["content"]:
            self.failed += 1
            raise RuntimeError("injected server failure")
        return self.engine.generate(messages, n=n, settings=settings, **kwargs)


def test_lm_failures_over_http_are_counted_and_the_run_finishes(tiny_model_dir, tmp_path):
    from dspyrl.lm.hosted import openai_compatible
    from dspyrl.lm.local import local_engine
    from dspyrl.lm.server import serve_in_thread

    engine = FlakyEngine(local_engine(str(tiny_model_dir)))
    server = serve_in_thread(str(tiny_model_dir), engine=engine)
    try:
        lm = openai_compatible(server.base_url, "tiny", max_tokens=6, num_retries=0)
        data = dataset()
        optimizer = make(lm, tmp_path / "run", num_threads=4)
        optimized = optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    finally:
        server.stop()
    state = optimizer.state
    assert engine.failed > 0 and state.failures > 0
    assert state.stopped == "budget" and state.step >= 3
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["step_failures"] for m in lines) > 0
    assert (tmp_path / "run" / "program.json").exists()
    assert optimized.classify.signature.instructions == TARGET


class TwoSteps(dspy.Module):
    """Two predictors in sequence; reports both instructions."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("review -> summary")
        self.label = dspy.Predict("summary -> sentiment")

    def forward(self, review):
        for predictor, inputs in ((self.draft, {"review": review}), (self.label, {"summary": review})):
            try:
                predictor(**inputs)
            except AdapterParseError:
                pass
        return dspy.Prediction(instructions=[self.draft.signature.instructions, self.label.signature.instructions])


def test_every_predictor_of_a_multi_step_program_gets_its_own_slots(tiny_lm, tmp_path):
    def both_on_target(example, pred, trace=None):
        return sum(0.5 for text in pred.instructions if text == TARGET)

    data = dataset()
    optimizer = GRPO(both_on_target, lm=tiny_lm, instructions={"draft": [TARGET], "label": [TARGET, OTHERS[0]]},
                     max_metric_calls=72, group_size=4, batch_size=2, lr=1.5, propose_every=0, labelled_demo_sets=0,
                     run_dir=tmp_path / "run", progress=False, seed=1)
    optimized = optimizer.compile(TwoSteps(), trainset=data[:8], valset=data[8:])
    policy = optimizer.state.policy
    assert set(policy.slots) == {"draft", "label"}
    assert len(policy.slots["draft"]["instruction"].candidates) == 2
    assert len(policy.slots["label"]["instruction"].candidates) == 3
    assert policy.probability("draft", "instruction", TARGET) > 0.5
    assert policy.probability("label", "instruction", TARGET) > 1 / 3
    assert optimized.draft.signature.instructions == TARGET and optimized.label.signature.instructions == TARGET
    reloaded = TwoSteps()
    reloaded.load(str(tmp_path / "run" / "program.json"))
    assert [p.signature.instructions for _, p in reloaded.named_predictors()] == [TARGET, TARGET]


def test_a_validation_plateau_stops_the_run_early(tiny_lm):
    data = dataset()
    optimizer = GRPO(lambda example, pred, trace=None: 0.0, lm=tiny_lm, max_metric_calls=400, group_size=4,
                     batch_size=2, eval_every=1, early_stop_patience=2, propose_every=0, progress=False)
    optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    state = optimizer.state
    assert state.stopped == "early_stop" and state.step == 2  # the start, then two flat validations
    assert state.metric_calls < 400


# ------------------------------------------------------------------------------------- earning the result (issue 14)
class RunsPlainly(dspy.Module):
    """Calls the LM once and reports the prompt it ran with; every run that reaches the reward scores the same."""

    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("review -> sentiment")

    def forward(self, review):
        try:
            self.classify(review=review)
        except AdapterParseError:
            pass
        return dspy.Prediction(instruction=self.classify.signature.instructions,
                               format=getattr(self.classify, "dspyrl_format", None))


def test_a_garbage_proposer_never_changes_the_returned_instruction(tiny_lm):
    """The tiny random model writes the proposals, and junk instructions are candidates from the start. Training
    rewards push the policy toward any new instruction, so junk becomes its most likely prompt; on the valset every
    prompt ties, where the old rule ("ties go to the later prompt") returned the junk."""
    data = dataset(16)
    junk = ["zq zq vbn the of", "Output: 1.1 + one of the lighter colors in the list; > * Output:"]
    original = RunsPlainly().classify.signature.instructions

    def new_instructions_win_on_train(example, pred, trace=None):
        on_valset = int(example.review.split()[-1]) >= 8
        return 1.0 if on_valset else float(pred.instruction != original)

    optimizer = GRPO(new_instructions_win_on_train, lm=tiny_lm, instructions=junk, max_metric_calls=120, group_size=4, batch_size=2,
                     propose_every=1, num_proposals=3, proposal_max_tokens=32, eval_every=1, learn_format=False,
                     labelled_demo_sets=0, progress=False, seed=0)
    optimized = optimizer.compile(RunsPlainly(), trainset=data[:8], valset=data[8:])
    state = optimizer.state
    assert optimized.classify.signature.instructions == original
    tried = [r for r in state.val_history if r["values"]["classify"]["instruction"] != original]
    assert tried, "no other instruction was ever validated: the test did not exercise selection"
    assert all(r["verdict"] != "the starting program" for r in tried)
    stats = state.proposals
    assert stats.asked > 0 and stats.accepted + sum(stats.rejected.values()) == stats.asked
    assert state.final_vs_start["mean_diff"] == 0.0 and state.final_vs_start["n"] == 8


def test_when_two_candidates_tie_on_the_valset_the_simpler_one_is_returned(tiny_lm):
    data = dataset()
    optimizer = make(tiny_lm, None, val_minibatch=0)
    student, valset = ReportsItsPrompt(), data[8:]
    state = optimizer.state = optimizer._start(student, data[:8], None)
    slots = state.policy.slots["classify"]

    def make_greedy(instruction, demos_index):
        slots["instruction"].logits = [5.0 if c == instruction else 0.0 for c in slots["instruction"].candidates]
        slots["demos"].logits = [5.0 if i == demos_index else 0.0 for i in range(len(slots["demos"].candidates))]

    def only_target(example, pred, trace=None):  # demos do not matter: with and without them, TARGET ties
        return float(pred.instruction == TARGET)

    optimizer.reward = only_target
    optimizer._validate(student, valset, state, tiny_lm)  # the starting program: 0 on every row
    labelled = next(i for i, o in enumerate(slots["demos"].origins) if o == "labelled")
    make_greedy(TARGET, labelled)
    # TARGET + 4 demos: 1 on every row, adopted; then each changed slot is put back in turn: TARGET without the demos
    # ties it and is simpler, so it wins; the original instruction with the demos scores 0 and does not
    optimizer._validate(student, valset, state, tiny_lm)
    with_demos, without = (next(r for r in state.val_history if r["values"]["classify"]["instruction"] == TARGET
                                and bool(r["values"]["classify"]["demos"]) is flag) for flag in (True, False))
    assert with_demos["verdict"] == "better than the incumbent beyond noise" and with_demos["score"] == 1.0
    assert without["score"] == 1.0 and "simpler" in without["verdict"]
    assert state.best["values"]["classify"] == {"instruction": TARGET, "demos": [], "format": None}
    make_greedy(TARGET, labelled)  # the more complex one again: already known, never re-adopted
    optimizer._validate(student, valset, state, tiny_lm)
    assert state.best["values"]["classify"]["demos"] == []
    assert state.final_vs_start is None  # filled in by compile at the end


def test_two_runs_with_the_same_seed_at_temperature_1_are_identical(tiny_model_dir, tmp_path):
    """No DSPy cache: every sample is drawn again, and the per-request seeds make the draws the same."""
    data = dataset()

    def run(folder):
        lm = local_lm(str(tiny_model_dir), max_tokens=6, temperature=1.0, cache=False)
        optimizer = GRPO(prefers_target_with_demos, lm=lm, instructions=[TARGET, *OTHERS], max_metric_calls=72,
                         group_size=4, batch_size=2, propose_every=1, num_proposals=2, proposal_max_tokens=16,
                         run_dir=tmp_path / folder, progress=False, num_threads=4, seed=3)
        program = optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
        lines = [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
        for line in lines:
            line.pop("wall_s")
        return program.dump_state(), lines, optimizer.state.proposals.to_json()

    first, second = run("a"), run("b")
    assert first[1] and first[2]["asked"] > 0
    assert first == second


def test_the_compiled_program_called_plainly_uses_its_learned_format(tiny_lm, tmp_path):
    def prefers_compact(example, pred, trace=None):
        return float(pred.format == "compact")

    data = dataset()
    optimizer = GRPO(prefers_compact, lm=tiny_lm, max_metric_calls=80, group_size=4, batch_size=2, lr=2.0,
                     propose_every=0, labelled_demo_sets=0, run_dir=tmp_path / "run", progress=False, seed=0)
    optimized = optimizer.compile(RunsPlainly(), trainset=data[:8], valset=data[8:])
    assert optimized.classify.dspyrl_format == "compact"

    def prompt_of_a_plain_call(program) -> str:
        with dspy.context(lm=tiny_lm):  # no use_predictor_formats, no adapter: what a DSPy user writes
            program(review="a plain call")
        return "\n".join(m["content"] for m in tiny_lm.history[-1]["messages"])

    assert "[[ ##" not in prompt_of_a_plain_call(optimized) and "sentiment:" in prompt_of_a_plain_call(optimized)
    from dspyrl import load_program

    loaded = load_program(RunsPlainly(), tmp_path / "run" / "program.json")
    assert "[[ ##" not in prompt_of_a_plain_call(loaded)
    assert "[[ ## sentiment ## ]]" in prompt_of_a_plain_call(RunsPlainly())  # the default format, for contrast
    plain = RunsPlainly()
    plain.load(str(tmp_path / "run" / "program.json"))  # DSPy's own load still reads the file
    assert plain.classify.dspyrl_format == "compact"


def test_all_solved_examples_wait_until_the_others_are_used(tiny_lm):
    optimizer = make(tiny_lm, None)
    state = optimizer._start(ReportsItsPrompt(), dataset()[:8], None)
    state.saturated = [0, 1, 2, 3, 4, 5]
    picked = [optimizer._next_batch(state, 8, 2) for _ in range(3)]
    assert sorted(picked[0]) == [6, 7]  # the two that still vary or fail, first
    assert all(i in range(8) for batch in picked for i in batch)
    state.saturated = list(range(8))  # everything solved: nothing better to do than reuse them
    assert len(optimizer._next_batch(state, 8, 2)) == 2


def test_the_final_reserve_goes_to_training_when_the_policy_prompt_is_scored_already(tiny_lm):
    """Every prompt scores the same, so the policy never moves and its most likely prompt stays the starting one,
    scored at the start: the validation kept in reserve for the final prompt would go unspent, so it buys training."""
    data = dataset()
    optimizer = GRPO(lambda example, pred, trace=None: 1.0, lm=tiny_lm, instructions=[TARGET, *OTHERS],
                     max_metric_calls=4 + 3 * 8, group_size=4, batch_size=2, eval_every=2, early_stop_patience=0,
                     propose_every=0, progress=False, seed=0)
    optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    state = optimizer.state
    assert state.stopped == "budget" and state.step == 3
    assert state.metric_calls == 28 and state.spent["train"] == 24  # the old reserve left 4 unspent


@pytest.mark.parametrize("budget", [29, 33, 37])
def test_the_budget_is_never_overshot_when_the_policy_moves_late(tiny_lm, budget):
    """The policy learns toward TARGET, so its most likely prompt changes after steps that spent the reserve: that
    prompt is left unscored (the incumbent stands) rather than bought past the budget."""
    data = dataset()
    optimizer = make(tiny_lm, None, max_metric_calls=budget, eval_every=1, lr=3.0)
    optimizer.compile(ReportsItsPrompt(), trainset=data[:8], valset=data[8:])
    state = optimizer.state
    assert state.metric_calls <= budget
    assert budget - state.metric_calls < 4  # less than one training group is left unspent
