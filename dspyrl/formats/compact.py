"""CompactAdapter: a short plain-text format that small models can follow, and a parser that forgives them.

What a prompt looks like (one output field):

    system:    Classify the sentiment of the review.

               Input: review (a short customer or film review)
               The sentiment is one of: positive or negative.

               Reply with one line:
               sentiment: <sentiment>
    user:      review: I loved every minute of this film.
    assistant: sentiment: positive

Demos are the same user/assistant pairs, so a demo shows exactly the reply that is expected. DSPy's ChatAdapter asks for
`[[ ## field ## ]]` markers, which a 135M model mostly ignores (it answers in prose or code fences); this layout is
what such a model already writes when it behaves.

Parsing is lenient where the meaning is still unambiguous: any case, surrounding whitespace, markdown bold, code
fences, JSON objects, ChatAdapter markers, and prose around a label ("The sentiment is Positive."). For a field with a
finite set of values (Literal, Enum, bool) a reply that names two different values is ambiguous and is rejected. A
reply that cannot be parsed raises DSPy's `AdapterParseError` (the signal the rollout engine counts as a parse
failure); there is no silent fallback and no second LM call.
"""

from __future__ import annotations

import enum
import json
import re
import textwrap
import types
from typing import Any, Literal, Union, get_args, get_origin

import dspy
import json_repair
from dspy.adapters.utils import apply_output_field_defaults, format_field_value, parse_value
from dspy.utils.exceptions import AdapterParseError
from pydantic import TypeAdapter

_TRUE_WORDS = ("yes", "true")
_FALSE_WORDS = ("no", "false")


# ----------------------------------------------------------------------------------------------- finite value sets
def finite_values(annotation) -> list | None:
    """The allowed values of a Literal, Enum or bool annotation (in declaration order), else None."""
    if annotation is bool:
        return [True, False]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return None


def render_value(value) -> str:
    """How a value of a finite field is written in the compact format."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _value_words(value) -> list[str]:
    """Every spelling a reply may use for one allowed value (matched case-insensitively, as whole words)."""
    if isinstance(value, bool):
        return list(_TRUE_WORDS if value else _FALSE_WORDS)
    if isinstance(value, enum.Enum):
        return list(dict.fromkeys([str(value.value), value.name]))
    return [str(value)]


def match_label(text: str, values: list) -> Any:
    """The one allowed value that `text` names; ValueError when it names none or two different ones."""
    cleaned = _strip_decoration(text).lower()
    spans = []  # (start, end, value index) of each whole-word mention
    for index, value in enumerate(values):
        for word in _value_words(value):
            word = word.strip().lower()
            if not word:
                continue
            if cleaned == word:
                return value
            for found in re.finditer(r"(?<![\w])" + re.escape(word) + r"(?![\w])", cleaned):
                spans.append((found.start(), found.end(), index))
    # A mention inside a longer mention ("world" inside "world cup" when both are labels) belongs to the longer one.
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept, reach = [], -1
    for start, end, index in spans:
        if start >= reach:
            kept.append(index)
            reach = end
    named = sorted(set(kept))
    if not named:
        raise ValueError(f"names none of: {', '.join(render_value(v) for v in values)}")
    if len(named) > 1:
        raise ValueError(f"names more than one of the allowed values ({', '.join(render_value(values[i]) for i in named)})")
    return values[named[0]]


# ----------------------------------------------------------------------------------------------- value parsing
def _strip_decoration(text: str) -> str:
    """Remove what small models wrap answers in: whitespace, quotes, backticks, markdown emphasis, a final period."""
    text = text.strip()
    for _ in range(3):
        before = text
        text = text.strip().strip("*_`\"'").strip()
        text = re.sub(r"[.!;,]+$", "", text).strip()
        if text == before:
            break
    return text


def _strip_fences(text: str) -> str:
    """The inside of a ``` fenced block (the model's whole reply when it answers in one), without an end marker."""
    text = re.sub(r"\[\[\s*##\s*completed\s*##\s*\]\]\s*$", "", text.strip())  # ChatAdapter's end marker
    fenced = re.search(r"```[\w-]*\s*\n?(.*?)```", text, flags=re.DOTALL)
    if fenced:
        return fenced.group(1).strip()
    return text.strip().strip("`").strip()


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _one_number(text: str) -> str:
    numbers = list(dict.fromkeys(n.replace(",", "") for n in _NUMBER.findall(text)))
    if len(numbers) != 1:
        raise ValueError("expected exactly one number" if not numbers else f"names several numbers ({', '.join(numbers)})")
    return numbers[0]


