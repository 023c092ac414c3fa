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

METHODS = ("grpo", "dpo")
ADAPTERS = ("chat", "json", "compact")  # generation formats a weights update can train on ("choice" does not generate)


def finetune_program(program: str = "sentiment", *, model: str = "smollm2", method: str = "grpo", steps: int = 40,
                     out: str | None = None, resume: bool = False, pairs: str | None = None, judge: str | None = None,
                     adapter: str = "chat", seed: int = 0, threads: int = 4, max_tokens: int = 128,
                     console: Console | None = None, **settings) -> dict:
    """Run the whole story for a program file and print it; returns the summary (also saved as summary.json)."""
    from dspyrl.adapters import format_adapter
    from dspyrl.adapters.per_predictor import set_format
    from dspyrl.data import split_examples
    from dspyrl.errors import ConfigError
    from dspyrl.lm import lm_from_spec
    from dspyrl.optim.training import local_model_of
    from dspyrl.optimize import evaluate
    from dspyrl.programs import load_program_file

    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'", hint=f"methods are: {', '.join(METHODS)}")
    if adapter not in ADAPTERS:
        raise ConfigError(f"unknown adapter '{adapter}'", hint=f"adapters are: {', '.join(ADAPTERS)}")
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
    dspy_adapter = format_adapter(adapter)
    # The weights learn to answer in this format: pinned on the student, every scoring run here uses it, and the saved
    # program keeps it, so `dspyrl compare` of the run folder asks the tuned model the way it was trained.
    for _, predictor in student.named_predictors():
        set_format(predictor, adapter)
    if method == "grpo":
        from dspyrl.optim.lora import LoraGRPO

        optimizer = LoraGRPO(reward, lm=lm, adapter=dspy_adapter, run_dir=out, resume=resume, steps=steps,
                             num_threads=threads, seed=seed, **settings)
    else:
        from dspyrl.optim.dpo import DPO

        optimizer = DPO(reward, lm=lm, adapter=dspy_adapter, pairs=pairs, run_dir=out, resume=resume, steps=steps,
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
    summary = {"program": spec.name, "model": model, "method": method, "format": adapter, "steps": result.steps,
               "test_before": before, "test_after": after, "val_before": result.val_before,
               "val_after": result.val_after, "train_wall_s": result.train_wall_s, "finetune_wall_s": train_s,
               "adapter": result.adapter_dir, "program_json": str(out / "program.json"), **result.details}
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
    console.print(f"adapter: {summary['adapter']}  (serve it: dspyrl serve --model {summary['model']} "
                  f"--adapter {summary['adapter']})")
    console.print(f"saved: {summary['program_json']}")
