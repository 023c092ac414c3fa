"""Does the output format make a small local model usable? Every program in `programs/` under every format.

For each program (plus a ChainOfThought variant of `sentiment`, and of `topic` when `programs/topic_cot.py` is
absent), zero-shot and with 4 demos, on the embedded SmolLM2-135M-Instruct (greedy), under chat / json / compact /
choice / structured: accuracy (mean reward), parse-failure rate, other failures, tokens and time per example. Demos
come from a 25% train split (label-balanced for a label field; multi-predictor programs run zero-shot only: their
examples hold no per-predictor demos); every format is scored on the same remaining rows. Programs run through
`dspyrl.rollout.run_rollouts`, like everything else.

    .venv/bin/python benchmarks/small_models.py [--model smollm2] [--programs sentiment extract ...] [--limit 8]
                                                [--formats chat json compact choice structured] [--shots 0 4]
                                                [--threads 8] [--torch-threads N] [--json out.json]

`choice` applies only where every output is a label (n/a elsewhere). Under `choice` and `structured` a reply cannot
fail to parse by construction (the model picks a whole well-formed reply / decodes under the signature's grammar);
the interesting numbers there are accuracy and cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `programs` and `dspyrl` from this checkout

FORMATS = ("chat", "json", "compact", "choice", "structured")
SLOW_PROGRAMS = {"react_agent": 4}  # a tool loop of several calls per row: fewer rows


def program_names() -> list[str]:
    names = sorted(p.stem for p in (ROOT / "programs").glob("*.py") if not p.stem.startswith("_"))
    variants = ["sentiment_cot"] + ([] if "topic_cot" in names else ["topic_cot"])
    return names + variants


def load(name: str):
    """A program file, or a ChainOfThought variant of one (`<name>_cot` where no such file exists)."""
    import dspy

    from dspyrl.program_file import load_program_file

    if name.endswith("_cot") and not (ROOT / "programs" / f"{name}.py").exists():
        base = load_program_file(name.removesuffix("_cot"))
        signature = base.build_program().named_predictors()[0][1].signature
        return SimpleNamespace(name=name, build_program=lambda: dspy.ChainOfThought(signature),
                               build_reward=base.build_reward, load_examples=base.load_examples)
    return load_program_file(name)


def label_field(signature) -> str | None:
    from dspyrl.formats.compact import finite_values

    return next((n for n, f in signature.output_fields.items() if finite_values(f.annotation) is not None), None)


def run_cell(program_file, examples, demos, format_name: str, lm, threads: int) -> dict:
    """One (program, demos, format) cell of the table."""
    from dspyrl.formats import resolve_format
    from dspyrl.rollout import run_rollouts

    program = program_file.build_program()
    for _, predictor in program.named_predictors():
        predictor.demos = list(demos)
    batch = run_rollouts(program, examples, program_file.build_reward(), lm=lm, format=resolve_format(format_name, lm),
                         num_threads=threads, progress=False, description=f"{program_file.name}/{format_name}")
    parse_failures = sum(1 for r in batch.rollouts if r.error and r.error.startswith("AdapterParseError"))
    other_failures = sum(1 for r in batch.rollouts if r.error and not r.error.startswith("AdapterParseError"))
    n = len(batch.rollouts)
    return {
        "program": program_file.name, "demos": len(demos), "format": format_name, "examples": n,
        "accuracy": sum(r.reward.total for r in batch.rollouts) / n,
        "parse_failures": parse_failures, "parse_failure_rate": parse_failures / n, "other_failures": other_failures,
        "tokens_per_example": (batch.prompt_tokens + batch.completion_tokens) / n,
        "completion_tokens_per_example": batch.completion_tokens / n,
        "s_per_example": batch.wall_s / n,
        "median_latency_s": statistics.median(r.latency_s for r in batch.rollouts),
        "wall_s": batch.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="local model (default: %(default)s)")
    parser.add_argument("--programs", nargs="+", default=None, help="default: every program in programs/ + variants")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 4], help="demo counts (default: 0 4)")
    parser.add_argument("--limit", type=int, default=8, help="evaluation rows per program (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent rollouts (batched by the engine)")
    parser.add_argument("--max-tokens", type=int, default=128, help="generation budget (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (1 avoids oversubscription on a CPU shared with other jobs)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new cell after this many seconds (the rest are listed as not run)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    import dspy
    from rich.console import Console
    from rich.table import Table

    from dspyrl.data import split_examples
    from dspyrl.formats import choice_outputs, label_balanced_demos
    from dspyrl.lm import local_lm

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    console = Console(width=130)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)  # measure the model, not a cache
    with console.status(f"loading {args.model}…"):
        lm = local_lm(args.model, temperature=0.0, max_tokens=args.max_tokens, cache=False)
    rows, notes = [], []
    started = time.perf_counter()
    for name in args.programs or program_names():
        program_file = load(name)
        examples = program_file.load_examples()
        train, val, test = split_examples(examples, seed=args.seed, fractions=(0.25, 0.0, 0.75))
        limit = min(args.limit, SLOW_PROGRAMS.get(name, args.limit))
        evaluation = (val + test)[:limit]
        predictors = program_file.build_program().named_predictors()
        labels_only = all(choice_outputs(p.signature) is not None for _, p in predictors)
        for shots in args.shots:
            if shots and len(predictors) > 1:
                notes.append(f"{name}: zero-shot only ({len(predictors)} predictors)")
                continue
            field = label_field(predictors[0][1].signature)
            demos = ([] if not shots else label_balanced_demos(train, field, k=shots, seed=args.seed) if field
                     else train[:shots])
            for format_name in args.formats:
                if format_name == "choice" and not labels_only:
                    continue
                if args.budget_s and time.perf_counter() - started > args.budget_s:
                    notes.append(f"not run (time budget {args.budget_s:.0f} s spent): {name} {shots} demos {format_name}")
                    continue
                try:
                    row = run_cell(program_file, evaluation, demos, format_name, lm, args.threads)
                except Exception as err:  # a crash is a row, not the end of the table
                    row = {"program": name, "demos": len(demos), "format": format_name, "examples": len(evaluation),
                           "crash": f"{type(err).__name__}: {err}"[:80]}
                rows.append(row)
                if "crash" in row:
                    console.print(f"  {name:<13} {shots} demos  {format_name:<10} CRASH {row['crash']}")
                    continue
                console.print(f"  {name:<13} {shots} demos  {format_name:<10} accuracy {row['accuracy']:.1%}  parse "
                              f"failures {row['parse_failures']}/{row['examples']}  {row['s_per_example']:.2f} s/example")

    threads = f"{args.threads} rollout threads" + (f", {args.torch_threads} torch threads" if args.torch_threads else "")
    table = Table(title=f"Small-model formats on {args.model} (greedy, CPU, {threads}, max_tokens {args.max_tokens}, "
                        f"≤{args.limit} rows per program)")
    for column in ("program", "demos", "format", "n", "accuracy", "parse failures", "other failures", "tokens / ex",
                   "out tokens / ex", "s / example", "median latency"):
        table.add_column(column, justify="left" if column in ("program", "format") else "right")
    for row in rows:
        if "crash" in row:
            table.add_row(row["program"], str(row["demos"]), row["format"], str(row["examples"]), "crash", row["crash"],
                          "", "", "", "", "")
            continue
        table.add_row(row["program"], str(row["demos"]), row["format"], str(row["examples"]), f"{row['accuracy']:.1%}",
                      f"{row['parse_failures']} ({row['parse_failure_rate']:.0%})", str(row["other_failures"]),
                      f"{row['tokens_per_example']:.0f}", f"{row['completion_tokens_per_example']:.0f}",
                      f"{row['s_per_example']:.2f}", f"{row['median_latency_s']:.2f} s")
    console.print(table)
    for note in dict.fromkeys(notes):
        console.print(f"[dim]{note}[/dim]")
    console.print(f"total wall time {time.perf_counter() - started:.0f} s. 's / example' = wall time of the cell / rows "
                  "(rows run concurrently in batches). Few rows per cell: an accuracy differs by 1/n per row.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
