"""Constrained choice (guided_choice) on the real tiny local model: exact scores, argmax, sampling, over HTTP."""

import math

import dspy
import httpx
import pytest
from scipy.stats import chisquare

from dspyrl.formats import ChoiceAdapter
from dspyrl.formats.choice import guided_choice_request
from dspyrl.lm import local_lm, openai_compatible
from dspyrl.lm.local import local_engine
from dspyrl.lm.server import serve_in_thread

MESSAGES = [{"role": "system", "content": "Classify the review."}, {"role": "user", "content": "The movie was wonderful"}]
CANDIDATES = ["positive", "negative", "sentiment: neutral label", "0"]


def direct_logprob(engine, messages, candidate):
    """Sum of the candidate's token log-probs (plus end-of-turn) from one plain, unbatched forward pass."""
    import torch

    prompt = engine.encode_chat(messages)
    ids = engine.tokenizer(candidate, add_special_tokens=False)["input_ids"] + [engine.tokenizer.eos_token_id]
    with torch.inference_mode():
        logits = engine.model(torch.tensor([prompt + ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(logprobs[len(prompt) + j - 1, token].item() for j, token in enumerate(ids))


def test_scores_equal_a_direct_computation_and_greedy_picks_the_argmax(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    scores = engine.choice_logprobs(MESSAGES, CANDIDATES)
    direct = [direct_logprob(engine, MESSAGES, c) for c in CANDIDATES]
    assert scores == pytest.approx(direct, abs=1e-3)
    assert len(set(round(s, 3) for s in scores)) == len(CANDIDATES), "distinct candidates must score differently"
    best = CANDIDATES[max(range(len(direct)), key=direct.__getitem__)]
    picks, _ = engine.choose(MESSAGES, CANDIDATES, n=3, temperature=0.0)
    assert [p.text for p in picks] == [best] * 3
    # ... and the same through dspy.LM: a canonical Request carrying guided_choice in config.extensions
    lm = local_lm(str(tiny_model_dir), cache=False)
    response = lm(guided_choice_request(lm, MESSAGES, CANDIDATES, {}))
    assert response.text == best and response.usage.input_tokens == len(engine.encode_chat(MESSAGES))
    assert response.provider_data["guided_choice"]["logprobs"] == pytest.approx(direct, abs=1e-3)


def test_prompts_of_different_lengths_scored_in_one_batch_match_direct_computation(tiny_model_dir):
    from dspyrl.lm.local import _ScoreJob

    engine = local_engine(str(tiny_model_dir))
    prompts = [[{"role": "user", "content": "hi"}], MESSAGES,
               [{"role": "user", "content": "a much longer review that says the plot was dull " * 3}]]
    candidate_sets = [CANDIDATES, ["yes", "no"], ["0", "1 2 3 4 5 6 7 8 9 10", "sentiment: positive"]]
    end = engine.tokenizer.eos_token_id
    jobs = [_ScoreJob(engine.encode_chat(p), [engine.tokenizer(c, add_special_tokens=False)["input_ids"] + [end]
                                              for c in cs]) for p, cs in zip(prompts, candidate_sets)]
    batched = engine._score_batch(jobs)
    for p, cs, got in zip(prompts, candidate_sets, batched):
        assert got == pytest.approx([direct_logprob(engine, p, c) for c in cs], abs=1e-3)


def test_scores_are_cached_and_thread_safe_next_to_generation(tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from dspyrl.lm.local import GenerationSettings

    engine = local_engine(str(tiny_model_dir))
    prompts = [[{"role": "user", "content": f"review {i}: " + "very " * i + "good"}] for i in range(6)]
    expected = [[direct_logprob(engine, p, c) for c in CANDIDATES] for p in prompts]
    before = engine.score_calls

    def work(i):
        engine.generate(prompts[i], settings=GenerationSettings(max_tokens=4))  # interleave with generation
        return engine.choice_logprobs(prompts[i], CANDIDATES)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(work, range(6)))
    for got, want in zip(results, expected):
        assert got == pytest.approx(want, abs=1e-3)
    scored = engine.score_calls - before
    assert 1 <= scored <= 6  # concurrent requests may share a scoring pass
    engine.choice_logprobs(prompts[0], CANDIDATES)
    assert engine.score_calls == before + scored, "a repeated (prompt, candidates) pair is not scored again"


def test_sampling_follows_the_normalised_candidate_distribution(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    candidates = ["positive", "negative", "0"]
    temperature = 2.0
    scores = engine.choice_logprobs(MESSAGES, candidates)
    weights = [math.exp((s - max(scores)) / temperature) for s in scores]
    probs = [w / sum(weights) for w in weights]
    assert max(probs) < 0.97, "the check needs a distribution that is not a point mass"
    draws = 4000
    picks, _ = engine.choose(MESSAGES, candidates, n=draws, temperature=temperature, seed=7)
    observed = [sum(p.text == c for p in picks) for c in candidates]
    assert chisquare(observed, [p * draws for p in probs]).pvalue > 1e-4
    # a seeded draw repeats; an unseeded one need not
    again, _ = engine.choose(MESSAGES, candidates, n=50, temperature=temperature, seed=7)
    assert [p.text for p in again] == [p.text for p in picks[:50]]


def test_bad_guided_choice_is_a_clear_error(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    for bad, message in (([], "non-empty"), (["a", "a"], "distinct"), ("ab", "non-empty list"), ([1, 2], "strings")):
        with pytest.raises(ValueError, match=message):
            engine.choice_logprobs(MESSAGES, bad)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    handle = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    yield handle
    handle.stop()


def test_server_honours_guided_choice(server, tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    direct = [direct_logprob(engine, MESSAGES, c) for c in CANDIDATES]
    best = CANDIDATES[max(range(len(direct)), key=direct.__getitem__)]
    r = httpx.post(server.base_url + "/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "guided_choice": CANDIDATES, "max_tokens": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == best
    sampled = httpx.post(server.base_url + "/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "guided_choice": CANDIDATES, "n": 40, "temperature": 2.0}).json()
    texts = [c["message"]["content"] for c in sampled["choices"]]
    assert len(texts) == 40 and set(texts) <= set(CANDIDATES)
    for payload in ({"guided_choice": []}, {"guided_choice": ["a", "a"]}, {"guided_choice": "a"}):
        bad = httpx.post(server.base_url + "/chat/completions", json={"messages": MESSAGES, **payload})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "guided_choice"


@pytest.mark.parametrize("engine_name", ["auto", "litellm"])
def test_dspy_program_over_http_uses_guided_choice(server, tiny_model_dir, engine_name):
    """dspy.LM (DSPy's own engine, or LiteLLM) → HTTP → `dspyrl serve`: the field arrives and is honoured."""
    from typing import Literal

    class Sentiment(dspy.Signature):
        """Classify the sentiment of the review."""

        review: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()

    format = ChoiceAdapter()
    lm = openai_compatible(server.base_url, "tiny", engine=engine_name, cache=False, max_tokens=4)
    with dspy.context(lm=lm, adapter=format):
        prediction = dspy.Predict(Sentiment)(review="what a film")
    messages = format.format(Sentiment, [], {"review": "what a film"})
    replies = ["sentiment: positive", "sentiment: negative"]
    scores = local_engine(str(tiny_model_dir)).choice_logprobs(messages, replies)
    assert prediction.sentiment == ("positive" if scores[0] > scores[1] else "negative")
    assert lm.history[-1]["outputs"][0] in replies  # a random model never writes this by chance in 4 free tokens
