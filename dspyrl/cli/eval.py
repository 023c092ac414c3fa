"""`dspyrl eval`: score a program on a dataset, show one table, and leave a run folder behind.

    runs/<name>/
      config.json      what was evaluated: program, data, model, judge, sampling (never an API key)
      results.jsonl    one line per example: inputs, gold, prediction, reward and components, error, tokens, latency,
                       and every predictor call (messages, completion, parsed outputs)
      summary.json     mean reward with a 95% interval, each component, failures by type, tokens, cost, wall time
      program.json     the evaluated program in DSPy's own save format

Every run goes through `dspyrl.rollout.run_rollouts`, the same engine the optimizers use, so an eval score and a
training score mean the same thing. Files are written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError
from dspyrl.cli.options import (ModelOptions, RewardOptions, add_settings, build_reward, check_format,
                                check_models, check_reward_options, judge_lm as build_judge_lm, run_fingerprint, settings_of,
                                task_lm)
from dspyrl.score import summarize  # noqa: F401  (its home was here; callers may still import it from dspyrl.cli.eval)


@dataclass(kw_only=True)
class EvalConfig(ModelOptions, RewardOptions):
    """What `dspyrl eval` evaluates and how (the CLI's options are these fields)."""

    program: str = setting(help="a ready program name (e.g. sentiment) or a path to a program .py file", positional=True)
    data: str | None = setting(None, "dataset file: .jsonl, .csv, .parquet/.arrow or a datasets save_to_disk folder "
                                     "(default: the program's own examples)")
    split: str | None = setting(None, "split of a Hugging Face dataset folder")
    out: str | None = setting(None, "run folder (default: runs/eval-<program>-<time>)")
    force: bool = setting(False, "replace an evaluation already in --out, or write into a folder another run made")
    limit: int | None = setting(None, "only the first N examples (default: all)", ge=1)
    temperature: float = setting(0.0, "sampling temperature", ge=0.0)
    failure_reward: float = 0.0  # reward of a run whose LM call or parse failed

    def __post_init__(self):
        check_settings(self)


def evaluate(config: EvalConfig, *, console=None, lm=None, judge_lm=None) -> dict[str, Any]:
    """Run the evaluation; returns the summary (also written to <out>/summary.json). `lm`/`judge_lm` override the
    model specs with ready dspy.LM objects (used by tests and by callers that already hold an LM)."""
    from rich.console import Console

    from dspyrl.formats import resolve_format
    from dspyrl.data import DataSpec, load_examples
    from dspyrl.program_file import load_program_file, program_fingerprint
    from dspyrl.lm.usage import UsageMeter
    from dspyrl.rewards.judge import judges_in
    from dspyrl.runs import CONFIG, RESULTS, SUMMARY, RunFolder
    from dspyrl.score import score_entry, score_program

    console = console or Console()
    out = Path(config.out or f"runs/eval-{Path(config.program).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    spec = load_program_file(config.program)
    program = spec.build_program()
    own_examples = spec.load_examples()
    if config.data:
        examples = load_examples(config.data, DataSpec.from_examples(own_examples), split=config.split)
    else:
        examples = own_examples
    if config.limit:
        examples = examples[: config.limit]
    # the folder is claimed before any model loads: a wrong --out costs nothing
    # before the run folder is claimed and any model loads
    check_reward_options(config, judged=bool(config.judge or judge_lm))
    check_format(config.format, program, None)
    run = RunFolder(out, force=config.force, fingerprint=run_fingerprint("eval", spec, program, examples, config,
                                                                         ["judge", "judge_mode", "reward_model",
                                                                          "temperature", "max_tokens"]))
    if run.file(SUMMARY).exists() and not config.force:
        raise ConfigError(f"run folder {out} already holds an evaluation", hint="choose another --out or pass --force")
    check_models(run, model=None if lm else config.model, judge=None if judge_lm else config.judge)

    if lm is None:
        with console.status(f"loading {config.model}…"):
            lm = task_lm(config, temperature=config.temperature)
    if judge_lm is None and config.judge:
        judge_lm = build_judge_lm(config)
    reward = build_reward(spec, config, judge_lm)
    chosen_format = resolve_format(config.format, lm)
    check_format(config.format, program, lm)

    console.print(f"[bold]dspyrl eval[/bold]: [cyan]{spec.name}[/cyan] on [cyan]{config.model}[/cyan]"
                  f"{f' (judge {config.judge})' if config.judge else ''}, {len(examples)} examples"
                  f"{f' from {config.data}' if config.data else ''}")
    meter = UsageMeter()  # calls, tokens and cost per role (task, judge), as optimize/finetune/compare report them
    with meter.active():
        summary, batch = score_program(program, examples, reward, lm, format=chosen_format,
                                       num_threads=config.threads, progress=True,
                                       failure_reward=config.failure_reward, description=f"eval {spec.name}",
                                       component_names=list(getattr(reward, "weights", {}) or []))
    summary = {"command": "eval", "program": spec.name, "model": config.model, "format": config.format,
               "data": config.data or "(program's own)", "scores": {"eval": score_entry(summary)},
               "judge": config.judge, **summary, "usage": meter.table()}
    judges = judges_in(reward)
    if judges:
        summary["judge_stats"] = {name: {"mode": j.mode, "judgements": j.stats.judgements, "groups": j.stats.groups,
                                         "lm_calls": j.stats.lm_calls, "cache_hits": j.stats.cache_hits,
                                         "lm_attempts": j.stats.lm_attempts, "failures": j.stats.failures,
                                         "failure_rate": j.stats.failure_rate,
                                         "inconsistency_rate": j.stats.inconsistency_rate}
                                  for name, j in judges.items()}

    run.write_config({**asdict(config), "out": str(out)})
    run.write_jsonl(RESULTS, [_result_row(rollout, examples[rollout.example_index]) for rollout in batch.rollouts])
    run.save_program(program)
    summary = run.write_summary(summary)
    run.release()
    console.print(summary_table(summary))
    console.print(meter.summary_line())
    console.print(f"run folder: {out}")
    return summary


def summary_table(summary: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"{summary.get('program', '')} on {summary.get('model', '')}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    ci = summary.get("ci95")
    table.add_row("examples", str(summary["examples"]))
    table.add_row("mean reward", f"{summary['mean_reward']:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}] 95%" if ci else ""))
    for name, value in summary["components"].items():
        table.add_row(f"  {name}", f"{value:.3f}")
    table.add_row("failures (LM / parse)", f"{summary['failures']} ({summary['failure_rate']:.0%})"
                  + (f"  {_counts(summary['error_types'])}" if summary["error_types"] else ""))
    table.add_row("reward failures (judge)", str(summary["reward_failures"]))
    for name, stats in (summary.get("judge_stats") or {}).items():
        asked = stats["groups"] if stats.get("mode") == "group" else stats["judgements"]
        table.add_row(f"  {name}: {'groups' if stats.get('mode') == 'group' else 'judgements'} / cached / failed",
                      f"{asked} / {stats['cache_hits']} / {stats['failures']}")
    table.add_row("LM calls (cut off at max tokens)", f"{summary['lm_calls']} ({summary.get('truncated', 0)})")
    table.add_row("tokens in / out", f"{summary['prompt_tokens']} / {summary['completion_tokens']}")
    if summary["cost"]:
        table.add_row("cost", f"${summary['cost']:.4f}")
    table.add_row("latency median / p90", f"{summary['latency_median_s']:.2f} s / {summary['latency_p90_s']:.2f} s")
    table.add_row("wall time", f"{summary['wall_s']:.1f} s")
    return table


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _result_row(rollout, example) -> dict[str, Any]:
    row = rollout.to_json()
    row["inputs"] = dict(example.inputs())
    row["gold"] = {k: v for k, v in example.items() if k not in row["inputs"]}
    return row


# ---------------------------------------------------------------- the command line
def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a program on a dataset: mean reward, components, failures, tokens; writes a run folder",
                       description="Evaluate a program concurrently through the rollout engine, print one table and "
                                   "write a run folder (config.json, results.jsonl, summary.json, program.json).")
    add_settings(p, EvalConfig)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    evaluate(settings_of(EvalConfig, args))
    return 0
