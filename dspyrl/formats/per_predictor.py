"""A format per predictor: DSPy picks one format for the whole program (`dspy.settings.adapter`); the prompt policy
chooses one per predictor (constrained choice for a classifier, compact for a small model's free text, ...).

The choice is a plain attribute on the predictor, `dspyrl_format = "choice"`. It survives DSPy's own save and load:
`RunFolder.save_program` writes it into the predictor's state in program.json, and `Predict.load_state` sets every
state key it does not know as an attribute, so `program.load("program.json")` brings it back with nothing from us.

What honours it is `PredictorFormats`, which is both the context's format and a DSPy callback: the callback keeps a
per-thread stack of the Predict calls in progress, and each format call is formatted by the innermost one's chosen
format (the context's previous format for predictors without a choice). `use_predictor_formats(program)` installs
it; every dspyrl entry point runs programs through `run_rollouts`, which does so.

A program called plainly, as every DSPy user calls a compiled program, honours its formats too: `set_format` also
attaches a `FormatPin` to the predictor (a DSPy callback in `predictor.callbacks`, which DSPy's save does not write),
and the pin switches the format for the duration of that predictor's own call. DSPy's `load` restores the attribute but
not the pin, so a saved program is loaded by one call that does both:

    program = dspyrl.load_program(build_program(), "program.json")   # program.load(path) + the pins
    program(question="...")                                           # formatted by the learned format
"""

from __future__ import annotations

import contextlib
import threading

import dspy
from dspy.utils.callback import BaseCallback

FORMAT_ATTRIBUTE = "dspyrl_format"


def set_format(predictor, name: str | None) -> None:
    """Pin a predictor to a named format (see `format_choices_for`); None falls back to the context's format."""
    from dspyrl.formats import format_choices_for

    if name is None:
        predictor.__dict__.pop(FORMAT_ATTRIBUTE, None)
        return
    if name not in format_choices_for(predictor.signature):
        raise ValueError(f"format '{name}' does not apply to {predictor.signature.__name__}; "
                         f"choose one of {', '.join(format_choices_for(predictor.signature))}")
    setattr(predictor, FORMAT_ATTRIBUTE, name)
    pin_formats(predictor)


def pin_formats(program):
    """Attach a FormatPin to every predictor of `program` that has none (idempotent); returns the program."""
    for _, predictor in program.named_predictors():
        callbacks = getattr(predictor, "callbacks", None)
        if callbacks is None:
            predictor.callbacks = callbacks = []
        if not any(isinstance(c, FormatPin) for c in callbacks):
            callbacks.append(_PIN)
    return program


def load_program(program, path):
    """DSPy's `program.load(path)`, then the pins that make its learned formats hold on a plain call."""
    program.load(str(path))
    return pin_formats(program)


def predictor_formats(program) -> dict[str, str]:
    """{predictor name: chosen format} for the predictors that have one."""
    return {name: getattr(p, FORMAT_ATTRIBUTE) for name, p in program.named_predictors()
            if getattr(p, FORMAT_ATTRIBUTE, None)}


class PredictorFormats(dspy.Adapter, BaseCallback):
    """Routes each format call to the calling predictor's chosen format (module docstring)."""

    def __init__(self, fallback: dspy.Adapter | None = None):
        super().__init__()
        self.fallback = fallback or dspy.ChatAdapter()
        self._active = threading.local()
        self._formats: dict[str, dspy.Adapter] = {}
        self._lock = threading.Lock()

    def _stack(self) -> list:
        if not hasattr(self._active, "stack"):
            self._active.stack = []
        return self._active.stack

    # -- callback side: which Predict is running in this thread --------------------------------------------------
    def on_module_start(self, call_id, instance, inputs):
        if isinstance(instance, dspy.Predict):
            self._stack().append((call_id, instance))

    def on_module_end(self, call_id, outputs, exception=None):
        stack = self._stack()
        if stack and stack[-1][0] == call_id:
            stack.pop()

    # -- format side ------------------------------------------------------------------------------------------------
    def format_for(self, predictor) -> dspy.Adapter:
        from dspyrl.formats import format_choices_for

        name = getattr(predictor, FORMAT_ATTRIBUTE, None) if predictor is not None else None
        if not name:
            return self.fallback
        with self._lock:  # formats hold no per-call state: one of each name serves every predictor
            if name not in self._formats:
                self._formats[name] = format_choices_for(predictor.signature)[name]()
            return self._formats[name]

    def _current(self) -> dspy.Adapter:
        stack = self._stack()
        return self.format_for(stack[-1][1] if stack else None)

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        return self._current()(lm, lm_kwargs=lm_kwargs, signature=signature, demos=demos, inputs=inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        return await self._current().acall(lm, lm_kwargs=lm_kwargs, signature=signature, demos=demos, inputs=inputs)

    def format(self, signature, demos, inputs):
        return self._current().format(signature, demos, inputs)

    def parse(self, signature, completion):
        return self._current().parse(signature, completion)

    def format_user_message_content(self, signature, inputs, prefix="", suffix="", main_request=False):
        # dspy.ReAct writes its trajectory with the context's format, between its predictors' calls
        return self._current().format_user_message_content(signature, inputs, prefix=prefix, suffix=suffix,
                                                           main_request=main_request)


class FormatPin(BaseCallback):
    """A predictor's own callback: while that predictor runs, the context's format is its chosen one (module docstring).

    It reads the predictor's `dspyrl_format` at call time (None: it does nothing), so one shared instance serves every
    predictor and survives deep copies as itself."""

    def __init__(self):
        self._open: dict[str, contextlib.AbstractContextManager] = {}
        self._lock = threading.Lock()
        self._formats = PredictorFormats()

    def __deepcopy__(self, memo):
        return self

    def on_module_start(self, call_id, instance, inputs):
        if isinstance(instance, dspy.Predict) and getattr(instance, FORMAT_ATTRIBUTE, None):
            scope = dspy.context(adapter=self._formats.format_for(instance))
            scope.__enter__()  # left in on_module_end, in the same thread and context (DSPy calls both around the call)
            with self._lock:
                self._open[call_id] = scope

    def on_module_end(self, call_id, outputs, exception=None):
        with self._lock:
            scope = self._open.pop(call_id, None)
        if scope is not None:
            scope.__exit__(None, None, None)


_PIN = FormatPin()


def predictor_format_settings(program, fallback: dspy.Adapter | None = None, callbacks: list | None = None) -> dict:
    """The dspy.context settings under which the program's per-predictor formats hold ({} when it has none): the
    router as the format, and as one more callback after `callbacks` (default: the context's)."""
    if not predictor_formats(program):
        return {}
    router = PredictorFormats(fallback or dspy.settings.adapter)
    before = dspy.settings.callbacks if callbacks is None else callbacks
    return {"adapter": router, "callbacks": [*(before or []), router]}


def use_predictor_formats(program, fallback: dspy.Adapter | None = None):
    """A dspy.context in which the program's per-predictor formats hold (a no-op context when it has none)."""
    settings = predictor_format_settings(program, fallback)
    return dspy.context(**settings) if settings else contextlib.nullcontext()
