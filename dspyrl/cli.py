"""`dspyrl` command line: one subcommand per job, each a thin layer over the library.

Every user error surfaces as one line on stderr and exit code 2 (DspyrlError); nothing else is caught, so real bugs keep
their traceback. Heavy imports happen inside the handlers so `dspyrl --help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from dspyrl.errors import DspyrlError

# Keep LiteLLM from fetching a price map from the internet on first use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _add_model_option(parser: argparse.ArgumentParser, default: str = "smollm2") -> None:
    parser.add_argument(
        "--model", default=default,
        help="model to run the program on: 'smollm2' (embedded default), a local folder or Hugging Face id "
             "(runs in-process), 'openrouter/<vendor>/<model>', any LiteLLM model string, or "
             "'openai-compatible:<base_url>:<model>' for any OpenAI-compatible server (default: %(default)s)")


# ---------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API",
                       description="Serve a local model as /v1/chat/completions and /v1/models (OpenAI-compatible).")
    p.add_argument("--model", default="smollm2", help="local model: 'smollm2', a local folder or a cached HF id (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="PEFT LoRA adapter folder to apply on top of the model")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the --model value)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from dspyrl.lm.server import serve

    serve(args.model, adapter=args.adapter, host=args.host, port=args.port, served_name=args.name)
    return 0


# ---------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded model: run the sentiment program on SmolLM2 and show the scores",
                       description="Run the ready `sentiment` program on the embedded SmolLM2-135M-Instruct, offline.")
    _add_model_option(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.add_argument("--budget", type=int, default=0,
                   help="then optimize the prompt with GRPO for this many metric calls and show baseline → optimized "
                        "on the held-out test split (0: only the baseline run; default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from dspyrl.demo import run_demo

    run_demo(model=args.model, limit=args.limit, threads=args.threads)
    if args.budget:
        from dspyrl.optimize import optimize_program

        optimize_program("sentiment", model=args.model, budget=args.budget, threads=args.threads)
    return 0


# ---------------------------------------------------------------- optimize
def _add_optimize(sub) -> None:
    p = sub.add_parser("optimize", help="optimize a program's prompts (instructions, demos) with GRPO",
                       description="Score the program on a held-out test split, optimize its prompts with GRPO on the "
                                   "train split (selecting on val), and score it again. Writes a run folder.")
    p.add_argument("program", help="a ready program name (e.g. sentiment) or a path to a program .py file")
    _add_model_option(p)
    p.add_argument("--judge", default=None, help="LM for the program's judge reward, if it has one (same forms as --model)")
    p.add_argument("--reflection-model", default=None,
                   help="LM that writes new instructions (default: the task model; a stronger one helps)")
    p.add_argument("--budget", type=int, default=150, help="metric calls (scored program runs, validation included; "
                                                          "default: %(default)s)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<program>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--group-size", type=int, default=4, help="prompt samples per example (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the optimizer (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion limit of the task model (default: %(default)s)")
    p.set_defaults(handler=_run_optimize)


def _run_optimize(args) -> int:
    from dspyrl.errors import ConfigError
    from dspyrl.optimize import optimize_program

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out: the run folder to continue")
    optimize_program(args.program, model=args.model, judge=args.judge, reflection_model=args.reflection_model,
                     budget=args.budget, out=args.out, resume=args.resume, seed=args.seed, threads=args.threads,
                     max_tokens=args.max_tokens, group_size=args.group_size, batch_size=args.batch_size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dspyrl",
        description="Make DSPy programs better with GRPO (prompts and LoRA weights) and prove it with paired statistics.")
    parser.add_argument("--version", action="version", version="dspyrl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each subcommand registers itself here; keep the order the user meets them in.
    _add_demo(sub)
    _add_optimize(sub)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DspyrlError as err:
        print(f"dspyrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dspyrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
