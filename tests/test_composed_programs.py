"""The composed ready programs (pipeline, draft_revise, react_agent), optimized unchanged by dspyrl.GRPO.

On the real tiny model (tests/tiny_model.py) in-process and through `dspyrl serve` over HTTP: each program runs,
optimizes for a few steps, saves and loads with DSPy's own `load`, and every predictor — the inner ones too — gets demo
sets bootstrapped from its OWN recorded calls (an inner predictor's inputs are an earlier step's outputs, which are not
in the example). The random model writes gibberish, so the rewards are low; what is checked is the plumbing.

ReAct's failure accounting needs an agent that calls a tool with a bad argument, or never calls `finish`, on purpose:
a random model does neither reliably, so those tests serve the tiny model's HTTP server with an engine that writes
scripted agent replies (the pattern of tests/optim/prompts/test_grpo.py's FlakyEngine). Everything else is real: LiteLLM,
HTTP, DSPy's ReAct loop, the two tools (which really raise), the program's reward and the rollout engine.
"""

from __future__ import annotations

import json
import re
import threading

import dspy
import pytest
from dspy.utils.callback import BaseCallback

from dspyrl.formats import resolve_format
from dspyrl.lm import local_lm
from dspyrl.lm.local import Generation
from dspyrl.optim.prompts.grpo import GRPO
from dspyrl.program_file import load_program_file
from dspyrl.rollout import run_rollouts

COMPOSED = ("pipeline", "draft_revise", "react_agent")


class CallLog(BaseCallback):
    """Every Predict call in the context: its input fields, its parsed outputs, and how many demos it ran with.
    Keyed by the predictor's input field names, which are distinct between the predictors of each program."""

    def __init__(self):
        self.calls: dict[tuple, list[dict]] = {}
        self._open: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def on_module_start(self, call_id, instance, inputs):
        if isinstance(instance, dspy.Predict):
            key = tuple(instance.signature.input_fields)
            kwargs = inputs.get("kwargs") or {}
            with self._lock:
                self._open[call_id] = (key, {k: kwargs.get(k) for k in key}, len(instance.demos))

    def on_module_end(self, call_id, outputs, exception=None):
        with self._lock:
            frame = self._open.pop(call_id, None)
            if frame is not None and exception is None and outputs is not None:
                key, inputs, n_demos = frame
                self.calls.setdefault(key, []).append({"inputs": inputs, "outputs": dict(outputs), "demos": n_demos})


def grpo(reward, lm, run_dir, **settings):
    options = dict(lm=lm, max_metric_calls=36, group_size=2, batch_size=4, propose_every=1, num_proposals=1,
                   proposal_max_tokens=8, labelled_demo_sets=0, learn_format=False, bootstrap_min_reward=0.0,
                   eval_every=0, val_minibatch=0, temperature=1.0, num_threads=2, run_dir=run_dir, progress=False,
                   seed=0)
    options.update(settings)
    return GRPO(reward, **options)


def bootstrapped(policy, predictor: str) -> list[list[dict]]:
    slot = policy.slots[predictor]["demos"]
    return [demos for demos, origin in zip(slot.candidates, slot.origins) if origin.startswith("bootstrapped")]


def assert_demos_come_from_own_calls(program, policy, log: CallLog, example_inputs: set[str]) -> None:
    for name, predictor in program.named_predictors():
        key = tuple(predictor.signature.input_fields)
        sets = bootstrapped(policy, name)
        assert sets, f"{name}: no bootstrapped demo set"
        recorded = [{**c["inputs"], **c["outputs"]} for c in log.calls[key]]
        for demos in sets:
            for demo in demos:
                assert set(demo) == set(predictor.signature.fields), (name, demo)
                assert any(all(str(call.get(k)) == str(v) for k, v in demo.items()) for call in recorded), (name, demo)
        if not set(key) <= example_inputs:  # an inner predictor: it read an earlier step's output
            assert any(c["demos"] > 0 for c in log.calls[key]), f"{name} never ran with its bootstrapped demos"


