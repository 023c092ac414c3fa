"""Retry-After is honoured on the LiteLLM path (openrouter/..., LiteLLM model strings) and bounded.

LiteLLM 1.106 keeps a 429's headers only in `litellm_response_headers`; without dspyrl.lm.hosted.honour_retry_after
DSPy retried after its own 1 s backoff whatever the provider asked (measured: 1.3 s after a `Retry-After: 3`)."""

import time

import pytest

from dspyrl.lm import hosted, lm_from_spec
from tests.lm.openrouter_server import OpenRouterServer

KEY = "sk-or-canary-retry-after-0123"


@pytest.fixture(autouse=True)
def keyed(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)


def _first_request_limited(retry_after: float) -> OpenRouterServer:
    return OpenRouterServer(key=KEY, fault=lambda i, body: "429" if i == 0 else None, retry_after=retry_after)


def test_the_retry_waits_what_retry_after_asks():
    # 2 s: DSPy's own first backoff is 1 s, so a retry before ~2 s means the header was not honoured
    with _first_request_limited(2.0) as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, cache=False, num_retries=2)
        started = time.monotonic()
        assert lm("hello")  # answered by the retry
        wall = time.monotonic() - started
    first, second = server.received
    assert (first.outcome, second.outcome) == ("429", "ok")
    assert second.at - first.at >= 1.95
    assert wall < 2.0 + 5  # one wait, not the three retries' worth


def test_a_long_retry_after_is_cut_to_the_max_wait(monkeypatch):
    monkeypatch.setattr(hosted, "MAX_RETRY_AFTER_S", 1.5)
    with _first_request_limited(3600) as server:
        lm = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, cache=False, num_retries=1)
        assert lm("hello")
    first, second = server.received
    assert 1.45 <= second.at - first.at < 3.0



def test_an_openai_compatible_server_gets_the_same_wait():
    """`openai-compatible:` LMs run on DSPy's native engine, which reads Retry-After itself: the same behaviour."""
    with OpenRouterServer(key=None, fault=lambda i, body: "429" if i == 0 else None, retry_after=2.0) as server:
        lm = lm_from_spec(f"openai-compatible:{server.base_url}:acme/task-small", cache=False, num_retries=1)
        assert lm("hello")
    first, second = server.received
    assert (first.outcome, second.outcome) == ("429", "ok") and second.at - first.at >= 1.95
