"""`dspyrl compare A B`: resolve two arms and the data, run ModelComparator, print the table, write the report."""

from __future__ import annotations

from pathlib import Path

from dspyrl.cli.options import add_format_option, add_model_option
from dspyrl.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="A/B test two programs, models, saved programs or adapters with paired statistics",
                       description="Run arms A and B on the same examples and report the paired difference (bootstrap CI, "
                                   "McNemar or Wilcoxon, effect size, n for 80% power), an optional pairwise judge, cost "
                                   "and latency. An arm is 'baseline' (the program as written), a run folder or saved "
                                   "program .json, a LoRA adapter folder, or a model spec (same forms as --model). "
                                   "Writes comparison.json and report.html.")
    p.add_argument("a", metavar="A", help="arm A (e.g. baseline)")
    p.add_argument("b", metavar="B", help="arm B (e.g. runs/sentiment-…/ or openrouter/<vendor>/<model>)")
    p.add_argument("--program", default="sentiment", help="program file the arms are built from and scored with "
                                                          "(name or .py path; default: %(default)s)")
    p.add_argument("--data", default=None, help="dataset file (.jsonl, .csv, …; default: the program's own examples)")
    p.add_argument("--split", default="test", choices=("test", "all"),
                   help="without --data: which of the program's examples (default: %(default)s, the held-out split)")
    add_model_option(p)
    p.add_argument("--judge", default=None,
                   help="LM for a pairwise judge, asked in both orders (same forms as --model; --max-tokens applies)")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare-<time>)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs per arm (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature for both arms (default: 0)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion limit (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true",
                   help="call the models even for answers DSPy has cached (cached calls count no tokens or latency)")
    add_format_option(p, "prompt format of both arms")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    compare_specs(args.a, args.b, program=args.program, data=args.data, split=args.split, model=args.model,
                  judge=args.judge, out=args.out, limit=args.limit, max_tokens=args.max_tokens,
                  num_threads=args.threads, temperature=args.temperature, seed=args.seed, cache=not args.no_cache,
                  format=args.format)
    return 0


def compare_specs(a: str, b: str, *, program: str = "sentiment", data: str | None = None, split: str = "test",
                  model: str = "smollm2", judge: str | None = None, out: str | Path | None = None,
                  limit: int | None = None, max_tokens: int = 128, format: str | None = None, console=None,
                  **settings):
    """`dspyrl compare A B`: resolve the arms and the data, run, print the table, write comparison.json + report.html.

    The data are `--data FILE` (checked against the program's own examples' fields) or, without it, the program's
    own examples: the held-out test split by default (the same seeded split `dspyrl optimize` trains around)."""
    from datetime import datetime

    from rich.console import Console

    from dspyrl.data import DataSpec, load_examples, split_examples
    from dspyrl.lm import lm_from_spec
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
    lm_cache: dict = {}
    lm_kwargs = {"temperature": 0.0, "max_tokens": max_tokens}
    with console.status("loading the models…"):
        arm_a = resolve_arm(a, program_file=program_file, model=model, lm_kwargs=lm_kwargs, lm_cache=lm_cache)
        arm_b = resolve_arm(b, program_file=program_file, model=model, lm_kwargs=lm_kwargs, lm_cache=lm_cache)
        judge_lm = lm_from_spec(judge, temperature=0.0, max_tokens=max_tokens) if judge else None
    if format:  # both arms; a saved program's per-predictor format still wins for its predictors
        from dspyrl.formats import resolve_format

        arm_a.format = resolve_format(format, arm_a.lm)
        arm_b.format = resolve_format(format, arm_b.lm)
    if arm_a.name == arm_b.name:  # two runs named 'program' from different folders: keep them apart in the report
        arm_a.name, arm_b.name = f"{arm_a.name} (A)", f"{arm_b.name} (B)"
    reward = program_file.build_reward(judge_lm=judge_lm)
    judge_module = None
    if judge_lm is not None:
        from dspyrl.rewards.judge import RewardModule

        judge_module = RewardModule(DEFAULT_RUBRIC, judge_lm=judge_lm, name="pairwise")
    console.print(f"[bold]dspyrl compare[/bold]: [cyan]{arm_a.name}[/cyan] vs [cyan]{arm_b.name}[/cyan] on "
                  f"{len(examples)} examples of {program_file.name}"
                  + (f" ({data})" if data else f" ({split} split)") + (f", judge {judge}" if judge else ""))
    comparator = ModelComparator(arm_a, arm_b, examples, reward=reward, judge=judge_module, **settings)
    result = comparator.run()
    result.settings.update({"program": program_file.name, "data": data or f"{program_file.name} ({split} split)",
                            "model": model, "judge": judge, "max_tokens": max_tokens, "format": format})
    out = Path(out or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}")
    report = result.save(out)
    result.print_table(console)
    console.print(f"wrote {out / 'comparison.json'} and {report}")
    return result
