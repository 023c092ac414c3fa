"""How programs get better: group-relative advantages, the prompt policy and its GRPO teleprompter."""

from dspyrl.optim.advantages import GroupAdvantages, group_advantages
from dspyrl.optim.grpo import GRPO, GRPOConfig
from dspyrl.optim.prompt_policy import PromptPolicy

__all__ = ["GRPO", "GRPOConfig", "GroupAdvantages", "PromptPolicy", "group_advantages"]
