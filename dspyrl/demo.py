"""`dspyrl demo`: the main job on the embedded model, offline — run the ready `sentiment` program on SmolLM2
and show accuracy, parse failures, latency and tokens."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dspyrl.adapters import ChoiceAdapter, guided_choice_route
from dspyrl.lm import lm_from_spec
from dspyrl.programs import load_program_file
from dspyrl.rollout import run_rollouts


def run_demo(model: str = "smollm2", limit: int | None = None, threads: int = 4, program: str = "sentiment") -> dict:
    console = Console()
    spec = load_program_file(program)
    examples = spec.load_examples()[:limit] if limit else spec.load_examples()
    console.print(f"[bold]dspyrl demo[/bold]: program [cyan]{spec.name}[/cyan] on [cyan]{model}[/cyan], {len(examples)} "
                  f"examples, constrained choice — {spec.description}")
    with console.status("loading the model…"):
        lm = lm_from_spec(model, temperature=0.0, max_tokens=64)
    # Small local models cannot follow DSPy's default chat format (measured: chance accuracy, parse failures), but they
    # rank well-formed answers well: constrained choice where the model is ours, DSPy's default adapter elsewhere.
    adapter = ChoiceAdapter() if guided_choice_route(lm) is not None else None
    batch = run_rollouts(spec.build_program(), examples, spec.build_reward(), lm=lm, adapter=adapter,
                         num_threads=threads, description="running")
    latencies = sorted(r.latency_s for r in batch.rollouts)
    wall = batch.wall_s
    summary = {
        "examples": len(batch.rollouts),
        "accuracy": batch.mean_reward(),
        "failures": batch.failures,  # unparseable output or LM failure: counted, never fatal
        "latency_s": latencies[len(latencies) // 2] if latencies else 0.0,
        "wall_s": wall,
        "prompt_tokens": batch.prompt_tokens,
        "completion_tokens": batch.completion_tokens,
    }
    table = Table(title=f"{spec.name} on {model}")
    for column in ("examples", "accuracy", "parse/LM failures", "median latency", "wall time", "tokens in / out"):
        table.add_column(column, justify="right")
    table.add_row(str(summary["examples"]), f"{summary['accuracy']:.1%}", str(summary["failures"]),
                  f"{summary['latency_s']:.2f} s", f"{wall:.1f} s",
                  f"{summary['prompt_tokens']} / {summary['completion_tokens']}")
    console.print(table)
    return summary
