"""Local weights: the TRL-backed base (base), its callbacks (trl_callbacks), LoRA GRPO (grpo) and LoRA DPO (dpo)."""
