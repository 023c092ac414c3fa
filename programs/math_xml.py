"""math_xml: arithmetic word problems answered as `<reasoning>…</reasoning><answer>N</answer>`.

The problems are GSM8K-style one- and two-step word problems that our own seeded generator writes (no dataset
download, no licence question, and the answers are exact). The reward has two weighted parts, the shape used for
GRPO on small models: `format` (0.2, partial credit per XML block) gives a signal long before `correct` (0.8, the
number in <answer> equals the true result) does. One worked example is attached as a demo, because without it a
135M model essentially never produces the format (see DESIGN.md).
"""

from __future__ import annotations

import random

import dspy

from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.metrics import extract_xml, numeric_match, xml_format

DESCRIPTION = "Arithmetic word problems (our own generator), XML format + correctness reward."


class SolveWordProblem(dspy.Signature):
    """Solve the arithmetic word problem. Reply with your reasoning inside <reasoning></reasoning> tags, then only the
    final number inside <answer></answer> tags."""

    question: str = dspy.InputField()
    response: str = dspy.OutputField(desc="<reasoning>step by step</reasoning><answer>the number</answer>")


WORKED_EXAMPLE = dspy.Example(
    question="Mia has 5 pencils. She buys 3 more pencils. How many pencils does Mia have now?",
    response="<reasoning>Mia starts with 5 pencils and buys 3 more, so 5 + 3 = 8.</reasoning><answer>8</answer>",
).with_inputs("question")


def build_program() -> dspy.Module:
    program = dspy.Predict(SolveWordProblem)
    program.demos = [WORKED_EXAMPLE]
    return program


def format_reward(example, pred, trace=None) -> float:
    return xml_format(getattr(pred, "response", ""), ("reasoning", "answer"))


def correct_reward(example, pred, trace=None) -> float:
    answer = extract_xml(getattr(pred, "response", ""), "answer")
    return numeric_match(answer, example.answer) if answer is not None else 0.0


def build_reward(judge_lm=None):
    # No judge: the answer is exact, so checking it is cheaper and more reliable than asking a model.
    return WeightedReward(format=(format_reward, 0.2), correct=(correct_reward, 0.8))


# ----------------------------------------------------------------------------------------------- the generator
_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam", "Maya",
          "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara"]
_THINGS = ["apples", "marbles", "stickers", "books", "cookies", "stamps", "shells", "coins", "cards", "balloons"]


def _one_problem(rng: random.Random) -> tuple[str, int]:
    name, other = rng.sample(_NAMES, 2)
    thing = rng.choice(_THINGS)
    kind = rng.choice(["add", "subtract", "multiply", "share", "add_then_subtract", "groups_plus"])
    if kind == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return f"{name} has {a} {thing}. {other} gives {name} {b} more. How many {thing} does {name} have now?", a + b
    if kind == "subtract":
        a = rng.randint(20, 90)
        b = rng.randint(1, a - 1)
        return f"{name} had {a} {thing} and gave {b} of them to {other}. How many {thing} does {name} have left?", a - b
    if kind == "multiply":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} buys {a} boxes with {b} {thing} in each box. How many {thing} does {name} buy in total?", a * b
    if kind == "share":
        b, each = rng.randint(2, 8), rng.randint(2, 12)
        return (f"{name} shares {b * each} {thing} equally among {b} friends. How many {thing} does each friend get?",
                each)
    if kind == "add_then_subtract":
        a, b = rng.randint(10, 50), rng.randint(5, 30)
        c = rng.randint(1, a + b - 1)
        return (f"{name} has {a} {thing}, finds {b} more, then loses {c}. How many {thing} does {name} have now?",
                a + b - c)
    a, b, c = rng.randint(2, 6), rng.randint(3, 10), rng.randint(1, 20)
    return (f"{name} fills {a} bags with {b} {thing} each and has {c} {thing} left over. "
            f"How many {thing} did {name} start with?", a * b + c)


def generate_problems(n: int = 60, seed: int = 0) -> list[dspy.Example]:
    """`n` distinct problems from a seeded generator; `answer` is an int."""
    rng = random.Random(seed)
    seen, examples = set(), []
    while len(examples) < n:
        question, answer = _one_problem(rng)
        if question in seen or question == WORKED_EXAMPLE.question:
            continue
        seen.add(question)
        examples.append(dspy.Example(question=question, answer=answer).with_inputs("question"))
    return examples


def load_examples() -> list[dspy.Example]:
    return generate_problems(60, seed=0)
