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


class LMFailure(Exception):
    """An LM call that failed in a way a run survives (context too long, empty reply, engine error): the rollout
    is counted as failed and scored with the failure reward. Raised by our engines; not a user-input error."""


# Exceptions raised by the libraries between a program and its model: HTTP clients, providers, DSPy's engine layer.
_LM_ERROR_MODULES = ("litellm", "openai", "httpx", "httpcore", "aiohttp", "requests", "urllib3", "dspy._vendor.lm15")


def is_lm_failure(err: BaseException) -> bool:
    """True for what a rollout may legitimately fail on: an LM/HTTP error (after the client's retries), a timeout,
    or output that cannot be parsed (DSPy's AdapterParseError, which our formats raise too). Anything else raised
    by a program or a reward is the user's bug and must stop the run with its traceback.

    DSPy 3.4 wraps provider and transport errors in `dspy.utils.exceptions.LMError`; of those, a configuration error
    (no LM set) is the user's, and an "unexpected" one counts only when what it wraps is an LM failure (else it is an
    engine bug, which must surface)."""
    from dspy.utils.exceptions import AdapterParseError, LMConfigurationError, LMError, LMUnexpectedError

    if isinstance(err, (AdapterParseError, LMFailure, TimeoutError, ConnectionError)):
        return True
    if isinstance(err, LMError):
        if isinstance(err, LMConfigurationError):
            return False
        if isinstance(err, LMUnexpectedError):
            return err.__cause__ is not None and is_lm_failure(err.__cause__)
        return True
    return any(cls.__module__.split(".")[0] in _LM_ERROR_MODULES or cls.__module__.startswith(_LM_ERROR_MODULES)
               for cls in type(err).__mro__)
