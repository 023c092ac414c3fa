"""How outputs are scored: metric functions, the LM judge (per sample, pairwise, or a whole group in one call), trained
reward models, weighted combinations (all rewards are `(example, pred, trace=None) -> float | bool | RewardResult`;
group rewards also score the G outputs of one example in one `score_group` call), and the checks that say how far a
judge can be trusted."""

from dspyrl.rewards.combine import (RewardComponent, RewardResult, WeightedReward, score_group, scores_groups,
                                    to_reward_result)
from dspyrl.rewards.judge import GroupJudgement, Judgement, PairwiseJudgement, RewardModule
from dspyrl.rewards.judge_check import LabelledGroup, check_judge, labelled_groups
from dspyrl.rewards.reward_model import RewardModel, RewardModelConfig, reward_pairs, train_reward_model
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
    "RewardResult", "RewardComponent", "WeightedReward", "to_reward_result", "score_group", "scores_groups",
    "RewardModule", "Judgement", "PairwiseJudgement", "GroupJudgement",
    "RewardModel", "RewardModelConfig", "reward_pairs", "train_reward_model",
    "LabelledGroup", "check_judge", "labelled_groups",
    "as_metric", "as_reward", "exact_match", "extract_number", "extract_xml", "field_reward", "length_penalty",
    "matches_regex", "normalize_text", "numeric_match", "token_f1", "xml_format",
]
