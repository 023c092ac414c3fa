"""Prompt optimizers side by side at the same metric-call budget, on the embedded model (or any --model): the benchmark
that decides whether dspyrl's GRPO earns its result (issue 14).

    python benchmarks/prompt_opt.py                       # the full size: 4 families x 3 seeds x 5 optimizers x 2 passes
    python benchmarks/prompt_opt.py --seeds 0,1 --budget 60 --val-limit 8 --test-limit 16   # scaled down

Task families (FAMILIES: one ready program each, all our own data):
    classification       sentiment   single-label (Literal output); saturated: every optimizer with our format: 1.000
    topic_classification topic       single-label over 5 labels (the headlines of topic_cot, answered without reasoning)
    cot_classification   topic_cot   dspy.ChainOfThought over a 5-way Literal label
    extraction           extract     multi-field str + int extraction
    xml_math             math_xml    <reasoning>/<answer> word problems (format + correctness reward)
    composed             pipeline    two predictors: extract the product, then route it (the second reads the first)
For each family and seed the examples are split once into train / val / test (dspyrl.data.split_examples); every
optimizer learns on train, selects on val, and is scored on test, which none of them sees while optimizing. Compared:
    grpo    dspyrl.GRPO (max_metric_calls = budget); starts from DSPy's ChatAdapter and may pin a format per predictor
    bfrs    dspy.BootstrapFewShotWithRandomSearch (number of candidate programs sized to the budget)
    mipro   dspy.MIPROv2, light-style (3 candidates, no minibatching, trials sized to the budget)
    gepa    dspy.GEPA (max_metric_calls = budget; the task model also reflects, as our proposer does by default)
    simba   dspy.SIMBA (steps sized to the budget)
Two passes separate "the format lever" from "the optimizer":
    default   every DSPy optimizer on DSPy's default format (ChatAdapter): what a user gets
    fixed     every DSPy optimizer given our best fixed format for the family through dspy.context(adapter=...):
              of "auto" (constrained choice for label-only predictors, schema-constrained JSON for the others, on a
              local model) and compact, the one the starting program scores better with on the valset
GRPO runs in each pass from the same starting program as the others (ChatAdapter in default, our fixed format in
fixed) and may still pin another format per predictor: in the fixed pass its budget goes to demos and instructions
from where the DSPy optimizers start, not to finding the format they were handed. (Results files of 2026-12-04 and
earlier hold one GRPO run from ChatAdapter, pass "both"; a pass's own GRPO row, merged in, replaces it.)
Only GRPO, GEPA take a metric-call budget directly; BFRS, MIPROv2 and SIMBA are sized to it from their cost model. The
table shows what each really spent (metric calls, LM calls, wall time around compile only). Each optimizer starts
from an empty LM cache. A crash (MIPROv2 is known to on unparseable proposals from a 135M model) is a row.
Per family: mean test score over seeds with its range, and a paired test (per test row, pooled over seeds) of GRPO
against the best other optimizer of that pass.
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

# family -> ready program; a new family is one more entry
FAMILIES = {"classification": "sentiment", "topic_classification": "topic", "cot_classification": "topic_cot",
            "extraction": "extract", "xml_math": "math_xml", "composed": "pipeline"}
OPTIMIZERS = ("grpo", "bfrs", "mipro", "gepa", "simba")
PASSES = ("default", "fixed")


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
    def __init__(self):
        self.lm_calls, self._lock = 0, threading.Lock()

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            self.lm_calls += 1


def run_optimizer(name: str, student, train, val, metric: CountingReward, lm, budget: int, seed: int, threads: int,
                  grpo_settings: dict, details: dict):
    if name == "grpo":
        # `details` gets how GRPO spent its budget and how far its result is from the start (GRPOState.outcome, as in
        # `dspyrl optimize`'s summary.json); filled in `finally`, so a run that crashes part-way still reports them
        from dspyrl.optim.prompts.grpo import GRPO

        grpo = GRPO(metric, lm=lm, max_metric_calls=budget, seed=seed, num_threads=threads, progress=False,
                    **grpo_settings)
        try:
            return grpo.compile(student, trainset=train, valset=val)
        finally:
            if grpo.state is not None:
                # each validated prompt's verdict with the valset mean of the rows it was scored on (a minibatch, or
                # the whole valset): how close the rejected candidates came
                details.update(grpo.state.outcome(), verdicts=[
                    {"verdict": r["verdict"], "rows": len(r["scores"]), "complexity": r.get("complexity"),
                     "mean": sum(r["scores"].values()) / len(r["scores"]) if r["scores"] else None}
                    for r in grpo.state.val_history])
    if name == "bfrs":
        # cost ≈ (N + 3)·|val| evaluations + (N + 1) bootstrap passes over the trainset
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
                            max_errors=10**6).compile(student, trainset=train, valset=val, num_trials=trials,
                                                      minibatch=False)
    if name == "gepa":
        return dspy.GEPA(metric=metric.metric, max_metric_calls=budget,
                         reflection_lm=lm.copy(temperature=1.0, max_tokens=256), num_threads=threads, seed=seed,
                         track_stats=False).compile(student, trainset=train, valset=val)
    if name == "simba":
        # measured cost ≈ steps · bsize · (2·candidates + 4): trajectories, candidate scores and the step's baseline
        bsize = max(2, min(4, len(train)))
        candidates = 3
        steps = max(1, budget // (bsize * (2 * candidates + 4)))
        return dspy.SIMBA(metric=metric.metric, bsize=bsize, num_candidates=candidates, max_steps=steps,
                          num_threads=threads).compile(student, trainset=train, seed=seed)
    raise ValueError(f"unknown optimizer {name}")


def fixed_format(program, val, reward, lm, threads: int):
    """Our best fixed format for the family, measured: the starting program scored on the valset (never the test
    split) in each of our formats — "auto" (constrained choice for label-only predictors, schema-constrained JSON for
    the others; on an LM that can take constrained decoding) and compact — the better kept, a tie to "auto".
    Returns (format, {name: val mean})."""
    from dspyrl.formats import AutoFormat, CompactAdapter, guided_choice_route

    candidates = {"auto": AutoFormat} if guided_choice_route(lm) is not None else {}
    candidates["compact"] = CompactAdapter
    scored = {}
    for name, make in candidates.items():
        scores, _ = test_scores(program, val, reward, lm, threads, make())
        scored[name] = sum(scores) / len(scores)
    best = max(scored, key=scored.get)  # the first of equals: "auto"
    return candidates[best](), scored


def describe(program) -> dict | None:
    """What an optimizer settled on, per predictor: the pinned format (None: the shared one), instruction, demos."""
    if program is None:
        return None
    out = {}
    for name, predictor in program.named_predictors():
        outputs = list(predictor.signature.output_fields)
        out[name] = {"format": getattr(predictor, "dspyrl_format", None), "instruction": predictor.signature.instructions,
                     "demos": [{k: str(d.get(k))[:60] for k in outputs} for d in predictor.demos]}
    return out


def test_scores(program, test, reward, lm, threads: int, format) -> tuple[list[float], int]:
    from dspyrl.rollout import run_rollouts

    batch = run_rollouts(program, test, reward, lm=lm, num_threads=threads, progress=False, format=format,
                         max_errors=10**6)
    return [float(r.reward.total) for r in batch.rollouts], batch.failures


def summarize(results: list[dict], pass_name: str, console, title: str) -> list[dict]:
    """One table per pass: per family and optimizer, mean test score [min, max] over seeds; then GRPO against the best
    other optimizer of the family, paired per test row over all seeds."""
    from rich.table import Table

    from dspyrl.compare.stats import paired_statistics

    own = {(r["family"], r["seed"], r["optimizer"]) for r in results if r["pass"] == pass_name}
    rows = [r for r in results if r["pass"] == pass_name
            or (r["pass"] == "both" and (r["family"], r["seed"], r["optimizer"]) not in own)]
    table = Table(title=title)
    for column in ("family", "optimizer", "test mean", "range", "seeds", "crashed", "metric calls", "LM calls",
                   "wall / run", "note"):
        table.add_column(column, justify="left" if column in ("family", "optimizer", "note") else "right")
    verdicts = []
    for family in dict.fromkeys(r["family"] for r in rows):
        by_optimizer: dict[str, list[dict]] = {}
        for r in rows:
            if r["family"] == family:
                by_optimizer.setdefault(r["optimizer"], []).append(r)
        means = {}
        for name, runs in by_optimizer.items():
            ok = [r for r in runs if r["scores"] is not None]
            scores = [sum(r["scores"]) / len(r["scores"]) for r in ok if r["scores"]]
            means[name] = sum(scores) / len(scores) if scores else float("nan")
            notes = "; ".join(sorted({r["note"][:60] for r in runs if r["note"]}))
            table.add_row(family, name, f"{means[name]:.3f}" if scores else "-",
                          f"{min(scores):.3f}–{max(scores):.3f}" if scores else "-", str(len(runs)),
                          str(len(runs) - len(ok)), f"{sum(r['metric_calls'] for r in runs) / len(runs):.0f}",
                          f"{sum(r['lm_calls'] for r in runs) / len(runs):.0f}",
                          f"{sum(r['wall_s'] for r in runs) / len(runs):.0f} s", notes)
        # "grpo <label>" rows (an earlier commit's GRPO, merged in for a before/after) are not rivals
        others = {n: m for n, m in means.items() if not n.startswith("grpo") and n != "starting program" and m == m}
        if "grpo" in by_optimizer and others:
            best = max(others, key=others.get)
            grpo = {r["seed"]: r for r in by_optimizer["grpo"] if r["scores"]}
            rival = {r["seed"]: r for r in by_optimizer[best] if r["scores"]}
            seeds = sorted(set(grpo) & set(rival))
            a = [x for s in seeds for x in rival[s]["scores"]]
            b = [x for s in seeds for x in grpo[s]["scores"]]
            if len(a) >= 2:
                stats = paired_statistics(a, b, names=(best, "grpo"))
                verdicts.append({"family": family, "pass": pass_name, "best_other": best, "grpo": means["grpo"],
                                 "best_other_mean": others[best], "verdict": stats.verdict,
                                 "mean_diff": stats.mean_diff, "ci": [stats.ci_low, stats.ci_high],
                                 "p_value": stats.p_value})
    console.print(table)
    for v in verdicts:
        console.print(f"  {v['family']}: GRPO {v['grpo']:.3f} vs best other ({v['best_other']}) "
                      f"{v['best_other_mean']:.3f} — {v['verdict']}")
    return verdicts


def read_proposals(count: int, lm, families: list[str], console, max_tokens: int = 160) -> dict:
    """Ask the task model for `count` instructions (as GRPO's proposer does, from scored examples of each family's
    starting program), print every completion with the filter's verdict, and count the share that would reach the
    policy. The person reading them says how many of the accepted ones are garbage."""
    from dspyrl.data import split_examples
    from dspyrl.optim.prompts.propose import InstructionProposer, ScoredCall
    from dspyrl.program_file import load_program_file

    proposer = InstructionProposer(num_proposals=2, max_tokens=max_tokens)
    specs = [load_program_file(FAMILIES[f]) for f in families]
    printed, round_id = 0, 0
    while printed < count:
        spec = specs[round_id % len(specs)]
        name, predictor = next(iter(spec.build_program().named_predictors()))
        train, _, _ = split_examples(spec.load_examples(), seed=round_id)
        calls = [ScoredCall({k: ex[k] for k in predictor.signature.input_fields},
                            {k: ex[k] for k in predictor.signature.output_fields if k in ex},
                            float(i % 2), 1.0 if i % 2 else -1.0) for i, ex in enumerate(train[:4])]
        original = predictor.signature.instructions
        proposer.propose(predictor.signature, original, calls, rollout_id=round_id, lm=lm, seed=round_id,
                         original=original, task_lm=lm)
        for text, reason in proposer.stats.last:
            printed += 1
            verdict = "ACCEPTED" if not reason else f"rejected: {reason}"
            console.print(f"[{printed:2d}] {spec.name} — {verdict}\n     {' '.join(text.split())[:400]!r}",
                          markup=False)
        round_id += 1
    stats = proposer.stats.to_json()
    console.print(f"proposals: {stats['accepted']} of {stats['asked']} reach the policy; rejected by reason: "
                  f"{stats['rejected']}", markup=False)
    return stats


def print_merged(paths: list[str], out: str | None) -> int:
    """The tables of several --json files as one run's: the same rows, the same paired tests."""
    from rich.console import Console

    console = Console(width=190)
    results, argvs = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        results += data["runs"] if isinstance(data, dict) else data  # a finished run, or one cut off mid-way
        argvs.append(" ".join(data.get("argv", [])) if isinstance(data, dict) else f"{path} (unfinished)")
    console.print("[bold]merged runs:[/bold]\n  " + "\n  ".join(argvs))
    # one row per (family, seed, optimizer, pass): every run records the starting program of the seeds it ran, and two
    # files of one seed would otherwise count it twice; a later file's different row replaces the earlier one, said so
    rows: dict[tuple, dict] = {}
    for row in results:
        key = (row["family"], row["seed"], row["optimizer"], row["pass"])
        if key in rows and rows[key]["scores"] != row["scores"]:
            console.print(f"  {key}: the later file's row replaces an earlier one with other scores")
        rows[key] = row
    results = list(rows.values())
    verdicts = []
    for pass_name in PASSES:
        if any(r["pass"] == pass_name for r in results):
            verdicts += summarize(results, pass_name, console, f"pass '{pass_name}' (merged)")
    if out:
        Path(out).write_text(json.dumps({"runs": results, "verdicts": verdicts, "merged": argvs}, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--passes", default=",".join(PASSES), help="default (DSPy's format), fixed (our best format)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--budget", type=int, default=150, help="metric calls per optimizer run (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the split and the optimizers")
    parser.add_argument("--split", default="0.5,0.2,0.3",
                        help="train,val,test fractions of each family's rows (default: %(default)s). DSPy advises "
                             "prompt optimizers more validation than training (MIPROv2 splits a lone trainset 20/80): "
                             "a 12-row valset cannot tell a 1–2 row gain from noise")
    parser.add_argument("--test-limit", type=int, default=None, help="score on at most N test rows")
    parser.add_argument("--train-limit", type=int, default=None, help="use at most N train rows")
    parser.add_argument("--val-limit", type=int, default=None, help="use at most N val rows")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96, help="completion limit of the task model")
    parser.add_argument("--grpo", default="", help="GRPOConfig settings for GRPO, e.g. batch_size=2,val_minibatch=3")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--json-fallback", action="store_true",
                        help="let ChatAdapter retry unparseable answers with JSONAdapter in the default pass (default: "
                             "off for every optimizer alike: on a small model the retry doubles the cost and rarely "
                             "parses either)")
    parser.add_argument("--read-proposals", type=int, default=0,
                        help="instead of the benchmark: print N instruction proposals of the task model for the "
                             "chosen families with the filters' verdicts, and the share that reaches the policy")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of running: print the tables of earlier runs' --json files together (runs "
                             "split across processes, e.g. one family or seed each)")
    args = parser.parse_args(argv)
    if args.merge:
        return print_merged(args.merge, args.json)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)

    from rich.console import Console

    from dspyrl.data import split_examples
    from dspyrl.errors import ConfigError
    from dspyrl.lm import lm_from_spec
    from dspyrl.program_file import load_program_file

    fractions = tuple(float(f) for f in args.split.split(","))
    grpo_settings = {}
    for item in filter(None, args.grpo.split(",")):
        key, value = item.split("=", 1)
        grpo_settings[key] = json.loads(value) if value not in ("True", "False") else value == "True"
    console = Console(width=190)
    console.print(f"[bold]run:[/bold] {' '.join(sys.argv)}")
    console.print(f"  families {args.families}; optimizers {args.optimizers}; passes {args.passes}; seeds {args.seeds}; "
                  f"budget {args.budget} metric calls; model {args.model} (max_tokens {args.max_tokens}); split "
                  f"{args.split}, limits train {args.train_limit} / val {args.val_limit} / test {args.test_limit}; GRPO {grpo_settings or 'defaults'}")
    lm = lm_from_spec(args.model, temperature=0.0, max_tokens=args.max_tokens)
    if args.read_proposals:
        read_proposals(args.read_proposals, lm, args.families.split(","), console)
        return 0
    chat = dspy.ChatAdapter(use_json_adapter_fallback=args.json_fallback)
    passes = args.passes.split(",")
    results: list[dict] = []

    def record(**row):
        results.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    for family in args.families.split(","):
        try:
            spec = load_program_file(FAMILIES[family])
        except ConfigError as err:
            console.print(f"{family}: program {FAMILIES[family]} not available ({err}); skipped")
            continue
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, val, test = split_examples(spec.load_examples(), seed=seed, fractions=fractions)
            train, val, test = train[: args.train_limit], val[: args.val_limit], test[: args.test_limit]
            reward = spec.build_reward()
            fixed, measured = fixed_format(spec.build_program(), val, reward, lm, args.threads)
            console.print(f"{family} seed {seed}: our best fixed format on the valset {measured} -> "
                          f"{type(fixed).__name__}")
            formats = {"default": chat, "fixed": fixed}
            for pass_name in passes:
                scores, failed = test_scores(spec.build_program(), test, reward, lm, args.threads, formats[pass_name])
                console.print(f"{family} seed {seed} ({pass_name}: {type(formats[pass_name]).__name__}): "
                              f"{len(train)}/{len(val)}/{len(test)} rows, starting program test "
                              f"{sum(scores) / len(scores):.3f} ({failed} failed)")
                record(family=family, seed=seed, optimizer="starting program", scores=scores, failed=failed,
                       metric_calls=0, lm_calls=0, wall_s=0.0, note="", prompts=None, **{"pass": pass_name})
            for name in args.optimizers.split(","):
                for pass_name in passes:
                    format = formats[pass_name]
                    student = spec.build_program()
                    counting, counter = CountingReward(reward), CallCounter()
                    dspy.cache.reset_memory_cache()
                    started, note, details = time.perf_counter(), "", {}
                    try:
                        with dspy.context(lm=lm, callbacks=[counter], adapter=format):
                            optimized = run_optimizer(name, student, train, val, counting, lm, args.budget, seed,
                                                      args.threads, grpo_settings, details)
                    except Exception as err:  # a crashing optimizer is a result, not the end of the benchmark
                        optimized, note = None, f"crashed: {type(err).__name__}: {' '.join(str(err).split())[:100]}"
                        traceback.print_exc()
                    wall = time.perf_counter() - started
                    scores, failed = (test_scores(optimized, test, reward, lm, args.threads, format) if optimized
                                      else (None, 0))
                    mean = f"{sum(scores) / len(scores):.3f}" if scores else "-"
                    console.print(f"  {name} ({pass_name}): test {mean} ({failed} failed), {counting.calls} metric "
                                  f"calls, {counter.lm_calls} LM calls, {wall:.0f} s {note}")
                    if details:  # GRPO counts failed runs too (as GEPA does); the reward is not called on those
                        console.print(f"    GRPO's own count: {details['metric_calls']} metric calls, split "
                                      f"{details['budget_split']}, {details['steps']} steps, stopped: "
                                      f"{details['stopped']}; proposals {details['proposals']}; result − start on "
                                      f"the valset {details['val_vs_start']}", markup=False)
                    record(family=family, seed=seed, optimizer=name, scores=scores, failed=failed,
                           metric_calls=counting.calls, lm_calls=counter.lm_calls, wall_s=wall, note=note,
                           prompts=describe(optimized), train=len(train), val=len(val), test=len(test),
                           budget=args.budget, grpo_run=details or None, **{"pass": pass_name})

    verdicts = []
    for pass_name in passes:
        label = ("DSPy optimizers on DSPy's default format (ChatAdapter)" if pass_name == "default" else
                 "DSPy optimizers given our best fixed format (auto or compact, measured on the valset)")
        verdicts += summarize(results, pass_name, console,
                              f"pass '{pass_name}': {label}; GRPO learns its format; budget {args.budget} metric "
                              f"calls, {args.model}, seeds {args.seeds}, held-out test split")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "verdicts": verdicts, "argv": sys.argv}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
