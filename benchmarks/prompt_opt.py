"""Prompt optimizers side by side at the same metric-call budget, on the embedded model (or any --model).

    python benchmarks/prompt_opt.py --programs sentiment,math_xml --budget 150 --seeds 0,1

For each program and seed the examples are split once into train / val / test (dspyrl.data.split_examples); every
optimizer learns on train, selects on val, and is scored on test, which none of them sees while optimizing. Compared:
    grpo    dspyrl.GRPO (max_metric_calls = budget)
    bfrs    dspy.BootstrapFewShotWithRandomSearch (number of candidate programs sized to the budget)
    mipro   dspy.MIPROv2, light-style (3 candidates, no minibatching, trials sized to the budget)
    gepa    dspy.GEPA (max_metric_calls = budget; the task model also reflects, as our proposer does by default)
Only GRPO and GEPA take a metric-call budget directly; BFRS and MIPROv2 are sized to it from their known cost model. The
table shows what each really spent: program runs (GEPA's budget unit: every run of the program on an example, failed
ones included), metric calls (runs that reached the metric: a run whose output did not parse never does), LM calls
(DSPy callback, cache hits included) and wall time around compile only. Each optimizer starts from an empty LM cache
and all start from the same format (ChatAdapter, no JSON retry unless --json-fallback), so none gets another's answers
for free. GRPO may pin another format per predictor (its format slot: chat, json, compact, constrained choice); DSPy's
optimizers have no such lever, which is the point being measured (--grpo-fixed-format turns the slot off).
An optimizer that crashes (MIPROv2 is known to on unparseable proposals from a 135M model) gets a row saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402
from dspy.utils.callback import BaseCallback  # noqa: E402

OPTIMIZERS = ("grpo", "bfrs", "mipro", "gepa")


class CountingReward:
    """The program's reward, counting its calls (thread-safe); also usable as a DSPy metric and a GEPA metric."""

    def __init__(self, reward):
        self.reward, self.calls, self._lock = reward, 0, threading.Lock()

    def __call__(self, example, pred, trace=None):
        with self._lock:
            self.calls += 1
        return self.reward(example, pred, trace)

    def metric(self, example, pred, trace=None, *args, **kwargs) -> float:  # DSPy and GEPA metrics want a float
        result = self(example, pred, trace)
        return float(getattr(result, "total", result) or 0.0)


class CallCounter(BaseCallback):
    """Counts LM calls, and runs of the program being optimized (GEPA's budget unit: a run counts when it fails too,
    while a failed run never reaches the metric). A run is a call of a module of the student's class whose fields are
    the student's, so an optimizer's own proposer modules are not counted."""

    def __init__(self, student):
        self.lm_calls, self.program_runs, self._lock = 0, 0, threading.Lock()
        self._type, self._fields = type(student), _fields(student)

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            self.lm_calls += 1

    def on_module_start(self, call_id, instance, inputs):
        if type(instance) is self._type and _fields(instance) == self._fields:
            with self._lock:
                self.program_runs += 1


def _fields(module):
    signature = getattr(module, "signature", None)
    return tuple(signature.fields) if signature is not None else None


