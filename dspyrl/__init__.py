"""dspyrl: GRPO for DSPy programs — optimize prompts and LoRA weights from rewards, and prove the gain."""

from dspyrl.adapters import ChoiceAdapter, CompactAdapter
from dspyrl.adapters.per_predictor import use_predictor_formats
from dspyrl.compare import ModelComparator
from dspyrl.data import load_examples, split_examples
from dspyrl.errors import DspyrlError
from dspyrl.lm import local_lm, openai_compatible, openrouter
from dspyrl.optim.dpo import DPO, LoraDPOConfig
from dspyrl.optim.grpo import GRPO, GRPOConfig
from dspyrl.optim.lora import LoraGRPO, LoraGRPOConfig
from dspyrl.optim.schedule import Schedule
from dspyrl.rewards import RewardModule, RewardResult, WeightedReward
from dspyrl.rollout import run_rollouts
from dspyrl.runs import save_program

__version__ = "0.1.0"

__all__ = ["ChoiceAdapter", "CompactAdapter", "DPO", "DspyrlError", "GRPO", "GRPOConfig", "LoraDPOConfig", "LoraGRPO",
           "LoraGRPOConfig", "ModelComparator", "RewardModule", "RewardResult", "Schedule", "WeightedReward",
           "__version__", "load_examples", "local_lm", "openai_compatible", "openrouter", "run_rollouts",
           "save_program", "split_examples", "use_predictor_formats"]
