"""Hosted models through LiteLLM (via dspy.LM): OpenRouter, any OpenAI-compatible server, any LiteLLM model string.

Keys come from the environment only and are checked before any call, so a missing key fails at once with the
variable's name instead of deep inside the first rollout.
"""

from __future__ import annotations

import os

import dspy

from dspyrl.errors import ConfigError, MissingKeyError

OPENROUTER_KEY = "OPENROUTER_API_KEY"
OPENROUTER_MODEL = "OPENROUTER_MODEL"

# LiteLLM provider prefix -> the environment variable that provider's key is read from.
_PROVIDER_KEYS = {
    "openrouter": OPENROUTER_KEY,
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "fireworks_ai": "FIREWORKS_API_KEY",
}


def _require_key(variable: str, what: str) -> None:
    if not os.environ.get(variable):
        raise MissingKeyError(variable, what)


def openrouter(model: str | None = None, **kwargs) -> dspy.LM:
    """An OpenRouter model, e.g. `openrouter("meta-llama/llama-3.1-8b-instruct")`; default from $OPENROUTER_MODEL."""
    model = model or os.environ.get(OPENROUTER_MODEL)
    if not model:
        raise ConfigError(f"no OpenRouter model given and {OPENROUTER_MODEL} is not set",
                          hint=f"pass a model or export {OPENROUTER_MODEL}=<vendor>/<model>")
    model = model.removeprefix("openrouter/")
    _require_key(OPENROUTER_KEY, f"OpenRouter model '{model}'")
    # dspy.LM reads the key from the environment itself; we never hold it in an object that gets saved.
    return dspy.LM(f"openrouter/{model}", engine="litellm", **kwargs)


def openai_compatible(base_url: str, model: str, api_key: str | None = None, **kwargs) -> dspy.LM:
    """Any OpenAI-compatible server (vLLM, llama.cpp, `dspyrl serve`, …) at `base_url` (…/v1)."""
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL '{base_url}' must start with http:// or https://")
    # Local servers need no key, but the OpenAI client insists on one being present.
    key = api_key or os.environ.get("OPENAI_COMPATIBLE_API_KEY") or "not-needed"
    return dspy.LM(f"openai/{model}", api_base=base_url.rstrip("/"), api_key=key, **kwargs)


def litellm_model(model: str, **kwargs) -> dspy.LM:
    """Any LiteLLM model string; the provider's key variable is checked first when we know it."""
    provider = model.split("/", 1)[0] if "/" in model else ""
    if provider == "openrouter":
        return openrouter(model, **kwargs)
    if provider in _PROVIDER_KEYS and not kwargs.get("api_key"):
        _require_key(_PROVIDER_KEYS[provider], f"model '{model}'")
    return dspy.LM(model, engine="litellm", **kwargs)


def is_hosted_spec(spec: str) -> bool:
    """True when a --model value names a hosted model rather than a local one."""
    return spec.startswith("openai-compatible:") or ("/" in spec and spec.split("/", 1)[0] in {
        *_PROVIDER_KEYS, "openrouter", "ollama", "ollama_chat", "hosted_vllm", "azure", "bedrock", "vertex_ai", "cohere"})
