"""ModelComparator: run arm A and arm B on the same examples and say, honestly, whether B is better.

    comparison = ModelComparator(a, b, examples, reward=exact_label, judge=RewardModule(...))
    result = comparison.run()            # both arms concurrently through dspyrl.rollout.run_rollouts
    print(result.verdict)                # "B beats A by +4.1 points [1.2, 7.0], p = 0.006 (McNemar, n = 200)"
    result.save("runs/ab")               # comparison.json + report.html (+ plots/)

An arm is a program and the LM it runs on: two programs on one LM, one program on two LMs, a saved program
(`program.json`, a run folder) or a LoRA adapter folder on the local model (see `resolve_arm`). Both arms see the same
examples in the same order with the same sampling settings and rollout ids, so every example gives one *pair* of
scores, and the statistics in `dspyrl.compare.stats` are paired. The optional pairwise judge sees each example twice, A's output
first and then B's, and only a preference that survives the swap counts as a win.

With `max_cost` (USD, every LM the comparison calls: both arms, the reward's judge, the pairwise judge), the examples
run in waves of `num_threads`, both arms on the same wave, and no wave starts that the last one's cost says would cross
the cap. A comparison stopped there names the examples neither arm scored and gives no verdict (a paired test on the
examples that happened to run first is not the test that was asked for); judge asks stopped there leave the scores'
verdict standing and say how many examples were judged.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy
import numpy as np

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError, DataError
from dspyrl.rollout import to_jsonable

if TYPE_CHECKING:  # scipy (through dspyrl.compare.stats) loads only when a comparison runs, keeping `import dspyrl` light
    from dspyrl.compare.stats import PairedStats


# ----------------------------------------------------------------------------------------------- arms
@dataclass
class Arm:
    """One side of a comparison: a DSPy program, the LM it runs on (None: the configured dspy LM), and a name."""

    program: dspy.Module
    lm: dspy.LM | None = None
    name: str = ""
    description: str = ""
    format: Any = None  # a dspy.Adapter (Chat / JSON / XML); None: DSPy's default


def resolve_arm(spec: str, *, program_file, model: str = "smollm2", lm_kwargs: dict | None = None,
                lm_cache: dict | None = None) -> Arm:
    """Turn a CLI arm spec into an Arm. In order of precedence, `spec` is
    - 'baseline' or the program file's name: the program as `build_program()` returns it, on `model`;
    - a PEFT adapter folder (has adapter_config.json): the baseline program on `model` + that LoRA adapter;
    - a run folder (has program.json and/or an adapter/ folder) or a saved program .json: `build_program()` with
      that state loaded (DSPy's own `load`), on `model` (+ the run's LoRA adapter);
    - anything else: a model spec ('smollm2', a local folder, 'openrouter/…', 'openai-compatible:…'), running the
      baseline program — so `compare smollm2 openrouter/x/y` is one program on two LMs.
    `lm_cache` lets both arms share one loaded model when they name the same one."""
    from dspyrl.lm import lm_from_spec

    lm_kwargs = dict(lm_kwargs or {})
    lm_cache = {} if lm_cache is None else lm_cache

    def lm_for(model_spec: str, adapter_dir: str | None = None) -> dspy.LM:
        key = (model_spec, adapter_dir)
        if key not in lm_cache:
            kwargs = dict(lm_kwargs, adapter=adapter_dir) if adapter_dir else lm_kwargs
            lm_cache[key] = lm_from_spec(model_spec, **kwargs)
        return lm_cache[key]

    path = Path(spec).expanduser()
    if spec in ("baseline", program_file.name):
        return Arm(program_file.build_program(), lm_for(model), name=spec,
                   description=f"{program_file.name} program as written, on {model}")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return Arm(program_file.build_program(), lm_for(model, str(path)), name=path.name,
                   description=f"{program_file.name} program on {model} + LoRA adapter {path}")
    run_adapter = path / "adapter"
    if path.is_dir() and ((path / "program.json").is_file() or (run_adapter / "adapter_config.json").is_file()):
        adapter_dir = str(run_adapter) if (run_adapter / "adapter_config.json").is_file() else None
        saved = path / "program.json"
        program = _load_saved_program(program_file, saved) if saved.is_file() else program_file.build_program()
        return Arm(program, lm_for(model, adapter_dir), name=path.name,
                   description=f"{program_file.name} program from {saved if saved.is_file() else 'its file'} on {model}"
                               + (f" + LoRA adapter {adapter_dir}" if adapter_dir else "") + _formats_note(program))
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"saved program {path} does not exist")
        program = _load_saved_program(program_file, path)
        return Arm(program, lm_for(model), name=path.stem,
                   description=f"{program_file.name} program from {path} on {model}{_formats_note(program)}")
    if path.suffix == ".py" or (spec.startswith((".", "/", "~")) and not path.exists()):
        raise ConfigError(f"arm '{spec}' is neither a model, a saved program (.json), a run folder nor an adapter folder",
                          hint="the program file itself goes to --program")
    return Arm(program_file.build_program(), lm_for(spec), name=spec,
               description=f"{program_file.name} program as written, on {spec}")


def _formats_note(program) -> str:
    """', format: choice' for a saved program whose predictors pin their format (see dspyrl.formats.per_predictor)."""
    from dspyrl.formats.per_predictor import predictor_formats

    formats = predictor_formats(program)
    if not formats:
        return ""
    if len(formats) == 1:
        return f", format: {next(iter(formats.values()))}"
    return ", formats: " + ", ".join(f"{name} {value}" for name, value in formats.items())


def _load_saved_program(program_file, path: Path) -> dspy.Module:
    program = program_file.build_program()
    _check_saved_fields(program, program_file.name, path)
    try:
        program.load(str(path))
    # DSPy raises KeyError/ValueError/JSONDecodeError for a state of another program
    except Exception as err:  # noqa: BLE001 - see above
        raise ConfigError(f"{path} is not a saved state of the '{program_file.name}' program: "
                          f"{type(err).__name__}: {err}", hint="pass the matching --program") from err
    for predictor in program.predictors():
        predictor.lm = None  # an LM saved with the program would override the arm's: the arm decides what runs it
    return program


def _check_saved_fields(program, program_name: str, path: Path) -> None:
    """A saved state of another program with the same predictor names loads without complaint (DSPy copies the
    saved field prefixes onto ours by position): compare each predictor's fields before loading."""
    import json

    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # DSPy's own load reports it
    for name, predictor in program.named_predictors():
        state = saved if name == "self" else saved.get(name)
        fields = ((state or {}).get("signature") or {}).get("fields") if isinstance(state, dict) else None
        if not isinstance(fields, list):
            continue
        theirs = [str(f.get("prefix", "")).rstrip(":").strip().lower() for f in fields if isinstance(f, dict)]
        ours = [str(f.json_schema_extra.get("prefix", "")).rstrip(":").strip().lower()
                for f in predictor.signature.fields.values()]
        if theirs != ours:
            raise ConfigError(f"{path} is not a saved state of the '{program_name}' program: predictor {name} has "
                              f"fields {', '.join(theirs)}, the program's has {', '.join(ours)}",
                              hint="pass the matching --program")


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
    """The input fields a program needs: its forward()'s required parameters, else its only predictor's input fields
    (None when that cannot be known, e.g. several predictors behind **kwargs)."""
    parameters = [p.name for p in inspect.signature(type(program).forward).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is p.empty]
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
    if len(examples) < 2:
        raise DataError("a paired comparison needs at least 2 examples, got 1")
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
DEFAULT_RUBRIC = ("Which output does the task better for these inputs: correct (agrees with the reference answer when "
                  "one is given), complete, and in the requested form? Length is not a merit in itself.")


