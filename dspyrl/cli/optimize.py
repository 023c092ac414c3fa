"""`dspyrl optimize` (and the second half of `dspyrl demo`): baseline → GRPO → optimized, scored on a held-out test split.

The program file's examples are split into train / val / test once (seeded); GRPO learns on train, selects on val, and
the test split is only touched twice, before and after, so the two scores printed are an honest before/after.
Everything lands in the run folder: config, metrics.jsonl, checkpoint, program.json and summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dspy
from rich.console import Console
from rich.table import Table

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError
from dspyrl.runs import PROGRAM, RunFolder
from dspyrl.score import score_entry, score_program
from dspyrl.cli.options import (ModelOptions, ReportOptions, RewardOptions, SpendOptions, add_settings, build_reward,
                                check_format, check_models, check_reward_options, judge_estimate, judge_lm, lm_settings, report_callbacks,
                                run_fingerprint, settings_of, task_lm)


def optimize_program(config: OptimizeConfig, *, console: Console | None = None, **grpo_settings) -> dict:
    """Run the whole story for a program file and print it; returns the summary (also saved as summary.json).

    `config.format` (a --format name, see dspyrl.formats.FORMATS) formats every run, before, during and after
    optimization; None keeps DSPy's. GRPO may still pin another format per predictor (GRPOConfig.learn_format).
    `grpo_settings` are GRPOConfig fields (max_metric_calls, group_size, ...); unset ones keep GRPOConfig's defaults."""
    from dspyrl.formats import resolve_format
    from dspyrl.data import split_examples
    from dspyrl.lm import lm_from_spec
    from dspyrl.lm.usage import UsageMeter, assign_role
    from dspyrl.optim.prompts.grpo import GRPO, GRPOConfig
    from dspyrl.program_file import load_program_file

    console = console or Console()
    seed, threads = config.seed, config.threads
    grpo_config = GRPOConfig(**{"seed": seed, "num_threads": threads, "max_cost": config.max_cost, **grpo_settings})
    spec = load_program_file(config.program)
    student = spec.build_program()
    examples = spec.load_examples()
    train, val, test = split_examples(examples, seed=seed)
    if config.estimate:  # before any folder is written or any model is loaded
        console.print(estimate_spend(config, grpo_config, student, train, val, test))
        return {"estimate": True}
    out = Path(config.out or Path("runs") / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}")
    # before the run folder is claimed and any model loads
    check_reward_options(config, judged=bool(config.judge))
    check_format(config.format, student, None)
    # claimed before any model loads; the budget and the threads may change on resume, nothing else
    fingerprint = run_fingerprint("optimize", spec, student, examples, config, ["judge", "judge_mode", "reward_model",
                                  "reflection_model", "seed", "fixed_format", "max_tokens"])
    fingerprint["grpo"] = {k: v for k, v in dataclasses.asdict(grpo_config).items()
                           if k not in ("max_metric_calls", "num_threads", "max_cost")}
    run = RunFolder(out, resume=config.resume, force=config.force, fingerprint=fingerprint)
    check_models(run, model=config.model, judge=config.judge, reflection_model=config.reflection_model)
    console.print(f"[bold]dspyrl optimize[/bold]: [cyan]{spec.name}[/cyan] on [cyan]{config.model}[/cyan] — "
                  f"{len(train)} train / {len(val)} val / {len(test)} test rows, budget "
                  f"{grpo_config.max_metric_calls} metric calls, run folder {out}")
    with console.status("loading the model…"):
        lm = task_lm(config)
        reward_judge = judge_lm(config)
        reflection_lm = assign_role(lm_from_spec(config.reflection_model, temperature=1.0, **lm_settings(config)),
                                    "reflection") if config.reflection_model else None
    reward = build_reward(spec, config, reward_judge)
    chosen_format = resolve_format(config.format, lm)
    check_format(config.format, student, lm)

    meter = UsageMeter()  # the whole command's calls, tokens and cost per role (GRPO keeps its own, for the cap)
    reporters = report_callbacks(config.report_to, out, {**dataclasses.asdict(grpo_config), "model": config.model})
    with meter.active(), dspy.context(adapter=chosen_format) if chosen_format is not None else contextlib.nullcontext():
        with console.status("scoring the starting program on the test split…"):
            before, _ = score_program(student, test, reward, lm, num_threads=threads)
        started = time.perf_counter()
        optimizer = GRPO(reward, grpo_config, lm=lm, reflection_lm=reflection_lm, run_dir=out, resume=config.resume,
                         tensorboard=config.report_to in ("tensorboard", "wandb"), callbacks=reporters)
        try:
            optimized = optimizer.compile(student, trainset=train, valset=val)
        finally:
            for reporter in reporters:
                reporter.close()
        optimize_s = time.perf_counter() - started
        state = optimizer.state
        scores = {"test_before": score_entry(before)}
        after = {"lm_calls": 0, "tokens": 0, "cost": 0.0, "wall_s": 0.0}
        if state.stopped != "cost_cap":  # at the cap, scoring the test split would spend past it (as finetune)
            with console.status("scoring the optimized program on the test split…"):
                after, _ = score_program(optimized, test, reward, lm, num_threads=threads)
            scores["test_after"] = score_entry(after)

    summary = run.write_summary({
        "command": "optimize", "program": spec.name, "model": config.model, "format": config.format,
        "data": f"{spec.name} (train/val/test split, seed {seed})", "scores": scores,
        "lm_calls": before["lm_calls"] + state.lm_calls + after["lm_calls"],
        "tokens": before["tokens"] + state.tokens + after["tokens"],
        "cost": before["cost"] + state.cost + after["cost"], "wall_s": before["wall_s"] + optimize_s + after["wall_s"],
        **state.outcome(), "usage": meter.table(), "optimize_usage": optimizer.meter.table(),
        "max_cost": config.max_cost, "optimize_wall_s": optimize_s, "program_json": str(run.file(PROGRAM))})
    run.release()
    show_story(console, summary, optimized)
    console.print(meter.summary_line())
    if state.stopped == "cost_cap":
        console.print(f"[bold]stopped at the cost cap[/bold]: GRPO spent ${optimizer.meter.cost:.4f} of "
                      f"${config.max_cost:.4f}, checkpointed, the test split not scored again; continue with --resume --out {out} "
                      "--max-cost <higher>")
    return summary


