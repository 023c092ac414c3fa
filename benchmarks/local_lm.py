"""Local LM throughput on the embedded model: n samples of one prompt in ONE batched generate vs n sequential calls,
the round-trip latency of a short completion through `dspyrl serve` (dspy.LM → HTTP → server → model), and the
prefix cache: `sentiment` under the compact format at 0, 4 and 8 demos on two engines over the same weights, one
with the cache of shared prompt heads and one without, run side by side (tokens/s and latency per example).

    .venv/bin/python benchmarks/local_lm.py [--model smollm2] [--n 8] [--tokens 32] [--prefix-only] [--rows 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--n", type=int, default=8, help="samples of one prompt")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per sample")
    parser.add_argument("--repeats", type=int, default=5, help="server round trips to time")
    parser.add_argument("--rows", type=int, default=16, help="examples per prefix-cache cell")
    parser.add_argument("--prefix-only", action="store_true", help="only the prefix-cache comparison")
    args = parser.parse_args()
    if args.prefix_only:
        prefix_cache_table(args.model, args.rows)
        return

    from rich.console import Console
    from rich.table import Table

    from dspyrl.lm import openai_compatible
    from dspyrl.lm.local import GenerationSettings, local_engine
    from dspyrl.lm.server import serve_in_thread

    engine = local_engine(args.model)
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    # min_new_tokens-free sampling: count the tokens actually produced.
    settings = GenerationSettings(max_tokens=args.tokens, temperature=1.0)
    engine.generate(messages, n=1, settings=settings)  # warm-up

    start = time.perf_counter()
    batched = engine.generate(messages, n=args.n, settings=settings)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    sequential = [engine.generate(messages, n=1, settings=settings)[0] for _ in range(args.n)]
    sequential_s = time.perf_counter() - start
    batched_tps = sum(g.completion_tokens for g in batched) / batched_s
    sequential_tps = sum(g.completion_tokens for g in sequential) / sequential_s

    handle = serve_in_thread(args.model, engine=engine, served_name="bench")
    lm = openai_compatible(handle.base_url, "bench", max_tokens=8, temperature=0.0, cache=False)
    lm("Say hi.")  # warm-up (client import, connection)
    latencies = []
    for i in range(args.repeats):
        start = time.perf_counter()
        lm(f"Say hi to person number {i}.")
        latencies.append(time.perf_counter() - start)
    handle.stop()

    table = Table(title=f"local LM on {args.model} ({os.cpu_count()} cores, torch threads default)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"{args.n} samples, one batched generate", f"{batched_tps:.1f} tok/s ({batched_s:.2f} s)")
    table.add_row(f"{args.n} samples, sequential calls", f"{sequential_tps:.1f} tok/s ({sequential_s:.2f} s)")
    table.add_row("batched / sequential throughput", f"{batched_tps / sequential_tps:.2f}x")
    table.add_row("server round trip, 8-token completion (median)", f"{statistics.median(latencies) * 1000:.0f} ms")
    Console().print(table)
    prefix_cache_table(args.model, args.rows)


def prefix_cache_table(model: str, rows: int) -> None:
    """sentiment (compact format, greedy) at 0/4/8 demos, with and without the prefix cache, in alternation."""
    import dspy
    from rich.console import Console
    from rich.table import Table

    from dspyrl.data import split_examples
    from dspyrl.formats import CompactAdapter, label_balanced_demos
    from dspyrl.lm.local import LocalEngine, _GroupSizeCallback, local_engine
    from dspyrl.program_file import load_program_file
    from dspyrl.rollout import run_rollouts

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    shared = local_engine(model)
    engines = {"with": shared, "without": LocalEngine(model, loaded=(shared.model, shared.tokenizer), prefix_cache=False)}
    lms = {k: dspy.LM(f"local/{model}", engine=e, temperature=0.0, max_tokens=16, cache=False,
                      callbacks=[_GroupSizeCallback()]) for k, e in engines.items()}
    program_file = load_program_file("sentiment")
    train, _, test = split_examples(program_file.load_examples(), seed=0, fractions=(0.25, 0.0, 0.75))
    table = Table(title=f"prefix cache on {model}: sentiment, compact format, greedy, max_tokens 16, {rows} rows, "
                        f"8 threads (second of two alternating runs each)")
    for column in ("demos", "prefix cache", "prompt tok / ex", "tok/s (prompt+completion)", "s / example",
                   "median latency", "speed-up", "same replies"):
        table.add_column(column, justify="right")
    for shots in (0, 4, 8):
        demos = label_balanced_demos(train, "sentiment", k=shots, seed=0) if shots else []
        runs = {}
        for name in ("without", "with", "without", "with"):  # the first pair warms up; the second is reported
            program = program_file.build_program()
            program.demos = list(demos)
            runs[name] = run_rollouts(program, test[:rows], program_file.build_reward(), lm=lms[name],
                                      format=CompactAdapter(), num_threads=8, progress=False)
        replies = {k: [r.calls[0].completion if r.calls else None for r in b.rollouts] for k, b in runs.items()}
        base = runs["without"].wall_s
        for name in ("without", "with"):
            b = runs[name]
            n = len(b.rollouts)
            tokens = b.prompt_tokens + b.completion_tokens
            table.add_row(str(shots), name, f"{b.prompt_tokens / n:.0f}", f"{tokens / b.wall_s:.0f}",
                          f"{b.wall_s / n:.3f}", f"{statistics.median(r.latency_s for r in b.rollouts):.2f} s",
                          f"{base / b.wall_s:.2f}x", "yes" if replies["with"] == replies["without"] else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
