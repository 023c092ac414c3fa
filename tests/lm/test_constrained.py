"""Grammar-constrained decoding, seeded sampling and the prefix cache, on the tiny random model (its free output is
garbage, so every valid reply below is the grammar's doing)."""

import json
import re
import threading
from typing import Literal

import dspy
import pydantic
import pytest
from typing_extensions import Annotated

from dspyrl.lm import local_lm
from dspyrl.lm.constraints import Constraint, ConstraintError, parse_constraints
from dspyrl.lm.local import ContextLengthError, GenerationSettings, LocalEngine, local_engine
from tests.lm.torch_threads import one_torch_thread  # noqa: F401


class Address(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    city: str = pydantic.Field(max_length=12)
    zip: int


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=12)  # bounded: an untrained model seldom closes a string on its own
    age: int
    mood: Literal["happy", "sad", "calm"]
    tags: list[Annotated[str, pydantic.StringConstraints(max_length=12)]] = pydantic.Field(max_length=3)
    address: Address


MESSAGES = [{"role": "user", "content": "describe a person"}]



def _concurrently(engine, calls):
    """Run engine.generate(messages, n, settings) for each call from its own thread; results in order."""
    results = [None] * len(calls)

    def worker(i):
        messages, n, settings = calls[i]
        results[i] = engine.generate(messages, n=n, settings=settings)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_200_samples_under_a_json_schema_all_validate(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    constraint = Constraint("json", json.dumps(Person.model_json_schema()))
    settings = GenerationSettings(max_tokens=400, temperature=1.0, constraint=constraint)
    generations = [g for batch in _concurrently(engine, [(MESSAGES, 50, settings)] * 4) for g in batch]
    assert len(generations) == 200
    people = [Person.model_validate_json(g.text) for g in generations]  # raises on any invalid reply
    assert all(g.finish_reason == "stop" for g in generations)
    assert len({p.model_dump_json() for p in people}) > 100, "samples at temperature 1.0 differ"
    assert {p.mood for p in people} == {"happy", "sad", "calm"}


def test_200_samples_under_a_regex_all_match(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    pattern = r"[A-Z][a-z]{2,6} (yes|no) [0-9]{1,3}"
    settings = GenerationSettings(max_tokens=40, temperature=1.0, constraint=Constraint("regex", pattern))
    texts = [g.text for batch in _concurrently(engine, [(MESSAGES, 50, settings)] * 4) for g in batch]
    assert len(texts) == 200 and all(re.fullmatch(pattern, t) for t in texts), [t for t in texts if not re.fullmatch(pattern, t)][:3]
    assert len(set(texts)) > 50


def test_200_samples_under_a_choice_are_all_candidates(tiny_model_dir):
    lm = local_lm(str(tiny_model_dir), cache=False, temperature=1.0)
    engine = lm.engine
    from dspyrl.formats.choice import guided_choice_request  # builds the canonical Request the formats send

    candidates = ["red", "green", "blue"]
    picks, _ = engine.choose(MESSAGES, candidates, n=200, temperature=1.0)
    drawn = {g.text for g in picks}
    assert drawn <= set(candidates) and len(drawn) >= 2  # draws, not the argmax every time
    request = guided_choice_request(lm, MESSAGES, candidates, {})
    assert lm(request).text in candidates


def test_a_constrained_and_a_free_row_share_one_batch(tiny_model_dir):
    engine = LocalEngine(str(tiny_model_dir), batch_wait_s=0.5)  # a wide window: both requests surely meet
    free = GenerationSettings(max_tokens=12, temperature=1.0, seed=7)
    constrained = GenerationSettings(max_tokens=40, temperature=1.0, seed=7, constraint=Constraint("regex", r"[0-9]{4}"))
    before = engine.generate_calls
    free_out, constrained_out = _concurrently(engine, [(MESSAGES, 1, free), (MESSAGES, 1, constrained)])
    assert engine.generate_calls == before + 1, "the two requests were generated in one decode loop"
    assert re.fullmatch(r"[0-9]{4}", constrained_out[0].text)
    alone = engine.generate(MESSAGES, settings=free)[0]
    assert free_out[0].token_ids == alone.token_ids, "the free row was not constrained by its neighbour's grammar"
    assert not re.fullmatch(r"[0-9]{4}", free_out[0].text)


def test_a_seeded_request_gives_the_same_tokens_alone_and_in_a_batch(tiny_model_dir):
    engine = LocalEngine(str(tiny_model_dir), batch_wait_s=0.5)
    seeded = GenerationSettings(max_tokens=24, temperature=1.0, seed=1234)
    alone = engine.generate(MESSAGES, settings=seeded)[0]
    others = [([{"role": "user", "content": f"something else {i}, longer"}], 2, GenerationSettings(max_tokens=30, temperature=1.0))
              for i in range(3)]
    before = engine.generate_calls
    batched = _concurrently(engine, [*others[:2], (MESSAGES, 1, seeded), others[2]])[2][0]
    assert engine.generate_calls == before + 1
    assert batched.token_ids == alone.token_ids and len(alone.token_ids) > 3
    unseeded = {tuple(engine.generate(MESSAGES, settings=GenerationSettings(max_tokens=24, temperature=1.0))[0].token_ids)
                for _ in range(3)}
    assert len(unseeded) > 1, "without a seed, samples still differ"


def test_seed_reaches_the_engine_through_dspy(tiny_model_dir):
    lm = local_lm(str(tiny_model_dir), cache=False, temperature=1.0, max_tokens=16)
    assert lm("tell me", seed=5) == lm("tell me", seed=5)
    assert len({lm("tell me", seed=s)[0] for s in range(4)}) > 1


def test_prefix_cache_gives_token_identical_greedy_output(tiny_model_dir):
    cached = LocalEngine(str(tiny_model_dir), batch_wait_s=0.2)
    plain = LocalEngine(str(tiny_model_dir), batch_wait_s=0.2, loaded=(cached.model, cached.tokenizer), prefix_cache=False)
    system = {"role": "system", "content": "You label film reviews. " * 12}
    demo = [{"role": "user", "content": "The movie was wonderful."}, {"role": "assistant", "content": "positive"}]
    prompts = [[system, *demo, {"role": "user", "content": q}]
               for q in ("I hated it.", "Great acting and a long, long plot.", "ok")]
    settings = GenerationSettings(max_tokens=16)
    for engine_calls in range(2):  # the second round reuses the heads cached in the first
        with_cache = [r[0].token_ids for r in _concurrently(cached, [(p, 1, settings) for p in prompts])]
        without = [r[0].token_ids for r in _concurrently(plain, [(p, 1, settings) for p in prompts])]
        assert with_cache == without
    assert cached.prefix_cache.hits >= 1 and plain.prefix_cache is None


def test_json_adapter_sends_response_format_and_every_reply_parses(tiny_model_dir):
    class Review(dspy.Signature):
        """Rate the review."""

        review: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()
        stars: int = dspy.OutputField()
        recommended: bool = dspy.OutputField()

    lm = local_lm(str(tiny_model_dir), cache=False, max_tokens=64)
    assert "response_format" in lm.supported_params and lm.supports_response_schema
    program = dspy.Predict(Review)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        predictions = [program(review=f"review number {i}") for i in range(5)]
    assert len(lm.history) == 5, "one LM call per prediction: no fallback call"
    assert all(entry["kwargs"]["response_format"] for entry in lm.history)
    for p in predictions:
        assert p.sentiment in ("positive", "negative") and isinstance(p.stars, int) and isinstance(p.recommended, bool)


def test_bad_constraints_name_the_field(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    bad = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}}}
    constraint, _ = parse_constraints(bad)
    with pytest.raises(ConstraintError, match=r"^response_format\.json_schema\.schema: .*strng"):
        engine.generate(MESSAGES, settings=GenerationSettings(max_tokens=4, constraint=constraint))
    with pytest.raises(ConstraintError, match=r"^guided_regex: .*"):
        engine.generate(MESSAGES, settings=GenerationSettings(max_tokens=4, constraint=parse_constraints({"guided_regex": "[a-"})[0]))
    with pytest.raises(ConstraintError, match="one constraint per request"):
        parse_constraints({"guided_regex": "a", "structured_outputs": {"json": {"type": "object"}}})
    with pytest.raises(ConstraintError, match=r"^structured_outputs\.jsn: "):
        parse_constraints({"structured_outputs": {"jsn": {}}})


def test_a_prompt_beyond_the_context_is_refused_with_the_lengths(tiny_model_dir):
    engine = local_engine(str(tiny_model_dir))
    with pytest.raises(ContextLengthError, match=r"maximum context length is 2048 tokens.*\d+ in the messages, 100 in"):
        engine.generate([{"role": "user", "content": "plus minus " * 2000}], settings=GenerationSettings(max_tokens=100))
