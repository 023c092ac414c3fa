"""Composed programs: which credit assignment prompt GRPO should use between modules, and what the composed ready
programs score held-out.

    python benchmarks/composed.py credit --seeds 40          # no LM: run-wide vs per-module credit, simulated programs
    python benchmarks/composed.py programs --programs pipeline --budget 60 --seeds 0     # a real model (smollm2)
    python benchmarks/composed.py together --budget 40 --steps 6                          # prompts / LoRA / schedule

`credit` runs the real dspyrl.GRPO (rollout engine, advantages, policy update, validation and selection) on programs
whose predictors do not call an LM: each predictor has instruction candidates, each candidate succeeds with its own
probability (drawn per seed), and a run's reward is 1 only when every step succeeded, as in a pipeline whose final
answer needs every step right. Because the success probabilities are known, the true expected reward of the program
GRPO returns is exact (the product of its candidates' probabilities): no test-set noise, so many seeds are cheap and
the two credit modes are compared paired by seed (the same problems, the same reward draws' seeds).
`programs` scores the starting program, GRPO with credit="run" and GRPO with credit="module" on the held-out test split
of each composed ready program. `together` runs prompts, LoRA and the prompts → LoRA → prompts schedule on the pipeline.
Every table says its scale; on the shared 2-core machine these runs are scaled far down.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402


# ----------------------------------------------------------------------------------------------- credit (no LM)
class SimulatedPipeline(dspy.Module):
    """`steps` predictors in sequence; the prediction reports which instruction each one ran with (no LM call)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = [dspy.Predict(f"text -> out{k}") for k in range(steps)]

    def forward(self, text):
        return dspy.Prediction(instructions=[p.signature.instructions for p in self.steps])


def simulated_run(credit: str, steps: int, candidates: int, seed: int, budget: int, lr: float = 1.0) -> dict:
    from dspyrl.optim.prompts.grpo import GRPO

    problem = random.Random(1000 + seed)  # the same problem for both credit modes
    texts = {f"step{k}-{c}": problem.uniform(0.2, 0.95) for k in range(steps) for c in range(candidates)}
    program = SimulatedPipeline(steps)
    names = [name for name, _ in program.named_predictors()]
    original = {name: p.signature.instructions for name, p in program.named_predictors()}
    success = {}  # instruction text -> probability; the original instruction is candidate 0 of each step
    for k, name in enumerate(names):
        success[original[name]] = texts[f"step{k}-0"]
        for c in range(1, candidates):
            success[f"step{k}-{c}"] = texts[f"step{k}-{c}"]
    draws = random.Random(seed)  # the reward's coin flips (num_threads=1: drawn in a fixed order)

    def reward(example, pred, trace=None) -> float:
        return float(all(draws.random() < success[text] for text in pred.instructions))

    data = [dspy.Example(text=f"row {i}").with_inputs("text") for i in range(24)]
    optimizer = GRPO(reward, lm=dspy.LM("openai/never-called"), max_metric_calls=budget, group_size=4, batch_size=4,
                     propose_every=0, labelled_demo_sets=0, learn_format=False, eval_every=2, val_minibatch=0,
                     num_threads=1, progress=False, seed=seed, credit=credit, lr=lr,
                     instructions={name: [f"step{k}-{c}" for c in range(1, candidates)] for k, name in enumerate(names)})
    optimized = optimizer.compile(program, trainset=data[:16], valset=data[16:])
    policy = optimizer.state.policy

    def expected(instructions: list[str]) -> float:
        return math.prod(success[text] for text in instructions)

    best = math.prod(max(texts[f"step{k}-{c}"] for c in range(candidates)) for k in range(steps))
    greedy = policy.greedy_values()
    return {"returned": expected([p.signature.instructions for _, p in optimized.named_predictors()]),
            "greedy": expected([greedy[name]["instruction"] for name in names]),
            "best": best, "start": expected(list(original.values())),
            "p_best": sum(policy.slots[name]["instruction"].probs()[
                max(range(candidates), key=lambda c: texts[f"step{k}-{c}"])] for k, name in enumerate(names)) / steps}


