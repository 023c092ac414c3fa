"""`dspyrl demo`: the main job on the embedded model, offline — run the ready `sentiment` program on SmolLM2
and show accuracy, parse failures, latency and tokens."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import dspy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dspyrl.adapters import ChoiceAdapter, guided_choice_route
from dspyrl.lm import lm_from_spec
from dspyrl.programs import load_program_file


def run_demo(model: str = "smollm2", limit: int | None = None, threads: int = 4, program: str = "sentiment") -> dict:
    console = Console()
    spec = load_program_file(program)
    examples = spec.load_examples()[:limit] if limit else spec.load_examples()
    console.print(f"[bold]dspyrl demo[/bold]: program [cyan]{spec.name}[/cyan] ({spec.description}) on [cyan]{model}[/cyan], "
                  f"{len(examples)} examples")
    with console.status("loading the model…"):
        lm = lm_from_spec(model, temperature=0.0, max_tokens=64)
    # Small local models cannot follow DSPy's default chat format (measured: chance accuracy, parse failures), but they
    # rank well-formed answers well: constrained choice where the model is ours, DSPy's default adapter elsewhere.
    adapter = ChoiceAdapter() if guided_choice_route(lm) is not None else None
    program_module, reward = spec.build_program(), spec.build_reward()

    def run_one(example):
        start = time.perf_counter()
        try:
            with dspy.context(lm=lm, adapter=adapter):
                pred = program_module(**example.inputs())
            return float(reward(example, pred)), False, time.perf_counter() - start
        except Exception:  # unparseable output or LM failure: counted, never fatal
            return 0.0, True, time.perf_counter() - start

    started = time.perf_counter()
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("running", total=len(examples))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for result in pool.map(run_one, examples):
                results.append(result)
                progress.advance(task)
    wall = time.perf_counter() - started
    usage = [entry.get("usage") or {} for entry in lm.history]
    summary = {
        "examples": len(results),
        "accuracy": sum(r[0] for r in results) / max(1, len(results)),
        "failures": sum(r[1] for r in results),
        "latency_s": sorted(r[2] for r in results)[len(results) // 2] if results else 0.0,
        "wall_s": wall,
        "prompt_tokens": sum(u.get("prompt_tokens") or 0 for u in usage),
        "completion_tokens": sum(u.get("completion_tokens") or 0 for u in usage),
    }
    table = Table(title=f"{spec.name} on {model}")
    for column in ("examples", "accuracy", "parse/LM failures", "median latency", "wall time", "tokens in / out"):
        table.add_column(column, justify="right")
    table.add_row(str(summary["examples"]), f"{summary['accuracy']:.1%}", str(summary["failures"]),
                  f"{summary['latency_s']:.2f} s", f"{wall:.1f} s",
                  f"{summary['prompt_tokens']} / {summary['completion_tokens']}")
    console.print(table)
    return summary
