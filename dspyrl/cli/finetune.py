"""`dspyrl finetune`: baseline → LoRA GRPO (or DPO) on a local model → adapted, scored on a held-out test split.

The program file's examples are split into train / val / test once (seeded), as `dspyrl optimize` does; the weights
learn on train, the valset is scored before and after, and the test split is touched only twice, so the two numbers
printed are an honest before/after. The run folder gets config, metrics.jsonl, checkpoints, `adapter/` (a PEFT folder:
`dspyrl serve --model M --adapter runs/NAME/adapter` serves it), program.json and summary.json.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dspyrl.config import check_settings, setting
from dspyrl.runs import PROGRAM, RunFolder
from dspyrl.score import score_entry, score_program
from dspyrl.cli.options import (ModelOptions, ReportOptions, RewardOptions, SpendOptions, add_settings, build_reward,
                                check_models, check_reward_options, judge_estimate, judge_lm, run_fingerprint, settings_of, task_lm)

METHODS = ("grpo", "dpo")
TRAINABLE_FORMATS = ("chat", "json", "compact")  # generation formats a weights update can train on ("choice" does not generate)


def finetune_program(config: FinetuneConfig, *, console: Console | None = None, **settings) -> dict:
    """Run the whole story for a program file and print it; returns the summary (also saved as summary.json).

    `settings` are extra LoraGRPOConfig / LoraDPOConfig fields, over those `config` sets."""
    from dspyrl.formats import resolve_format
    from dspyrl.formats.per_predictor import set_format
    from dspyrl.data import split_examples
    from dspyrl.errors import ConfigError
    from dspyrl.lm.usage import UsageMeter
    from dspyrl.optim.weights.base import local_model_of
    from dspyrl.program_file import load_program_file

    model, method, out, resume, pairs, format = (config.model, config.method, config.out, config.resume, config.pairs,
                                                 config.format)
    seed, threads = config.seed, config.threads
    settings = {**config.method_settings(), **settings}
    if method == "grpo":
        from dspyrl.optim.weights.grpo import LoraGRPOConfig as method_config
    else:
        from dspyrl.optim.weights.dpo import LoraDPOConfig as method_config
    steps = settings.get("steps", method_config.steps)
    if resume and not out:
        raise ConfigError("--resume needs --out: the run folder to continue")
    console = console or Console()
    spec = load_program_file(config.program)
    student = spec.build_program()
    examples = spec.load_examples()
    train, val, test = split_examples(examples, seed=seed)
    if config.estimate:  # before any folder is written or any model is loaded
        console.print(estimate_spend(config, method_config(**settings), student, train, val, test))
        return {"estimate": True}
    out = Path(out or Path("runs") / f"{spec.name}-{method}-{datetime.now():%Y%m%d-%H%M%S}")
    # before the run folder is claimed and any model loads
    check_reward_options(config, judged=bool(config.judge))
    # claimed before any model loads; the step count and the threads may change on resume, nothing else
    fingerprint = run_fingerprint("finetune", spec, student, examples, config, ["judge", "judge_mode", "reward_model",
                                                                              "method", "pairs", "seed", "max_tokens"])
    fingerprint["training"] = {k: v for k, v in settings.items() if k not in ("steps", "num_threads")}
    run = RunFolder(out, resume=resume, force=config.force, fingerprint=fingerprint)
    check_models(run, model=config.model, judge=config.judge)
    console.print(f"[bold]dspyrl finetune[/bold]: [cyan]{spec.name}[/cyan] on [cyan]{model}[/cyan] with LoRA "
                  f"{method.upper()}, {steps} steps — {len(train)} train / {len(val)} val / {len(test)} test rows, "
                  f"run folder {out}")
    with console.status("loading the model…"):
        lm = task_lm(config)
        reward_judge = judge_lm(config)
    reward = build_reward(spec, config, reward_judge)
    dspy_format = resolve_format(format)
    # The weights learn to answer in this format: pinned on the student, every scoring run here uses it, and the saved
    # program keeps it, so `dspyrl compare` of the run folder asks the tuned model the way it was trained.
    for _, predictor in student.named_predictors():
        set_format(predictor, format)
    # the cap counts what the training run's LM calls cost (the judge's: the trained model is local and free)
    spending = {"max_cost": config.max_cost, "report_to": config.report_to}
    if method == "grpo":
        from dspyrl.optim.weights.grpo import LoraGRPO

        optimizer = LoraGRPO(reward, lm=lm, format=dspy_format, run_dir=out, resume=resume,
                             num_threads=threads, seed=seed, **spending, **settings)
    else:
        from dspyrl.optim.weights.dpo import LoraDPO

        optimizer = LoraDPO(reward, lm=lm, format=dspy_format, pairs=pairs, run_dir=out, resume=resume,
                        num_threads=threads, seed=seed, **spending, **settings)
    # A hosted model or a bad pairs file fails here, before minutes of scoring.
    local_model_of(student, lm)
    optimizer.check(student, train)

    meter = UsageMeter()  # the whole command's calls, tokens and cost per role (the optimizer keeps its own, for the cap)
    with meter.active():
        with console.status("scoring the starting program on the test split…"):
            before, _ = score_program(student, test, reward, lm, num_threads=threads)
        started = time.perf_counter()
        optimized = optimizer.compile(student, trainset=train, valset=val)
        train_s = time.perf_counter() - started
        result = optimizer.result
        scores = {"test_before": score_entry(before)}
        after = {"lm_calls": 0, "tokens": 0, "cost": 0.0, "wall_s": 0.0}
        if not result.stopped:  # at the cap the adapter is half-trained and scoring it would spend past the cap
            tuned_lm = next(p.lm for _, p in optimized.named_predictors())
            with console.status("scoring the fine-tuned program on the test split…"):
                after, _ = score_program(optimized, test, reward, tuned_lm, num_threads=threads)
            scores["test_after"] = score_entry(after)

    summary = run.write_summary({
        "command": "finetune", "program": spec.name, "model": model, "format": format,
        "data": f"{spec.name} (train/val/test split, seed {seed})", "scores": scores,
        # the test scorings' calls; the trainer's generations are in metrics.jsonl
        "lm_calls": before["lm_calls"] + after["lm_calls"], "tokens": before["tokens"] + after["tokens"],
        "cost": before["cost"] + after["cost"], "wall_s": before["wall_s"] + train_s + after["wall_s"],
        "method": method, "steps": result.steps, "val_before": result.val_before, "val_after": result.val_after,
        "train_wall_s": result.train_wall_s, "finetune_wall_s": train_s, "adapter_dir": result.adapter_dir,
        "usage": meter.table(), "finetune_usage": result.usage, "max_cost": config.max_cost, "stopped": result.stopped,
        "program_json": str(run.file(PROGRAM)), **result.details})
    run.release()
    _show(console, summary)
    console.print(meter.summary_line())
    if result.stopped == "cost_cap":
        console.print(f"[bold]stopped at the cost cap[/bold]: LoRA {method.upper()} spent ${optimizer.meter.cost:.4f} of "
                      f"${config.max_cost:.4f} at step {result.steps}/{steps}, checkpointed; continue with --resume "
                      f"--out {out} --max-cost <higher>")
    return summary


def _show(console: Console, summary: dict) -> None:
    table = Table(title=f"{summary['program']} on {summary['model']}: held-out test split")
    for column in ("program", "test score", "failed runs", "train steps", "wall time"):
        table.add_column(column, justify="right")
    before, after = summary["scores"]["test_before"], summary["scores"].get("test_after")
    table.add_row("starting", f"{before['score']:.1%}", f"{before['failures']}/{before['n']}", "", "")
    if after is None:  # stopped at the cost cap
        table.add_row(f"LoRA {summary['method'].upper()} (stopped at the cost cap)", "not scored", "", str(summary["steps"]),
                      f"{summary['finetune_wall_s']:.0f} s")
    else:
        table.add_row(f"LoRA {summary['method'].upper()}", f"{after['score']:.1%}", f"{after['failures']}/{after['n']}",
                      str(summary["steps"]), f"{summary['finetune_wall_s']:.0f} s")
    console.print(table)
    console.print(f"adapter: {summary['adapter_dir']}  (serve it: dspyrl serve --model {summary['model']} "
                  f"--adapter {summary['adapter_dir']})")
    console.print(f"saved: {summary['program_json']}")


# ---------------------------------------------------------------- the command line
def estimate_spend(config: FinetuneConfig, method_config, student, train, val, test) -> str:
    """The expected calls, tokens and cost of `dspyrl finetune` per role (dspyrl.lm.usage's estimate, as optimize's):
    the local model's generations, and the judge's scores of them (one per scored run) when the program has one."""
    from dspyrl.lm.usage import RoleEstimate, format_estimate, prompt_tokens

    predictors = len(student.named_predictors())
    prompt = prompt_tokens(student, train[0])
    if config.method == "grpo":  # G completions of prompts_per_step examples each step, each scored
        trained = method_config.steps * method_config.prompts_per_step * method_config.num_generations
    else:  # DPO's pairs come from group_size runs of every train example (none with --pairs)
        trained = 0 if config.pairs else len(train) * method_config.group_size
    runs = trained + 2 * len(val) + 2 * len(test)  # training, the valset and the test split before and after
    rows = [RoleEstimate("task", config.model, runs * predictors, prompt, config.max_tokens)]
    if config.judge:
        group = method_config.num_generations if config.method == "grpo" else method_config.group_size
        rows.append(judge_estimate(config, trained, group, runs - trained, prompt))
    return format_estimate(rows, config.max_cost)


@dataclass(kw_only=True)
class FinetuneConfig(ModelOptions, RewardOptions, SpendOptions, ReportOptions):
    """`dspyrl finetune`'s options. A training setting left at None keeps the method's own config default
    (LoraGRPOConfig / LoraDPOConfig); the help text shows both."""

    program: str = setting(help="a ready program name (e.g. math_xml) or a path to a program .py file", positional=True)
    method: str = setting("grpo", "weight update", choices=METHODS)
    steps: int | None = setting(None, "optimizer steps", ge=1)
    out: str | None = setting(None, "run folder (default: runs/<program>-<method>-<time>)")
    resume: bool = setting(False, "continue the run in --out from its last checkpoint")
    force: bool = setting(False, "write into --out even if another program, data or command made it")
    pairs: str | None = setting(None, "DPO: JSONL of {prompt, chosen, rejected} (default: pairs from best-vs-worst "
                                      "rollouts of the train split)")
    # A weights update trains a generation format ("choice" does not generate); chat is DSPy's ChatAdapter.
    format: str = setting("chat", "prompt/reply format the weights learn to answer in ('compact' is what a 135M "
                                  "model can follow)", choices=TRAINABLE_FORMATS)
    num_generations: int | None = setting(None, "GRPO group size / DPO runs per example", ge=2)
    lr: float | None = setting(None, "learning rate", gt=0)
    beta: float | None = setting(None, "KL (GRPO) or DPO beta", ge=0)
    lora_r: int | None = setting(None, "LoRA rank", ge=1)
    save_every: int | None = setting(None, "steps between checkpoints (0: only the final adapter)", ge=0)
    seed: int = setting(0, "seed of the data split and the training", ge=0)

    def __post_init__(self):
        check_settings(self)

    def method_settings(self) -> dict:
        """The LoraGRPOConfig / LoraDPOConfig fields this config sets (None: the method's default)."""
        group = "num_generations" if self.method == "grpo" else "group_size"
        values = {"steps": self.steps, "learning_rate": self.lr, "beta": self.beta, "lora_r": self.lora_r,
                  "save_every": self.save_every, group: self.num_generations}
        if self.method == "grpo":
            values["max_completion_length"] = self.max_tokens
        return {k: v for k, v in values.items() if v is not None}


# the defaults of the two methods' settings, shown in --help (read from their config dataclasses)
_METHOD_DEFAULTS = {"steps": "steps", "num_generations": ("num_generations", "group_size"), "lr": "learning_rate",
                    "beta": "beta", "lora_r": "lora_r", "save_every": "save_every"}


def add_parser(sub) -> None:
    from dspyrl.optim.weights.dpo import LoraDPOConfig
    from dspyrl.optim.weights.grpo import LoraGRPOConfig

    p = sub.add_parser("finetune", help="train a LoRA adapter of the local model with GRPO (or DPO) on the program's reward",
                       description="Score the program on a held-out test split, train a LoRA adapter of its local model "
                                   "with TRL (GRPO on the program's reward, or DPO on preference pairs) on the train "
                                   "split, and score it again. Writes a run folder with the PEFT adapter.")
    helps = {}
    for name, source in _METHOD_DEFAULTS.items():
        grpo_name, dpo_name = source if isinstance(source, tuple) else (source, source)
        grpo_default, dpo_default = getattr(LoraGRPOConfig, grpo_name), getattr(LoraDPOConfig, dpo_name)
        base_help = next(f for f in dataclasses.fields(FinetuneConfig) if f.name == name).metadata["help"]
        helps[name] = base_help + (f" (default: {grpo_default})" if grpo_default == dpo_default
                                   else f" (default: {grpo_default} for GRPO, {dpo_default} for DPO)")
    add_settings(p, FinetuneConfig, helps=helps)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    finetune_program(settings_of(FinetuneConfig, args))
    return 0