def _list_items(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    bullets = [re.sub(r"^(?:[-*•]|\d+[.)])\s+", "", line) for line in lines]
    if len(lines) > 1 or (lines and bullets[0] != lines[0]):
        return [b.strip() for b in bullets]
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_field_value(text: str, annotation) -> Any:
    """One field's text as a value of `annotation`, forgiving the usual small-model noise; ValueError if impossible."""
    values = finite_values(annotation)
    if values is not None:
        return match_label(text, values)
    if annotation is str:
        return text.strip()
    if annotation in (int, float):
        cleaned = _strip_decoration(text)
        try:
            number = float(cleaned.replace(",", ""))
        except ValueError:
            number = float(_one_number(cleaned))
        if annotation is int:
            if not number.is_integer():
                raise ValueError(f"{number} is not an integer")
            return int(number)
        return number
    if get_origin(annotation) is list:
        item_type = (get_args(annotation) or (str,))[0]
        stripped = _strip_fences(text)
        loaded = json_repair.loads(stripped) if stripped.startswith("[") else None
        items = loaded if isinstance(loaded, list) else _list_items(stripped)
        if item_type is str:
            items = [_strip_decoration(str(i)) if not isinstance(i, str) else i.strip().strip("\"'") for i in items]
        return TypeAdapter(annotation).validate_python(items)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        if _strip_decoration(text).lower() in ("", "none", "null", "n/a"):
            return None
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return parse_field_value(text, inner[0])
    return parse_value(_strip_fences(text), annotation)  # dicts, pydantic models, …: DSPy's JSON-repairing parser


# ----------------------------------------------------------------------------------------------- the format
def _field_hint(name: str, field) -> str:
    """The placeholder on an output field's reply line, e.g. `<sentiment>`, `<integer>`.

    A finite field's values are listed on a line of their own (see `_value_line`): written into the reply line
    ("sentiment: positive or negative") a small model copies them verbatim, which names two labels.
    """
    annotation = field.annotation
    if finite_values(annotation) is not None:
        return f"<{name.replace('_', ' ')}>"
    if annotation is int:
        return "<integer>"
    if annotation is float:
        return "<number>"
    if get_origin(annotation) is list:
        item = (get_args(annotation) or (str,))[0]
        example = {str: ["a", "b"], int: [1, 2], float: [0.5, 2.0]}.get(item) or [_example_value(item)]
        return f"<JSON list, e.g. {json.dumps(example)}>"
    if annotation is str:
        return "<text>"
    return "<JSON value>"


def _example_value(annotation) -> Any:
    """A value of `annotation` for a list field's example: an object shows its own keys (a small model copies the
    example's shape, so `["a", "b"]` for a list of objects got it lists of strings)."""
    values = finite_values(annotation)
    if values is not None:
        return render_value(values[0])
    if annotation is int:
        return 1
    if annotation is float:
        return 0.5
    fields = getattr(annotation, "model_fields", None)  # a pydantic model
    if fields:
        return {name: _example_value(field.annotation) for name, field in fields.items()}
    if get_origin(annotation) is list:
        inner = get_args(annotation)
        return [_example_value(inner[0] if inner else str)]
    return "a"


def _value_line(name: str, field) -> str | None:
    """`The sentiment is one of: positive or negative.` for a finite field, else None."""
    values = finite_values(field.annotation)
    if values is None:
        return None
    words = [render_value(v) for v in values]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"The {name.replace('_', ' ')} is one of: {listed}."


def _description(name: str, field) -> str:
    desc = (field.json_schema_extra or {}).get("desc") or ""
    return "" if desc == f"${{{name}}}" else desc


class CompactAdapter(dspy.Adapter):
    """Short plain-text prompts and lenient parsing, for small local models (see the module docstring)."""

    def format_field_description(self, signature) -> str:
        lines = []
        for label, fields in (("Input", signature.input_fields), ("Output", signature.output_fields)):
            for name, field in fields.items():
                desc = _description(name, field)
                lines.append(f"{label}: {name}" + (f" ({desc})" if desc else ""))
        return "\n".join(lines)

    def format_field_structure(self, signature) -> str:
        outputs = signature.output_fields
        head = "Reply with one line:" if len(outputs) == 1 else "Reply with these lines, in this order:"
        return head + "\n" + "\n".join(
            f"{name}: {_field_hint(name, field)}" + (f"  ({_description(name, field)})" if _description(name, field) else "")
            for name, field in outputs.items())

    def format_task_description(self, signature) -> str:
        return textwrap.dedent(signature.instructions or "").strip()

    def format_system_message(self, signature) -> str:
        lines = [f"Input: {name}" + (f" ({_description(name, f)})" if _description(name, f) else "")
                 for name, f in signature.input_fields.items()]
        lines += [line for name, f in signature.output_fields.items() if (line := _value_line(name, f))]
        parts = [self.format_task_description(signature), "\n".join(lines), self.format_field_structure(signature)]
        return "\n\n".join(p for p in parts if p)

    def format_user_message_content(self, signature, inputs, prefix: str = "", suffix: str = "",
                                    main_request: bool = False) -> str:
        lines = [prefix] if prefix else []
        for name, field in signature.input_fields.items():
            if name in inputs:
                value = format_field_value(field_info=field, value=inputs[name])
                lines.append(f"{name}:{chr(10) if chr(10) in value else ' '}{value}")
        if suffix:
            lines.append(suffix)
        return "\n".join(lines).strip()

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None) -> str:
        lines = []
        for name, field in signature.output_fields.items():
            value = outputs.get(name, missing_field_message)
            if value is None:
                text = missing_field_message or ""
            elif finite_values(field.annotation) is not None and not isinstance(value, str):
                text = render_value(value)
            elif isinstance(value, (list, dict)):
                text = json.dumps(value, ensure_ascii=False)
            else:
                text = format_field_value(field_info=field, value=value)
            lines.append(f"{name}:{chr(10) if chr(10) in text else ' '}{text}")
        return "\n".join(lines)

    def parse(self, signature, completion: str) -> dict[str, Any]:
        try:
            fields = self._parse_fields(signature, completion)
        except ValueError as err:
            raise AdapterParseError(adapter_name="CompactAdapter", signature=signature, lm_response=completion,
                                    message=f"could not parse the reply: {err}") from None
        return fields

    def _parse_fields(self, signature, completion: str) -> dict[str, Any]:
        outputs = signature.output_fields
        text = _strip_fences(completion or "")
        sections = _json_sections(text, list(outputs)) or _line_sections(text, list(outputs))
        if not sections and len(outputs) == 1:
            sections = {next(iter(outputs)): text}  # a bare answer ("Positive.") is the one field's value
        parsed = {}
        for name, raw in sections.items():
            try:
                parsed[name] = _section_value(raw, outputs[name].annotation)
            except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
                raise ValueError(f"field '{name}' {str(err).splitlines()[0]}") from None
        parsed = apply_output_field_defaults(signature, parsed)
        missing = [name for name in outputs if name not in parsed]
        if missing:
            raise ValueError(f"no value for {', '.join(missing)}")
        return parsed