def show_story(console: Console, summary: dict, optimized) -> None:
    starting = f" (starting format: {summary['format']})" if summary.get("format") else ""
    table = Table(title=f"{summary['program']} on {summary['model']}{starting}: held-out test split")
    for column in ("program", "test score", "failed runs", "metric calls", "wall time"):
        table.add_column(column, justify="right")
    before, after = summary["scores"]["test_before"], summary["scores"].get("test_after")
    table.add_row("starting", f"{before['score']:.1%}", f"{before['failures']}/{before['n']}", "", "")
    table.add_row("GRPO-optimized", f"{after['score']:.1%}" if after else "not scored (cost cap)",
                  f"{after['failures']}/{after['n']}" if after else "", str(summary["metric_calls"]),
                  f"{summary['optimize_wall_s']:.0f} s")
    console.print(table)
    diff = summary.get("val_vs_start")
    if diff:  # the evidence GRPO selected on: paired, on the valset (the test split above is the honest score)
        console.print(f"valset, optimized − starting: {100 * diff['mean_diff']:+.1f} points "
                      f"[{100 * diff['ci_low']:+.1f}, {100 * diff['ci_high']:+.1f}] "
                      f"({diff['confidence']:.0%} paired bootstrap, n = {diff['n']}); budget: "
                      + ", ".join(f"{k} {v}" for k, v in (summary.get("budget_split") or {}).items()))
    for name, predictor in optimized.named_predictors():
        console.print(f"[bold]{name}[/bold] format: {getattr(predictor, 'dspyrl_format', None) or 'the starting one'}")
        console.print(f"[bold]{name}[/bold] instruction: {predictor.signature.instructions!r}")
        console.print(f"[bold]{name}[/bold] demos ({len(predictor.demos)}):")
        for demo in predictor.demos:
            items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
            console.print("  • " + "; ".join(f"{k}: {str(v)[:70]}" for k, v in items.items() if k != "augmented"))
    console.print(f"saved: {summary['program_json']}  (load with dspyrl.load_program(build_program(), path): "
                  "it runs with its learned format; DSPy's program.load(path) reads it too)")