def assert_saved_program_loads(name: str, optimized, path) -> None:
    fresh = load_program_file(name).build_program()
    fresh.load(str(path))  # DSPy's own load
    for (left_name, left), (right_name, right) in zip(optimized.named_predictors(), fresh.named_predictors()):
        assert left_name == right_name
        assert left.signature.instructions == right.signature.instructions
        assert [dict(d) for d in left.demos] == [dict(d) for d in right.demos]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return local_lm(str(tiny_model_dir), max_tokens=10)


@pytest.mark.parametrize("name", ["pipeline", "draft_revise"])
def test_composed_program_optimizes_and_inner_predictors_get_demos_from_their_own_calls(name, tiny_lm, tmp_path):
    spec = load_program_file(name)
    data = spec.load_examples()
    log = CallLog()
    # constrained choice for the Literal step (never a parse failure), the compact format for the free-text steps
    with dspy.context(adapter=resolve_format("choice", tiny_lm), callbacks=[log]):
        optimizer = grpo(spec.build_reward(), tiny_lm, tmp_path / "run")
        optimized = optimizer.compile(spec.build_program(), trainset=data[4:16], valset=data[:4])
    state = optimizer.state
    assert state.stopped == "budget" and state.step >= 3 and state.metric_calls <= 36
    assert set(state.policy.slots) == {n for n, _ in spec.build_program().named_predictors()}
    assert_demos_come_from_own_calls(spec.build_program(), state.policy, log, set(data[0].inputs().keys()))
    assert_saved_program_loads(name, optimized, tmp_path / "run" / "program.json")


def test_rollout_records_each_inner_call_with_its_own_inputs(tiny_lm):
    spec = load_program_file("pipeline")
    with dspy.context(adapter=resolve_format("choice", tiny_lm)):
        batch = run_rollouts(spec.build_program(), spec.load_examples()[:2], spec.build_reward(), lm=tiny_lm,
                             progress=False, num_threads=1)
    for rollout in batch.rollouts:
        extract, route = rollout.calls
        assert (extract.predictor, route.predictor) == ("extract", "route")
        assert set(extract.inputs) == {"message"} and set(route.inputs) == {"product"}
        assert route.inputs["product"] == extract.outputs["product"] == rollout.prediction.product


# ----------------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served_tiny(tiny_model_dir):
    from dspyrl.lm.hosted import openai_compatible
    from dspyrl.lm.server import serve_in_thread

    server = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    yield openai_compatible(server.base_url, "tiny", max_tokens=10, num_retries=0)
    server.stop()


@pytest.mark.parametrize("name", COMPOSED)
def test_composed_program_optimizes_through_dspyrl_serve_and_loads_with_dspy(name, served_tiny, tmp_path):
    spec = load_program_file(name)
    data = spec.load_examples()
    with dspy.context(adapter=resolve_format("compact", served_tiny)):
        optimizer = grpo(spec.build_reward(), served_tiny, tmp_path / "run", max_metric_calls=20, batch_size=2,
                         learn_format=True)
        optimized = optimizer.compile(spec.build_program(), trainset=data[4:12], valset=data[:2])
    state = optimizer.state
    assert state.stopped == "budget" and state.step >= 2
    # every predictor has its own instruction, demo and format slots
    for predictor, _ in spec.build_program().named_predictors():
        assert set(state.policy.slots[predictor]) == {"instruction", "demos", "format"}
        assert len(state.policy.slots[predictor]["format"].candidates) >= 3
    assert_saved_program_loads(name, optimized, tmp_path / "run" / "program.json")
    saved = json.loads((tmp_path / "run" / "program.json").read_text())
    assert all(predictor in saved for predictor, _ in spec.build_program().named_predictors())


