"""`dspyrl` command line: the parser and the error policy; one module per command beside it, each a thin layer over the library.

Every user error surfaces as one line on stderr and exit code 2 (DspyrlError); nothing else is caught, so real bugs keep
their traceback. Heavy imports happen inside the handlers so `dspyrl --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from dspyrl.cli import compare, demo, eval, export, finetune, judge_check, optimize, report, serve, train_reward
from dspyrl.cli.options import ArgumentParser
from dspyrl.errors import DspyrlError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="dspyrl",
        description="Make DSPy programs better with GRPO (prompts and LoRA weights) and prove it with paired statistics.")
    parser.add_argument("--version", action="version", version="dspyrl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each subcommand registers itself here; keep the order the user meets them in.
    for command in (demo, eval, optimize, finetune, export, compare, report, serve, train_reward, judge_check):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error (one line, exit 2, nothing loaded)
        return int(done.code or 0)
    # Everything below is scoped to this command, so a caller of main() (a test, a notebook) keeps its own settings.
    # DSPy logs one warning per completion cut off at max_tokens: with a small model that is a wall of text over the
    # progress bars. The commands count truncated calls in their tables and run folders instead.
    lm_logger = logging.getLogger("dspy.clients.lm")
    lm_logger.addFilter(_drop_truncation_warnings)
    # Keep LiteLLM from fetching a price map from the internet on first use (read when LiteLLM is first imported).
    price_map_was_set = "LITELLM_LOCAL_MODEL_COST_MAP" in os.environ
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        with warnings.catch_warnings():
            # transformers 5 deprecates names that TRL and PEFT still call (`is_gradient_checkpointing`, ...): the
            # warnings are for those libraries' authors, not for someone running `dspyrl finetune`.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
            return int(args.handler(args) or 0)
    except DspyrlError as err:
        print(f"dspyrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dspyrl {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        lm_logger.removeFilter(_drop_truncation_warnings)
        if not price_map_was_set:
            os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)


def _drop_truncation_warnings(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("LM response was truncated")


if __name__ == "__main__":
    sys.exit(main())
