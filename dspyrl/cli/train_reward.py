"""`dspyrl train-reward`: train a Bradley–Terry reward model (TRL RewardTrainer + LoRA) on preference pairs.

    dspyrl train-reward PAIRS.jsonl --model smollm2 --out runs/rm
    dspyrl train-reward --program math_xml --model smollm2 --out runs/rm     # pairs: best vs worst of G runs per example

The pairs file has DPO's rows, `{"prompt": text or chat messages, "chosen": text, "rejected": text}` (read by the same
reader, so a bad row is one line naming the file, line and field). With `--program`, the program runs `--group-size`
times per example on `--model` at `--temperature`, is scored by its own reward, and the best and worst output of each
example make a pair. Either way a share of the prompts is held out, and the table reports how often the trained model
orders those held-out pairs correctly (and how often the untrained one did). The folder is then a reward:
`dspyrl.RewardModel("runs/rm")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError
from dspyrl.rewards.reward_model import RewardModelConfig


@dataclass(kw_only=True)
class TrainRewardConfig(RewardModelConfig):
    """`dspyrl train-reward`'s options: the reward model's settings plus where the pairs come from."""

    pairs: str | None = None  # the positional PAIRS file (see add_parser)
    program: str | None = setting(None, "build pairs from this program's rollouts instead of a file (name or .py)")
    group_size: int = setting(4, "runs per example when pairs come from --program", ge=2)
    temperature: float = setting(1.0, "sampling temperature of those runs", gt=0)
    max_tokens: int = setting(128, "completion limit of those runs", ge=1)
    min_gap: float = setting(0.0, "best - worst reward must exceed this for a pair", ge=0)
    threads: int = setting(4, "concurrent program runs", ge=1)

    def __post_init__(self):
        check_settings(self)
        if (self.pairs is None) == (self.program is None):
            raise ConfigError("give either a PAIRS file or --program (to build pairs from its rollouts), not both")


def collect_pairs(config: TrainRewardConfig, *, console=None, lm=None) -> list[dict]:
    """The preference pairs: read from the file, or built from the program's rollouts."""
    from dspyrl.optim.weights.dpo import load_pairs

    if config.pairs is not None:
        return load_pairs(config.pairs)
    from dspyrl.lm import lm_from_spec
    from dspyrl.program_file import load_program_file
    from dspyrl.rewards.reward_model import reward_pairs
    from dspyrl.rollout import run_rollouts

    spec = load_program_file(config.program)
    examples = spec.load_examples()
    lm = lm or lm_from_spec(config.model, temperature=config.temperature, max_tokens=config.max_tokens)
    batch = run_rollouts(spec.build_program(), examples, spec.build_reward(judge_lm=None), group_size=config.group_size,
                         lm=lm, num_threads=config.threads, progress=console is not None, seed=config.seed,
                         description=f"rollouts of {spec.name} for pairs")
    return reward_pairs(batch.rollouts, examples, min_gap=config.min_gap)


def train_reward(config: TrainRewardConfig, *, console=None, lm=None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from dspyrl.rewards.reward_model import train_reward_model

    console = console or Console()
    pairs = collect_pairs(config, console=console, lm=lm)
    source = config.pairs or f"{config.program} rollouts (best vs worst of {config.group_size})"
    console.print(f"[bold]dspyrl train-reward[/bold]: {len(pairs)} pairs from {source}, base model {config.model}")
    result = train_reward_model(pairs, config)
    table = Table(title=f"reward model {result.path}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("pairs train / held out", f"{result.train_pairs} / {result.held_out_pairs}")
    if result.held_out_accuracy is not None:
        table.add_row("held-out pairwise accuracy", f"{result.held_out_accuracy:.3f}")
        table.add_row("  untrained head, same pairs", f"{result.accuracy_before:.3f}")
    if result.train_accuracy is not None:
        table.add_row("train accuracy (last steps)", f"{result.train_accuracy:.3f}")
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    console.print(table)
    console.print(f"use it as a reward: dspyrl.RewardModel({result.path!r})")
    return result.to_json()


# ---------------------------------------------------------------- the command line
def add_parser(sub) -> None:
    from dspyrl.cli.options import add_settings

    p = sub.add_parser("train-reward", help="train a Bradley-Terry reward model on preference pairs (TRL + LoRA)",
                       description="Train a reward model with TRL's RewardTrainer and a LoRA adapter on a local model, "
                                   "from a pairs file or from a program's rollouts; reports held-out pairwise accuracy.")
    p.add_argument("pairs", nargs="?", metavar="PAIRS",
                   help="JSONL of {prompt, chosen, rejected} rows (the DPO pairs format); or use --program")
    add_settings(p, TrainRewardConfig)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.cli.options import settings_of

    train_reward(settings_of(TrainRewardConfig, args))
    return 0