def run_optimizer(name: str, student, train, val, metric: CountingReward, lm, budget: int, seed: int, threads: int,
                  learn_format: bool = True):
    if name == "grpo":
        from dspyrl.optim.prompts.grpo import GRPO

        return GRPO(metric, lm=lm, max_metric_calls=budget, seed=seed, num_threads=threads, learn_format=learn_format,
                    progress=False).compile(student, trainset=train, valset=val)
    if name == "bfrs":
        # cost ≈ (N + 3)·|val| evaluations + (N + 1) bootstrap passes over the trainset (zero-shot teachers rarely
        # succeed on a small model, so a pass usually reads all of it)
        n = max(0, round((budget - 3 * len(val) - len(train)) / (len(val) + len(train))))
        return dspy.BootstrapFewShotWithRandomSearch(
            metric=metric.metric, max_bootstrapped_demos=4, max_labeled_demos=4, num_candidate_programs=n,
            num_threads=threads, max_errors=10**6).compile(student, trainset=train, valset=val)
    if name == "mipro":
        # cost ≈ (candidates - 2) bootstrap passes over the trainset + (trials + 1) full val evaluations
        candidates = 3
        trials = max(1, (budget - (candidates - 2) * len(train)) // len(val) - 1)
        return dspy.MIPROv2(metric=metric.metric, auto=None, num_candidates=candidates, num_threads=threads,
                            max_bootstrapped_demos=4, max_labeled_demos=4, seed=seed, verbose=False,
                            max_errors=10**6).compile(
            student, trainset=train, valset=val, num_trials=trials, minibatch=False)
    if name == "gepa":
        return dspy.GEPA(metric=metric.metric, max_metric_calls=budget, reflection_lm=lm.copy(temperature=1.0,
                                                                                             max_tokens=256),
                         num_threads=threads, seed=seed, track_stats=False).compile(student, trainset=train, valset=val)
    raise ValueError(f"unknown optimizer {name}")


def describe(program) -> dict | None:
    """What an optimizer settled on, per predictor: the format GRPO pinned (None: the shared format), the instruction
    and the demos' output fields."""
    if program is None:
        return None
    out = {}
    for name, predictor in program.named_predictors():
        outputs = list(predictor.signature.output_fields)
        out[name] = {"format": getattr(predictor, "dspyrl_format", None), "instruction": predictor.signature.instructions,
                     "demos": [{k: str(d.get(k))[:60] for k in outputs} for d in predictor.demos]}
    return out


def test_score(program, test, reward, lm, threads: int, format) -> tuple[float, int]:
    from dspyrl.rollout import run_rollouts

    batch = run_rollouts(program, test, reward, lm=lm, num_threads=threads, progress=False, format=format)
    return batch.mean_reward(), batch.failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", default="sentiment,math_xml")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--budget", type=int, default=150, help="metric calls per optimizer run (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (split and optimizer)")
    parser.add_argument("--test-limit", type=int, default=None, help="score on at most N test rows")
    parser.add_argument("--train-limit", type=int, default=None, help="use at most N train rows")
    parser.add_argument("--val-limit", type=int, default=None, help="use at most N val rows")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96, help="completion limit of the task model")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--adapter", default="chat", choices=("chat", "compact", "choice", "auto"),
                        help="prompt format for every optimizer alike (default: DSPy's ChatAdapter; choice/auto: "
                             "constrained choice for Literal outputs on the local model, compact format elsewhere)")
    parser.add_argument("--grpo-fixed-format", action="store_true",
                        help="GRPO keeps the shared format instead of learning the format per predictor")
    parser.add_argument("--json-fallback", action="store_true",
                        help="let ChatAdapter retry unparseable answers with JSONAdapter (default: off for every "
                             "optimizer alike: on a small model the retry doubles the cost and rarely parses either)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="keep DSPy's LM cache across optimizers (default: each one starts from an empty cache, so "
                             "none gets another's answers for free and wall times compare)")
    args = parser.parse_args(argv)
    if not args.shared_cache:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)

    from rich.console import Console
    from rich.table import Table

    from dspyrl.data import split_examples
    from dspyrl.lm import lm_from_spec
    from dspyrl.program_file import load_program_file

    console = Console(width=170)
    lm = lm_from_spec(args.model, temperature=0.0, max_tokens=args.max_tokens)
    if args.format == "chat":
        format = dspy.ChatAdapter(use_json_adapter_fallback=args.json_fallback)
    else:
        from dspyrl.formats import resolve_format

        format = resolve_format(args.format, lm)
    rows, results = [], []
    for program_name in args.programs.split(","):
        spec = load_program_file(program_name)
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, val, test = split_examples(spec.load_examples(), seed=seed)
            train, val, test = train[: args.train_limit], val[: args.val_limit], test[: args.test_limit]
            reward = spec.build_reward()
            base, base_fail = test_score(spec.build_program(), test, reward, lm, args.threads, format)
            console.print(f"{program_name} seed {seed}: {len(train)}/{len(val)}/{len(test)} rows, "
                          f"starting program test {base:.3f} ({base_fail} failed)")
            rows.append((program_name, seed, "starting program", base, base_fail, 0, 0, 0, 0.0, ""))
            for name in args.optimizers.split(","):
                student = spec.build_program()
                counting, counter = CountingReward(reward), CallCounter(student)
                if not args.shared_cache:
                    dspy.cache.reset_memory_cache()
                started, note = time.perf_counter(), ""
                try:
                    with dspy.context(lm=lm, callbacks=[counter], adapter=format):
                        optimized = run_optimizer(name, student, train, val, counting, lm, args.budget, seed,
                                                  args.threads, learn_format=not args.grpo_fixed_format)
                except Exception as err:  # a crashing optimizer is a result, not the end of the benchmark
                    optimized, note = None, f"crashed: {type(err).__name__}: {' '.join(str(err).split())[:120]}"
                    traceback.print_exc()
                wall = time.perf_counter() - started
                score, failed = test_score(optimized, test, reward, lm, args.threads, format) if optimized else (float("nan"), 0)
                row = (program_name, seed, name, score, failed, counter.program_runs, counting.calls, counter.lm_calls,
                       wall, note)
                rows.append(row)
                console.print(f"  {name}: test {score:.3f} ({failed} failed), {counter.program_runs} program runs, "
                              f"{counting.calls} metric calls, {counter.lm_calls} LM calls, {wall:.0f} s {note}")
                results.append(dict(zip(("program", "seed", "optimizer", "test_score", "test_failures", "program_runs",
                                         "metric_calls", "lm_calls", "wall_s", "note"), row),
                                    train=len(train), val=len(val), test=len(test), budget=args.budget,
                                    prompts=describe(optimized)))
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))

    table = Table(title=f"prompt optimizers at a budget of {args.budget} program runs on {args.model}, "
                        f"{type(format).__name__} (held-out test split)")
    for column in ("program", "seed", "optimizer", "test score", "test failed", "program runs", "metric calls",
                   "LM calls", "wall time", "note"):
        table.add_column(column, justify="left" if column in ("program", "optimizer", "note") else "right")
    for program_name, seed, name, score, failed, runs, calls, lm_n, wall, note in rows:
        table.add_row(program_name, str(seed), name, f"{score:.3f}", str(failed), str(runs) if wall else "",
                      str(calls) if wall else "", str(lm_n) if wall else "", f"{wall:.0f} s" if wall else "", note[:70])
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
