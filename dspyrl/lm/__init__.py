"""Where text comes from: local HF models (in-process), hosted models (LiteLLM), and our OpenAI-compatible server."""

from __future__ import annotations

import dspy

from dspyrl.lm.hosted import is_hosted_spec, litellm_model, openai_compatible, openrouter
from dspyrl.lm.models import load_model, resolve_model_path


def local_lm(model: str = "smollm2", adapter: str | None = None, **kwargs) -> dspy.LM:
    """A local Hugging Face model as a dspy.LM (imports torch lazily)."""
    from dspyrl.lm.local import local_lm as _local_lm

    return _local_lm(model, adapter, **kwargs)


def lm_from_spec(spec: str, **kwargs) -> dspy.LM:
    """The CLI's --model value as a dspy.LM.

    'openai-compatible:<base_url>:<model>' → any OpenAI-compatible server; a LiteLLM provider prefix → hosted;
    anything else ('smollm2', a folder, a cached HF id) → in-process local model.
    """
    if spec.startswith("openai-compatible:"):
        rest = spec.removeprefix("openai-compatible:")
        base_url, _, model = rest.rpartition(":")
        if not base_url or not model:
            from dspyrl.errors import ConfigError

            raise ConfigError(f"model spec '{spec}' must look like openai-compatible:<base_url>:<model>")
        return openai_compatible(base_url, model, **kwargs)
    if is_hosted_spec(spec):
        return litellm_model(spec, **kwargs)
    return local_lm(spec, **kwargs)


__all__ = ["local_lm", "lm_from_spec", "openrouter", "openai_compatible", "litellm_model", "load_model",
           "resolve_model_path"]
