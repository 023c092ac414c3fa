"""How a signature becomes a prompt and a reply becomes outputs: the format is a choice, not a given.

- `CompactAdapter`: short plain-text layout, demos as plain input/output pairs, lenient parsing (small models).
- `ChoiceAdapter`: constrained choice among the complete replies of a finite-valued signature (local models, servers
  that honour vLLM's `guided_choice`); never a parse failure.
- `StructuredAdapter`: any signature, the compact layout decoded under a grammar built from it (free text stays free,
  labels are their values, typed fields follow their JSON schema); `AutoFormat` (`auto`): choice for a predictor whose
  every output is a label, structured otherwise.
- `format_choices_for(signature)`: the formats a prompt policy may choose among for one predictor; the choice is
  pinned per predictor (`dspyrl.formats.per_predictor`).
- `resolve_format(name, lm)`: the format behind the CLI's `--format`.
- `label_balanced_demos(examples, field, k, seed)`: demo sets with every label equally often.
"""

from __future__ import annotations

from typing import Callable

import dspy

from dspyrl.formats.choice import ChoiceAdapter, choice_outputs, guided_choice_route
from dspyrl.formats.compact import CompactAdapter
from dspyrl.formats.demos import label_balanced_demos
from dspyrl.formats.structured import AutoFormat, StructuredAdapter, structured_applies


def _chat() -> dspy.Adapter:
    # Without its JSON fallback: a parse failure stays a failure of this format (no hidden second LM call).
    return dspy.ChatAdapter(use_json_adapter_fallback=False)


FORMATS = ("chat", "json", "compact", "choice", "structured", "auto")  # what --format takes on the CLI


def resolve_format(name: str | None, lm=None) -> dspy.Adapter | None:
    """The format a --format name stands for; None (or "") keeps the context's (DSPy's ChatAdapter by default).

    "auto" is, on an LM that takes constrained decoding (our local models, `dspyrl serve`), choice for label-only
    predictors and structured for the others; on any other LM, DSPy's default."""
    from dspyrl.errors import ConfigError

    if not name:
        return None
    if name == "auto":
        return AutoFormat() if guided_choice_route(lm) is not None else None
    factories = {"chat": _chat, "json": dspy.JSONAdapter, "compact": CompactAdapter, "choice": ChoiceAdapter,
                 "structured": StructuredAdapter}
    if name not in factories:
        raise ConfigError(f"unknown format '{name}'", hint=f"choose one of {', '.join(FORMATS)}")
    return factories[name]()


def format_choices_for(signature) -> dict[str, Callable[[], dspy.Adapter]]:
    """Named format factories for a predictor with this signature: chat, json, compact, structured, and choice when it
    applies.

    "choice" is offered only when every output field is finite (Literal / Enum / bool); on an LM that cannot take
    `guided_choice` it behaves as "compact", and so does "structured" on an LM that cannot take a grammar.
    """
    choices: dict[str, Callable[[], dspy.Adapter]] = {"chat": _chat, "json": dspy.JSONAdapter, "compact": CompactAdapter}
    if choice_outputs(signature) is not None:
        choices["choice"] = ChoiceAdapter
    if structured_applies(signature):
        choices["structured"] = StructuredAdapter
    return choices


__all__ = ["FORMATS", "AutoFormat", "ChoiceAdapter", "CompactAdapter", "StructuredAdapter", "format_choices_for", "choice_outputs", "resolve_format",
           "guided_choice_route", "label_balanced_demos"]
