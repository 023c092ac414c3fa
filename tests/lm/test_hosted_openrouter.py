"""The OpenRouter path end to end: dspy.LM → LiteLLM → HTTP → an OpenRouter-speaking server on 127.0.0.1.

Faults, billing, keys: what a hosted run meets, against tests/lm/openrouter_server.py (real HTTP, no mocks)."""

import time

import dspy
import pytest

from dspyrl.errors import ConfigError
from dspyrl.lm import lm_from_spec
from dspyrl.lm.hosted import ProviderRefused, openai_compatible
from dspyrl.lm.usage import UsageMeter, assign_role
from dspyrl.program_file import load_program_file
from dspyrl.rollout import run_rollouts
from tests.lm.openrouter_server import OpenRouterServer

KEY = "sk-or-canary-0123456789abcdef"


@pytest.fixture()
def sentiment():
    return load_program_file("sentiment")


@pytest.fixture()
def keyed(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.delenv("OPENROUTER_API_BASE", raising=False)


def _server(spec, **kwargs) -> OpenRouterServer:
    answers = {ex.review: ex.sentiment for ex in spec.load_examples()}
    return OpenRouterServer(key=KEY, answers=answers, **kwargs).start()


def _rows(spec, n=None):
    return spec.load_examples()[:n]


def test_openrouter_spec_runs_through_litellm_with_the_providers_cost(keyed, sentiment):
    with _server(sentiment) as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64)
        meter = UsageMeter()
        with meter.active():
            batch = run_rollouts(sentiment.build_program(), _rows(sentiment, 6), sentiment.build_reward(), lm=lm,
                                 num_threads=3, progress=False)
    assert batch.mean_reward() == 1.0 and batch.failures == 0
    assert {r.body["model"] for r in server.received} == {"acme/task-small"}  # vendor/model, no 'openrouter/' prefix
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in server.received)
    task = meter.table()["task"]
    assert task["calls"] == 6 and task["cost_source"] == "provider"
    assert task["cost"] == pytest.approx(server.billed, rel=1e-9) and server.billed > 0
    assert batch.cost == pytest.approx(server.billed, rel=1e-9)  # the rollout engine reads the same figure


def test_openrouter_api_base_from_the_environment(keyed, monkeypatch, sentiment):
    with _server(sentiment) as server:
        monkeypatch.setenv("OPENROUTER_API_BASE", server.base_url)
        lm = lm_from_spec("openrouter/acme/task-small", max_tokens=64, cache=False)
        assert lm(messages=[{"role": "user", "content": "hi"}])
    assert len(server.received) == 1


