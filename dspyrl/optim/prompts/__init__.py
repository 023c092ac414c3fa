"""The prompt policy (policy), its candidates (propose) and the GRPO teleprompter over them (grpo)."""
