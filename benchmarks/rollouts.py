"""Rollout throughput against a slow endpoint: our rollout engine vs dspy.Evaluate at the same concurrency.

    flock /tmp/dspyrl-bench.lock python benchmarks/rollouts.py --concurrency 8 16 64 --delay 0.2

A loopback OpenAI-compatible server answers every chat completion after a fixed delay (a stand-in for a hosted model's
latency; it needs no model, so the numbers measure only the client side: threads, DSPy, LiteLLM, HTTP). The same
program runs on the same number of distinct examples through `dspyrl.rollout.run_rollouts(num_threads=C)` and through
`dspy.Evaluate(num_threads=C)`; each gets its own questions, so neither is helped by the other's cache. The ideal rate is
C / delay calls per second. Each concurrency is measured `--repeats` times per runner in A-B-B-A order (so a drift in the
machine's load hits both alike) and the ratio is of the summed rates. Then both run again on questions they asked: every
call must come from DSPy's cache, so the server must see no new request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402

ANSWER = "[[ ## answer ## ]]\nfine\n\n[[ ## completed ## ]]"


class SlowChatServer:
    """An OpenAI-compatible /v1/chat/completions that sleeps `delay` seconds, then answers ANSWER; counts requests."""

    def __init__(self, delay: float):
        self.delay, self.requests, self._lock = delay, 0, threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests += 1
                time.sleep(outer.delay)
                n = int(body.get("n") or 1)
                payload = json.dumps({
                    "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "slow"),
                    "choices": [{"index": i, "message": {"role": "assistant", "content": ANSWER},
                                 "finish_reason": "stop"} for i in range(n)],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self):
        self.httpd.shutdown()


def exact(example, pred, trace=None) -> float:
    return float(getattr(pred, "answer", None) == "fine")


def measure(label: str, run, server: SlowChatServer, n: int) -> dict:
    before, started = server.requests, time.perf_counter()
    score = run()
    wall = time.perf_counter() - started
    calls = server.requests - before
    return {"runner": label, "examples": n, "server_calls": calls, "wall_s": wall,
            "calls_per_s": calls / wall if wall else 0.0, "score": score}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 64],
                        help="one or more concurrencies, all measured in this run (default: %(default)s)")
    parser.add_argument("--delay", type=float, default=0.2, help="server delay per call, seconds (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=None,
                        help="examples per measurement (default: 8 waves of the concurrency, at least 64)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="measurements per runner and concurrency, in A-B-B-A order (default: %(default)s)")
    args = parser.parse_args(argv)
    previous_cache = dspy.cache
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # a fresh cache: first passes all miss
    try:
        return _compare(args)
    finally:
        dspy.cache = previous_cache  # leave the caller's cache as it was (tests import main)


def _compare(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from dspyrl.lm.hosted import openai_compatible
    from dspyrl.rollout import run_rollouts

    server = SlowChatServer(args.delay)
    lm = openai_compatible(server.base_url, "slow", temperature=0.0, max_tokens=16, num_retries=0)
    program = dspy.Predict("question -> answer")
    questions = iter(range(10**9))

    def fresh(n):  # questions no runner has asked: every first pass misses the cache
        return [dspy.Example(question=f"question {next(questions)}?").with_inputs("question") for _ in range(n)]

    def run_ours(examples, c):
        return lambda: run_rollouts(program, examples, exact, lm=lm, num_threads=c, progress=False).mean_reward()

    def run_evaluate(examples, c):
        evaluate = dspy.Evaluate(devset=examples, metric=exact, num_threads=c, display_progress=False)

        def run():
            with dspy.context(lm=lm):
                return evaluate(program).score / 100.0
        return run

    # warm up LiteLLM's client (imports, connection pool) on a separate question so neither runner pays for it
    run_rollouts(program, fresh(max(args.concurrency)), exact, lm=lm, num_threads=max(args.concurrency), progress=False)
    console, ratios, rows, cached_calls = Console(width=140), {}, [], 0
    for c in args.concurrency:
        n = args.examples or max(64, 8 * c)
        measured = {"ours": [], "evaluate": []}
        kept = {}
        for repeat in range(args.repeats):
            order = ("ours", "evaluate") if repeat % 2 == 0 else ("evaluate", "ours")
            for runner in order:
                examples = fresh(n)
                kept.setdefault(runner, examples)
                run = run_ours(examples, c) if runner == "ours" else run_evaluate(examples, c)
                measured[runner].append(measure(runner, run, server, n))
        for runner, label in (("ours", f"dspyrl run_rollouts (C={c})"), ("evaluate", f"dspy.Evaluate (num_threads={c})")):
            calls = sum(m["server_calls"] for m in measured[runner])
            wall = sum(m["wall_s"] for m in measured[runner])
            rows.append({"runner": label, "c": c, "examples": n * args.repeats, "server_calls": calls, "wall_s": wall,
                         "calls_per_s": calls / wall, "score": min(m["score"] for m in measured[runner])})
        ratios[c] = rows[-2]["calls_per_s"] / rows[-1]["calls_per_s"]
        if c == args.concurrency[0]:  # both again on questions they asked: every call must come from the cache
            again = [measure("ours again", run_ours(kept["ours"], c), server, n),
                     measure("evaluate again", run_evaluate(kept["evaluate"], c), server, n)]
            cached_calls = sum(m["server_calls"] for m in again)
    server.stop()

    table = Table(title=f"endpoint delay {args.delay * 1000:.0f} ms; ideal = C / delay calls/s; {args.repeats} "
                        "measurements per runner in A-B-B-A order, summed")
    for column in ("runner", "examples", "server calls", "wall time", "calls / s", "of ideal", "score"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for row in rows:
        ideal = row["c"] / args.delay
        table.add_row(row["runner"], str(row["examples"]), str(row["server_calls"]), f"{row['wall_s']:.2f} s",
                      f"{row['calls_per_s']:.1f}", f"{row['calls_per_s'] / ideal:.0%}", f"{row['score']:.2f}")
    console.print(table)
    print("run_rollouts / Evaluate throughput: " + ", ".join(f"C={c} {r:.2f}x" for c, r in ratios.items())
          + f"; cached re-runs made {cached_calls} server calls")
    return 0 if cached_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
