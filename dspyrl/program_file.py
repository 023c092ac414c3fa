"""Load a program file: `programs/<name>.py` by name, or any path to a .py file written to the same convention.

A program file defines
    build_program() -> dspy.Module
    build_reward(judge_lm=None) -> reward callable (example, pred, trace=None) -> float | RewardResult
    load_examples() -> list[dspy.Example]   (inputs set with .with_inputs)
and optionally DESCRIPTION: str.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dspyrl.errors import ConfigError

REQUIRED = ("build_program", "build_reward", "load_examples")


@dataclass
class ProgramFile:
    name: str
    path: Path
    build_program: Callable[[], Any]
    build_reward: Callable[..., Any]
    load_examples: Callable[[], list]
    description: str = ""
    module: Any = None


def load_program_file(spec: str) -> ProgramFile:
    """`spec` is a ready program's name ('sentiment') or a path ('programs/sentiment.py', 'my_prog.py')."""
    path = Path(spec).expanduser()
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise ConfigError(f"program file {path} does not exist", hint="pass a ready program name or a .py path")
        module_name = f"dspyrl_program_{path.stem}_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses/pydantic in the file look their module up here
        try:
            module_spec.loader.exec_module(module)
        except SyntaxError as err:
            raise ConfigError(f"{path}:{err.lineno}: syntax error in program file: {err.msg}") from err
        # an import inside the file that fails, a NameError at its top level, ...
        except Exception as err:  # noqa: BLE001 - see above
            raise ConfigError(f"{path}:{_line_in(err, path)}: the program file failed to import: "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")) from err
    else:
        try:
            module = importlib.import_module(f"dspyrl_programs.{spec}")
        except ModuleNotFoundError as err:
            if err.name not in (f"dspyrl_programs.{spec}", "dspyrl_programs"):
                raise
            raise ConfigError(f"unknown program '{spec}'",
                              hint=f"ready programs: {', '.join(ready_programs()) or 'none found'}; or pass a path to a .py file") from err
        path = Path(module.__file__)
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise ConfigError(f"{path}: program file is missing {', '.join(missing)}",
                          hint="a program file defines build_program(), build_reward(judge_lm=None) and load_examples()")
    return ProgramFile(name=path.stem, path=path, build_program=_checked_program(module.build_program, path),
                       build_reward=module.build_reward, load_examples=_checked_examples(module.load_examples, path),
                       description=getattr(module, "DESCRIPTION", ""), module=module)


def _checked_program(build_program: Callable[[], Any], path: Path) -> Callable[[], Any]:
    """build_program(), refusing (one line) what is not a DSPy program; an exception inside it keeps its traceback."""

    def build():
        import dspy

        program = build_program()
        if not isinstance(program, dspy.Module):
            raise ConfigError(f"{path}: build_program() returned {type(program).__name__}, not a dspy.Module",
                              hint="return the program, e.g. `return dspy.Predict(\"question -> answer\")`")
        return program

    return build


def _checked_examples(load_examples: Callable[[], list], path: Path) -> Callable[[], list]:
    """load_examples(), refusing (one line) an empty or non-list result."""

    def load():
        examples = load_examples()
        if not isinstance(examples, (list, tuple)):
            raise ConfigError(f"{path}: load_examples() returned {type(examples).__name__}, not a list of dspy.Example")
        if not examples:
            raise ConfigError(f"{path}: load_examples() returned no examples", hint="return at least one dspy.Example")
        return list(examples)

    return load


def _line_in(err: BaseException, path: Path) -> int | str:
    """The line of `path` where an import-time exception passed (the file's own frame), else '?'."""
    line: int | str = "?"
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def program_fingerprint(spec: ProgramFile, program, examples: list) -> dict:
    """What identifies a program file's run: its name, source hash, predictor signatures and data hash (for a run
    folder's fingerprint: a renamed output field or edited data is another run)."""
    from dspyrl.runs import content_hash

    signatures = {name: {"inputs": list(p.signature.input_fields), "outputs": list(p.signature.output_fields)}
                  for name, p in program.named_predictors()}
    rows = [dict(example.items()) if hasattr(example, "items") else example for example in examples]
    return {"program": spec.name, "source": content_hash(spec.path.read_bytes()), "signatures": signatures,
            "data": content_hash(rows)}


def ready_programs() -> list[str]:
    spec = importlib.util.find_spec("dspyrl_programs")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
