"""Grammar-constrained decoding: what a request asks its reply to match, compiled into per-token masks (llguidance).

The request fields follow vLLM's OpenAI server, so any OpenAI-compatible client gets the same behaviour from the local
engine and from `dspyrl serve`:
- `response_format`: `{"type": "json_schema", "json_schema": {"schema": {...}}}` (OpenAI's shape; DSPy's canonical
  Request flattens it to `{"type": "json_schema", "schema": {...}}`, also taken), or `{"type": "json_object"}`;
- `structured_outputs`: `{"json": schema}`, `{"regex": "..."}`, `{"grammar": "<Lark>"}`, `{"choice": [...]}`;
- the older `guided_json`, `guided_regex`, `guided_grammar`, `guided_choice` fields.
A choice is answered by scoring the candidates (see `LocalEngine.choose`), not by a grammar.

Why llguidance (1.9.1) and not xgrammar (0.2.8): both compute a SmolLM2-vocabulary mask in microseconds per token on
this CPU (measured: xgrammar 0.004 ms, llguidance 0.014 ms mean per token of a nested JSON schema), a thousandth of one
decode step of the model, so speed does not decide. llguidance has no dependencies (7.6 MB) where xgrammar pulls in
triton (1 GB) and a TVM runtime, and llguidance's Lark grammars embed JSON schemas (`%json {...}`) and cap a free-text
lexeme in tokens (`[max_tokens=N]`), which is what the `structured` format needs: free reasoning lines between typed
fields.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


class ConstraintError(ValueError):
    """A malformed constraint in a request; the message starts with the request field it is about."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class Constraint:
    """What a reply must match: `kind` is "json" (a JSON schema, as text), "regex" or "grammar" (Lark)."""

    kind: str
    spec: str
    param: str = "structured_outputs"  # the request field it came from, named in errors

    def grammar(self) -> str:
        """The llguidance grammar text for this constraint."""
        from llguidance import LLMatcher

        if self.kind == "json":
            # Compact JSON with json.dumps' separators and no free whitespace: a small model cannot stall in a run of
            # spaces or newlines between tokens until max_tokens.
            return LLMatcher.grammar_from_json_schema(self.spec, defaults=JSON_OPTIONS)
        if self.kind == "regex":
            return LLMatcher.grammar_from_regex(self.spec)
        return LLMatcher.grammar_from_lark(self.spec)


_JSON_OBJECT = json.dumps({"type": "object"})
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _schema_text(schema: Any, param: str) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as err:
            raise ConstraintError(param, f"is not valid JSON ({err.msg} at char {err.pos})") from None
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise ConstraintError(param, f"must be a JSON schema object, not {type(schema).__name__}")
    return json.dumps(_bound_integers(schema))


SAFE_INTEGER = 2**53 - 1  # JSON's interoperable integer range


