"""ModelComparator: run arm A and arm B on the same examples and say, honestly, whether B is better.

    comparison = ModelComparator(a, b, examples, reward=exact_label, judge=RewardModule(...))
    result = comparison.run()            # both arms concurrently through dspyrl.rollout.run_rollouts
    print(result.verdict)                # "B beats A by +4.1 points [1.2, 7.0], p = 0.006 (McNemar, n = 200)"
    result.save("runs/ab")               # comparison.json + report.html (+ plots/)

An arm is a program and the LM it runs on: two programs on one LM, one program on two LMs, a saved program
(`program.json`, a run folder) or a LoRA adapter folder on the local model (see `resolve_arm`). Both arms see the same
examples in the same order with the same sampling settings and rollout ids, so every example gives one *pair* of
scores, and the statistics in `dspyrl.stats` are paired. The optional pairwise judge sees each example twice, A's output
first and then B's, and only a preference that survives the swap counts as a win.
"""

from __future__ import annotations

import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dspy
import numpy as np

from dspyrl.errors import ConfigError, DataError
from dspyrl.stats import PairedStats, paired_statistics


# ----------------------------------------------------------------------------------------------- arms
@dataclass
class Arm:
    """One side of a comparison: a DSPy program, the LM it runs on (None: the configured dspy LM), and a name."""

    program: dspy.Module
    lm: dspy.LM | None = None
    name: str = ""
    description: str = ""
    adapter: Any = None  # a dspy.Adapter (Chat / JSON / XML); None: DSPy's default


def resolve_arm(spec: str, *, program_file, model: str = "smollm2", lm_kwargs: dict | None = None,
                lm_cache: dict | None = None) -> Arm:
    """Turn a CLI arm spec into an Arm. In order of precedence, `spec` is
    - 'baseline' or the program file's name: the program as `build_program()` returns it, on `model`;
    - a PEFT adapter folder (has adapter_config.json): the baseline program on `model` + that LoRA adapter;
    - a run folder (has program.json, optionally an adapter/ folder) or a saved program .json: `build_program()` with
      that state loaded (DSPy's own `load`), on `model` (+ the run's adapter);
    - anything else: a model spec ('smollm2', a local folder, 'openrouter/…', 'openai-compatible:…'), running the
      baseline program — so `compare smollm2 openrouter/x/y` is one program on two LMs.
    `lm_cache` lets both arms share one loaded model when they name the same one."""
    from dspyrl.lm import lm_from_spec

    lm_kwargs = dict(lm_kwargs or {})
    lm_cache = {} if lm_cache is None else lm_cache

    def lm_for(model_spec: str, adapter: str | None = None) -> dspy.LM:
        key = (model_spec, adapter)
        if key not in lm_cache:
            kwargs = dict(lm_kwargs, adapter=adapter) if adapter else lm_kwargs
            lm_cache[key] = lm_from_spec(model_spec, **kwargs)
        return lm_cache[key]

    path = Path(spec).expanduser()
    if spec in ("baseline", program_file.name):
        return Arm(program_file.build_program(), lm_for(model), name=spec,
                   description=f"{program_file.name} program as written, on {model}")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return Arm(program_file.build_program(), lm_for(model, str(path)), name=path.name,
                   description=f"{program_file.name} program on {model} + LoRA adapter {path}")
    if path.is_dir() and (path / "program.json").is_file():
        adapter = path / "adapter"
        adapter = str(adapter) if (adapter / "adapter_config.json").is_file() else None
        program = _load_saved_program(program_file, path / "program.json")
        return Arm(program, lm_for(model, adapter), name=path.name,
                   description=f"{program_file.name} program from {path / 'program.json'} on {model}"
                               + (f" + LoRA adapter {adapter}" if adapter else ""))
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"saved program {path} does not exist")
        return Arm(_load_saved_program(program_file, path), lm_for(model), name=path.stem,
                   description=f"{program_file.name} program from {path} on {model}")
    if path.suffix == ".py" or (spec.startswith((".", "/", "~")) and not path.exists()):
        raise ConfigError(f"arm '{spec}' is neither a model, a saved program (.json), a run folder nor an adapter folder",
                          hint="the program file itself goes to --program")
    return Arm(program_file.build_program(), lm_for(spec), name=spec,
               description=f"{program_file.name} program as written, on {spec}")