def test_a_faulty_provider_run_finishes_counted_bounded_and_billed_exactly(keyed, sentiment):
    """30% of calls fail (429 with Retry-After, 5xx, hangs, empty/cut-off/garbage 200s): the run ends, failures are
    counted, a hang costs at most timeout × attempts, and the per-role cost is what the server billed. A rerun on the
    healthy server then scores every row: no faulty reply was replayed from DSPy's cache."""
    rows = _rows(sentiment, 48)
    timeout, retries = 1.0, 2
    # slow replies come within the timeout: one that arrives after the client gave up is billed by the provider but
    # never seen by the client (no client can count it)
    with _server(sentiment, fault_rate=0.3, seed=7, slow_delay=0.5) as server:
        task = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64,
                            timeout=timeout, num_retries=retries)
        judge = assign_role(lm_from_spec("openrouter/acme/judge-mid", api_base=server.base_url, max_tokens=16,
                                         timeout=timeout, num_retries=retries), "judge")
        judge_program = dspy.Predict("review -> sentiment")

        def judged(example, prediction, trace=None):  # a second role that pays for its own calls
            with dspy.context(lm=judge):
                try:
                    judge_program(review=example.review)
                except Exception:
                    pass
            return sentiment.build_reward()(example, prediction)

        meter = UsageMeter()
        started = time.perf_counter()
        with meter.active():
            batch = run_rollouts(sentiment.build_program(), rows, judged, lm=task, num_threads=8, progress=False)
        wall = time.perf_counter() - started
        faults = server.outcomes()
        server.fault_rate = 0.0
        with meter.active():
            again = run_rollouts(sentiment.build_program(), rows, sentiment.build_reward(), lm=task, num_threads=8,
                                 progress=False)
    faulty = sum(n for outcome, n in faults.items() if outcome != "ok")
    print(f"fault run: {sum(faults.values())} requests, {faults}; {batch.failures}/48 rows failed "
          f"{batch.error_types}; wall {wall:.1f} s; billed ${server.billed:.6f}, counted ${meter.cost:.6f} "
          f"{ {role: round(row['cost'], 6) for role, row in meter.table().items()} }; rerun {again.failures} failed")
    assert faulty >= 0.2 * sum(faults.values()) and faults.get("hang", 0) >= 1
    assert batch.failures >= 1 and len(batch.rollouts) == 48
    assert batch.failures == sum(batch.error_types.values())
    # each row: at most 2 program calls (ChatAdapter, its JSON fallback) + 1 judge call, each ≤ 3 attempts of ≤ 1 s plus
    # 1 + 2 s of backoff; 48 rows over 8 threads is 6 rows a thread, one after another
    assert wall < 6 * 3 * (3 * timeout + 3) + 10
    table = meter.table()
    assert table["task"]["cost_source"] == table["judge"]["cost_source"] == "provider"
    assert table["task"]["cost"] + table["judge"]["cost"] == pytest.approx(server.billed, rel=1e-9)
    assert table["judge"]["cost"] == pytest.approx(server.billed_for("acme/judge-mid"), rel=1e-9)
    assert again.failures == 0 and again.mean_reward() == 1.0, again.error_types


def test_402_stops_the_run_at_once(keyed, sentiment):
    with _server(sentiment, always="402") as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64, num_retries=3)
        started = time.perf_counter()
        with pytest.raises(ProviderRefused, match="out of credits") as refused:
            run_rollouts(sentiment.build_program(), _rows(sentiment, 20), sentiment.build_reward(), lm=lm,
                         num_threads=2, progress=False)
    assert time.perf_counter() - started < 5
    assert len(server.received) <= 4  # the calls already in flight, never retried
    assert "\n" not in str(refused.value) and KEY not in str(refused.value)


def test_401_stops_the_run_at_once(keyed, sentiment, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-wrong-key-000000")
    with _server(sentiment) as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64)
        with pytest.raises(ProviderRefused, match="key was refused"):
            run_rollouts(sentiment.build_program(), _rows(sentiment, 8), sentiment.build_reward(), lm=lm,
                         num_threads=1, progress=False)
    assert len(server.received) == 1


def test_a_hanging_endpoint_costs_timeout_times_attempts(keyed, sentiment):
    with _server(sentiment, always="hang") as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64, timeout=0.5,
                          num_retries=1)
        started = time.perf_counter()
        batch = run_rollouts(sentiment.build_program(), _rows(sentiment, 1), sentiment.build_reward(), lm=lm,
                             progress=False)
        wall = time.perf_counter() - started
    assert batch.failures == 1 and batch.error_types == {"LMTimeoutError": 1}
    assert len(server.received) == 2 and wall < 2 * 0.5 + 1 + 2  # two attempts and one backoff


def test_keys_go_only_to_the_address_they_are_paired_with(monkeypatch, sentiment):
    """OpenRouter's key to the OpenRouter base only; OPENAI_COMPATIBLE_API_KEY only to the server its base names; a
    third server gets a placeholder; OPENAI_API_KEY goes nowhere."""
    canaries = {"OPENROUTER_API_KEY": "sk-or-canary-aaaaaaaaaaaa", "OPENAI_API_KEY": "sk-openai-canary-bbbbbbbb",
                "OPENAI_COMPATIBLE_API_KEY": "sk-compat-canary-cccccccc"}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    with OpenRouterServer(key=None) as router, OpenRouterServer(key=None) as paired, \
            OpenRouterServer(key=None) as stranger:
        monkeypatch.setenv("OPENAI_COMPATIBLE_API_BASE", paired.base_url)
        for lm in (lm_from_spec("openrouter/acme/task-small", api_base=router.base_url, cache=False),
                   lm_from_spec(f"openai-compatible:{paired.base_url}:acme/task-small", cache=False),
                   openai_compatible(stranger.base_url, "acme/task-small", cache=False)):
            lm(messages=[{"role": "user", "content": "hello"}])
    sent = {name: [r.headers.get("Authorization") for r in server.received]
            for name, server in (("router", router), ("paired", paired), ("stranger", stranger))}
    assert sent == {"router": [f"Bearer {canaries['OPENROUTER_API_KEY']}"],
                    "paired": [f"Bearer {canaries['OPENAI_COMPATIBLE_API_KEY']}"],
                    "stranger": ["Bearer not-needed"]}
    everything = str([(r.headers, r.body) for s in (router, paired, stranger) for r in s.received])
    assert canaries["OPENAI_API_KEY"] not in everything


