"""dspyrl: GRPO for DSPy programs — optimize prompts and LoRA weights from rewards, and prove the gain."""

from dspyrl.adapters import ChoiceAdapter, CompactAdapter
from dspyrl.compare import ModelComparator
from dspyrl.errors import DspyrlError
from dspyrl.lm import local_lm, openai_compatible, openrouter
from dspyrl.optim.grpo import GRPO, GRPOConfig
from dspyrl.optim.dpo import DPO, LoraDPOConfig
from dspyrl.optim.lora import LoraGRPO, LoraGRPOConfig
from dspyrl.optim.schedule import Schedule

__version__ = "0.1.0"

__all__ = ["ChoiceAdapter", "CompactAdapter", "ModelComparator", "GRPO", "GRPOConfig", "LoraGRPO", "LoraGRPOConfig", "DPO", "LoraDPOConfig", "Schedule", "DspyrlError", "local_lm", "openai_compatible", "openrouter", "__version__"]
