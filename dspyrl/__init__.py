"""dspyrl: GRPO for DSPy programs — optimize prompts and LoRA weights from rewards, and prove the gain."""

from dspyrl.parse_lock import serialize_ast_parse

serialize_ast_parse()  # before any rollout thread parses a DSPy signature; see parse_lock.py

from dspyrl.formats import ChoiceAdapter, CompactAdapter
from dspyrl.formats.per_predictor import load_program, use_predictor_formats
from dspyrl.compare import ModelComparator
from dspyrl.data import load_examples, split_examples
from dspyrl.errors import DspyrlError
from dspyrl.lm import local_lm, openai_compatible, openrouter
from dspyrl.optim.weights.dpo import DPO, LoraDPO, LoraDPOConfig
from dspyrl.optim.prompts.grpo import GRPO, GRPOConfig
from dspyrl.optim.weights.grpo import LoraGRPO, LoraGRPOConfig
from dspyrl.optim.schedule import Schedule
from dspyrl.rewards import RewardModel, RewardModule, RewardResult, WeightedReward
from dspyrl.rollout import run_rollouts
from dspyrl.runs import save_program

__version__ = "0.1.0"

__all__ = ["ChoiceAdapter", "CompactAdapter", "DPO", "DspyrlError", "GRPO", "GRPOConfig", "LoraDPO", "LoraDPOConfig", "LoraGRPO",
           "LoraGRPOConfig", "ModelComparator", "RewardModel", "RewardModule", "RewardResult", "Schedule", "WeightedReward",
           "__version__", "load_examples", "load_program", "local_lm", "openai_compatible", "openrouter", "run_rollouts",
           "save_program", "split_examples", "use_predictor_formats"]