def summarize_pairwise(judgements: list, lengths_a: list[int], lengths_b: list[int]) -> dict:
    """Win / loss / tie counts, B's win rate with ties as half, and how often the verdict flipped with the order.

    `judgements` are `PairwiseJudgement`s from `RewardModule.compare`, which asks A-first and B-first and calls a
    disagreement a tie. The inconsistency rate is over the examples where both orders gave a verdict; a judge that
    always prefers the first position flips on every example (1.0) and produces nothing but ties."""
    from dspyrl.rewards.judge_check import pairwise_check

    winners = [j.winner for j in judgements]
    judged = [j for j in judgements if not j.failed]
    b_wins, a_wins = winners.count("B"), winners.count("A")
    ties = len(winners) - b_wins - a_wins
    return {
        "b_wins": b_wins, "a_wins": a_wins, "ties": ties,
        "win_rate_b": (b_wins + 0.5 * ties) / len(winners) if winners else None,
        "inconsistency": sum(not j.consistent for j in judged) / len(judged) if judged else None,
        "failures": len(judgements) - len(judged),
        "mean_length_a": float(np.mean(lengths_a)) if lengths_a else None,
        "mean_length_b": float(np.mean(lengths_b)) if lengths_b else None,
        "check": pairwise_check(judgements),  # position bias, agreement of the two orders, ties (judge-check's)
    }


