"""How outputs are scored: metric functions, the LM judge, and weighted combinations (all rewards are
`(example, pred, trace=None) -> float | bool | RewardResult`)."""

from dspyrl.rewards.combine import RewardComponent, RewardResult, WeightedReward, to_reward_result
from dspyrl.rewards.judge import Judgement, PairwiseJudgement, RewardModule
from dspyrl.rewards.metrics import (
    as_metric,
    as_reward,
    exact_match,
    extract_number,
    extract_xml,
    field_reward,
    length_penalty,
    matches_regex,
    normalize_text,
    numeric_match,
    token_f1,
    xml_format,
)

__all__ = [
    "RewardResult", "RewardComponent", "WeightedReward", "to_reward_result",
    "RewardModule", "Judgement", "PairwiseJudgement",
    "as_metric", "as_reward", "exact_match", "extract_number", "extract_xml", "field_reward", "length_penalty",
    "matches_regex", "normalize_text", "numeric_match", "token_f1", "xml_format",
]
