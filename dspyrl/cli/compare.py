"""`dspyrl compare A B`: resolve two arms and the data, run ModelComparator, print the table, write the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dspyrl.cli.options import (ModelOptions, RewardOptions, SpendOptions, add_settings, build_reward, check_format,
                                check_models, check_reward_options, judge_lm as build_judge_lm, settings_of)
from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError


@dataclass(kw_only=True)
class CompareConfig(ModelOptions, RewardOptions, SpendOptions):
    """`dspyrl compare`'s options (the CLI's options are these fields)."""

    a: str = setting(help="arm A (e.g. baseline)", positional=True)
    b: str = setting(help="arm B (e.g. runs/sentiment-…/ or openrouter/<vendor>/<model>)", positional=True)
    program: str = setting("sentiment", "program file the arms are built from and scored with (name or .py path)")
    data: str | None = setting(None, "dataset file (.jsonl, .csv, …; default: the program's own examples)")
    split: str = setting("test", "without --data: which of the program's examples (test: the held-out split)",
                         choices=("test", "all"))
    out: str | None = setting(None, "output folder (default: runs/compare-<time>)")
    force: bool = setting(False, "replace a comparison already in --out")
    limit: int | None = setting(None, "only the first N examples (default: all)", ge=1)
    temperature: float | None = setting(None, "sampling temperature for both arms (default: 0)", ge=0.0)
    seed: int = setting(0, "bootstrap seed", ge=0)
    no_cache: bool = setting(False, "call the models even for answers DSPy has cached (cached calls count no tokens "
                                    "or latency)")

    def __post_init__(self):
        check_settings(self)


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="A/B test two programs, models, saved programs or adapters with paired statistics",
                       description="Run arms A and B on the same examples and report the paired difference (bootstrap CI, "
                                   "McNemar or Wilcoxon, effect size, n for 80% power), an optional pairwise judge, cost "
                                   "and latency. An arm is 'baseline' (the program as written), a run folder or saved "
                                   "program .json, a LoRA adapter folder, or a model spec (same forms as --model). "
                                   "Writes comparison.json and report.html.")
    add_settings(p, CompareConfig, helps={
        "judge": "LM for the program's judge reward and a pairwise judge, asked in both orders (same forms as --model)",
        "format": "prompt format of both arms",
        # compare has no --resume: a capped comparison is run again over the same folder, its calls replayed
        "max_cost": "stop before the wave of examples that would take the LM calls (both arms, the judge) past this "
                    "many USD; a capped comparison names the examples not run and gives no verdict; run it again "
                    "with --force and a higher cap (DSPy's cache replays the calls already made)"})
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    c = settings_of(CompareConfig, args)
    compare_specs(c.a, c.b, program=c.program, data=c.data, split=c.split, model=c.model, judge=c.judge, out=c.out,
                  limit=c.limit, max_tokens=c.max_tokens, judge_max_tokens=c.judge_max_tokens, num_threads=c.threads,
                  temperature=c.temperature, seed=c.seed, cache=not c.no_cache, format=c.format,
                  force=c.force, api_base=c.api_base, timeout=c.timeout, num_retries=c.num_retries,
                  max_cost=c.max_cost, estimate=c.estimate, judge_mode=c.judge_mode, reward_model=c.reward_model)
    return 0


def compare_specs(a: str, b: str, *, program: str = "sentiment", data: str | None = None, split: str = "test",
                  model: str = "smollm2", judge: str | None = None, out: str | Path | None = None,
                  limit: int | None = None, max_tokens: int = 128, format: str | None = None,
                  judge_max_tokens: int = ModelOptions.judge_max_tokens, force: bool = False, console=None,
                  api_base: str | None = None, timeout: float | None = None, num_retries: int | None = None,
                  max_cost: float | None = None, estimate: bool = False, judge_mode: str = "per-sample",
                  reward_model: str | None = None, **settings):
    """`dspyrl compare A B`: resolve the arms and the data, run, print the table, write comparison.json + report.html.

    The data are `--data FILE` (checked against the program's own examples' fields) or, without it, the program's
    own examples: the held-out test split by default (the same seeded split `dspyrl optimize` trains around).
    `api_base`, `timeout`, `num_retries` and the cache (`cache=` among `settings`) reach every LM built here, the two
    arms' and the judge's, as `task_lm`/`judge_lm` give them to other commands. `max_cost` caps the spend of every
    LM call (ModelComparator); `estimate` prints the expected calls and cost, builds the arms (no LM is called) and
    stops before any folder is written. `judge_mode` / `reward_model` build the reward both arms are scored with
    (RewardOptions); the pairwise judge is `judge` either way."""
    from datetime import datetime

    from rich.console import Console

    from dspyrl.data import DataSpec, load_examples, split_examples
    from dspyrl.compare.comparator import DEFAULT_RUBRIC, ModelComparator, resolve_arm
    from dspyrl.program_file import load_program_file

    console = console or Console()
    program_file = load_program_file(program)
    own_examples = program_file.load_examples()
    if data:
        examples = load_examples(data, DataSpec.from_examples(own_examples), limit=limit)
    else:
        if split not in ("test", "all"):
            raise ConfigError(f"--split must be 'test' or 'all', got '{split}'")
        examples = split_examples(own_examples, seed=0)[2] if split == "test" else own_examples
        examples = examples[:limit] if limit else examples
    hosted = {"api_base": api_base, "timeout": timeout, "num_retries": num_retries}
    lm_kwargs = {"temperature": 0.0, "max_tokens": max_tokens, **hosted, "cache": settings.get("cache", True)}

    def arms(lm_cache: dict):
        return [resolve_arm(spec, program_file=program_file, model=model, lm_kwargs=lm_kwargs, lm_cache=lm_cache)
                for spec in (a, b)]

    if estimate:
        console.print(estimate_comparison(arms({}), examples, judge, max_tokens, judge_max_tokens, max_cost))
        return None
    reward_options = RewardOptions(judge_mode=judge_mode, reward_model=reward_model)
    # beside a reward model --judge is only the pairwise judge
    check_reward_options(reward_options, judged=bool(judge) and reward_model is None)
    check_format(format, program_file.build_program(), None)
    # claimed before any model loads: an earlier comparison in --out is not replaced without --force
    from dspyrl.runs import COMPARISON, RunFolder, content_hash

    out = Path(out or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}")
    rows = [dict(example.items()) for example in examples]
    run = RunFolder(out, force=force, fingerprint={"command": "compare", "program": program_file.name, "a": a, "b": b,
                                                   "data": content_hash(rows), "model": model, "format": format,
                                                   "judge": judge, "judge_mode": judge_mode,
                                                   "reward_model": reward_model})
    if run.file(COMPARISON).exists() and not force:
        raise ConfigError(f"{out} already holds a comparison", hint="choose another --out or pass --force")
    check_models(run, judge=judge)
    with console.status("loading the models…"):
        arm_a, arm_b = arms({})
        judge_lm = build_judge_lm(ModelOptions(judge=judge, judge_max_tokens=judge_max_tokens, **hosted,
                                               no_cache=not lm_kwargs["cache"]))
    if format:  # both arms; a saved program's per-predictor format still wins for its predictors
        from dspyrl.formats import resolve_format

        for arm in (arm_a, arm_b):
            check_format(format, arm.program, arm.lm)

        arm_a.format = resolve_format(format, arm_a.lm)
        arm_b.format = resolve_format(format, arm_b.lm)
    if arm_a.name == arm_b.name:  # two runs named 'program' from different folders: keep them apart in the report
        arm_a.name, arm_b.name = f"{arm_a.name} (A)", f"{arm_b.name} (B)"
    reward = build_reward(program_file, reward_options, None if reward_model else judge_lm)
    judge_module = None
    if judge_lm is not None:
        from dspyrl.rewards.judge import RewardModule

        judge_module = RewardModule(DEFAULT_RUBRIC, judge_lm=judge_lm, name="pairwise")
    console.print(f"[bold]dspyrl compare[/bold]: [cyan]{arm_a.name}[/cyan] vs [cyan]{arm_b.name}[/cyan] on "
                  f"{len(examples)} examples of {program_file.name}"
                  + (f" ({data})" if data else f" ({split} split)") + (f", judge {judge}" if judge else ""))
    comparator = ModelComparator(arm_a, arm_b, examples, reward=reward, judge=judge_module, max_cost=max_cost,
                                 **settings)
    result = comparator.run()
    result.settings.update({"program": program_file.name, "data": data or f"{program_file.name} ({split} split)",
                            "model": model, "judge": judge, "judge_mode": judge_mode,
                            "reward_model": reward_model, "max_tokens": max_tokens, "format": format})
    report = result.save(out)
    _write_summary(run, result, program_file.name, model, format, data or f"{program_file.name} ({split} split)")
    run.release()
    result.print_table(console)
    console.print(comparator.meter.summary_line())
    if result.stopped == "cost_cap":
        what = (f"examples {len(result.examples)}+ not run by either arm, no verdict" if result.unscored else
                f"{result.judge['unjudged']} examples not judged")
        console.print(f"[bold]stopped at the cost cap[/bold]: ${comparator.meter.cost:.4f} of ${max_cost:.4f}; {what}; "
                      f"run again with --out {out} --force and a higher --max-cost (DSPy's cache replays the calls "
                      "already made, at no cost)")
    console.print(f"wrote {out / 'comparison.json'} and {report}")
    return result


def estimate_comparison(arms: list, examples: list, judge: str | None, max_tokens: int, judge_max_tokens: int,
                        max_cost: float | None) -> str:
    """The expected calls, tokens and cost of a comparison per arm and the judge, from one formatted prompt per arm
    (dspyrl.lm.usage's estimate, as `dspyrl optimize --estimate` gives it). The judge row counts the reward's judge
    on both arms' outputs and the pairwise judge's two orders: 4 calls an example."""
    from dspyrl.lm.usage import RoleEstimate, format_estimate, prompt_tokens

    n = len(examples)
    rows = []
    for letter, arm in zip("AB", arms):
        prompt = prompt_tokens(arm.program, examples[0], arm.format)
        rows.append(RoleEstimate(f"task ({letter})", getattr(arm.lm, "model", "?"),
                                 n * len(arm.program.named_predictors()), prompt, max_tokens))
    if judge:
        prompt = max(r.prompt_tokens_per_call for r in rows) + 2 * max_tokens  # the inputs and both outputs
        rows.append(RoleEstimate("judge", judge, 4 * n, prompt, judge_max_tokens))
    return format_estimate(rows, max_cost)


def _write_summary(run, result, program: str, model: str, format: str | None, data: str) -> None:
    """summary.json in the one schema: each arm's score on the paired examples, the test's verdict, the counters."""
    stats, cost = result.stats, result.cost
    scores = {}
    for letter, mean in (("A", stats.mean_a), ("B", stats.mean_b)):
        c = cost[letter]
        failed = round((c["error_rate"] + c["parse_failure_rate"]) * max(1, c["rollouts"]))
        scores[letter] = {"score": mean, "n": c["rollouts"], "failures": int(failed), "wall_s": c["wall_s"]}
    run.write_summary({
        "command": "compare", "program": program, "model": model, "format": format, "data": data, "scores": scores,
        "lm_calls": sum(int(cost[x]["lm_calls"]) for x in "AB"),
        "tokens": sum(int(cost[x]["prompt_tokens"]) + int(cost[x]["completion_tokens"]) for x in "AB"),
        "cost": sum(float(cost[x]["cost"] or 0.0) for x in "AB"),
        "wall_s": sum(float(cost[x].get("wall_s", 0.0)) for x in "AB"),
        "arms": {x: result.arms[x]["name"] for x in "AB"}, "verdict": result.verdict,
        "difference": {"mean": stats.mean_diff, "ci": [stats.ci_low, stats.ci_high]},
        "usage": result.usage, "max_cost": result.settings.get("max_cost"), "stopped": result.stopped,
        "unscored": result.unscored})