# ----------------------------------------------------------------------------------------------- the comparator
@dataclass
class ComparisonConfig:
    """Settings shared by both arms (equal by construction, so the comparison stays paired)."""

    seed: int = setting(0, "the bootstrap's seed (sampling is seeded alike anyway: both arms get the same rollout ids)",
                        ge=0)
    temperature: float | None = setting(None, "sampling temperature of both arms (None: each LM's own)", ge=0)
    num_threads: int = setting(4, "concurrent rollouts per arm", ge=1)
    judge_threads: int = setting(4, "concurrent pairwise judgements", ge=1)
    confidence: float = setting(0.95, "level of the bootstrap interval", gt=0, le=1)
    alpha: float = setting(0.05, "significance level of the paired test", gt=0, le=1)
    n_resamples: int = setting(10_000, "bootstrap resamples", ge=100)
    failure_reward: float = setting(0.0, "score of a rollout whose LM call or parse failed")
    cache: bool = setting(True, "use DSPy's cache (cached calls count no tokens or latency)")
    progress: bool = setting(True, "show progress bars")
    max_cost: float | None = setting(None, "USD: no wave of examples (or judge asks) starts that would take the "
                                           "comparison's LM calls past it (module docstring)", gt=0)

    def __post_init__(self):
        check_settings(self)


