"""Rewards that scale, measured on the embedded SmolLM2-135M-Instruct (task model AND judge), on CPU.

(a) judge:  on `sentiment` (exact reward: the truth is known) the program runs G times per example at temperature 1.0;
            the same SmolLM2 judge (rubric only, no reference answer shown) scores the outputs per sample, per group
            (one call per group, plus its reversed re-ask) and pairwise (both orders); judge-check prints agreement
            with the exact reward, ties, position bias, two-order consistency and judge calls/tokens per group.
(b) steps:  on `summarize` (a judged program) one prompt-GRPO step's rollouts (batch × G) are scored with its
            faithfulness judge in each mode: judge calls and tokens per GRPO step, and the agreement of the two modes
            with the program's offline proxy (token F1 against the reference summary).
(c) grpo:   prompt GRPO on sentiment trained against the per-sample judge and against the group judge (same budget,
            same seed), and against the exact reward as the ceiling; the held-out test split is scored with the EXACT
            reward, so what each judge did for the optimized program is measured against the truth.
(d) rm:     a Bradley–Terry reward model (TRL RewardTrainer + LoRA on SmolLM2) trained on our own pairs — sentiment's
            train rows with the right label chosen and the wrong one rejected — with its held-out pairwise accuracy
            (prompts never trained on); then LoRA GRPO on sentiment against it, test split scored with the exact reward
            before and after.

    flock /tmp/dspyrl-bench.lock .venv/bin/python benchmarks/rewards.py                 # all parts, scaled (~10 min)
    flock /tmp/dspyrl-bench.lock .venv/bin/python benchmarks/rewards.py --part judge --examples 16 --group-size 4

Every size is a flag; the defaults are scaled down to fit a ~10-minute share of a shared 2-core machine and the table
says so. The load average is printed: timings move with the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTIMENT_RUBRIC = "The label is the correct sentiment of the review: positive for a favourable review, negative otherwise."


def log(*parts):
    print(*parts, flush=True)


MODEL = "smollm2"  # --model: a tiny test model folder checks the script's paths in seconds


def judge_lm(max_tokens: int):
    from dspyrl.lm import local_lm

    return local_lm(MODEL, max_tokens=max_tokens, temperature=0.0)


def judge_format(lm):
    """The judge's format in every mode: `auto` (dspyrl's grammar-constrained structured format on a local model).
    With DSPy's ChatAdapter SmolLM2 never wrote a parseable list of per-candidate scores (it explains the type
    instead); under the grammar every reply parses, so what is measured is the judge's judgement, not its formatting."""
    from dspyrl.formats import resolve_format

    return resolve_format("auto", lm)


def task_lm(temperature: float = 1.0, max_tokens: int = 16):
    from dspyrl.lm import local_lm

    return local_lm(MODEL, max_tokens=max_tokens, temperature=temperature)


def sentiment_split(seed: int = 0):
    from dspyrl.data import split_examples
    from dspyrl.program_file import load_program_file

    spec = load_program_file("sentiment")
    train, val, test = split_examples(spec.load_examples(), seed=seed)
    return spec, train, val, test


def exact_score(program, examples, spec, lm, fmt) -> tuple[float, int]:
    from dspyrl.rollout import run_rollouts

    batch = run_rollouts(program, examples, spec.build_reward(), lm=lm, format=fmt, progress=False, num_threads=4)
    return batch.mean_reward(), batch.failures


# ----------------------------------------------------------------------------------------------- (a) judge check
def part_judge(args) -> dict:
    from dspyrl.formats import resolve_format
    from dspyrl.rewards.judge import RewardModule
    from dspyrl.rewards.judge_check import check_judge, labelled_groups
    from dspyrl.rollout import run_rollouts

    spec, train, _, _ = sentiment_split()
    examples = train[: args.examples]
    lm = task_lm()
    started = time.perf_counter()
    batch = run_rollouts(spec.build_program(), examples, spec.build_reward(), group_size=args.group_size, lm=lm,
                         format=resolve_format("auto", lm), progress=False, seed=0)
    groups = labelled_groups(batch, examples)
    jlm = judge_lm(args.judge_tokens)
    judge = RewardModule(SENTIMENT_RUBRIC, judge_lm=jlm, output_fields=["sentiment"], retries=1, format=judge_format(jlm))
    report = check_judge(judge, groups, pairs_per_group=1, seed=0)
    report["wall_s"] = time.perf_counter() - started
    log(f"\n(a) judge check on sentiment: {report['groups']} groups of {args.group_size} "
        f"({report['outputs']} outputs), reference ties {report['reference_ties']:.2f}; task exact mean "
        f"{batch.mean_reward():.3f}; {report['wall_s']:.0f} s")
    from dspyrl.cli.judge_check import report_table
    from rich.console import Console

    Console(width=140).print(report_table(report))
    return report


