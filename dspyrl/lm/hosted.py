"""Hosted models through LiteLLM (via dspy.LM): OpenRouter, any OpenAI-compatible server, any LiteLLM model string.

Every hosted LM gets the same guarantees:
- keys come from the environment only, are checked before any call (a missing key fails at once, naming the
  variable), and go only to the address they are paired with: OPENROUTER_API_KEY to OpenRouter's base URL
  (`api_base=`, else $OPENROUTER_API_BASE, else openrouter.ai); OPENAI_COMPATIBLE_API_KEY only to the server named in
  $OPENAI_COMPATIBLE_API_BASE (any other openai-compatible URL gets a placeholder, never a key meant for another host);
- a URL carrying a credential (`http://user:sk-…@host/v1`) is refused with one line that does not repeat it: such a URL
  ends up in logs, run folders and reports, and LiteLLM does not authenticate with it anyway;
- a request timeout (DEFAULT_TIMEOUT_S unless given) and bounded retries: DSPy owns the retry loop (exponential
  backoff, 1, 2, 4 … s, or the wait a 429/503's Retry-After asks for, at most MAX_RETRY_AFTER_S), and 401/402 are
  never retried. LiteLLM keeps the header only in `litellm_response_headers`, where DSPy does not look, so
  `honour_retry_after` hands it to DSPy on the exception;
- at most `max_concurrency` calls in flight per provider address, across every LM and thread of the process.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit, urlunsplit

import dspy
from dspy.utils.callback import BaseCallback

from dspyrl.errors import ConfigError, DspyrlError, MissingKeyError

OPENROUTER_KEY = "OPENROUTER_API_KEY"
OPENROUTER_MODEL = "OPENROUTER_MODEL"
OPENROUTER_BASE = "OPENROUTER_API_BASE"
OPENROUTER_DEFAULT_BASE = "https://openrouter.ai/api/v1"
COMPATIBLE_KEY = "OPENAI_COMPATIBLE_API_KEY"
COMPATIBLE_BASE = "OPENAI_COMPATIBLE_API_BASE"

# A minute covers a long completion from a slow hosted model; without it the OpenAI client waits 600 s, so one hung
# call cost ~40 minutes across DSPy's retries.
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_NUM_RETRIES = 3
DEFAULT_MAX_CONCURRENCY = 64
# A Retry-After longer than this is cut to it: one 429 asking for an hour would stall every thread waiting on it.
MAX_RETRY_AFTER_S = 60.0

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


# ----------------------------------------------------------------------------------------------- URLs
def redact_url(url: str) -> str:
    """`url` with any user:password part replaced by '***' (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def check_base_url(url: str, *, what: str = "base URL", key_variable: str | None = None) -> str:
    """`url` without a trailing slash; ConfigError (one line, credential not repeated) unless it is a plain http(s)
    URL with no credential in it."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{what} '{redact_url(url)}' must start with http:// or https://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError as err:
        raise ConfigError(f"{what} '{redact_url(url)}' is not a valid URL: {err}") from None
    if "@" in parts.netloc:
        where = f"export {key_variable}=..." if key_variable else "pass the key in an environment variable"
        raise ConfigError(f"{what} '{redact_url(url)}' carries a credential (user:password@); keys never go in a "
                          "URL, which is logged and saved with the run", hint=where)
    return url.rstrip("/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def openrouter_base(api_base: str | None = None) -> str:
    """The OpenRouter address a run talks to: `api_base`, else $OPENROUTER_API_BASE, else openrouter.ai."""
    chosen = api_base or os.environ.get(OPENROUTER_BASE) or OPENROUTER_DEFAULT_BASE
    return check_base_url(chosen, what="OpenRouter base URL" if api_base else OPENROUTER_BASE,
                          key_variable=OPENROUTER_KEY)


class ProviderRefused(DspyrlError):
    """The provider refused a call for a reason no retry can fix (401: the key; 402: no credits left): the run stops
    at once, in one line, instead of failing every remaining call the same way."""

    def __init__(self, err: BaseException):
        status = getattr(err, "status", None) or getattr(err, "status_code", None)
        reason = {401: "the key was refused", 403: "the key may not use this model",
                  402: "the account is out of credits"}.get(status, "the call was refused")
        detail = scrub_keys(" ".join(str(getattr(err, "message", None) or err).split()))[:240]
        super().__init__(f"the provider stopped the run: {reason} (HTTP {status or '?'}: {detail})",
                         hint="retrying cannot fix this; check the key or the account's credits, then --resume")


def scrub_keys(text: str) -> str:
    """`text` with the value of every *_API_KEY / *_TOKEN environment variable replaced by '***'."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and name.endswith(("_API_KEY", "_TOKEN", "_SECRET")) and value in text:
            text = text.replace(value, "***")
    return text


# ----------------------------------------------------------------------------------------------- Retry-After
_retry_after_hook = None
_retry_after_guard = threading.Lock()


def honour_retry_after() -> None:
    """Make DSPy's retry of a LiteLLM call wait what the provider's Retry-After asks (at most MAX_RETRY_AFTER_S).

    LiteLLM 1.106 raises its RateLimitError with an empty `response.headers` and the real headers in
    `litellm_response_headers`; DSPy reads `retry_after` or `response.headers`, so it fell back to its own 1, 2, 4 s.
    A LiteLLM failure callback (run in the calling thread, before the error reaches DSPy's retry loop) copies the
    header onto the exception's `retry_after`. Registered once per process; it only adds that attribute."""
    global _retry_after_hook
    with _retry_after_guard:
        if _retry_after_hook is not None:
            return
        import litellm
        from litellm.integrations.custom_logger import CustomLogger

        class RetryAfter(CustomLogger):
            def log_failure_event(self, kwargs, response_obj, start_time, end_time):
                _copy_retry_after(kwargs.get("exception"))

            async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
                _copy_retry_after(kwargs.get("exception"))

        _retry_after_hook = RetryAfter()
        litellm.callbacks.append(_retry_after_hook)


def _copy_retry_after(err: BaseException | None) -> None:
    if err is None or getattr(err, "retry_after", None) is not None:
        return
    headers = getattr(err, "litellm_response_headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return
    from dspy.clients._http import retry_after_seconds  # DSPy's own parser: seconds or an HTTP date

    seconds = retry_after_seconds(value)
    if seconds is not None:
        err.retry_after = min(seconds, MAX_RETRY_AFTER_S)


# ----------------------------------------------------------------------------------------------- concurrency
class ProviderConcurrency(BaseCallback):
    """At most `limit` calls in flight to one provider address, however many LMs and threads share it.

    A DSPy callback on the LM: copies of the LM (one per rollout) carry it, and DSPy runs the end hook on success and
    failure alike, so a slot is always given back."""

    _semaphores: dict[tuple, threading.BoundedSemaphore] = {}
    _guard = threading.Lock()

    def __init__(self, address: str, limit: int):
        self.address, self.limit = address, limit
        key = (address, limit)
        with self._guard:
            self._slots = self._semaphores.setdefault(key, threading.BoundedSemaphore(limit))
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def on_lm_start(self, call_id, instance, inputs):
        self._slots.acquire()
        with self._lock:
            self._held.add(call_id)

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            held = call_id in self._held
            self._held.discard(call_id)
        if held:
            self._slots.release()


def _hosted_kwargs(kwargs: dict, address: str, max_concurrency: int | None) -> dict:
    kwargs = dict(kwargs)
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT_S)
    kwargs.setdefault("num_retries", DEFAULT_NUM_RETRIES)
    if kwargs["timeout"] is None:
        kwargs["timeout"] = DEFAULT_TIMEOUT_S
    if not (isinstance(kwargs["timeout"], (int, float)) and kwargs["timeout"] > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {kwargs['timeout']!r}")
    if kwargs["num_retries"] is None:
        kwargs["num_retries"] = DEFAULT_NUM_RETRIES
    if not (isinstance(kwargs["num_retries"], int) and kwargs["num_retries"] >= 0):
        raise ConfigError(f"num_retries must be a whole number ≥ 0, got {kwargs['num_retries']!r}")
    if max_concurrency:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), ProviderConcurrency(address, max_concurrency)]
    return kwargs