@dataclass
class ComparisonResult:
    arms: dict[str, dict]
    settings: dict
    stats: PairedStats
    cost: dict[str, dict]
    examples: list[dict]
    judge: dict | None = None
    stopped: str = ""  # "cost_cap" when max_cost stopped the arms or the judge
    unscored: list[int] = field(default_factory=list)  # indices of the examples neither arm ran (stopped at the cap)
    usage: dict | None = None  # calls, tokens and cost per role (dspyrl.lm.usage.UsageMeter.table)

    @property
    def verdict(self) -> str:
        if self.unscored:
            n = len(self.examples) + len(self.unscored)
            return (f"no verdict: stopped at the cost cap after {len(self.examples)} of {n} examples; examples "
                    f"{_ranges(self.unscored)} were not run by either arm")
        return self.stats.verdict

    def to_dict(self) -> dict:
        return {"kind": "comparison", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "verdict": self.verdict,
                "arms": self.arms, "settings": self.settings, "stats": self.stats.to_dict(), "judge": self.judge,
                "cost": self.cost, "examples": self.examples, "stopped": self.stopped, "unscored": self.unscored,
                "usage": self.usage}

    def save(self, out_dir: str | Path) -> Path:
        """Write comparison.json (atomically) and the HTML report; returns the report path."""
        from dspyrl.compare.report import write_comparison_report
        from dspyrl.runs import COMPARISON, scrub_secrets, write_json_atomic

        out_dir = Path(out_dir)
        record = self.to_dict()
        # Only names and descriptions of arms and settings could ever carry a credential; examples are user data, kept.
        record["arms"], record["settings"] = scrub_secrets(record["arms"]), scrub_secrets(record["settings"])
        write_json_atomic(out_dir / COMPARISON, record)
        return write_comparison_report(out_dir)

    def print_table(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        s, names = self.stats, (f"A ({self.arms['A']['name']})", f"B ({self.arms['B']['name']})")
        title = "paired comparison" + (f" of the first {len(self.examples)} examples only (stopped at the cost cap)"
                                        if self.unscored else "")
        scores = Table(title=title, title_justify="left")
        for column in ("arm", "score", "LM calls", "tokens in/out", "cost", "latency p50/p95", "errors", "parse fails"):
            scores.add_column(column, justify="left" if column == "arm" else "right")
        for letter, name, mean in (("A", names[0], s.mean_a), ("B", names[1], s.mean_b)):
            c = self.cost[letter]
            scores.add_row(name, f"{mean * s.scale:.4g}", str(c["lm_calls"]),
                           f"{c['prompt_tokens']:,}/{c['completion_tokens']:,}",
                           "unknown" if c["cost"] is None else f"${c['cost']:.4f}",
                           f"{c['latency_p50_s']:.2f}/{c['latency_p95_s']:.2f} s",
                           f"{c['error_rate']:.0%}", f"{c['parse_failure_rate']:.0%}")
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
        if self.judge and self.judge["win_rate_b"] is None:
            detail.add_row("pairwise judge", "no example judged (stopped at the cost cap)")
        elif self.judge:
            j = self.judge
            flips = "–" if j["inconsistency"] is None else f"{j['inconsistency']:.1%}"
            unjudged = f"; {j['unjudged']} examples not judged (stopped at the cost cap)" if j.get("unjudged") else ""
            detail.add_row("pairwise judge", f"B wins {j['b_wins']}, A wins {j['a_wins']}, ties {j['ties']}; "
                                             f"B win rate {j['win_rate_b']:.1%}; inconsistency {flips}; "
                                             f"mean length A {j['mean_length_a']:.0f} / B {j['mean_length_b']:.0f} chars"
                                             + unjudged)
        console.print(detail)
        console.print(f"[bold]{self.verdict}[/bold]")


class ModelComparator:
    """Run arms A and B on the same examples and compare them; see the module docstring.

    `a`, `b`: a `dspy.Module` (runs on the configured dspy LM) or an `Arm` (program + LM + name).
    `reward`: the per-example score, any reward callable. `judge`: optional, anything with RewardModule's
    `compare(inputs=, output_a=, output_b=, reference=)` and `output_text(pred)`.
    Settings are a `ComparisonConfig` (or its fields as keyword arguments)."""

    def __init__(self, a, b, data, *, reward, judge=None, config: ComparisonConfig | None = None, **settings):
        self.arm_a, self.arm_b = _as_arm(a, "A"), _as_arm(b, "B")
        if not callable(reward):
            raise ConfigError("reward must be a callable (example, pred, trace=None) -> float | RewardResult")
        if judge is not None and not callable(getattr(judge, "compare", None)):
            raise ConfigError(f"judge must be a dspyrl RewardModule (with .compare), got {type(judge).__name__}")
        self.examples = list(data)
        check_examples(self.examples, [self.arm_a, self.arm_b])
        self.reward, self.judge = reward, judge
        self.config = config or ComparisonConfig(**settings)
        self.meter = None  # the last run's UsageMeter: calls, tokens and cost per role

    def run(self) -> ComparisonResult:
        from dspyrl.lm.usage import UsageMeter

        meter = self.meter = UsageMeter(max_cost=self.config.max_cost)  # every role's calls; the cap
        with meter.active():
            result = self._run(meter)
        result.usage = meter.table()
        return result

    def _run(self, meter) -> ComparisonResult:
        from dspyrl.compare.stats import paired_statistics

        c = self.config
        batches, scored = self._run_arms(meter)
        rewards_a = [r.reward.total for r in batches["A"].rollouts]
        rewards_b = [r.reward.total for r in batches["B"].rollouts]
        stats = paired_statistics(rewards_a, rewards_b, seed=c.seed, confidence=c.confidence, alpha=c.alpha,
                                  n_resamples=c.n_resamples, names=self._names())
        rows = [self._example_row(i, batches["A"].rollouts[i], batches["B"].rollouts[i]) for i in range(scored)]
        unscored = list(range(scored, len(self.examples)))
        judge_summary = self._run_judge(batches, rows, meter) if self.judge is not None and not unscored else None
        settings = {"seed": c.seed, "temperature": c.temperature, "examples": len(self.examples),
                    "failure_reward": c.failure_reward, "confidence": c.confidence, "alpha": c.alpha,
                    "bootstrap_resamples": c.n_resamples, "max_cost": c.max_cost}
        arms = {letter: {"name": arm.name, "description": arm.description,
                         "lm": getattr(arm.lm, "model", None), "format": type(arm.format).__name__ if arm.format else None}
                for letter, arm in (("A", self.arm_a), ("B", self.arm_b))}
        cost = {letter: arm_cost(batches[letter], arm.lm) for letter, arm in (("A", self.arm_a), ("B", self.arm_b))}
        stopped = "cost_cap" if unscored or (judge_summary or {}).get("unjudged") else ""
        return ComparisonResult(arms, settings, stats, cost, rows, judge_summary, stopped, unscored)

    def _names(self) -> tuple[str, str]:
        return tuple(letter if arm.name in ("", letter) else f"{letter} ({arm.name})"
                     for letter, arm in (("A", self.arm_a), ("B", self.arm_b)))

    def _run_arms(self, meter) -> tuple[dict, int]:
        """Both arms at once (a local model then batches their requests together), each with its own progress bar;
        under a cost cap, wave by wave. Returns each arm's batch over the first `scored` examples, and `scored`."""
        from dspyrl.rollout import run_rollouts

        c = self.config

        def run(arm: Arm, label: str, examples: list):
            return run_rollouts(arm.program, examples, self.reward, group_size=1, lm=arm.lm, format=arm.format,
                                num_threads=c.num_threads, progress=c.progress, temperature=c.temperature,
                                cache=c.cache, failure_reward=c.failure_reward, description=label)

        names = self._names()
        waves: dict[str, list] = {"A": [], "B": []}

        def wave(start: int, end: int) -> None:
            with ThreadPoolExecutor(max_workers=2) as pool:
                # copy_context: the caller's dspy.context (LM, format, callbacks) holds inside both arms' threads
                futures = {letter: pool.submit(contextvars.copy_context().run, run, arm, name, self.examples[start:end])
                           for letter, arm, name in (("A", self.arm_a, names[0]), ("B", self.arm_b, names[1]))}
                for letter, future in futures.items():
                    waves[letter].append((start, future.result()))

        size = len(self.examples) if c.max_cost is None else max(2, c.num_threads)
        scored = in_waves(len(self.examples), size, meter, wave)
        return {letter: _joined(parts) for letter, parts in waves.items()}, scored

    def _example_row(self, i: int, a, b) -> dict:
        example = self.examples[i]
        row = {"index": i, "inputs": to_jsonable(dict(example.inputs().items())),
               "labels": to_jsonable(dict(example.labels().items())), "reward_a": a.reward.total,
               "reward_b": b.reward.total}
        for letter, rollout in (("a", a), ("b", b)):
            row[f"output_{letter}"] = to_jsonable(dict(rollout.prediction.items())) if rollout.prediction is not None else None
            row[f"error_{letter}"] = rollout.error or (rollout.reward.feedback if rollout.reward.failed else None)
            row[f"raw_{letter}"] = rollout.calls[-1].completion if rollout.error and rollout.calls else None
            row[f"feedback_{letter}"] = rollout.reward.feedback or None
        return row

    def _run_judge(self, batches: dict, rows: list[dict], meter) -> dict:
        """Ask the judge about every example in both orders (RewardModule.compare swaps the positions); under a cost
        cap, wave by wave, and the examples not judged are counted as `unjudged`."""
        from rich.progress import Progress

        judge, c = self.judge, self.config

        def text(rollout) -> str:
            if rollout.prediction is not None:
                return judge.output_text(rollout.prediction)
            raw = rollout.calls[-1].completion if rollout.calls else None
            return raw or "(no output: the program failed)"

        def ask(i: int):
            example = self.examples[i]
            labels = dict(example.labels().items())
            reference = "\n".join(f"{k}: {v}" for k, v in labels.items()) or None
            return judge.compare(inputs=dict(example.inputs().items()), output_a=texts_a[i], output_b=texts_b[i],
                                 reference=reference)

        texts_a = [text(r) for r in batches["A"].rollouts]
        texts_b = [text(r) for r in batches["B"].rollouts]
        judgements = []
        with Progress(disable=not c.progress) as progress, ThreadPoolExecutor(max(1, c.judge_threads)) as pool:
            task = progress.add_task("pairwise judge (both orders)", total=len(rows))

            def wave(start: int, end: int) -> None:
                futures = [pool.submit(contextvars.copy_context().run, ask, i) for i in range(start, end)]
                for future in futures:
                    judgements.append(future.result())
                    progress.advance(task)

            size = len(rows) if c.max_cost is None else max(1, c.judge_threads)
            judged = in_waves(len(rows), size, meter, wave)
        for row, judgement in zip(rows, judgements):
            row["judge"] = judgement.winner
            row["judge_verdicts"] = list(judgement.verdicts)
        summary = summarize_pairwise(judgements, [len(t) for t in texts_a[:judged]], [len(t) for t in texts_b[:judged]])
        return {**summary, "unjudged": len(rows) - judged}


# ----------------------------------------------------------------------------------------------- the cost cap
def in_waves(n: int, size: int, meter, run_wave) -> int:
    """`run_wave(start, end)` over 0..n in waves of `size`, none started once the spend plus the last wave's cost
    reaches `meter`'s cap; returns how many items ran."""
    done, last = 0, 0.0
    while done < n and not meter.over_cap(projected=last):
        before = meter.cost
        run_wave(done, min(n, done + size))
        done, last = min(n, done + size), meter.cost - before
    return done


def _joined(parts: list) -> Any:
    """One RolloutBatch of waves [(first example index, batch), ...]: example indices shifted, counters summed."""
    from dspyrl.rollout import RolloutBatch

    if len(parts) == 1 and parts[0][0] == 0:
        return parts[0][1]
    joined = RolloutBatch([replace(r, example_index=r.example_index + start) for start, batch in parts
                           for r in batch.rollouts])
    for name in ("lm_calls", "failures", "reward_failures", "program_errors", "metric_calls", "truncated",
                 "prompt_tokens", "completion_tokens", "cost", "wall_s"):
        setattr(joined, name, sum(getattr(batch, name) for _, batch in parts))
    for _, batch in parts:
        for kind, count in batch.error_types.items():
            joined.error_types[kind] = joined.error_types.get(kind, 0) + count
    return joined


def _ranges(indices: list[int]) -> str:
    """'12-47' for consecutive example indices (0-based, as in comparison.json's rows), '3, 7' otherwise."""
    if indices and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
    return ", ".join(map(str, indices))


# ----------------------------------------------------------------------------------------------- cost and reliability
def arm_cost(batch, lm) -> dict:
    """Tokens, cost, latency percentiles and failure rates of one arm's rollouts."""
    rollouts = batch.rollouts
    n = max(1, len(rollouts))
    latencies = np.array([r.latency_s for r in rollouts] or [0.0])
    parse_failures = sum(1 for r in rollouts if r.error and r.error.startswith("AdapterParseError"))
    other_errors = sum(1 for r in rollouts if r.error) - parse_failures
    return {
        "rollouts": len(rollouts), "lm_calls": batch.lm_calls,
        "prompt_tokens": batch.prompt_tokens, "completion_tokens": batch.completion_tokens,
        "cost": _known_cost(batch.cost, lm, batch.lm_calls),
        "latency_p50_s": float(np.percentile(latencies, 50)), "latency_p95_s": float(np.percentile(latencies, 95)),
        "error_rate": other_errors / n, "parse_failure_rate": parse_failures / n,
        "reward_failure_rate": batch.reward_failures / n, "error_types": dict(batch.error_types),
        "wall_s": batch.wall_s,
    }


def _known_cost(cost: float, lm, lm_calls: int) -> float | None:
    """The cost in USD where it is known: LiteLLM priced the calls, no call was made, or the model runs in-process
    (free); None when LiteLLM has no price for the model (a cost of 0.0 would then be a lie)."""
    if cost:
        return float(cost)
    model = getattr(lm, "model", None) or getattr(dspy.settings.lm, "model", "") or ""
    if lm_calls == 0 or model.startswith("local/"):
        return 0.0
    import litellm  # already loaded: the calls went through it

    priced = model in litellm.model_cost or model.split("/", 1)[-1] in litellm.model_cost
    return 0.0 if priced else None  # priced but 0.0: every call was a cache hit