# ----------------------------------------------------------------------------------------------- (b) calls per step
def part_steps(args) -> dict:
    from dspyrl.program_file import load_program_file
    from dspyrl.rewards.combine import WeightedReward
    from dspyrl.rewards.judge import RewardModule, judges_in
    from dspyrl.rewards.judge_check import _agreement
    from dspyrl.rollout import run_rollouts

    spec = load_program_file("summarize")
    examples = spec.load_examples()[: args.step_examples]
    lm = task_lm(max_tokens=48)
    jlm = judge_lm(args.judge_tokens)
    proxy = spec.build_reward(judge_lm=None)
    out = {}
    for mode in ("sample", "group"):
        reward = spec.build_reward(judge_lm=jlm)
        judge = judges_in(reward)["faithful"]
        judge.mode, judge.format = mode, judge_format(jlm)
        started = time.perf_counter()
        batch = run_rollouts(spec.build_program(), examples, reward, group_size=args.group_size, lm=lm, progress=False,
                             seed=1, format=None)
        wall = time.perf_counter() - started
        scored = [r for r in batch.rollouts if r.error is None]
        by_example: dict[int, tuple[list, list]] = {}
        for r in scored:
            s, p = by_example.setdefault(r.example_index, ([], []))
            s.append(r.reward.components.get("faithful", 0.0))
            p.append(proxy(examples[r.example_index], r.prediction).components.get("faithful", 0.0))
        agreement = _agreement([v[0] for v in by_example.values()], [v[1] for v in by_example.values()])
        st = judge.stats
        out[mode] = {"judge_calls": st.lm_calls, "judge_tokens": st.prompt_tokens + st.completion_tokens,
                     "judge_failures": st.failures, "task_calls": batch.lm_calls, "task_tokens": batch.tokens,
                     "scored_outputs": len(scored), "wall_s": wall, **agreement}
        _ = WeightedReward  # (the program's reward is a WeightedReward: brevity + the judge)
    log(f"\n(b) one prompt-GRPO step on summarize: {args.step_examples} examples × G={args.group_size}, SmolLM2 "
        f"as task model and faithfulness judge")
    log(f"{'':28}{'per-sample':>14}{'group':>14}{'ratio g/s':>11}")
    for key in ("judge_calls", "judge_tokens", "judge_failures", "task_calls", "task_tokens", "wall_s",
                "pairwise_accuracy", "spearman"):
        a, b = out["sample"].get(key), out["group"].get(key)
        ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "—"
        log(f"{key:28}{_f(a):>14}{_f(b):>14}{ratio:>11}")
    log("  (agreement here is with summarize's token-F1 proxy, a weak truth; (a) has the exact one)")
    return out


# ----------------------------------------------------------------------------------------------- (c) prompt GRPO
def part_grpo(args) -> dict:
    import dspyrl
    from dspyrl.formats import resolve_format
    from dspyrl.rewards.judge import RewardModule

    import dspy

    spec, train, val, test = sentiment_split()
    lm = task_lm(temperature=0.0, max_tokens=16)
    # "compact": the format is fixed (not a slot of the policy) and the start is not saturated, so what GRPO learns
    # (demo sets) depends on the reward; under "auto" (constrained choice) SmolLM2 starts at 100% and no judge matters
    fmt = resolve_format(args.grpo_format, lm)
    out = {}
    base, _ = exact_score(spec.build_program(), test, spec, lm, fmt)
    out["baseline"] = {"test_exact": base}
    for name in ("exact", "judge-sample", "judge-group"):
        if name == "exact":
            reward, judge = spec.build_reward(), None
        else:
            jlm = judge_lm(args.judge_tokens)
            judge = RewardModule(SENTIMENT_RUBRIC, judge_lm=jlm, output_fields=["sentiment"], retries=1,
                                 mode=name.split("-")[1], format=judge_format(jlm))
            reward = judge
        started = time.perf_counter()
        optimizer = dspyrl.GRPO(reward, lm=lm, max_metric_calls=args.budget, group_size=args.group_size, batch_size=4,
                                propose_every=0, eval_every=0, seed=0, temperature=1.0, progress=False,
                                learn_format=args.grpo_format == "auto", run_dir=str(Path(args.tmp) / f"grpo-{name}"))
        with dspy.context(adapter=fmt):
            optimized = optimizer.compile(spec.build_program(), trainset=train, valset=val[: args.val])
        wall = time.perf_counter() - started
        score, failures = exact_score(optimized, test, spec, lm, fmt)  # same base format as the baseline
        out[name] = {"test_exact": score, "test_failures": failures, "wall_s": wall,
                     "judge_calls": judge.stats.lm_calls if judge else 0,
                     "judge_tokens": (judge.stats.prompt_tokens + judge.stats.completion_tokens) if judge else 0}
    learned = "format + demo sets" if args.grpo_format == "auto" else f"demo sets only, format fixed: {args.grpo_format}"
    log(f"\n(c) prompt GRPO on sentiment, budget {args.budget} metric calls, G={args.group_size}, no instruction "
        f"proposals ({learned}), val {args.val} rows; test {len(test)} rows scored EXACTLY")
    log(f"{'reward trained on':20}{'test exact':>12}{'judge calls':>13}{'judge tokens':>14}{'wall s':>9}")
    for name, row in out.items():
        log(f"{name:20}{_f(row['test_exact']):>12}{_f(row.get('judge_calls')):>13}{_f(row.get('judge_tokens')):>14}"
            f"{_f(row.get('wall_s')):>9}")
    return out


