"""Where text comes from: local HF models (in-process), hosted models (LiteLLM), and our OpenAI-compatible server."""

from __future__ import annotations

import dspy

from dspyrl.lm.hosted import is_hosted_spec, litellm_model, openai_compatible, openrouter
from dspyrl.lm.models import check_local_spec, load_model, resolve_model_path


def local_lm(model: str = "smollm2", adapter: str | None = None, **kwargs) -> dspy.LM:
    """A local Hugging Face model as a dspy.LM (imports torch lazily)."""
    from dspyrl.lm.local import local_lm as _local_lm

    return _local_lm(model, adapter, **kwargs)


def lm_from_spec(spec: str, *, api_base: str | None = None, timeout: float | None = None,
                 num_retries: int | None = None, **kwargs) -> dspy.LM:
    """The CLI's --model value as a dspy.LM.

    'openai-compatible:<base_url>:<model>' → any OpenAI-compatible server; a LiteLLM provider prefix → hosted;
    anything else ('smollm2', a folder, a cached HF id) → in-process local model. `api_base` (the CLI's --api-base)
    is OpenRouter's address, for 'openrouter/...' specs; `timeout` (s) and `num_retries` apply to hosted models (None:
    dspyrl.lm.hosted's defaults) and are ignored by local ones, which have no network to wait on.
    """
    hosted = {"timeout": timeout, "num_retries": num_retries}
    if spec.startswith("openai-compatible:"):
        return openai_compatible(*_openai_compatible_parts(spec), **hosted, **kwargs)
    if spec.startswith("openrouter/"):
        return openrouter(spec, api_base=api_base, **hosted, **kwargs)
    if is_hosted_spec(spec):
        return litellm_model(spec, **hosted, **kwargs)
    return local_lm(spec, **kwargs)


def check_model_spec(spec: str) -> None:
    """The errors `lm_from_spec(spec)` would raise that need no model loaded and no network: a malformed
    openai-compatible spec, an unknown local model. The CLI checks its specs this way before it claims a run folder."""
    if spec.startswith("openai-compatible:"):
        _openai_compatible_parts(spec)
    elif not is_hosted_spec(spec):
        check_local_spec(spec)


def _openai_compatible_parts(spec: str) -> tuple[str, str]:
    base_url, _, model = spec.removeprefix("openai-compatible:").rpartition(":")
    if not base_url or not model:
        from dspyrl.errors import ConfigError

        raise ConfigError(f"model spec '{_redacted_spec(spec)}' must look like openai-compatible:<base_url>:<model>")
    return base_url, model


def _redacted_spec(spec: str) -> str:
    from dspyrl.lm.hosted import redact_url

    head, _, rest = spec.partition(":")
    return f"{head}:{redact_url(rest)}" if rest else spec


__all__ = ["local_lm", "lm_from_spec", "check_model_spec", "openrouter", "openai_compatible", "litellm_model", "load_model",
           "resolve_model_path"]