def estimate_spend(config, grpo_config, student, train, val, test) -> str:
    """The expected calls, tokens and cost of `dspyrl optimize` per role, from the budget and one formatted prompt."""
    from dspyrl.lm.usage import RoleEstimate, format_estimate, prompt_tokens

    predictors = len(student.named_predictors())
    prompt = prompt_tokens(student, train[0])
    runs = grpo_config.max_metric_calls + 2 * len(test)  # GRPO's scored runs, then the test split before and after
    steps = max(1, (grpo_config.max_metric_calls - 2 * len(val)) // (grpo_config.batch_size * grpo_config.group_size))
    rounds = steps // grpo_config.propose_every if grpo_config.propose_every else 0
    rows = [RoleEstimate("task", config.model, runs * predictors, prompt, config.max_tokens),
            # a proposal prompt shows the instruction and a batch of scored runs
            RoleEstimate("reflection", config.reflection_model or config.model,
                         rounds * grpo_config.num_proposals * predictors, prompt * (1 + grpo_config.batch_size),
                         grpo_config.proposal_max_tokens)]
    if config.judge:
        validation = min(grpo_config.max_metric_calls, 2 * len(val))  # the valset's runs: one per example
        rows.append(judge_estimate(config, grpo_config.max_metric_calls - validation, grpo_config.group_size,
                                   validation + 2 * len(test), prompt))
    return format_estimate(rows, config.max_cost)


# ---------------------------------------------------------------- the command line
@dataclass(kw_only=True)
class OptimizeConfig(ModelOptions, RewardOptions, SpendOptions, ReportOptions):
    """`dspyrl optimize`'s own options; GRPO's (--budget, --group-size, --batch-size) are GRPOConfig fields."""

    program: str = setting(help="a ready program name (e.g. sentiment) or a path to a program .py file", positional=True)
    reflection_model: str | None = setting(None, "LM that writes new instructions (default: the task model; a "
                                                 "stronger one helps)")
    out: str | None = setting(None, "run folder (default: runs/<program>-<time>)")
    resume: bool = setting(False, "continue the run in --out from its last checkpoint")
    force: bool = setting(False, "write into --out even if another program, data or command made it")
    seed: int = setting(0, "seed of the data split and the optimizer", ge=0)
    fixed_format: bool = setting(False, "keep --format for every run instead of letting GRPO choose the format per "
                                        "predictor")

    def __post_init__(self):
        check_settings(self)


GRPO_OPTIONS = ["max_metric_calls", "group_size", "batch_size"]


def add_parser(sub) -> None:
    from dspyrl.optim.prompts.grpo import GRPOConfig

    p = sub.add_parser("optimize", help="optimize a program's prompts (instructions, demos) with GRPO",
                       description="Score the program on a held-out test split, optimize its prompts with GRPO on the "
                                   "train split (selecting on val), and score it again. Writes a run folder.")
    add_settings(p, OptimizeConfig, helps={"format": "starting prompt format (GRPO may learn another per predictor)"})
    add_settings(p, GRPOConfig, GRPO_OPTIONS)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    config = settings_of(OptimizeConfig, args)
    if config.resume and not config.out:
        raise ConfigError("--resume needs --out: the run folder to continue")
    optimize_program(config, **{name: getattr(args, name) for name in GRPO_OPTIONS},
                     learn_format=not config.fixed_format)
    return 0