# ----------------------------------------------------------------------------------------------- ReAct failures
class ScriptedAgent:
    """The tiny model's engine behind `dspyrl serve`, answering ReAct's two predictors with scripted ChatAdapter
    replies to "How much do N <items> cost?": look the item up, calculate, finish. For an item the shop lacks the
    lookup raises; with 'forever' in the question the agent calculates again and again and never finishes."""

    context_length = None  # scripted replies: the tiny model's 2048-token window does not apply

    def __init__(self, engine):
        self.engine, self.default_max_tokens = engine, engine.default_max_tokens

    def generate(self, messages, n=1, settings=None, **options):  # options: the server's cancel hook
        return [Generation(self.reply(messages), 1, 1, "stop") for _ in range(n)]

    def check_context(self, prompt_tokens, max_tokens):
        return None

    def __getattr__(self, name):  # everything else the server asks (tokenizing, bounds) is the real engine's
        return getattr(self.engine, name)

    @staticmethod
    def reply(messages) -> str:
        from dspyrl_programs.react_agent import PRICES

        prompt = messages[-1]["content"]
        found = re.search(r"\[\[ ## question ## \]\]\n(.*)", prompt)
        if found is None:  # not the agent: the optimizer's instruction proposer
            return "Look up each price, then compute the total."
        question = found.group(1)
        count, item = re.match(r"How much do (\d+) (\w+?)s cost", question).groups()
        price = PRICES.get(item, 0)
        if "next_thought" not in prompt:  # ReAct's extract step (ChainOfThought: reasoning, answer)
            return (f"[[ ## reasoning ## ]]\n{count} times {price}\n\n[[ ## answer ## ]]\n{int(count) * price}\n\n"
                    "[[ ## completed ## ]]")
        steps = prompt.count("[[ ## observation_")
        if "forever" in question or steps == 1:
            tool, args = "calculate", {"expression": f"{count} * {price}"}
        elif steps == 0:
            tool, args = "lookup_price", {"item": f"{item}s"}
        else:
            tool, args = "finish", {}
        return (f"[[ ## next_thought ## ]]\nstep {steps}\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n"
                f"[[ ## next_tool_args ## ]]\n{json.dumps(args)}\n\n[[ ## completed ## ]]")


@pytest.fixture(scope="module")
def scripted_agent(tiny_model_dir):
    from dspyrl.lm.hosted import openai_compatible
    from dspyrl.lm.local import local_engine
    from dspyrl.lm.server import serve_in_thread

    server = serve_in_thread(str(tiny_model_dir), engine=ScriptedAgent(local_engine(str(tiny_model_dir))),
                             served_name="tiny")
    yield openai_compatible(server.base_url, "tiny", max_tokens=200, num_retries=0)
    server.stop()


def agent_examples():
    return [dspy.Example(question="How much do 2 towels cost?", answer="24").with_inputs("question"),
            dspy.Example(question="How much do 2 spaceships cost?", answer="0").with_inputs("question"),
            dspy.Example(question="How much do 3 mugs cost, thinking forever?", answer="24").with_inputs("question"),
            dspy.Example(question="How much do 5 pens cost?", answer="10").with_inputs("question")]


def test_react_tool_errors_and_unfinished_agents_are_counted_failures_and_the_run_goes_on(scripted_agent):
    from dspyrl_programs import react_agent

    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        batch = run_rollouts(react_agent.build_program(), agent_examples(), react_agent.build_reward(),
                             lm=scripted_agent, progress=False, num_threads=4)
    solved, tool_error, looping, _ = batch.rollouts
    assert not solved.failed and solved.reward.total == 1.0
    assert solved.prediction.trajectory["observation_0"] == "12 dollars"
    assert tool_error.failed and tool_error.reward.total == 0.0 and tool_error.error is None  # the program ran
    assert tool_error.reward.feedback.startswith("tool error: Execution error in lookup_price")
    assert looping.failed and looping.reward.total == 0.0
    assert looping.reward.feedback == f"the agent did not finish within max_iters={react_agent.MAX_ITERS}"
    assert sum(c.predictor == "react" for c in looping.calls) == react_agent.MAX_ITERS
    assert batch.reward_failures == 2 and batch.failures == 0 and batch.metric_calls == 4


