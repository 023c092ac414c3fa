"""Config dataclass fields that carry their own help text and allowed values, and the check that enforces them.

    @dataclass
    class GRPOConfig:
        group_size: int = setting(4, "prompt choices sampled per training example", ge=1)
        def __post_init__(self):
            check_settings(self)

The CLI builds its options from these fields (dspyrl.cli.options.add_settings), so a default, its help and its range
live in one place: TRL derives its CLI from its config dataclasses the same way (HfArgumentParser). The same ranges
hold for library callers: `GRPO(reward, group_size=0)` is a ConfigError, not a ZeroDivisionError three minutes in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field
from typing import Any

from dspyrl.errors import ConfigError


def setting(default: Any = MISSING, help: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, choices: tuple | None = None, flag: str | None = None,
            positional: bool = False, default_factory: Any = MISSING) -> Any:
    """A dataclass field with its help text and allowed values (None is always allowed where the default is None).

    `flag` names the CLI option when it differs from the field (`max_metric_calls` is `--budget`)."""
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "choices": choices, "flag": flag, "positional": positional}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def problem(f: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with `value` for field `f` (None: nothing)."""
    meta = f.metadata
    if value is None:  # "not set": an Optional field's default, checked by whoever fills it in
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if meta.get("gt") is not None and not value > meta["gt"]:
        return f"must be greater than {meta['gt']}, got {value}"
    if meta.get("ge") is not None and not value >= meta["ge"]:
        return f"must be at least {meta['ge']}, got {value}"
    if meta.get("le") is not None and not value <= meta["le"]:
        return f"must be at most {meta['le']}, got {value}"
    return None


def check_settings(config: Any) -> None:
    """Raise ConfigError naming the first field outside its range (call it from the dataclass's __post_init__)."""
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        message = problem(f, getattr(config, f.name))
        if message:
            raise ConfigError(f"{type(config).__name__}.{f.name} {message}")
