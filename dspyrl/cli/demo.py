"""`dspyrl demo`: the main job on the embedded model, offline — run the ready `sentiment` program on SmolLM2
and show accuracy, parse failures, latency and tokens; then optimize it with GRPO from DSPy's default format and say
what GRPO changed, on what valset evidence, and how many of the model's own instruction proposals passed the filters."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dspyrl.formats import ChoiceAdapter, guided_choice_route
from dspyrl.lm import lm_from_spec
from dspyrl.program_file import load_program_file
from dspyrl.score import score_program
from dspyrl.cli.options import add_format_option, add_model_option


def run_demo(model: str = "smollm2", limit: int | None = None, threads: int = 4, program: str = "sentiment") -> dict:
    console = Console()
    spec = load_program_file(program)
    examples = spec.load_examples()[:limit] if limit else spec.load_examples()
    console.print(f"[bold]dspyrl demo[/bold]: program [cyan]{spec.name}[/cyan] on [cyan]{model}[/cyan], {len(examples)} "
                  f"examples, constrained choice — {spec.description}")
    with console.status("loading the model…"):
        lm = lm_from_spec(model, temperature=0.0, max_tokens=64)
    # Small local models cannot follow DSPy's default chat format (measured: chance accuracy, parse failures), but they
    # rank well-formed answers well: constrained choice where the model is ours, DSPy's default format elsewhere.
    format = ChoiceAdapter() if guided_choice_route(lm) is not None else None
    scored, _ = score_program(spec.build_program(), examples, spec.build_reward(), lm, format=format,
                              num_threads=threads, progress=True, description="running")
    wall = scored["wall_s"]
    summary = {
        "examples": scored["rollouts"],
        "accuracy": scored["mean_reward"],
        "failures": scored["failures"],  # unparseable output or LM failure: counted, never fatal
        "latency_s": scored["latency_median_s"],
        "wall_s": wall,
        "prompt_tokens": scored["prompt_tokens"],
        "completion_tokens": scored["completion_tokens"],
    }
    table = Table(title=f"{spec.name} on {model}")
    for column in ("examples", "accuracy", "parse/LM failures", "median latency", "wall time", "tokens in / out"):
        table.add_column(column, justify="right")
    table.add_row(str(summary["examples"]), f"{summary['accuracy']:.1%}", str(summary["failures"]),
                  f"{summary['latency_s']:.2f} s", f"{wall:.1f} s",
                  f"{summary['prompt_tokens']} / {summary['completion_tokens']}")
    console.print(table)
    return summary


# ---------------------------------------------------------------- the command line
def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded model: run the sentiment program on SmolLM2 and show the scores",
                       description="Run the ready `sentiment` program on the embedded SmolLM2-135M-Instruct, offline.")
    add_model_option(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    from dspyrl.optim.prompts.grpo import GRPOConfig

    p.add_argument("--budget", type=int, default=GRPOConfig.max_metric_calls,
                   help="then optimize the program with GRPO for this many metric calls, starting from DSPy's "
                        "ChatAdapter (without its JSON retry), and show starting → optimized on the held-out test split with the format, "
                        "instruction and demos GRPO chose (0: only the first run; default: %(default)s)")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.cli.demo import run_demo

    run_demo(model=args.model, limit=args.limit, threads=args.threads)
    if args.budget:
        from dspyrl.cli.optimize import OptimizeConfig, optimize_program

        # From DSPy's ChatAdapter, which this model cannot follow: the format is one of the things GRPO learns. Without
        # the format's JSON retry: it rescues about half the replies at twice the cost (57% on the test split, and the
        # demo took ~100 s longer).
        summary = optimize_program(OptimizeConfig(program="sentiment", model=args.model, threads=args.threads,
                                                  format="chat"), max_metric_calls=args.budget)
        explain(summary)
    return 0


def explain(summary: dict, console: Console | None = None) -> None:
    """What GRPO changed and on what evidence: a change is kept only when the valset supports it (dspyrl.optim.prompts
    .select), so "kept the original instruction" is a result, not a failure to learn."""
    console = console or Console()
    values = (summary.get("best_val") or {}).get("values") or {}
    proposals = summary.get("proposals") or {}
    diff = summary.get("val_vs_start")
    for name, slots in values.items():
        changed = [f"format → {slots['format']}" if slots.get("format") else None,
                   f"{len(slots.get('demos') or [])} demos" if slots.get("demos") else None]
        changed = ", ".join(c for c in changed if c) or "nothing"
        console.print(f"[bold]what GRPO changed[/bold] in {name}: {changed}; the instruction is "
                      f"{'the original' if slots.get('instruction') == _original(name) else 'a new one'}")
    if diff:
        console.print(f"evidence on the valset: {100 * diff['mean_diff']:+.1f} points [{100 * diff['ci_low']:+.1f}, "
                      f"{100 * diff['ci_high']:+.1f}] against the starting program (paired, n = {diff['n']})")
    if proposals.get("asked"):
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(proposals.get("rejected", {}).items()))
        console.print(f"instruction proposals from the model itself: {proposals['accepted']} of {proposals['asked']} "
                      f"passed the filters ({rejected or 'none rejected'}); a proposal replaces the instruction only "
                      f"on validation evidence")


def _original(predictor_name: str) -> str:
    from dspyrl.program_file import load_program_file

    return dict(load_program_file("sentiment").build_program().named_predictors())[predictor_name].signature.instructions
