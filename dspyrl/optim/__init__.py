"""How programs get better: group-relative advantages (shared), prompts/ (the prompt policy and its GRPO), weights/
(LoRA GRPO and DPO through TRL + PEFT), and the schedule that alternates them."""

from dspyrl.optim.advantages import GroupAdvantages, group_advantages
from dspyrl.optim.prompts.grpo import GRPO, GRPOConfig
from dspyrl.optim.prompts.policy import PromptPolicy

__all__ = ["GRPO", "GRPOConfig", "GroupAdvantages", "PromptPolicy", "group_advantages"]