def test_react_agent_optimizes_with_failing_runs_and_bootstraps_demos_for_both_inner_predictors(scripted_agent,
                                                                                                tmp_path):
    from dspyrl_programs import react_agent

    log = CallLog()
    examples = agent_examples()
    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False), callbacks=[log]):
        optimizer = grpo(react_agent.build_reward(), scripted_agent, tmp_path / "run", max_metric_calls=32,
                         batch_size=4, bootstrap_min_reward=1.0, temperature=None)
        optimized = optimizer.compile(react_agent.build_program(), trainset=examples, valset=agent_examples())
    state = optimizer.state
    assert state.stopped == "budget" and state.step >= 2
    assert state.best["score"] == pytest.approx(0.5)  # towels and pens: the other two are failures
    # demos for `react` are its own calls: the question AND the trajectory so far, with the tool it chose next
    assert_demos_come_from_own_calls(react_agent.build_program(), state.policy, log, {"question"})
    react_demos = [d for demos in bootstrapped(state.policy, "react") for d in demos]
    assert {d["next_tool_name"] for d in react_demos} >= {"lookup_price", "calculate", "finish"}
    assert_saved_program_loads("react_agent", optimized, tmp_path / "run" / "program.json")


# ----------------------------------------------------------------------------------------------- the CLI, unchanged
def test_cli_optimize_and_finetune_take_a_composed_program_unchanged(tiny_model_dir, tmp_path):
    """`dspyrl finetune` trains the pipeline through TRL's rollout_func (both predictors' calls), reporting each
    predictor's reward and KL; `dspyrl optimize` runs the ReAct agent (all its runs fail on a random model: counted)."""
    from dspyrl.cli import main

    out = tmp_path / "lora"
    assert main(["finetune", "pipeline", "--model", str(tiny_model_dir), "--steps", "2", "--max-tokens", "8",
                 "--format", "compact", "--num-generations", "2", "--threads", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rollout"] == "program"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert set(m["predictor_reward"]) <= {"extract", "route"} and "extract" in m["predictor_reward"]
        assert set(m["predictor_kl"]) == set(m["predictor_reward"])
        assert all(kl >= 0.0 for kl in m["predictor_kl"].values())
    assert metrics[0]["predictor_kl"]["extract"] == pytest.approx(0.0, abs=1e-6)  # step 1: the adapter is still zero

    run = tmp_path / "react"
    assert main(["optimize", "react_agent", "--model", str(tiny_model_dir), "--budget", "24", "--max-tokens", "8",
                 "--threads", "2", "--group-size", "2", "--batch-size", "2", "--out", str(run)]) == 0
    scores = json.loads((run / "summary.json").read_text())["scores"]
    assert scores["test_after"]["n"] == scores["test_before"]["n"] > 0
    fresh = load_program_file("react_agent").build_program()
    fresh.load(str(run / "program.json"))


def test_completion_kl_is_zero_for_a_fresh_adapter_and_grows_when_it_moves(tiny_model_dir):
    """The per-predictor KL of LoRA GRPO's metrics: TRL's k3 estimate per row, the adapter switched off as reference."""
    import torch
    from peft import get_peft_model

    from dspyrl.optim.weights.base import load_trainable_model, lora_config
    from dspyrl.optim.weights.grpo import completion_kl

    model, tokenizer = load_trainable_model(str(tiny_model_dir))
    model = get_peft_model(model, lora_config(4, 8, 0.0, "all-linear", None))
    prompts = [tokenizer("review: great film")["input_ids"], tokenizer("question: two plus two")["input_ids"]]
    completions = [tokenizer(" sentiment: positive")["input_ids"], tokenizer(" answer: 4")["input_ids"]]
    assert completion_kl(model, prompts, completions, 1.0) == pytest.approx([0.0, 0.0], abs=1e-7)  # B starts at 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.5 * torch.randn_like(param))
    moved = completion_kl(model, prompts, completions, 1.0)
    assert all(kl > 1e-4 for kl in moved)
    assert completion_kl(model, [], [], 1.0) == []


def test_credit_benchmark_runs(capsys):
    """benchmarks/composed.py's credit part (no LM) keeps working."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "composed.py"
    spec = importlib.util.spec_from_file_location("bench_composed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["credit", "--seeds", "2", "--steps", "2", "--budget", "40"]) == 0
    out = capsys.readouterr().out
    assert "module − run, returned" in out and "2 predictors × 4 instructions" in out