def _bound_integers(node: Any) -> Any:
    """The schema with every unbounded integer limited to ±(2^53 - 1): an unbounded one lets a small model write
    digits until max_tokens (seen with greedy decoding), and no JSON reader agrees on larger values anyway."""
    if isinstance(node, list):
        return [_bound_integers(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _bound_integers(value) for key, value in node.items()}
    if node.get("type") == "integer":
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = -SAFE_INTEGER
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = SAFE_INTEGER
    return node


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConstraintError(param, "must be a non-empty string")
    return value


def parse_constraints(fields: dict[str, Any]) -> tuple[Constraint | None, list[str] | None]:
    """The grammar constraint and the choice candidates a request's fields ask for (each None when absent).

    `fields` holds whichever of response_format / structured_outputs / guided_* the request set. Two constraints on
    one request are refused (vLLM does the same) rather than one silently winning.
    """
    found: list[Constraint] = []
    choice: list[str] | None = None
    response_format = fields.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise ConstraintError("response_format", "must be an object")
        kind = response_format.get("type")
        if kind == "json_schema":
            if "json_schema" in response_format:  # OpenAI's wire shape
                inner = response_format["json_schema"]
                if not isinstance(inner, dict) or "schema" not in inner:
                    raise ConstraintError("response_format.json_schema", "must be an object with a 'schema'")
                found.append(Constraint("json", _schema_text(inner["schema"], "response_format.json_schema.schema"),
                                        "response_format.json_schema.schema"))
            elif "schema" in response_format:  # DSPy's canonical Request flattens it
                found.append(Constraint("json", _schema_text(response_format["schema"], "response_format.schema"),
                                        "response_format.schema"))
            else:
                raise ConstraintError("response_format.json_schema", "is missing")
        elif kind == "json_object":
            found.append(Constraint("json", _JSON_OBJECT, "response_format"))
        elif kind not in (None, "text"):
            raise ConstraintError("response_format.type", f"'{kind}' is not one of text, json_object, json_schema")
    structured = fields.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, dict):
            raise ConstraintError("structured_outputs", "must be an object")
        known = {"json", "regex", "grammar", "choice", "json_object"}
        unknown = sorted(set(structured) - known - {"disable_fallback", "disable_any_whitespace",
                                                    "disable_additional_properties", "whitespace_pattern"})
        if unknown:
            raise ConstraintError(f"structured_outputs.{unknown[0]}", f"is not one of {', '.join(sorted(known))}")
        if structured.get("json") is not None:
            found.append(Constraint("json", _schema_text(structured["json"], "structured_outputs.json"),
                                    "structured_outputs.json"))
        if structured.get("json_object"):
            found.append(Constraint("json", _JSON_OBJECT, "structured_outputs.json_object"))
        if structured.get("regex") is not None:
            found.append(Constraint("regex", _text(structured["regex"], "structured_outputs.regex"),
                                    "structured_outputs.regex"))
        if structured.get("grammar") is not None:
            found.append(Constraint("grammar", _text(structured["grammar"], "structured_outputs.grammar"),
                                    "structured_outputs.grammar"))
        if structured.get("choice") is not None:
            choice = structured["choice"]
    if fields.get("guided_json") is not None:
        found.append(Constraint("json", _schema_text(fields["guided_json"], "guided_json"), "guided_json"))
    if fields.get("guided_regex") is not None:
        found.append(Constraint("regex", _text(fields["guided_regex"], "guided_regex"), "guided_regex"))
    if fields.get("guided_grammar") is not None:
        found.append(Constraint("grammar", _text(fields["guided_grammar"], "guided_grammar"), "guided_grammar"))
    if fields.get("guided_choice") is not None:
        if choice is not None:
            raise ConstraintError("guided_choice", "and structured_outputs.choice are both set; send one")
        choice = fields["guided_choice"]
    if len(found) + (choice is not None) > 1:
        names = [c.param for c in found] + (["choice"] if choice is not None else [])
        raise ConstraintError(names[1], f"and {names[0]} are both set; one constraint per request")
    return (found[0] if found else None), choice


class GrammarCompiler:
    """Compiles constraints for one tokenizer and hands out a fresh matcher per row (compiled grammars are cached)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._ll_tokenizer = None
        self._lock = threading.Lock()
        self._grammars: OrderedDict[Constraint, str] = OrderedDict()

    def _tokenizer(self):
        with self._lock:
            if self._ll_tokenizer is None:
                try:
                    import llguidance.hf
                except ImportError as err:
                    from dspyrl.errors import MissingExtraError

                    raise MissingExtraError("local", "llguidance") from err
                self._ll_tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size)
            return self._ll_tokenizer

    def check(self, constraint: Constraint) -> str:
        """The compiled grammar; ConstraintError naming the request field when it does not compile."""
        from llguidance import LLMatcher

        with self._lock:
            if constraint in self._grammars:
                self._grammars.move_to_end(constraint)
                return self._grammars[constraint]
        tokenizer = self._tokenizer()
        try:
            grammar = constraint.grammar()
        except (ValueError, RuntimeError) as err:
            raise ConstraintError(constraint.param, str(err).strip().splitlines()[0]) from None
        error = LLMatcher.validate_grammar(grammar, tokenizer)
        if error:
            raise ConstraintError(constraint.param, " ".join(error.strip().split())[:300])
        with self._lock:
            self._grammars[constraint] = grammar
            while len(self._grammars) > 128:
                self._grammars.popitem(last=False)
        return grammar

    def matcher(self, constraint: Constraint):
        from llguidance import LLMatcher

        return LLMatcher(self._tokenizer(), self.check(constraint), log_level=0)


def apply_masks(logits, matchers: list) -> None:
    """Set the logits of tokens a row's grammar forbids to -inf, in place (rows whose matcher is None are free)."""
    import torch
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    vocab = logits.shape[-1]
    bitmask = allocate_token_bitmask(len(rows), vocab)
    for slot, row in enumerate(rows):
        fill_next_token_bitmask(matchers[row], bitmask, slot)
    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # (rows, words, 32), little-endian
    allowed = bits.reshape(len(rows), -1)[:, :vocab].bool()
    index = torch.tensor(rows)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