def _section_value(raw, annotation):
    """A field's value from its section: text from a `name:` line, or an already-typed value from a JSON reply."""
    if not isinstance(raw, str):
        if finite_values(annotation) is None and annotation is not str:
            try:
                return TypeAdapter(annotation).validate_python(raw)
            except ValueError:
                pass
        raw = json.dumps(raw, ensure_ascii=False) if isinstance(raw, (list, dict)) else str(raw)
    if finite_values(annotation) is not None:
        # The label sits on the header line; later lines are often an explanation that mentions other labels.
        first = next((line for line in raw.splitlines() if line.strip()), "")
        try:
            return parse_field_value(first, annotation)
        except ValueError:
            pass
    return parse_field_value(raw, annotation)


def _header_patterns(names: list[str]) -> tuple[re.Pattern, re.Pattern]:
    """Lines that start an output field: `[[ ## name ## ]]` (ChatAdapter habit), or `name:`, `**Name:**`, `# name:`."""
    spelled = "|".join(re.escape(n).replace("_", "[_ ]") for n in sorted(names, key=len, reverse=True))
    marker = re.compile(r"^\s*\[\[\s*##\s*(?P<name>" + spelled + r")\s*##\s*\]\]\s*(?P<rest>.*)$", re.IGNORECASE)
    label = re.compile(r"^[\s>#*_`\"'-]*(?P<name>" + spelled + r")[\s*_`\"']*:[\s*_`]*(?P<rest>.*)$", re.IGNORECASE)
    return marker, label


def _json_sections(text: str, names: list[str]) -> dict[str, Any]:
    """Fields from a JSON object reply (keys matched case-insensitively), else {}."""
    if not text.lstrip().startswith("{"):
        return {}
    loaded = json_repair.loads(text)
    if not isinstance(loaded, dict):
        return {}
    by_key = {str(k).lower().replace(" ", "_"): v for k, v in loaded.items()}
    return {name: by_key[name.lower()] for name in names if name.lower() in by_key}


def _line_sections(text: str, names: list[str]) -> dict[str, str]:
    """`name: value` sections; a value runs until the next field's header line. The first header of a field wins."""
    marker, label = _header_patterns(names)
    canonical = {n.lower().replace("_", " "): n for n in names}
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        found = marker.match(line) or label.match(line)
        if found:
            name = canonical[found.group("name").lower().replace("_", " ")]
            current = None if name in sections else name  # a repeated header starts nothing new
            if current is not None:
                sections[current] = [found.group("rest")]
            continue
        if current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}
