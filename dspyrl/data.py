"""Dataset files → `dspy.Example`s with declared input keys, validated row by row; and the seeded train/val/test split.

Formats: JSON Lines (`.jsonl`), CSV (`.csv`, header row), and Hugging Face `datasets` stored locally (a folder written
by `save_to_disk`, or a `.parquet` / `.arrow` file). Nothing is downloaded.

Every malformed row raises `DataError` naming the file, the line (for JSONL/CSV the physical line, header = line 1
for CSV; for datasets the 1-based row) and the field, because "KeyError: 'answer'" three minutes into a run helps
nobody. What `DataSpec` checks: the file exists, decodes as UTF-8 and has rows; each row is a JSON object / has the
header's column count; required fields are present, not null and (unless allowed) not empty; values have the declared
type (CSV text is converted to it); ids are unique.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import dspy

from dspyrl.errors import DataError, MissingExtraError

_TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", list: "list"}


@dataclass
class DataSpec:
    """What every row must look like."""

    input_keys: tuple[str, ...]  # fields the program reads (become `.with_inputs(...)`)
    required: tuple[str, ...] = ()  # further fields every row needs (gold labels the reward reads)
    types: dict[str, type] = field(default_factory=dict)  # field -> str | int | float | bool | list (float accepts int)
    id_key: str | None = "id"  # when rows carry this field, its values must be unique
    allow_empty: bool = False  # accept "" in required fields

    @classmethod
    def from_examples(cls, examples: list[dspy.Example], **overrides) -> DataSpec:
        """The schema a program's own examples follow: their input keys, their other keys, their value types."""
        if not examples:
            raise DataError("cannot infer a data schema from an empty list of examples")
        first = examples[0]
        inputs = tuple(first.inputs().keys())
        keys = [k for k in first.keys() if not k.startswith("dspy_")]
        types = {k: _json_type(first[k]) for k in keys if _json_type(first[k]) is not None}
        spec = cls(input_keys=inputs, required=tuple(k for k in keys if k not in inputs), types=types)
        for name, value in overrides.items():
            setattr(spec, name, value)
        return spec

    @property
    def all_required(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.input_keys, *self.required]))


def _json_type(value: Any) -> type | None:
    for kind in (bool, int, float, str, list):  # bool before int: True is an int in Python
        if isinstance(value, kind):
            return float if kind is int else kind  # an integer label may be written 3.0 in another file
    return None


# ----------------------------------------------------------------------------------------------- loading
def load_examples(path: str | Path, spec: DataSpec, *, split: str | None = None, limit: int | None = None) -> list[dspy.Example]:
    """Read a dataset file into validated `dspy.Example`s (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir() or path.suffix in (".parquet", ".arrow"):
        rows = _read_hf_dataset(path, split)
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix == ".csv":
        rows = _read_csv(path, spec)
    else:
        raise DataError(f"unsupported file type '{path.suffix or path.name}'", file=str(path),
                        hint="use .jsonl, .csv, .parquet, .arrow or a folder saved with datasets' save_to_disk")
    examples, seen_ids = [], {}
    for line, row in rows:
        _check_row(path, line, row, spec)
        if spec.id_key and spec.id_key in row:
            key = json.dumps(row[spec.id_key], sort_keys=True)
            if key in seen_ids:
                raise DataError(f"duplicate id {row[spec.id_key]!r} (first seen on line {seen_ids[key]})",
                                file=str(path), line=line, field=spec.id_key)
            seen_ids[key] = line
        examples.append(dspy.Example(**row).with_inputs(*spec.input_keys))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError("no rows: the dataset is empty", file=str(path))
    return examples


def _check_row(path: Path, line: int, row: dict, spec: DataSpec) -> None:
    for name in spec.all_required:
        if name not in row:
            present = ", ".join(sorted(row)) or "none"
            raise DataError(f"missing (row has: {present})", file=str(path), line=line, field=name)
        value = row[name]
        if value is None:
            raise DataError("is null", file=str(path), line=line, field=name)
        if isinstance(value, str) and not value.strip() and not spec.allow_empty:
            raise DataError("is an empty string", file=str(path), line=line, field=name)
    for name, kind in spec.types.items():
        if name in row and row[name] is not None and not _is_type(row[name], kind):
            raise DataError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {type(row[name]).__name__} "
                            f"{_preview(row[name])}", file=str(path), line=line, field=name)


def _is_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _preview(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{raw[err.start]:02x})", file=str(path), line=line,
                        hint="re-save the file as UTF-8") from err


def read_jsonl(path: str | Path, *, torn_last_line: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; a bad line is a DataError naming it.

    `torn_last_line=True` skips an unterminated last line that is not valid JSON: what a kill mid-append leaves."""
    path = Path(path)
    text = _decode(path)
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, spacing) are harmless
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if torn_last_line and number == len(lines) and not text.endswith("\n"):
                return
            raise DataError(f"invalid JSON: {err.msg} at column {err.colno}", file=str(path), line=number) from err
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=number)
        yield number, row


