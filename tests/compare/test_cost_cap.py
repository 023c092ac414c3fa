"""ModelComparator's cost cap where it lands in the pairwise judge: the arms' scores and verdict stand, the judge
stops between waves and says how many examples it did not judge (a hosted judge on an OpenRouter-speaking server)."""

import pytest
from dspy.utils import DummyLM

from dspyrl.compare import Arm, ModelComparator
from dspyrl.lm import lm_from_spec
from dspyrl.lm.usage import assign_role
from dspyrl.rewards.judge import RewardModule
from dspyrl_programs import sentiment
from tests.compare.test_comparator import AlwaysSays, KnowsTheAnswer
from tests.lm.openrouter_server import OpenRouterServer

pytestmark = pytest.mark.usefixtures("fresh_dspy_cache")  # counts its own server's requests

KEY = "sk-or-canary-compare-cap-0123"


def test_the_cap_stops_the_pairwise_judge_and_keeps_the_scores_verdict(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    examples = sentiment.load_examples()[:24]
    with OpenRouterServer(key=KEY) as server:
        judge_lm = assign_role(lm_from_spec("openrouter/acme/judge-mid", api_base=server.base_url, max_tokens=32,
                                            cache=False), "judge")
        judge = RewardModule("Which label is right?", judge_lm=judge_lm)
        comparator = ModelComparator(Arm(AlwaysSays("positive"), DummyLM([]), "always positive"),
                                     Arm(KnowsTheAnswer(), DummyLM([]), "oracle"), examples,
                                     reward=sentiment.exact_label, judge=judge, progress=False, judge_threads=2,
                                     max_cost=0.001)
        result = comparator.run()
    unjudged = result.judge["unjudged"]
    judged = 24 - unjudged
    assert result.stopped == "cost_cap" and not result.unscored and 2 <= judged < 24
    assert result.verdict.startswith("B (oracle) beats A (always positive)")  # the scores were all run
    assert sum(1 for row in result.examples if "judge" in row) == judged
    assert result.usage["judge"]["cost"] == pytest.approx(server.billed, rel=1e-9)
    per_wave = server.billed / (judged / 2)
    assert server.billed < 0.001 + per_wave
