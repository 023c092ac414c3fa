"""Options built from config dataclasses, and the ones several commands share.

A command's settings are dataclass fields made with `dspyrl.config.setting(default, help, ge=..., choices=...)`;
`add_settings(parser, Config)` turns them into argparse options whose default, help and range come from the field, as
TRL derives its CLI from its config dataclasses. A value out of range stops at parse time: one line naming the option,
exit 2, before any model or data is loaded.

To add an option every model-running command has (eval, optimize, finetune, compare): add one field to
`ModelOptions` and read it where the LMs are built (`task_lm`, `judge_lm`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from dspyrl.config import problem, setting

# The names are dspyrl.formats.FORMATS, spelt out here: importing it imports dspy, and `--help` stays instant.
FORMAT_NAMES = ("chat", "json", "compact", "choice", "structured", "auto")
FORMAT_HELP = ("prompt format: chat (DSPy's ChatAdapter without its JSON retry), json, compact (short plain text, "
               "lenient parsing: small models), choice (constrained choice among a Literal/bool field's values, local "
               "models and `dspyrl serve`), structured (compact lines decoded under a grammar of the signature: free "
               "text stays free, typed fields always parse; local models and `dspyrl serve`), auto (choice for "
               "label-only predictors, structured for the rest, on local and `dspyrl serve` models; DSPy's own "
               "ChatAdapter on hosted models). A predictor whose saved program pins a format keeps it")
MODEL_HELP = ("model to run the program on: 'smollm2' (embedded default), a local folder or Hugging Face id (runs "
              "in-process), 'openrouter/<vendor>/<model>', any LiteLLM model string, or "
              "'openai-compatible:<base_url>:<model>' for any OpenAI-compatible server")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the same shape as every other user error) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(kw_only=True)
class ModelOptions:
    """What every command that runs a program on a model shares (the LM it runs on, its judge, concurrency)."""

    model: str = setting("smollm2", MODEL_HELP)
    judge: str | None = setting(None, "LM for the program's judge reward, if it has one (same forms as --model)")
    # One judge construction for every command: an eval score and a training score of a judged program are then the
    # same quantity (the judge once got 256 tokens in eval, 128 in compare and no limit in optimize/finetune).
    judge_max_tokens: int = setting(256, "completion limit of the judge LM, the same in every command", ge=1)
    threads: int = setting(4, "concurrent program runs", ge=1)
    max_tokens: int = setting(128, "completion limit of the task model", ge=1)
    format: str | None = setting("auto", FORMAT_HELP, choices=FORMAT_NAMES)
    # hosted models (dspyrl.lm.hosted holds the defaults; None here keeps them)
    api_base: str | None = setting(None, "OpenRouter's address for 'openrouter/...' models (default: "
                                         "$OPENROUTER_API_BASE, else https://openrouter.ai/api/v1); $OPENROUTER_API_KEY "
                                         "is sent there and nowhere else")
    timeout: float | None = setting(None, "seconds a hosted LM request may take before it counts as failed and is "
                                          "retried (default: 60)", gt=0)
    num_retries: int | None = setting(None, "retries of a hosted LM request that timed out or got 429/5xx, with "
                                            "exponential backoff (default: 3); 401/402 stop the run at once", ge=0)
    no_cache: bool = setting(False, "ask the models again instead of replaying DSPy's cache of earlier replies")


JUDGE_MODES = ("per-sample", "group")  # the CLI's names for RewardModule's modes (sample, group)


@dataclass(kw_only=True)
class RewardOptions:
    """How a command that scores a program builds its reward (eval, optimize, finetune, compare): `build_reward`."""

    judge_mode: str = setting("per-sample", "how the program's LM judge (--judge) scores: per-sample (one call per "
                                            "output) or group (one call scores the outputs of one example side by "
                                            "side, shown in a recorded shuffled order; the G outputs of a GRPO group, "
                                            "or one output where a command makes one per example)",
                              choices=JUDGE_MODES)
    reward_model: str | None = setting(None, "a trained reward-model folder (`dspyrl train-reward`): it scores every "
                                             "output instead of the program's reward, a group in one batch")


def check_models(run, **specs: str | None) -> None:
    """The model specs' errors that need no model loaded (an unknown local model, a malformed openai-compatible spec):
    one line naming the option, exit 2, and the run folder `run` (a RunFolder, just claimed) is discarded if it was
    new, so a mistyped --model leaves no empty folder. Keywords are option names (model=..., judge=...); None skips."""
    from dspyrl.errors import DspyrlError
    from dspyrl.lm import check_model_spec

    for option, spec in specs.items():
        if spec is None:
            continue
        try:
            check_model_spec(spec)
        except DspyrlError as err:
            err.message = f"--{option.replace('_', '-')}: {err.message}"
            run.discard()
            raise


def check_reward_options(options: RewardOptions, *, judged: bool) -> None:
    """What `build_reward` would refuse, found before any model loads (one line, exit 2). `judged`: a judge LM will
    score the program's reward (--judge; compare's pairwise judge is not that)."""
    from pathlib import Path

    from dspyrl.errors import ConfigError, ModelError
    from dspyrl.rewards.reward_model import META

    if options.reward_model is None:
        if options.judge_mode == "group" and not judged:
            raise ConfigError("--judge-mode group needs an LM judge: pass --judge MODEL")
        return
    if options.judge_mode == "group":
        raise ConfigError("--judge-mode group is how an LM judge scores; --reward-model replaces the program's reward "
                          "(its judge included), so pass one of them")
    if judged:
        raise ConfigError("--reward-model replaces the program's reward, so --judge would score nothing; pass one "
                          "of them")
    if not (Path(options.reward_model).expanduser() / META).is_file():
        raise ModelError(f"--reward-model {options.reward_model}: not a reward model folder (no {META} in it)",
                         hint="train one with: dspyrl train-reward PAIRS.jsonl --out FOLDER")


def judge_estimate(options, trained_runs: int, group_size: int, other_runs: int, prompt: int):
    """The judge's expected calls for `--estimate` (optimize, finetune): per sample, one per scored run; in group mode
    one per group of `group_size` training runs, its prompt showing all of them, and one per other run (the valset and
    the test split are scored one run per example). `options` has judge, max_tokens and judge_max_tokens."""
    from dspyrl.lm.usage import RoleEstimate

    per_sample = prompt + options.max_tokens
    if options.judge_mode != "group":
        return RoleEstimate("judge", options.judge, trained_runs + other_runs, per_sample, options.judge_max_tokens)
    groups = -(-trained_runs // group_size)
    calls = groups + other_runs
    tokens = groups * (prompt + group_size * options.max_tokens) + other_runs * per_sample
    return RoleEstimate("judge", options.judge, calls, tokens // max(1, calls), options.judge_max_tokens)


def build_reward(spec, options: RewardOptions, judge_lm=None):
    """The reward a command scores with: `--reward-model`'s RewardModel, else the program's reward built with
    `judge_lm`, its LM judges set to `--judge-mode`. A group mode with no LM judge to apply it to is a ConfigError."""
    from dspyrl.errors import ConfigError

    check_reward_options(options, judged=judge_lm is not None)
    if options.reward_model is not None:
        from dspyrl.rewards.reward_model import RewardModel

        return RewardModel(options.reward_model)
    reward = spec.build_reward(judge_lm=judge_lm)
    if options.judge_mode == "group":
        from dspyrl.rewards.judge import judges_in

        judges = judges_in(reward)
        if not judges:
            raise ConfigError(f"--judge-mode group needs an LM judge (a RewardModule) in the reward of {spec.name}, "
                              "and it has none")
        for judge in judges.values():
            judge.mode = "group"
    return reward


@dataclass(kw_only=True)
class SpendOptions:
    """The cost cap and the dry estimate, for commands that may spend a lot (optimize, finetune, compare)."""

    max_cost: float | None = setting(None, "stop cleanly once the LM calls (every role: task, reflection, judge) have "
                                           "cost this many USD; --resume with a higher cap continues", gt=0)
    estimate: bool = setting(False, "print the expected calls, tokens and cost of the run, then stop before any call")


@dataclass(kw_only=True)
class ReportOptions:
    """Where training metrics go besides metrics.jsonl (optimize, finetune)."""

    report_to: str = setting("none", "also log every step's metrics to TensorBoard (run folder/tensorboard) or Weights & "
                                     "Biases (WANDB_MODE=offline keeps it in the run folder); LoRA phases pass it to "
                                     "TRL's report_to", choices=("none", "tensorboard", "wandb"))


def report_callbacks(report_to: str, run_dir, config: dict) -> list:
    """Step callbacks for prompt GRPO's `callbacks=`; close() each after. TensorBoard is GRPO's own `tensorboard=True`,
    which --report-to wandb turns on too: the W&B run mirrors those scalars (sync_tensorboard), one set for both."""
    return [WandbRun(run_dir, config)] if report_to == "wandb" else []


class WandbRun:
    """A W&B run in `run_dir`/wandb that mirrors the TensorBoard scalars written after it starts; WANDB_MODE=offline
    keeps it on disk. Its config is scrubbed of credentials like the run folder's."""

    def __init__(self, run_dir, config: dict):
        from dspyrl.optim.weights.trl_callbacks import start_wandb_run

        self.run = start_wandb_run(run_dir, config, sync_tensorboard=True)

    def on_step_end(self, metrics: dict) -> None:  # the scalars arrive through TensorBoard
        pass

    def close(self) -> None:
        self.run.finish()