# ----------------------------------------------------------------------------------------------- (d) reward model
def part_rm(args) -> dict:
    import dspyrl
    from dspyrl.formats import CompactAdapter
    from dspyrl.rewards.reward_model import (RewardModel, RewardModelConfig, example_prompt, train_reward_model)

    spec, train, val, test = sentiment_split()
    other = {"positive": "negative", "negative": "positive"}
    pairs = [{"prompt": example_prompt(e), "chosen": e.sentiment, "rejected": other[e.sentiment]} for e in train + val]
    started = time.perf_counter()
    result = train_reward_model(pairs, RewardModelConfig(model=MODEL, out=str(Path(args.tmp) / "rm"),
                                                         steps=args.rm_steps, batch_size=8, held_out=0.3,
                                                         learning_rate=5e-4, force=True), progress=False)
    rm_wall = time.perf_counter() - started
    out = {"rm": result.to_json()}
    log(f"\n(d) reward model on SmolLM2 from {len(pairs)} own pairs (sentiment train+val rows, right label vs wrong), "
        f"{args.rm_steps} steps: held-out pairwise accuracy {result.held_out_accuracy:.3f} on "
        f"{result.held_out_pairs} unseen prompts (untrained head {result.accuracy_before:.3f}), {rm_wall:.0f} s")
    if args.lora_steps:
        lm = task_lm(temperature=0.0, max_tokens=16)
        fmt = CompactAdapter()
        reward = RewardModel(result.path)
        before, _ = exact_score(spec.build_program(), test, spec, lm, fmt)
        started = time.perf_counter()
        optimizer = dspyrl.LoraGRPO(reward, steps=args.lora_steps, num_generations=4, max_completion_length=16,
                                    learning_rate=3e-4, beta=0.0, run_dir=str(Path(args.tmp) / "lora-rm"),
                                    lm=lm, format=fmt, progress=False)
        optimized = optimizer.compile(spec.build_program(), trainset=train)
        after, failures = exact_score(optimized, test, spec, lm, fmt)  # its predictors carry the adapter's LM
        out["lora"] = {"test_exact_before": before, "test_exact_after": after, "after_failures": failures,
                       "wall_s": time.perf_counter() - started, "rm_forward_passes": reward.forward_passes,
                       "rm_scored": reward.scored}
        log(f"    LoRA GRPO against it, {args.lora_steps} steps × 4 completions: test exact {before:.3f} → {after:.3f} "
            f"({len(test)} rows); the reward model ran {reward.forward_passes} batched passes for {reward.scored} "
            f"completions; {out['lora']['wall_s']:.0f} s")
    return out


def _f(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "judge", "steps", "grpo", "rm"), default="all")
    parser.add_argument("--examples", type=int, default=6, help="(a) examples")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--judge-tokens", type=int, default=256, help="judge completion limit")
    parser.add_argument("--step-examples", type=int, default=4, help="(b) examples per GRPO step")
    parser.add_argument("--budget", type=int, default=32, help="(c) prompt-GRPO metric calls")
    parser.add_argument("--val", type=int, default=4, help="(c) validation rows")
    parser.add_argument("--grpo-format", choices=("compact", "auto"), default="compact",
                        help="(c) the task format: compact, fixed (the start is not saturated), or auto, learned")
    parser.add_argument("--rm-steps", type=int, default=30, help="(d) reward-model steps")
    parser.add_argument("--lora-steps", type=int, default=8, help="(d) LoRA GRPO steps against the reward model (0: skip)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2", help="task model, judge and reward-model base")
    parser.add_argument("--tmp", default="/tmp/dspyrl-bench-rewards")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    import logging

    # one warning per completion cut at max_tokens buries the tables (the CLI filters it the same way)
    logging.getLogger("dspy.clients.lm").addFilter(lambda r: not str(r.msg).startswith("LM response was truncated"))
    import litellm
    import torch

    litellm.suppress_debug_info = True  # its "Provider List" banner for every local model name it does not know
    torch.set_num_threads(args.torch_threads)
    import shutil

    shutil.rmtree(args.tmp, ignore_errors=True)  # run folders of an earlier run would be refused
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    log(f"benchmarks/rewards.py — load average {os.getloadavg()[0]:.1f}; SCALED to a ~10-minute CPU share: "
        f"{args.examples} examples × G={args.group_size} in (a), {args.step_examples} × G in (b), budget {args.budget} "
        f"in (c), {args.rm_steps} RM steps and {args.lora_steps} LoRA steps in (d)")
    results, started = {}, time.perf_counter()
    parts = {"judge": part_judge, "steps": part_steps, "grpo": part_grpo, "rm": part_rm}
    for name, run in parts.items():
        if args.part in ("all", name):
            t = time.perf_counter()
            results[name] = run(args)
            log(f"  [{name}: {time.perf_counter() - t:.0f} s]")
    log(f"\ntotal {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
