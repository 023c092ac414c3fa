"""Hosted LMs: keys are checked before any call, and name the variable."""

import pytest

from dspyrl.errors import ConfigError, MissingKeyError
from dspyrl.lm import lm_from_spec
from dspyrl.lm.hosted import litellm_model, openai_compatible, openrouter


def test_openrouter_without_key_fails_before_any_call(monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="OPENROUTER_API_KEY"):
        openrouter("meta-llama/llama-3.1-8b-instruct")


def test_openrouter_default_model_from_env(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("OPENROUTER_MODEL", "qwen/qwen3-8b")
    lm = openrouter()
    assert lm.model == "openrouter/qwen/qwen3-8b"
    assert "sk-test-not-real" not in str(lm.dump_state()), "keys never land in saved state"


def test_openrouter_needs_a_model(monkeypatch):
    monkeypatch.delenv("OPENROUTER_MODEL", raising=False)
    with pytest.raises(ConfigError, match="OPENROUTER_MODEL"):
        openrouter()


def test_known_provider_key_is_checked(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        litellm_model("openai/gpt-4o-mini")


def test_openai_compatible_rejects_bad_url():
    with pytest.raises(ConfigError, match="http"):
        openai_compatible("localhost:8000", "m")


def test_spec_parsing():
    lm = lm_from_spec("openai-compatible:http://127.0.0.1:9999/v1:tiny")
    assert lm.model == "openai/tiny" and lm.kwargs.get("api_base") == "http://127.0.0.1:9999/v1"
    with pytest.raises(ConfigError):
        lm_from_spec("openai-compatible:nourl")