def lm_settings(options: ModelOptions) -> dict:
    """What every LM a command builds shares: the hosted connection settings and the cache."""
    return {"api_base": options.api_base, "timeout": options.timeout, "num_retries": options.num_retries,
            "cache": not options.no_cache}


def task_lm(options: ModelOptions, *, temperature: float = 0.0):
    """The LM the program runs on, as every command builds it."""
    from dspyrl.lm import lm_from_spec

    return lm_from_spec(options.model, temperature=temperature, max_tokens=options.max_tokens, **lm_settings(options))


def judge_lm(options: ModelOptions, spec: str | None = None):
    """The judge LM (of `spec`, default `options.judge`), greedy with `judge_max_tokens`; None without a judge."""
    from dspyrl.lm import lm_from_spec

    spec = spec or options.judge
    if not spec:
        return None
    from dspyrl.lm.usage import assign_role

    return assign_role(lm_from_spec(spec, temperature=0.0, max_tokens=options.judge_max_tokens, **lm_settings(options)),
                       "judge")


def check_format(name: str | None, program, lm) -> None:
    """`--format choice` (or `structured`) where it cannot apply is an error, not a silent fallback to compact."""
    from dspyrl.errors import ConfigError
    from dspyrl.formats import choice_outputs, guided_choice_route

    if name == "structured" and lm is not None and guided_choice_route(lm) is None:
        raise ConfigError(f"--format structured needs a model that takes a grammar (a local model or `dspyrl serve`), "
                          f"not {getattr(lm, 'model', lm)}", hint="use --format compact, chat or json (or auto)")
    if name != "choice":
        return

    free = [n for n, p in program.named_predictors() if choice_outputs(p.signature) is None]
    if free:
        raise ConfigError(f"--format choice does not apply to predictor {', '.join(free)}: its outputs are free text, "
                          f"not Literal/Enum/bool fields", hint="use --format compact, chat or json (or auto)")
    if lm is not None and guided_choice_route(lm) is None:
        raise ConfigError(f"--format choice needs a model that takes guided_choice (a local model or `dspyrl serve`), "
                          f"not {getattr(lm, 'model', lm)}", hint="use --format compact, chat or json (or auto)")