@pytest.mark.parametrize("spec", ["openai-compatible:http://user:sk-secret-in-url-0000@127.0.0.1:9/v1:m",
                                  "openai-compatible:http://sk-secret-in-url-0000@127.0.0.1:9/v1:m"])
def test_a_credential_in_a_url_is_refused_without_repeating_it(spec):
    with pytest.raises(ConfigError) as refused:
        lm_from_spec(spec)
    assert "sk-secret-in-url" not in str(refused.value) and "credential" in str(refused.value)


def test_a_credential_in_the_openrouter_base_is_refused(keyed, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_BASE", "https://me:sk-secret-in-url-0000@openrouter.ai/api/v1")
    with pytest.raises(ConfigError, match="OPENROUTER_API_BASE") as refused:
        lm_from_spec("openrouter/acme/task-small")
    assert "sk-secret-in-url" not in str(refused.value)


def test_concurrency_is_capped_per_provider(keyed, sentiment):
    with _server(sentiment, delay=0.2) as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64, max_concurrency=2)
        in_flight, peak = 0, 0
        lock = __import__("threading").Lock()
        original = server._respond

        def counting(*args):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                return original(*args)
            finally:
                with lock:
                    in_flight -= 1

        server._respond = counting
        batch = run_rollouts(sentiment.build_program(), _rows(sentiment, 8), sentiment.build_reward(), lm=lm,
                             num_threads=8, progress=False)
    assert batch.failures == 0 and peak == 2


def test_rollout_calls_are_priced_by_us_and_skip_dspys_estimate(keyed, sentiment, monkeypatch):
    """The rollout engine prices its own LM copies' calls (the provider's figure here) and DSPy's per-call price
    lookup is skipped for them only: the user's LM, called outside the engine, is still priced by DSPy."""
    import dspy.clients.costs as dspy_costs

    lookups = []
    dspy_lookup = dspy_costs.model_info
    monkeypatch.setattr(dspy_costs, "model_info", lambda *a, **k: lookups.append(a) or dspy_lookup(*a, **k))
    with _server(sentiment) as server:
        lm = openai_compatible(server.base_url, "acme/task-small", api_key=KEY, max_tokens=64, cache=False)
        batch = run_rollouts(sentiment.build_program(), _rows(sentiment, 4), sentiment.build_reward(), lm=lm,
                             num_threads=2, progress=False)
        assert batch.failures == 0 and len(server.received) == 4
        assert batch.cost == pytest.approx(server.billed, rel=1e-9) and server.billed > 0
        assert lookups == []
        with dspy.context(lm=lm):
            sentiment.build_program()(**_rows(sentiment, 1)[0].inputs())
    assert lookups  # an LM outside the engine keeps DSPy's estimate


def test_the_spend_line_says_free_for_a_local_model_and_the_source_for_a_hosted_one():
    from dspyrl.lm.usage import RoleUsage

    meter = UsageMeter()
    meter.roles["task"] = RoleUsage(calls=3, prompt_tokens=30, models=["local/smollm2"])
    meter.roles["judge"] = RoleUsage(calls=1, prompt_tokens=9, cost=0.0012, sources={"provider": 1},
                                     models=["openrouter/acme/judge-mid"])
    line = meter.summary_line()
    assert "task 3 calls, 30 tokens, free (local model)" in line
    assert "judge 1 calls, 9 tokens, $0.0012 (provider)" in line
