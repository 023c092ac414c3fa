"""Structured: every signature's reply written under a grammar, so a small model's reply always parses.

The prompt and the reply layout are the compact format's (`name: value` lines, demos as plain pairs). The grammar,
built from the signature, fixes the layout and every typed value, and leaves free text free:

    reasoning: <one line of free text, at most max_text_tokens tokens>
    sentiment: positive | negative                  (Literal / Enum / bool: exactly one of the values)
    year: -?[0-9]+                                  (int; float likewise)
    people: %json {"type": "array", ...}            (list / dict / pydantic models: their JSON schema)

It travels to the LM as vLLM's `structured_outputs: {"grammar": "<Lark>"}` request field: our local engine and
`dspyrl serve` decode under it (llguidance, see dspyrl.lm.constraints); vLLM with its guidance backend takes the same
Lark text. Where the request goes is decided like constrained choice's (`guided_choice_route`); on an LM that cannot
take a grammar this format writes and reads the compact format unchanged.

`AutoFormat` is the `auto` format: per predictor, constrained choice when every output is a label, structured
otherwise.
"""

from __future__ import annotations

import asyncio
import json
import types
from typing import Annotated, Any, Union, get_args, get_origin

import dspy

from dspyrl.formats.choice import ChoiceAdapter, choice_outputs, constrained_request, guided_choice_route, sample_texts
from dspyrl.formats.compact import CompactAdapter, finite_values, render_value

MAX_TEXT_TOKENS = 160  # one free-text field's cap; the typed fields after it must still fit in max_tokens
FIELD_TOKENS = 12  # what a field's name and a typed value take, set aside from max_tokens before free text gets any


def _literal(text: str) -> str:
    return json.dumps(text)  # a Lark string literal has JSON's escapes


def _value_rule(annotation, metadata: list | tuple = ()) -> str:
    """The Lark right-hand side for one field's value; `metadata` is the field's pydantic constraints (a signature
    field keeps `Annotated[list[X], Field(min_length=3)]`'s constraints there, not in its annotation)."""
    values = finite_values(annotation)
    if values is not None:
        return " | ".join(_literal(render_value(v)) for v in values)
    if annotation is str:
        return "/[^\\n]+/"
    if annotation is int:
        return "/-?[0-9]{1,15}/"
    if annotation is float:
        return "/-?[0-9]{1,15}(\\.[0-9]{1,8})?/"
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return f"({_value_rule(inner[0])}) | \"none\""
    from pydantic import TypeAdapter

    from dspyrl.lm.constraints import JSON_OPTIONS, _bound_integers

    typed = Annotated[(annotation, *metadata)] if metadata else annotation  # e.g. minItems / maxItems kept
    schema = _bound_integers(TypeAdapter(typed).json_schema())
    schema["x-guidance"] = JSON_OPTIONS
    return "%json " + json.dumps(schema)


def reply_grammar(signature, max_text_tokens: int = MAX_TEXT_TOKENS) -> str:
    """The Lark grammar of a compact-format reply to `signature` (see the module docstring)."""
    lines, rules = [], []
    for index, (name, field) in enumerate(signature.output_fields.items()):
        rule = f"f{index}"
        sep = "" if index == 0 else "\\n"
        lines.append(f'"{sep}{name}: " {rule}')
        body = _value_rule(field.annotation, field.metadata)
        free_text = field.annotation is str or set(get_args(field.annotation)) == {str, type(None)}
        rules.append(f"{rule}{f'[max_tokens={max_text_tokens}]' if free_text else ''}: {body}")
    return "start: " + " ".join(lines) + "\n" + "\n".join(rules) + "\n"


def structured_applies(signature) -> bool:
    """Any signature with outputs can be written under a grammar (every type has a JSON schema at worst)."""
    return bool(signature.output_fields)


class StructuredAdapter(CompactAdapter):
    """The compact format, decoded under the reply grammar of the signature (see the module docstring)."""

    def __init__(self, *, max_text_tokens: int = MAX_TEXT_TOKENS, send_grammar: bool | None = None, callbacks=None):
        super().__init__(callbacks=callbacks)
        self.max_text_tokens = max_text_tokens
        self.send_grammar = send_grammar  # None: decide by guided_choice_route; False: never; True: always

    def text_budget(self, signature, max_tokens: int | None) -> int:
        """Tokens each free-text field may take: its cap, shrunk so the whole reply fits `max_tokens` (a reasoning
        line that ran to max_tokens would leave the label unwritten, and the reply unparsed)."""
        if not max_tokens:
            return self.max_text_tokens
        fields = signature.output_fields.values()
        free = sum(1 for f in fields if f.annotation is str or set(get_args(f.annotation)) == {str, type(None)})
        spare = int(max_tokens) - FIELD_TOKENS * len(fields)
        return max(4, min(self.max_text_tokens, spare // max(free, 1)))

    def applies(self, lm, signature) -> bool:
        if self.send_grammar is False or not structured_applies(signature):
            return False
        return self.send_grammar is True or guided_choice_route(lm) is not None

    def __call__(self, lm, lm_kwargs, signature, demos, inputs) -> list[dict[str, Any]]:
        if not self.applies(lm, signature):
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        messages = self.format(signature, demos, inputs)
        lm_kwargs = dict(lm_kwargs)
        n = int(lm_kwargs.pop("n", None) or getattr(lm, "kwargs", {}).get("n") or 1)
        rollout_id = lm_kwargs.pop("rollout_id", None)
        cache = {"cache": lm_kwargs.pop("cache")} if "cache" in lm_kwargs else {}
        grammar = reply_grammar(signature, self.text_budget(signature, lm_kwargs.get("max_tokens")
                                                            or getattr(lm, "kwargs", {}).get("max_tokens")))
        request = constrained_request(lm, messages, lm_kwargs, {"structured_outputs": {"grammar": grammar}})
        # Parsed like any compact reply: a server that ignored the grammar answered freely and is read leniently.
        return [self.parse(signature, text) for text in sample_texts(lm, request, n, rollout_id, cache)]

    async def acall(self, lm, lm_kwargs, signature, demos, inputs) -> list[dict[str, Any]]:
        if not self.applies(lm, signature):
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        return await asyncio.to_thread(self.__call__, lm, lm_kwargs, signature, demos, inputs)


class AutoFormat(CompactAdapter):
    """`auto`: constrained choice for a predictor whose every output is a label, structured for any other."""

    def __init__(self, callbacks=None):
        super().__init__(callbacks=callbacks)
        self.choice = ChoiceAdapter()
        self.structured = StructuredAdapter()

    def pick(self, signature) -> dspy.Adapter:
        return self.choice if choice_outputs(signature) is not None else self.structured

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        return self.pick(signature)(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        return await self.pick(signature).acall(lm, lm_kwargs, signature, demos, inputs)
