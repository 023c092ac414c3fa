"""`dspyrl` command line: one subcommand per job, each a thin layer over the library.

Every user error surfaces as one line on stderr and exit code 2 (DspyrlError); nothing else is caught, so real bugs keep
their traceback. Heavy imports happen inside the handlers so `dspyrl --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from dspyrl.errors import DspyrlError

# Keep LiteLLM from fetching a price map from the internet on first use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _add_model_option(parser: argparse.ArgumentParser, default: str = "smollm2") -> None:
    parser.add_argument(
        "--model", default=default,
        help="model to run the program on: 'smollm2' (embedded default), a local folder or Hugging Face id "
             "(runs in-process), 'openrouter/<vendor>/<model>', any LiteLLM model string, or "
             "'openai-compatible:<base_url>:<model>' for any OpenAI-compatible server (default: %(default)s)")


# ---------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API",
                       description="Serve a local model as /v1/chat/completions and /v1/models (OpenAI-compatible).")
    p.add_argument("--model", default="smollm2", help="local model: 'smollm2', a local folder or a cached HF id (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="PEFT LoRA adapter folder to apply on top of the model")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the --model value)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from dspyrl.lm.server import serve

    serve(args.model, adapter=args.adapter, host=args.host, port=args.port, served_name=args.name)
    return 0


def _add_format_option(p, what: str) -> None:
    # The names are dspyrl.adapters.FORMATS, spelt out here: importing it imports dspy, and `--help` stays instant.
    p.add_argument("--format", default=None,
                   choices=("chat", "json", "compact", "choice", "auto"),
                   help=f"{what}: chat (DSPy's ChatAdapter without its JSON retry; default: DSPy's own), json, compact (short plain text, lenient "
                        "parsing: small models), choice (constrained choice among a Literal/bool field's values, "
                        "local models and `dspyrl serve`), auto (choice where it applies). A predictor whose saved "
                        "program pins a format keeps it")


# ---------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded model: run the sentiment program on SmolLM2 and show the scores",
                       description="Run the ready `sentiment` program on the embedded SmolLM2-135M-Instruct, offline.")
    _add_model_option(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.add_argument("--budget", type=int, default=100,
                   help="then optimize the program with GRPO for this many metric calls, starting from DSPy's "
                        "ChatAdapter (without its JSON retry), and show starting → optimized on the held-out test split with the format, "
                        "instruction and demos GRPO chose (0: only the first run; default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from dspyrl.demo import run_demo

    run_demo(model=args.model, limit=args.limit, threads=args.threads)
    if args.budget:
        from dspyrl.optimize import optimize_program

        # From DSPy's ChatAdapter, which this model cannot follow: the format is one of the things GRPO learns. Without
        # the adapter's JSON retry: it rescues about half the replies at twice the cost (57% on the test split, and the
        # demo took ~100 s longer).
        optimize_program("sentiment", model=args.model, budget=args.budget, threads=args.threads, adapter="chat")
    return 0


# ---------------------------------------------------------------- optimize
def _add_optimize(sub) -> None:
    p = sub.add_parser("optimize", help="optimize a program's prompts (instructions, demos) with GRPO",
                       description="Score the program on a held-out test split, optimize its prompts with GRPO on the "
                                   "train split (selecting on val), and score it again. Writes a run folder.")
    p.add_argument("program", help="a ready program name (e.g. sentiment) or a path to a program .py file")
    _add_model_option(p)
    p.add_argument("--judge", default=None, help="LM for the program's judge reward, if it has one (same forms as --model)")
    p.add_argument("--reflection-model", default=None,
                   help="LM that writes new instructions (default: the task model; a stronger one helps)")
    p.add_argument("--budget", type=int, default=150, help="metric calls (scored program runs, validation included; "
                                                          "default: %(default)s)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<program>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--group-size", type=int, default=4, help="prompt samples per example (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the optimizer (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion limit of the task model (default: %(default)s)")
    _add_format_option(p, "starting prompt format (GRPO may learn another per predictor)")
    p.add_argument("--fixed-format", action="store_true",
                   help="keep --format for every run instead of letting GRPO choose the format per predictor")
    p.set_defaults(handler=_run_optimize)


def _run_optimize(args) -> int:
    from dspyrl.errors import ConfigError
    from dspyrl.optimize import optimize_program

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out: the run folder to continue")
    optimize_program(args.program, model=args.model, judge=args.judge, reflection_model=args.reflection_model,
                     budget=args.budget, out=args.out, resume=args.resume, seed=args.seed, threads=args.threads,
                     max_tokens=args.max_tokens, adapter=args.format, group_size=args.group_size,
                     batch_size=args.batch_size, learn_format=not args.fixed_format)
    return 0


# ---------------------------------------------------------------- finetune
def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="train a LoRA adapter of the local model with GRPO (or DPO) on the program's reward",
                       description="Score the program on a held-out test split, train a LoRA adapter of its local model "
                                   "with TRL (GRPO on the program's reward, or DPO on preference pairs) on the train "
                                   "split, and score it again. Writes a run folder with the PEFT adapter.")
    p.add_argument("program", help="a ready program name (e.g. math_xml) or a path to a program .py file")
    _add_model_option(p)
    p.add_argument("--method", choices=("grpo", "dpo"), default="grpo", help="weight update (default: %(default)s)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps (default: %(default)s)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<program>-<method>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--pairs", default=None, help="DPO: JSONL of {prompt, chosen, rejected} (default: pairs from "
                                                 "best-vs-worst rollouts of the train split)")
    p.add_argument("--judge", default=None, help="LM for the program's judge reward, if it has one (same forms as --model)")
    p.add_argument("--format", choices=("chat", "json", "compact"), default="chat",
                   help="prompt/reply format the weights learn to answer in (default: %(default)s, DSPy's ChatAdapter; "
                        "'compact' is what a 135M model can follow)")
    p.add_argument("--num-generations", type=int, default=4, help="GRPO group size / DPO runs per example (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-4 for GRPO, 1e-4 for DPO)")
    p.add_argument("--beta", type=float, default=None, help="KL (GRPO) or DPO beta (default: 0.02 / 0.1)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion limit (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=10, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the training (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.set_defaults(handler=_run_finetune)


def _run_finetune(args) -> int:
    from dspyrl.finetune import finetune_program

    settings = {"lora_r": args.lora_r, "save_every": args.save_every}
    if args.lr is not None:
        settings["learning_rate"] = args.lr
    if args.beta is not None:
        settings["beta"] = args.beta
    if args.method == "grpo":
        settings.update(num_generations=args.num_generations, max_completion_length=args.max_tokens)
    else:
        settings.update(group_size=args.num_generations)
    finetune_program(args.program, model=args.model, method=args.method, steps=args.steps, out=args.out,
                     resume=args.resume, pairs=args.pairs, judge=args.judge, adapter=args.format, seed=args.seed,
                     threads=args.threads, max_tokens=args.max_tokens, **settings)
    return 0


# ---------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="score a program on a dataset: mean reward, components, failures, tokens; writes a run folder",
                       description="Evaluate a program concurrently through the rollout engine, print one table and "
                                   "write a run folder (config.json, results.jsonl, summary.json, program.json).")
    p.add_argument("program", help="a ready program name (e.g. sentiment) or a path to a program .py file")
    p.add_argument("--data", default=None, help="dataset file: .jsonl, .csv, .parquet/.arrow or a datasets save_to_disk "
                                                "folder (default: the program's own examples)")
    p.add_argument("--split", default=None, help="split of a Hugging Face dataset folder")
    _add_model_option(p)
    p.add_argument("--judge", default=None, help="LM for the program's judge reward, if it has one (same forms as --model)")
    p.add_argument("--out", default=None, help="run folder (default: runs/eval-<program>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")
    p.add_argument("--threads", type=int, default=4, help="concurrent program runs (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=256, help="completion limit (default: %(default)s)")
    _add_format_option(p, "prompt format")
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from dspyrl.evaluate import EvalConfig, evaluate

    evaluate(EvalConfig(program=args.program, data=args.data, split=args.split, model=args.model, judge=args.judge,
                        out=args.out, threads=args.threads, limit=args.limit, temperature=args.temperature,
                        max_tokens=args.max_tokens, overwrite=args.overwrite, format=args.format))
    return 0


# ---------------------------------------------------------------- compare
def _add_compare(sub) -> None:
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
    _add_model_option(p)
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
    _add_format_option(p, "prompt format of both arms")
    p.set_defaults(handler=_run_compare)


def _run_compare(args) -> int:
    from dspyrl.compare import compare_specs

    compare_specs(args.a, args.b, program=args.program, data=args.data, split=args.split, model=args.model,
                  judge=args.judge, out=args.out, limit=args.limit, max_tokens=args.max_tokens,
                  num_threads=args.threads, temperature=args.temperature, seed=args.seed, cache=not args.no_cache,
                  format=args.format)
    return 0


# ---------------------------------------------------------------- report
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="(re)write the HTML report of a run or comparison folder",
                       description="Rebuild RUN_DIR/report.html (self-contained, plots embedded) from the folder's "
                                   "comparison.json or metrics.jsonl.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by compare, optimize, finetune or eval")
    p.set_defaults(handler=_run_report)


def _run_report(args) -> int:
    from dspyrl.report import write_report

    print(write_report(args.run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dspyrl",
        description="Make DSPy programs better with GRPO (prompts and LoRA weights) and prove it with paired statistics.")
    parser.add_argument("--version", action="version", version="dspyrl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each subcommand registers itself here; keep the order the user meets them in.
    _add_demo(sub)
    _add_eval(sub)
    _add_optimize(sub)
    _add_finetune(sub)
    _add_compare(sub)
    _add_report(sub)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # DSPy logs one warning per completion cut off at max_tokens: with a small model that is a wall of text over the
    # progress bars. The commands count truncated calls in their tables and run folders instead.
    lm_logger = logging.getLogger("dspy.clients.lm")
    lm_logger.addFilter(_drop_truncation_warnings)
    # transformers 5 deprecates names that TRL and PEFT still call (`is_gradient_checkpointing`, ...): the warnings
    # are for those libraries' authors, not for someone running `dspyrl finetune`.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    try:
        return int(args.handler(args) or 0)
    except DspyrlError as err:
        print(f"dspyrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dspyrl {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        lm_logger.removeFilter(_drop_truncation_warnings)


def _drop_truncation_warnings(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("LM response was truncated")


if __name__ == "__main__":
    sys.exit(main())