def run_fingerprint(command: str, spec, program, examples: list, options: ModelOptions, keys: list[str]) -> dict:
    """A run folder's fingerprint: the command, the program file (source, signatures, data) and the options that make
    the run what it is (`keys` of `options`, beside the model and the format)."""
    from dspyrl.program_file import program_fingerprint

    return {"command": command, **program_fingerprint(spec, program, examples),
            "model": options.model, "format": options.format, **{k: getattr(options, k) for k in keys}}


# ----------------------------------------------------------------------------------------------- dataclass → argparse
def add_settings(parser: argparse.ArgumentParser, config_class: type, names: list[str] | None = None, *,
                 defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> None:
    """Add one option per field of `config_class` made with `setting` (or only `names`, in that order).

    `defaults`/`helps` override a field's default or help for this command only (say why where you use them)."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if "help" in f.metadata}
    # positionals first: `dspyrl eval PROGRAM [options]` in the usage line
    for name in names or sorted(fields, key=lambda n: not fields[n].metadata.get("positional")):
        f = fields[name]
        meta = f.metadata
        default = (defaults or {}).get(name, _default(f))
        text = ((helps or {}).get(name) or meta["help"]).replace("%", "%%")
        kind = _kind(f, default)
        if meta.get("positional"):
            parser.add_argument(name, metavar=name.upper(), type=_checked(f, kind), help=text)
            continue
        flag = meta.get("flag") or "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=bool(default), help=text)
            continue
        shown = f" (default: {default})" if default is not None else ""
        parser.add_argument(flag, dest=name, type=_checked(f, kind), default=default,
                            choices=meta.get("choices"), metavar=None if meta.get("choices") else name.upper(),
                            help=text + shown.replace("%", "%%"))


def settings_of(config_class: type, args: argparse.Namespace, **overrides) -> Any:
    """`config_class` filled from the parsed options it declares (fields without an option keep their default)."""
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    from dspyrl.runs import has_url_credential

    for name, value in values.items():  # before anything prints or saves the value
        if isinstance(value, str) and has_url_credential(value):
            from dspyrl.errors import ConfigError

            raise ConfigError(f"--{name.replace('_', '-')} holds a URL with a credential (user:password@); a URL is "
                              "printed and saved with the run", hint="pass the key in its environment variable, e.g. "
                                                                     "OPENROUTER_API_KEY or OPENAI_COMPATIBLE_API_KEY")
    return config_class(**{**values, **overrides})


def add_model_option(parser: argparse.ArgumentParser, default: str = "smollm2") -> None:
    """Only `--model` (for commands without the rest of ModelOptions, e.g. the demo)."""
    add_settings(parser, ModelOptions, ["model"], defaults={"model": default})


def add_format_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Only `--format`, its help starting with what the format is for here."""
    add_settings(parser, ModelOptions, ["format"], helps={"format": what + "; " + FORMAT_HELP})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _kind(f: dataclasses.Field, default: Any) -> type:
    if default is not None:
        return type(default)
    annotation = str(f.type)  # "int | None" (annotations are strings under `from __future__ import annotations`)
    return next((t for t in (bool, int, float) if annotation.startswith(t.__name__)), str)


def _checked(f: dataclasses.Field, kind: type):
    """An argparse `type=` that converts and checks the field's range: argparse names the option in the error."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a number' if kind is float else 'an integer'}, "
                                             f"got {text!r}") from None
        message = problem(f, value) if not f.metadata.get("choices") else None  # argparse checks choices itself
        if message:
            raise argparse.ArgumentTypeError(message)
        return value

    convert.__name__ = kind.__name__  # argparse's "invalid int value" fallback names the type
    return convert