def _read_csv(path: Path, spec: DataSpec) -> Iterator[tuple[int, dict]]:
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", file=str(path), line=reader.line_num) from err
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        duplicates = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"duplicate column name(s) in the header: {', '.join(duplicates)}", file=str(path), line=1)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"malformed CSV: {err}", file=str(path), line=reader.line_num) from err
        line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(f"has {len(values)} columns, the header has {len(header)}", file=str(path), line=line)
        row = dict(zip(header, values))
        for name, kind in spec.types.items():
            if name in row:
                row[name] = _from_csv_text(path, line, name, row[name], kind)
        yield line, row


def _from_csv_text(path: Path, line: int, name: str, text: str, kind: type) -> Any:
    """CSV holds text only: convert a cell to the declared type, or say why it cannot be."""
    try:
        if kind is str:
            return text
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
        if kind is list:
            value = json.loads(text)
            if not isinstance(value, list):
                raise ValueError(text)
            return value
    except ValueError:
        raise DataError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {_preview(text)}",
                        file=str(path), line=line, field=name) from None
    return text


def _read_hf_dataset(path: Path, split: str | None) -> Iterator[tuple[int, dict]]:
    try:
        import datasets
    except ImportError as err:
        raise MissingExtraError("local", "datasets") from err
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            builder = "parquet" if path.suffix == ".parquet" else "arrow"
            loaded = datasets.load_dataset(builder, data_files=str(path))
    # datasets raises many types (FileNotFoundError, ArrowInvalid, …); one line for the user
    except Exception as err:  # noqa: BLE001 - see above
        raise DataError(f"cannot read as a Hugging Face dataset: {' '.join(str(err).split())[:200]}",
                        file=str(path)) from err
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            raise DataError(f"choose a split with --split: {', '.join(names)}" if split is None else
                            f"no split '{split}' (has: {', '.join(names)})", file=str(path))
        loaded = loaded[split]
    for index, row in enumerate(loaded, start=1):
        yield index, dict(row)


# ----------------------------------------------------------------------------------------------- splitting
def split_examples(examples: list, seed: int = 0, fractions: tuple[float, float, float] = (0.5, 0.2, 0.3)):
    """Shuffle with `seed` and cut into (train, val, test) by `fractions` (which must sum to 1).

    Every part with a non-zero fraction gets at least one example when there are enough examples, so a small
    dataset never yields an empty test set by rounding.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    sizes = [int(round(f * n)) for f in fractions]
    for i, f in enumerate(fractions):  # no empty part by rounding
        if f > 0 and sizes[i] == 0 and n >= sum(1 for x in fractions if x > 0):
            sizes[i] = 1
    while sum(sizes) > n:  # take back from the largest part
        sizes[sizes.index(max(sizes))] -= 1
    sizes[0] += n - sum(sizes)
    train = shuffled[: sizes[0]]
    val = shuffled[sizes[0]: sizes[0] + sizes[1]]
    test = shuffled[sizes[0] + sizes[1]:]
    return train, val, test
