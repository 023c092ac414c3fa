"""Typed errors for everything a user can get wrong.

Each error renders as ONE line that names where the problem is (file, line, field) and what to do,
because the CLI prints exactly `str(error)` and exits 2 — no traceback ever reaches a user for bad input.
"""

from __future__ import annotations


class DspyrlError(Exception):
    """Base class: a problem the user can fix. `str()` is a single line."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = " ".join(str(message).split())  # force one line
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DataError(DspyrlError):
    """A dataset file or row is malformed: names file, line and field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = f"{file}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field:
            message = f"field '{field}': {message}"
        super().__init__(where + message, hint=hint)


class ModelError(DspyrlError):
    """A model spec cannot be resolved or loaded (unknown id, corrupt folder)."""


class MissingExtraError(DspyrlError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, package: str):
        super().__init__(f"'{package}' is not installed",
                         hint=f"install it with: pip install -c constraints.txt 'dspyrl[{extra}]'")


class MissingKeyError(DspyrlError):
    """An API key environment variable is missing."""

    def __init__(self, variable: str, what: str):
        super().__init__(f"{what} needs the environment variable {variable}, which is not set",
                         hint=f"export {variable}=...")


class ConfigError(DspyrlError):
    """An option or program file is invalid."""
