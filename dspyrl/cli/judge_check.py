"""`dspyrl judge-check`: can this judge be trusted on this program? Agreement with a reference reward, position bias,
ties and self-consistency, for the per-sample, group and pairwise modes of one judge (dspyrl.rewards.judge_check).

    dspyrl judge-check math_xml --judge smollm2 --group-size 4      # a program with an exact reward: the truth is known
    dspyrl judge-check summarize --judge openrouter/... --out runs/jc

The program runs `--group-size` times per example on `--model` at `--temperature`; its reward WITHOUT a judge is the
reference (exact match for math_xml and sentiment; summarize's token-F1 proxy — a weaker truth, say so when quoting
it). The judge is the program's own judge reward when it has one (its rubric and fields), else a RewardModule with
`--rubric` that sees `--reference-field` as the reference answer. Writes `<out>/judge_check.json`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dspyrl.cli.options import ModelOptions, add_settings, judge_lm as build_judge_lm, settings_of, task_lm
from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError

DEFAULT_RUBRIC = ("The output answers the task correctly: it agrees with the reference answer when one is given, and "
                  "it is in the requested form.")


@dataclass(kw_only=True)
class JudgeCheckConfig(ModelOptions):
    program: str = setting(help="a ready program name (e.g. math_xml) or a path to a program .py file", positional=True)
    group_size: int = setting(4, "outputs per example (runs of the program)", ge=2)
    temperature: float = setting(1.0, "sampling temperature of those runs", gt=0)
    limit: int | None = setting(None, "only the first N examples (default: all)", ge=1)
    rubric: str = setting(DEFAULT_RUBRIC, "the judge's rubric when the program's reward has no judge")
    reference_field: str | None = setting(None, "example field shown to the judge as the reference answer "
                                                "(when the program's reward has no judge)")
    modes: str = setting("sample,group,pairwise", "judge modes to check, comma-separated")
    pairs_per_group: int = setting(2, "pairs per example asked in pairwise mode (both orders each)", ge=1)
    seed: int = setting(0, "seed of the runs' sampling and of the pairwise sample")
    out: str | None = setting(None, "folder for judge_check.json (default: runs/judge-check-<program>-<time>)")

    def __post_init__(self):
        check_settings(self)


def judge_check(config: JudgeCheckConfig, *, console=None, lm=None, judge_lm=None) -> dict[str, Any]:
    from rich.console import Console

    from dspyrl.program_file import load_program_file
    from dspyrl.rewards.judge import RewardModule, judges_in
    from dspyrl.rewards.judge_check import MODES, check_judge, labelled_groups
    from dspyrl.rollout import run_rollouts
    from dspyrl.runs import write_json_atomic

    console = console or Console()
    modes = tuple(m.strip() for m in config.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--modes: unknown mode(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(MODES)}")
    judge_lm = judge_lm or build_judge_lm(config)
    if judge_lm is None:
        raise ConfigError("judge-check needs a judge: pass --judge MODEL")
    spec = load_program_file(config.program)
    examples = spec.load_examples()[: config.limit] if config.limit else spec.load_examples()
    reference = spec.build_reward(judge_lm=None)
    own = judges_in(spec.build_reward(judge_lm=judge_lm))
    if len(own) > 1:
        raise ConfigError(f"the program's reward has {len(own)} judges ({', '.join(own)}); judge-check takes one")
    judge = next(iter(own.values()), None) or RewardModule(config.rubric, judge_lm=judge_lm,
                                                           reference_field=config.reference_field)
    lm = lm or task_lm(config, temperature=config.temperature)
    console.print(f"[bold]dspyrl judge-check[/bold]: judge {config.judge or 'given'} on {spec.name} "
                  f"({len(examples)} examples × {config.group_size} runs on {config.model}), modes {', '.join(modes)}")
    batch = run_rollouts(spec.build_program(), examples, reference, group_size=config.group_size, lm=lm,
                         num_threads=config.threads, temperature=config.temperature, seed=config.seed,
                         description=f"runs of {spec.name}")
    groups = labelled_groups(batch, examples)
    if not groups:
        raise ConfigError("no example has two scored outputs to judge (every run failed?)",
                          hint="check the program on this model with dspyrl eval first")
    report = check_judge(judge, groups, modes=modes, pairs_per_group=config.pairs_per_group, seed=config.seed,
                         threads=config.threads)
    report.update(program=spec.name, model=config.model, judge=config.judge, rubric=judge.rubric,
                  task_lm_calls=batch.lm_calls, task_tokens=batch.tokens)
    out = Path(config.out or f"runs/judge-check-{Path(config.program).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "judge_check.json", {"config": asdict(config), "report": report})
    console.print(report_table(report))
    console.print(f"written: {out / 'judge_check.json'}")
    return report


def report_table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"judge check: {report.get('program', '')} — {report['groups']} groups, "
                        f"{report['outputs']} outputs (reference ties {_f(report['reference_ties'])})")
    table.add_column("measure")
    for mode in ("sample", "group", "pairwise"):
        if mode in report:
            table.add_column(mode, justify="right")
    rows = [("Spearman ρ with the reference", "spearman"), ("pairwise accuracy vs reference", "pairwise_accuracy"),
            ("pairwise accuracy (pairs asked)", "accuracy"), ("ties (score compression)", "ties"),
            ("first shown: score gain over group mean", "first_position_gain"),
            ("first shown wins (decisive verdicts)", "first_position_rate"),
            ("two orders agree (rank agreement)", "rank_agreement"), ("two orders agree (verdicts)", "consistency"),
            ("judge failures", "failures"), ("judge calls per group", "calls_per_group"),
            ("judge tokens per group", "tokens_per_group")]
    modes = [m for m in ("sample", "group", "pairwise") if m in report]
    for label, key in rows:
        values = [report[m].get(key) for m in modes]
        if any(v is not None for v in values):
            table.add_row(label, *(_f(v) for v in values))
    return table


def _f(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the command line
def add_parser(sub) -> None:
    p = sub.add_parser("judge-check", help="how far to trust a judge: agreement with a reference reward, position "
                                           "bias, ties, consistency across orders (per-sample, group, pairwise)",
                       description="Run a program G times per example, score the outputs with its reference reward "
                                   "and with a judge in each mode, and report the judge's agreement, position bias, "
                                   "score compression, self-consistency and cost.")
    add_settings(p, JudgeCheckConfig)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    judge_check(settings_of(JudgeCheckConfig, args))
    return 0