def _load_saved_program(program_file, path: Path) -> dspy.Module:
    program = program_file.build_program()
    try:
        program.load(str(path))
    except Exception as err:  # DSPy raises KeyError/ValueError/JSONDecodeError for a state of another program
        raise ConfigError(f"{path} is not a saved state of the '{program_file.name}' program: "
                          f"{type(err).__name__}: {err}", hint="pass the matching --program") from err
    return program


def _as_arm(value, letter: str) -> Arm:
    if isinstance(value, Arm):
        if not value.name:
            value.name = letter
        return value
    if isinstance(value, dspy.Module):
        return Arm(value, name=letter, description=type(value).__name__)
    raise ConfigError(f"arm {letter} must be a dspy.Module or a dspyrl.compare.Arm, got {type(value).__name__}",
                      hint="resolve CLI-style specs with dspyrl.compare.resolve_arm")


def program_input_fields(program: dspy.Module) -> list[str] | None:
    """The input fields a program needs: its forward()'s named parameters, else its only predictor's input fields
    (None when that cannot be known, e.g. several predictors behind **kwargs)."""
    parameters = [p.name for p in inspect.signature(type(program).forward).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if parameters:
        return parameters
    predictors = program.predictors()
    if len(predictors) == 1:
        return list(predictors[0].signature.input_fields)
    return None


def check_examples(examples: list, arms: list[Arm]) -> None:
    """Fail before any LM call when the data cannot feed both programs (one line naming the example and field)."""
    if not examples:
        raise DataError("no examples to compare on", hint="pass a non-empty dataset")
    for i, example in enumerate(examples):
        if not isinstance(example, dspy.Example):
            raise DataError(f"example {i} is a {type(example).__name__}, not a dspy.Example")
        try:
            given = set(example.inputs().keys())
        except ValueError as err:  # dspy: "Inputs have not been set for this example"
            raise DataError(f"example {i} has no input fields set", hint="call .with_inputs(...) on each example") from err
        for arm in arms:
            needed = program_input_fields(arm.program) or []
            missing = [name for name in needed if name not in given]
            if missing:
                raise DataError(f"example {i} lacks input '{missing[0]}' that arm {arm.name}'s program needs "
                                f"(example inputs: {', '.join(sorted(given)) or 'none'})", field=missing[0])


# ----------------------------------------------------------------------------------------------- pairwise judge
FIRST, SECOND, TIE = "first", "second", "tie"


@dataclass
class PairwiseOutcome:
    """The judge's two looks at one example, as arm letters: 'A', 'B', 'tie', or None when the judge call failed."""

    ab: str | None  # A's output shown first
    ba: str | None  # B's output shown first

    @property
    def winner(self) -> str:
        """A win must survive the position swap; anything else (incl. a failed look) is a tie."""
        return self.ab if self.ab == self.ba and self.ab in ("A", "B") else "tie"

    @property
    def inconsistent(self) -> bool:
        return self.ab is not None and self.ba is not None and self.ab != self.ba


def position_to_arm(preferred: str | None, first: str) -> str | None:
    """Map the judge's preferred position ('first'/'second'/'tie') to the arm letter shown there."""
    second = "B" if first == "A" else "A"
    return {FIRST: first, SECOND: second, TIE: "tie"}.get(preferred)


def summarize_pairwise(outcomes: list[PairwiseOutcome], lengths_a: list[int], lengths_b: list[int]) -> dict:
    """Win / loss / tie counts, B's win rate with ties as half, and how often the verdict flipped with the order."""
    winners = [o.winner for o in outcomes]
    judged = [o for o in outcomes if o.ab is not None and o.ba is not None]
    b_wins, a_wins = winners.count("B"), winners.count("A")
    ties = len(winners) - b_wins - a_wins
    return {
        "b_wins": b_wins, "a_wins": a_wins, "ties": ties,
        "win_rate_b": (b_wins + 0.5 * ties) / len(winners) if winners else None,
        "inconsistency": sum(o.inconsistent for o in judged) / len(judged) if judged else None,
        "failures": len(outcomes) - len(judged),
        "mean_length_a": float(np.mean(lengths_a)) if lengths_a else None,
        "mean_length_b": float(np.mean(lengths_b)) if lengths_b else None,
    }


# ----------------------------------------------------------------------------------------------- the comparator
@dataclass
class ComparisonConfig:
    """Settings shared by both arms (equal by construction, so the comparison stays paired)."""

    seed: int = 0  # bootstrap seed; rollout ids are the example index, the same in both arms
    temperature: float | None = None  # None: each LM's own setting
    num_threads: int = 4  # concurrent rollouts per arm
    judge_threads: int = 4
    confidence: float = 0.95
    alpha: float = 0.05
    n_resamples: int = 10_000
    failure_reward: float = 0.0  # score of a rollout whose LM call or parse failed
    cache: bool = True
    progress: bool = True


@dataclass
class ComparisonResult:
    arms: dict[str, dict]
    settings: dict
    stats: PairedStats
    cost: dict[str, dict]
    examples: list[dict]
    judge: dict | None = None

    @property
    def verdict(self) -> str:
        return self.stats.verdict

    def to_dict(self) -> dict:
        return {"kind": "comparison", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "verdict": self.verdict,
                "arms": self.arms, "settings": self.settings, "stats": self.stats.to_dict(), "judge": self.judge,
                "cost": self.cost, "examples": self.examples}

    def save(self, out_dir: str | Path) -> Path:
        """Write comparison.json (atomically) and the HTML report; returns the report path."""
        from dspyrl.report import COMPARISON_FILE, write_comparison_report
        from dspyrl.runs import scrub_secrets, write_json_atomic

        out_dir = Path(out_dir)
        write_json_atomic(out_dir / COMPARISON_FILE, scrub_secrets(self.to_dict()))
        return write_comparison_report(out_dir)

    def print_table(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        s, names = self.stats, (f"A ({self.arms['A']['name']})", f"B ({self.arms['B']['name']})")
        scores = Table(title="paired comparison", title_justify="left")
        for column in ("arm", "mean score", "LM calls", "tokens in / out", "cost", "latency p50 / p95",
                       "errors", "parse failures"):
            scores.add_column(column, justify="right" if column != "arm" else "left")
        for letter, name, mean in (("A", names[0], s.mean_a), ("B", names[1], s.mean_b)):
            c = self.cost[letter]
            scores.add_row(name, f"{mean * s.scale:.4g}{' pts' if s.unit else ''}", str(c["lm_calls"]),
                           f"{c['prompt_tokens']:,} / {c['completion_tokens']:,}",
                           "unknown" if c["cost"] is None else f"${c['cost']:.4f}",
                           f"{c['latency_p50_s']:.2f} / {c['latency_p95_s']:.2f} s",
                           f"{c['error_rate']:.1%}", f"{c['parse_failure_rate']:.1%}")
        console.print(scores)
        detail = Table(show_header=False, box=None)
        detail.add_row("difference B − A", f"{s.mean_diff * s.scale:+.4g} [{s.ci_low * s.scale:.4g}, "
                                           f"{s.ci_high * s.scale:.4g}] ({s.confidence:.0%} paired bootstrap)")
        if s.mcnemar:
            detail.add_row("McNemar (exact)", f"B only right {s.mcnemar['b_only']}, A only right {s.mcnemar['a_only']}, "
                                              f"p = {s.mcnemar['p_value']:.4g}")
        detail.add_row("Wilcoxon / sign test", f"p = {s.wilcoxon['p_value']:.4g} / p = {s.sign_test['p_value']:.4g}")
        dz = s.effect_size["cohens_dz"]
        detail.add_row("effect size", f"d_z = {'–' if dz is None else f'{dz:.3g}'}, "
                                      f"rank-biserial r = {s.effect_size['rank_biserial']:.3g}")
        detail.add_row("n for 80% power", f"{'–' if s.n_for_power is None else f'{s.n_for_power:,}'}")
        if self.judge:
            j = self.judge
            flips = "–" if j["inconsistency"] is None else f"{j['inconsistency']:.1%}"
            detail.add_row("pairwise judge", f"B wins {j['b_wins']}, A wins {j['a_wins']}, ties {j['ties']}; "
                                             f"B win rate {j['win_rate_b']:.1%}; inconsistency {flips}; "
                                             f"mean length A {j['mean_length_a']:.0f} / B {j['mean_length_b']:.0f} chars")
        console.print(detail)
        console.print(f"[bold]{s.verdict}[/bold]")
