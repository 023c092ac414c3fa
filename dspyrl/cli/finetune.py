"""`dspyrl finetune`: baseline → LoRA GRPO (or DPO) on a local model → adapted, scored on a held-out test split.

The program file's examples are split into train / val / test once (seeded), as `dspyrl optimize` does; the weights
learn on train, the valset is scored before and after, and the test split is touched only twice, so the two numbers
printed are an honest before/after. The run folder gets config, metrics.jsonl, checkpoints, `adapter/` (a PEFT folder:
`dspyrl serve --model M --adapter runs/NAME/adapter` serves it), program.json and summary.json.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dspyrl.runs import write_json_atomic
from dspyrl.cli.options import add_format_option, add_model_option

METHODS = ("grpo", "dpo")
TRAINABLE_FORMATS = ("chat", "json", "compact")  # generation formats a weights update can train on ("choice" does not generate)


def finetune_program(program: str = "sentiment", *, model: str = "smollm2", method: str = "grpo", steps: int = 40,
                     out: str | None = None, resume: bool = False, pairs: str | None = None, judge: str | None = None,
                     format: str = "chat", seed: int = 0, threads: int = 4, max_tokens: int = 128,
                     console: Console | None = None, **settings) -> dict:
    """Run the whole story for a program file and print it; returns the summary (also saved as summary.json)."""
    from dspyrl.formats import resolve_format
    from dspyrl.formats.per_predictor import set_format
    from dspyrl.data import split_examples
    from dspyrl.errors import ConfigError
    from dspyrl.lm import lm_from_spec
    from dspyrl.optim.weights.base import local_model_of
    from dspyrl.cli.optimize import evaluate
    from dspyrl.program_file import load_program_file

    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'", hint=f"methods are: {', '.join(METHODS)}")
    if format not in TRAINABLE_FORMATS:
        raise ConfigError(f"unknown format '{format}'", hint=f"formats are: {', '.join(TRAINABLE_FORMATS)}")
    if resume and not out:
        raise ConfigError("--resume needs --out: the run folder to continue")
    console = console or Console()
    spec = load_program_file(program)
    train, val, test = split_examples(spec.load_examples(), seed=seed)
    out = Path(out or Path("runs") / f"{spec.name}-{method}-{datetime.now():%Y%m%d-%H%M%S}")
    console.print(f"[bold]dspyrl finetune[/bold]: [cyan]{spec.name}[/cyan] on [cyan]{model}[/cyan] with LoRA "
                  f"{method.upper()}, {steps} steps — {len(train)} train / {len(val)} val / {len(test)} test rows, "
                  f"run folder {out}")
    with console.status("loading the model…"):
        lm = lm_from_spec(model, temperature=0.0, max_tokens=max_tokens)
        judge_lm = lm_from_spec(judge, temperature=0.0) if judge else None
    reward = spec.build_reward(judge_lm=judge_lm)
    student = spec.build_program()
    dspy_format = resolve_format(format)
    # The weights learn to answer in this format: pinned on the student, every scoring run here uses it, and the saved
    # program keeps it, so `dspyrl compare` of the run folder asks the tuned model the way it was trained.
    for _, predictor in student.named_predictors():
        set_format(predictor, format)
    if method == "grpo":
        from dspyrl.optim.weights.grpo import LoraGRPO

        optimizer = LoraGRPO(reward, lm=lm, format=dspy_format, run_dir=out, resume=resume, steps=steps,
                             num_threads=threads, seed=seed, **settings)
    else:
        from dspyrl.optim.weights.dpo import LoraDPO

        optimizer = LoraDPO(reward, lm=lm, format=dspy_format, pairs=pairs, run_dir=out, resume=resume, steps=steps,
                        num_threads=threads, seed=seed, **settings)
    # A hosted model or a bad pairs file fails here, before minutes of scoring.
    local_model_of(student, lm)
    optimizer.check(student, train)

    with console.status("scoring the starting program on the test split…"):
        before = evaluate(student, test, reward, lm, num_threads=threads)
    started = time.perf_counter()
    optimized = optimizer.compile(student, trainset=train, valset=val)
    train_s = time.perf_counter() - started
    tuned_lm = next(p.lm for _, p in optimized.named_predictors())
    with console.status("scoring the fine-tuned program on the test split…"):
        after = evaluate(optimized, test, reward, tuned_lm, num_threads=threads)

    result = optimizer.result
    summary = {"program": spec.name, "model": model, "method": method, "format": format, "steps": result.steps,
               "test_before": before, "test_after": after, "val_before": result.val_before,
               "val_after": result.val_after, "train_wall_s": result.train_wall_s, "finetune_wall_s": train_s,
               "adapter_dir": result.adapter_dir, "program_json": str(out / "program.json"), **result.details}
    write_json_atomic(out / "summary.json", summary)
    _show(console, summary)
    return summary


def _show(console: Console, summary: dict) -> None:
    table = Table(title=f"{summary['program']} on {summary['model']}: held-out test split")
    for column in ("program", "test score", "failed runs", "train steps", "wall time"):
        table.add_column(column, justify="right")
    before, after = summary["test_before"], summary["test_after"]
    table.add_row("starting", f"{before['score']:.1%}", f"{before['failures']}/{before['n']}", "", "")
    table.add_row(f"LoRA {summary['method'].upper()}", f"{after['score']:.1%}", f"{after['failures']}/{after['n']}",
                  str(summary["steps"]), f"{summary['finetune_wall_s']:.0f} s")
    console.print(table)
    console.print(f"adapter: {summary['adapter_dir']}  (serve it: dspyrl serve --model {summary['model']} "
                  f"--adapter {summary['adapter_dir']})")
    console.print(f"saved: {summary['program_json']}")


# ---------------------------------------------------------------- the command line
def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="train a LoRA adapter of the local model with GRPO (or DPO) on the program's reward",
                       description="Score the program on a held-out test split, train a LoRA adapter of its local model "
                                   "with TRL (GRPO on the program's reward, or DPO on preference pairs) on the train "
                                   "split, and score it again. Writes a run folder with the PEFT adapter.")
    p.add_argument("program", help="a ready program name (e.g. math_xml) or a path to a program .py file")
    add_model_option(p)
    p.add_argument("--method", choices=("grpo", "dpo"), default="grpo", help="weight update (default: %(default)s)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps (default: %(default)s)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<program>-<method>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--pairs", default=None, help="DPO: JSONL of {prompt, chosen, rejected} (default: pairs from "
                                                 "best-vs-worst rollouts of the train split)")
    p.add_argument("--judge", default=None, help="LM for the program's judge reward, if it has one (same forms as --model)")
    p.add_argument("--format", choices=("chat", "json", "compact"), default="chat",
                   help="prompt/reply format the weights learn to answer in (default: %(default)s, DSPy's ChatAdapter; "
                        "'compact' is what a 135M model can follow)")
    p.add_argument("--num-generations", type=int, default=4, help="GRPO group size / DPO runs per example (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-4 for GRPO, 1e-4 for DPO)")
    p.add_argument("--beta", type=float, default=None, help="KL (GRPO) or DPO beta (default: 0.02 / 0.1)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion limit (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=10, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the training (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.cli.finetune import finetune_program

    settings = {"lora_r": args.lora_r, "save_every": args.save_every}
    if args.lr is not None:
        settings["learning_rate"] = args.lr
    if args.beta is not None:
        settings["beta"] = args.beta
    if args.method == "grpo":
        settings.update(num_generations=args.num_generations, max_completion_length=args.max_tokens)
    else:
        settings.update(group_size=args.num_generations)
    finetune_program(args.program, model=args.model, method=args.method, steps=args.steps, out=args.out,
                     resume=args.resume, pairs=args.pairs, judge=args.judge, format=args.format, seed=args.seed,
                     threads=args.threads, max_tokens=args.max_tokens, **settings)
    return 0
