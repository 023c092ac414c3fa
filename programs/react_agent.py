"""react_agent: a `dspy.ReAct` shop assistant with two Python tools, a price lookup and a calculator.

Questions like "How much do 3 mugs and a teapot cost?" need the prices of our own little shop (the table below, which
ships with the program) and some arithmetic. The agent has two tools:
    lookup_price(item)       the price of one item in whole dollars (raises KeyError for an item the shop lacks)
    calculate(expression)    + - * / and parentheses on numbers (raises ValueError for anything else)
36 questions from a seeded generator over the table (exact answers; no dataset download).

What counts as a failed run (the reward returns a RewardResult marked failed, scoring 0.0, with the reason as feedback):
- a tool raised: DSPy's ReAct catches the exception and shows it to the agent as an observation starting with
  "Execution error in <tool>" (dspy/predict/react.py), so the run would otherwise go on looking healthy;
- the agent never called `finish`: it used up MAX_ITERS steps (a loop), or ReAct ended the trajectory early.
Nothing here swallows an exception the rollout engine should see: LM and parse errors still fail the run there, and a
bug in this file still stops it. Otherwise the reward is 1.0 when the answer's number equals the true total.
"""

from __future__ import annotations

import ast
import operator
import random
import threading

import dspy

from dspyrl.rewards.combine import RewardResult
from dspyrl.rewards.metrics import extract_number, numeric_match

DESCRIPTION = "dspy.ReAct shop assistant with a price lookup and a calculator (36 questions of our own)."

MAX_ITERS = 5
TOOL_ERROR_PREFIX = "Execution error in "  # how DSPy 3.4.1's ReAct writes a tool's exception into the trajectory

PRICES = {  # dollars
    "mug": 8, "teapot": 23, "notebook": 4, "pen": 2, "lamp": 31, "candle": 6,
    "blanket": 45, "towel": 12, "vase": 17, "clock": 28, "basket": 14, "cushion": 19,
}


def lookup_price(item: str) -> str:
    """The price of one item in the shop, in dollars."""
    key = item.strip().lower().removeprefix("a ").removeprefix("an ").strip()
    for candidate in (key, key.removesuffix("s"), key.removesuffix("es")):
        if candidate in PRICES:
            return f"{PRICES[candidate]} dollars"
    raise KeyError(f"the shop has no item called {item!r}; items: {', '.join(PRICES)}")


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# CPython 3.11's ast.parse is not safe across threads ("AST constructor recursion depth mismatch", seen with concurrent
# rollouts), and a SystemError there would count as the agent's tool error
_PARSE_LOCK = threading.Lock()


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / and parentheses, e.g. '3 * 8 + 23'."""

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(f"calculate only takes numbers, + - * / and parentheses, got {expression!r}")

    try:
        with _PARSE_LOCK:
            tree = ast.parse(str(expression).strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from err
    result = value(tree.body)
    return f"{result:g}" if isinstance(result, float) else str(result)


class AnswerPriceQuestion(dspy.Signature):
    """Answer the shopper's question about what items in our shop cost. Look up every price, then compute the total."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the total in dollars, a number only")


def build_program() -> dspy.Module:
    return dspy.ReAct(AnswerPriceQuestion, tools=[lookup_price, calculate], max_iters=MAX_ITERS)


def agent_failure(pred) -> str | None:
    """Why this run counts as failed (a tool raised, or the agent never finished), or None."""
    trajectory = dict(getattr(pred, "trajectory", None) or {})
    for key, observation in trajectory.items():
        if key.startswith("observation_") and str(observation).startswith(TOOL_ERROR_PREFIX):
            return f"tool error: {' '.join(str(observation).split())[:200]}"
    tools_called = [trajectory[key] for key in trajectory if key.startswith("tool_name_")]
    if not tools_called or tools_called[-1] != "finish":
        if len(tools_called) >= MAX_ITERS:
            return f"the agent did not finish within max_iters={MAX_ITERS}"
        return "the agent stopped without calling finish"
    return None


def correct_total(example, pred, trace=None) -> RewardResult:
    failure = agent_failure(pred)
    if failure is not None:
        return RewardResult(0.0, {"correct": 0.0}, failure, failed=True)
    number = extract_number(getattr(pred, "answer", ""))
    score = numeric_match(number, example.answer) if number is not None else 0.0
    return RewardResult(score, {"correct": score}, "" if score else f"expected {example.answer}")


def build_reward(judge_lm=None):
    # No judge: the totals are exact.
    return correct_total


def _questions(n: int = 36, seed: int = 19) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    items = sorted(PRICES)
    rows = []
    while len(rows) < n:
        first, second = rng.sample(items, 2)
        count = rng.randint(2, 5)
        kind = len(rows) % 3
        if kind == 0:
            rows.append((f"How much do {count} {first}s cost?", count * PRICES[first]))
        elif kind == 1:
            rows.append((f"What do {count} {first}s and one {second} cost together?",
                         count * PRICES[first] + PRICES[second]))
        else:
            dearer, cheaper = sorted((first, second), key=PRICES.get, reverse=True)
            rows.append((f"How much more does a {dearer} cost than a {cheaper}?", PRICES[dearer] - PRICES[cheaper]))
    return rows


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(question=question, answer=str(answer)).with_inputs("question") for question, answer in _questions()]
