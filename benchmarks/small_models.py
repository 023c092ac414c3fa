"""Does the output format make a small local model usable? ChatAdapter vs CompactAdapter vs constrained choice.

For each classification program (`sentiment`, `topic`), zero-shot and with 5 label-balanced demos, on the embedded
SmolLM2-135M-Instruct (greedy): accuracy, parse-failure rate and time per example. Demos come from a 25% train split;
every mode is scored on the same remaining rows. Programs run through `dspyrl.rollout.run_rollouts`, like everything else.

    .venv/bin/python benchmarks/small_models.py [--model smollm2] [--programs sentiment topic] [--limit N]
                                                [--modes chat compact choice] [--threads 4] [--torch-threads 1]
                                                [--json out.json]

Constrained choice cannot produce an unparseable reply: the model picks one of the complete, well-formed replies by
their log-probabilities, so its parse failures are 0 by construction — the interesting number is its accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `programs` and `dspyrl` from this checkout

MODES = ("chat", "compact", "choice")


def run_cell(program_file, examples, demos, mode: str, lm, threads: int) -> dict:
    """One (program, demos, mode) cell of the table."""
    from dspyrl.formats import format_choices_for
    from dspyrl.rollout import run_rollouts

    program = program_file.build_program()
    predictors = program.named_predictors()
    for _, predictor in predictors:
        predictor.demos = list(demos)
    format = format_choices_for(predictors[0][1].signature)[mode]()
    batch = run_rollouts(program, examples, program_file.build_reward(), lm=lm, format=format,
                         num_threads=threads, progress=False, description=f"{program_file.name}/{mode}")
    parse_failures = sum(1 for r in batch.rollouts if r.error and r.error.startswith("AdapterParseError"))
    other_failures = sum(1 for r in batch.rollouts if r.error and not r.error.startswith("AdapterParseError"))
    n = len(batch.rollouts)
    return {
        "program": program_file.name, "demos": len(demos), "mode": mode, "examples": n,
        "accuracy": sum(r.reward.total for r in batch.rollouts) / n,
        "parse_failures": parse_failures, "parse_failure_rate": parse_failures / n, "other_failures": other_failures,
        "s_per_example": batch.wall_s / n,
        "median_latency_s": statistics.median(r.latency_s for r in batch.rollouts),
        "wall_s": batch.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="local model (default: %(default)s)")
    parser.add_argument("--programs", nargs="+", default=["sentiment", "topic"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 5], help="demo counts (default: 0 5)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N evaluation rows")
    parser.add_argument("--threads", type=int, default=4, help="concurrent rollouts (batched by the engine)")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation budget for chat/compact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (1 avoids oversubscription on a CPU shared with other jobs)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    import dspy
    from rich.console import Console
    from rich.table import Table

    from dspyrl.formats import choice_outputs, label_balanced_demos
    from dspyrl.data import split_examples
    from dspyrl.lm import local_lm
    from dspyrl.program_file import load_program_file

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    console = Console(width=120)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)  # measure the model, not a cache
    with console.status(f"loading {args.model}…"):
        lm = local_lm(args.model, temperature=0.0, max_tokens=args.max_tokens, cache=False)
    rows = []
    started = time.perf_counter()
    for name in args.programs:
        program_file = load_program_file(name)
        examples = program_file.load_examples()
        train, val, test = split_examples(examples, seed=args.seed, fractions=(0.25, 0.0, 0.75))
        evaluation = (val + test)[: args.limit] if args.limit else val + test
        signature = program_file.build_program().named_predictors()[0][1].signature
        if choice_outputs(signature) is None or len(signature.output_fields) != 1:
            console.print(f"[yellow]skipping {name}: not a single finite-valued output field[/yellow]")
            continue
        label_field = next(iter(signature.output_fields))
        for shots in args.shots:
            demos = label_balanced_demos(train, label_field, k=shots, seed=args.seed) if shots else []
            for mode in args.modes:
                row = run_cell(program_file, evaluation, demos, mode, lm, args.threads)
                rows.append(row)
                console.print(f"  {name:<10} {shots} demos  {mode:<8} accuracy {row['accuracy']:.1%}  parse failures "
                              f"{row['parse_failures']}/{row['examples']}  {row['s_per_example']:.2f} s/example")

    threads = f"{args.threads} rollout threads" + (f", {args.torch_threads} torch threads" if args.torch_threads else "")
    table = Table(title=f"Small-model formats on {args.model} (greedy, CPU, {threads})")
    for column in ("program", "demos", "mode", "n", "accuracy", "parse failures", "other failures", "s / example",
                   "median latency"):
        table.add_column(column, justify="left" if column in ("program", "mode") else "right")
    for row in rows:
        table.add_row(row["program"], str(row["demos"]), row["mode"], str(row["examples"]), f"{row['accuracy']:.1%}",
                      f"{row['parse_failures']} ({row['parse_failure_rate']:.0%})", str(row["other_failures"]),
                      f"{row['s_per_example']:.2f}", f"{row['median_latency_s']:.2f} s")
    console.print(table)
    console.print(f"total wall time {time.perf_counter() - started:.0f} s. 's / example' = wall time of the cell / rows "
                  "(rows run concurrently in batches); chance is 50% for sentiment, 20% for topic.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
