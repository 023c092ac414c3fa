"""Options several commands share. Each command module adds its own; a default lives in one place."""

from __future__ import annotations

import argparse


def add_model_option(parser: argparse.ArgumentParser, default: str = "smollm2") -> None:
    parser.add_argument(
        "--model", default=default,
        help="model to run the program on: 'smollm2' (embedded default), a local folder or Hugging Face id "
             "(runs in-process), 'openrouter/<vendor>/<model>', any LiteLLM model string, or "
             "'openai-compatible:<base_url>:<model>' for any OpenAI-compatible server (default: %(default)s)")


def add_format_option(p, what: str) -> None:
    # The names are dspyrl.formats.FORMATS, spelt out here: importing it imports dspy, and `--help` stays instant.
    p.add_argument("--format", default=None,
                   choices=("chat", "json", "compact", "choice", "auto"),
                   help=f"{what}: chat (DSPy's ChatAdapter without its JSON retry; default: DSPy's own), json, compact (short plain text, lenient "
                        "parsing: small models), choice (constrained choice among a Literal/bool field's values, "
                        "local models and `dspyrl serve`), auto (choice where it applies). A predictor whose saved "
                        "program pins a format keeps it")
