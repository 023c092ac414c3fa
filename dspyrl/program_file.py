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
    return ProgramFile(name=path.stem, path=path, build_program=module.build_program, build_reward=module.build_reward,
                       load_examples=module.load_examples, description=getattr(module, "DESCRIPTION", ""), module=module)


def ready_programs() -> list[str]:
    spec = importlib.util.find_spec("dspyrl_programs")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