def credit_table(args) -> None:
    from scipy import stats

    seeds = list(range(args.seeds))
    # "run ×k lr": run-wide credit with a larger step. Per-module credit averages a predictor's term over the groups
    # that carry signal for it, i.e. a larger step wherever groups are flat; this arm tells that apart from credit.
    arms = {"run": ("run", 1.0), "module": ("module", 1.0)}
    if args.run_lr_scale:
        arms[f"run ×{args.run_lr_scale:g} lr"] = ("run", args.run_lr_scale)
    for steps in [int(s) for s in args.steps.split(",")]:
        started = time.perf_counter()
        rows = {arm: [simulated_run(mode, steps, args.candidates, seed, args.budget, lr) for seed in seeds]
                for arm, (mode, lr) in arms.items()}
        wall = time.perf_counter() - started
        print(f"\n{steps} predictors × {args.candidates} instructions, budget {args.budget} metric calls, "
              f"{len(seeds)} seeds (paired), {wall:.0f} s")
        print(f"  {'credit':14} {'returned':>9} {'greedy':>8} {'P(best)':>8}   (true expected reward; start "
              f"{sum(r['start'] for r in rows['run']) / len(seeds):.3f}, best possible "
              f"{sum(r['best'] for r in rows['run']) / len(seeds):.3f})")
        for mode, results in rows.items():
            print(f"  {mode:14} {sum(r['returned'] for r in results) / len(seeds):9.3f} "
                  f"{sum(r['greedy'] for r in results) / len(seeds):8.3f} "
                  f"{sum(r['p_best'] for r in results) / len(seeds):8.3f}")
        for other in [arm for arm in rows if arm != "module"]:
            for key in ("returned", "greedy", "p_best"):
                diff = [m[key] - r[key] for m, r in zip(rows["module"], rows[other])]
                mean = sum(diff) / len(diff)
                test = stats.wilcoxon(diff) if any(diff) else None
                wins = sum(d > 1e-12 for d in diff), sum(d < -1e-12 for d in diff)
                print(f"  module − {other}, {key:8}: {mean:+.4f}  (module better on {wins[0]}, worse on {wins[1]} "
                      f"seeds; Wilcoxon p = {test.pvalue:.3f})" if test else
                      f"  module − {other}, {key}: identical on every seed")


# ----------------------------------------------------------------------------------------------- real programs
def test_score(program, test, reward, lm, threads, format) -> tuple[float, int]:
    from dspyrl.rollout import run_rollouts

    batch = run_rollouts(program, test, reward, lm=lm, num_threads=threads, progress=False, format=format)
    return batch.mean_reward(), batch.failures + batch.reward_failures


def programs_table(args) -> None:
    from dspyrl.data import split_examples
    from dspyrl.formats import resolve_format
    from dspyrl.lm import lm_from_spec
    from dspyrl.optim.prompts.grpo import GRPO
    from dspyrl.program_file import load_program_file

    lm = lm_from_spec(args.model, temperature=0.0, max_tokens=args.max_tokens)
    format = resolve_format(args.format, lm)
    print(f"| program | seed | arm | test score | failed | metric calls | wall |  ({args.model}, format {args.format}, "
          f"budget {args.budget}, test ≤ {args.test_limit} rows)")
    for name in args.programs.split(","):
        spec = load_program_file(name)
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, val, test = split_examples(spec.load_examples(), seed=seed)
            train, val, test = train[: args.train_limit], val[: args.val_limit], test[: args.test_limit]
            reward = spec.build_reward()
            with dspy.context(adapter=format) if format is not None else dspy.context():
                score, failed = test_score(spec.build_program(), test, reward, lm, args.threads, format)
                print(f"| {name} | {seed} | starting program | {score:.3f} | {failed} | | |", flush=True)
                for credit in ("run", "module"):
                    started = time.perf_counter()
                    optimizer = GRPO(reward, lm=lm, max_metric_calls=args.budget, seed=seed, credit=credit,
                                     num_threads=args.threads, progress=False)
                    optimized = optimizer.compile(spec.build_program(), trainset=train, valset=val)
                    wall = time.perf_counter() - started
                    score, failed = test_score(optimized, test, reward, lm, args.threads, format)
                    print(f"| {name} | {seed} | GRPO credit={credit} | {score:.3f} | {failed} | "
                          f"{optimizer.state.metric_calls} | {wall:.0f} s |", flush=True)