# ----------------------------------------------------------------------------------------------- the LMs
def openrouter(model: str | None = None, *, api_base: str | None = None,
               max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY, **kwargs) -> dspy.LM:
    """An OpenRouter model, e.g. `openrouter("meta-llama/llama-3.1-8b-instruct")`; default from $OPENROUTER_MODEL.

    `api_base` (else $OPENROUTER_API_BASE) points it at another OpenRouter-speaking address; the key
    $OPENROUTER_API_KEY goes there and nowhere else. `timeout` (s) and `num_retries` default to DEFAULT_TIMEOUT_S and
    DEFAULT_NUM_RETRIES; other keywords are dspy.LM's."""
    model = model or os.environ.get(OPENROUTER_MODEL)
    if not model:
        raise ConfigError(f"no OpenRouter model given and {OPENROUTER_MODEL} is not set",
                          hint=f"pass a model or export {OPENROUTER_MODEL}=<vendor>/<model>")
    model = model.removeprefix("openrouter/")
    if kwargs.get("api_key"):
        raise ConfigError("an OpenRouter key is read from the environment only",
                          hint=f"export {OPENROUTER_KEY}=... instead of passing api_key")
    _require_key(OPENROUTER_KEY, f"OpenRouter model '{model}'")
    base = openrouter_base(api_base)
    honour_retry_after()
    # LiteLLM reads the key from the environment at call time and sends it to `api_base` only; we never hold it in an
    # object that gets saved or printed.
    return dspy.LM(f"openrouter/{model}", engine="litellm", api_base=base,
                   **_hosted_kwargs(kwargs, base, max_concurrency))


