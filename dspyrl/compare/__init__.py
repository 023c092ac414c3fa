"""How two versions are compared: paired runs (comparator), the statistics (stats), and the pictures (report)."""

from dspyrl.compare.comparator import (Arm, ComparisonConfig, ComparisonResult, ModelComparator, arm_cost,
                                       check_examples, program_input_fields, resolve_arm, summarize_pairwise)

__all__ = ["Arm", "ComparisonConfig", "ComparisonResult", "ModelComparator", "arm_cost", "check_examples",
           "program_input_fields", "resolve_arm", "summarize_pairwise"]