def together_table(args) -> None:
    """prompts / LoRA / prompts → LoRA → prompts on the pipeline, scored on its held-out test split."""
    from dspyrl.data import split_examples
    from dspyrl.formats import resolve_format
    from dspyrl.lm import lm_from_spec
    from dspyrl.optim.prompts.grpo import GRPOConfig
    from dspyrl.optim.schedule import Schedule
    from dspyrl.optim.weights.grpo import LoraGRPOConfig
    from dspyrl.program_file import load_program_file
    import tempfile

    lm = lm_from_spec(args.model, temperature=0.0, max_tokens=args.max_tokens)
    format = resolve_format(args.format, lm)
    spec = load_program_file(args.program)
    train, val, test = split_examples(spec.load_examples(), seed=0)
    train, val, test = train[: args.train_limit], val[: args.val_limit], test[: args.test_limit]
    reward = spec.build_reward()
    print(f"| arm | test score | failed | wall |  ({args.program} on {args.model}, format {args.format}, prompts budget "
          f"{args.budget}, LoRA {args.steps} steps, test {len(test)} rows)")
    with dspy.context(adapter=format) if format is not None else dspy.context():
        score, failed = test_score(spec.build_program(), test, reward, lm, args.threads, format)
        print(f"| starting program | {score:.3f} | {failed} | |", flush=True)
        for phases in args.phases.split(";"):
            started = time.perf_counter()
            schedule = Schedule(reward, phases, lm=lm, format=format, run_dir=tempfile.mkdtemp(prefix="composed-"),
                                prompts=GRPOConfig(max_metric_calls=args.budget, num_threads=args.threads),
                                lora=LoraGRPOConfig(steps=args.steps, max_completion_length=args.max_tokens,
                                                    num_threads=args.threads), progress=False)
            optimized = schedule.compile(spec.build_program(), trainset=train, valset=val)
            wall = time.perf_counter() - started
            score, failed = test_score(optimized, test, reward, None, args.threads, format)
            print(f"| {phases} | {score:.3f} | {failed} | {wall:.0f} s |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    credit = sub.add_parser("credit", help="run-wide vs per-module credit on simulated pipelines (no LM)")
    credit.add_argument("--seeds", type=int, default=40)
    credit.add_argument("--steps", default="2,3", help="predictors per simulated program, comma-separated")
    credit.add_argument("--candidates", type=int, default=4, help="instruction candidates per predictor")
    credit.add_argument("--budget", type=int, default=160, help="metric calls per GRPO run")
    credit.add_argument("--run-lr-scale", type=float, default=2.0,
                        help="also run run-wide credit with this many times the step size (0: no such arm)")
    for name in ("programs", "together"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="smollm2")
        p.add_argument("--format", default="auto", help="the starting format of every arm (default: %(default)s)")
        p.add_argument("--budget", type=int, default=60, help="GRPO metric calls")
        p.add_argument("--max-tokens", type=int, default=48)
        p.add_argument("--threads", type=int, default=4)
        p.add_argument("--train-limit", type=int, default=None)
        p.add_argument("--val-limit", type=int, default=8)
        p.add_argument("--test-limit", type=int, default=14)
    sub.choices["programs"].add_argument("--programs", default="pipeline,draft_revise,react_agent")
    sub.choices["programs"].add_argument("--seeds", default="0")
    sub.choices["together"].add_argument("--program", default="pipeline")
    sub.choices["together"].add_argument("--steps", type=int, default=6, help="LoRA GRPO steps")
    sub.choices["together"].add_argument("--phases", default="prompts;lora;prompts,lora,prompts",
                                         help="schedules to compare, ';'-separated")
    args = parser.parse_args(argv)
    {"credit": credit_table, "programs": programs_table, "together": together_table}[args.part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