def openai_compatible(base_url: str, model: str, api_key: str | None = None, *,
                      max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY, **kwargs) -> dspy.LM:
    """Any OpenAI-compatible server (vLLM, llama.cpp, `dspyrl serve`, …) at `base_url` (…/v1).

    The key is `api_key`, else $OPENAI_COMPATIBLE_API_KEY when $OPENAI_COMPATIBLE_API_BASE names this server; any
    other server gets a placeholder (the OpenAI client insists on one), never a key meant for somewhere else."""
    base = check_base_url(base_url, key_variable=COMPATIBLE_KEY)
    key = api_key or _paired_compatible_key(base) or "not-needed"
    return dspy.LM(f"openai/{model}", api_base=base, api_key=key, **_hosted_kwargs(kwargs, base, max_concurrency))


def _paired_compatible_key(base: str) -> str | None:
    paired = os.environ.get(COMPATIBLE_BASE)
    if not paired or not os.environ.get(COMPATIBLE_KEY):
        return None
    paired = check_base_url(paired, what=COMPATIBLE_BASE, key_variable=COMPATIBLE_KEY)
    return os.environ[COMPATIBLE_KEY] if _origin(paired) == _origin(base) else None


def litellm_model(model: str, *, max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY, **kwargs) -> dspy.LM:
    """Any LiteLLM model string; the provider's key variable is checked first when we know it."""
    provider = model.split("/", 1)[0] if "/" in model else ""
    if provider == "openrouter":
        return openrouter(model, max_concurrency=max_concurrency, **kwargs)
    if provider in _PROVIDER_KEYS and not kwargs.get("api_key"):
        _require_key(_PROVIDER_KEYS[provider], f"model '{model}'")
    honour_retry_after()
    address = provider
    if kwargs.get("api_base"):
        kwargs["api_base"] = address = check_base_url(kwargs["api_base"])
    return dspy.LM(model, engine="litellm", **_hosted_kwargs(kwargs, address, max_concurrency))


def is_hosted_spec(spec: str) -> bool:
    """True when a --model value names a hosted model rather than a local one."""
    return spec.startswith("openai-compatible:") or ("/" in spec and spec.split("/", 1)[0] in {
        *_PROVIDER_KEYS, "openrouter", "ollama", "ollama_chat", "hosted_vllm", "azure", "bedrock", "vertex_ai", "cohere"})
