"""Local LM throughput on the embedded model: n samples of one prompt in ONE batched generate vs n sequential calls,
and the round-trip latency of a short completion through `dspyrl serve` (dspy.LM → HTTP → server → model).

    .venv/bin/python benchmarks/local_lm.py [--model smollm2] [--n 8] [--tokens 32]
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
