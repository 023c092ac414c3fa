"""Keep replies that are not answers out of DSPy's cache.

DSPy caches every reply an LM returns with HTTP 200, before any format reads it. A reply that then fails to parse, is
empty, or was cut off at max_tokens would be served again on every rerun as if it were the model's answer: against a
server failing 30% of calls, a rerun on the healthy server still failed 2–9 of 48 rows. The rollout engine remembers the
cache request of each LM call (`cache_requests`, DSPy's own key, computed the way DSPy computes it) and `forget`s the
ones whose reply was not usable, so the next run asks the model again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dspy


def cache_requests(lm, inputs: dict[str, Any]) -> list[dict]:
    """The cache requests DSPy files an LM call under (sync and async), from a callback's `inputs`; [] when the LM
    does not use DSPy's cache or the call cannot be keyed."""
    try:
        from dspy.clients.execution import prepare

        call = prepare(lm, inputs.get("prompt"), inputs.get("messages"), dict(inputs.get("kwargs") or {}))
        if not call.cache:
            return []
        return [call.key(lm, False), call.key(lm, True)]
    # keying is best effort: never fail a call because we could not name its cache entry
    except Exception:  # noqa: BLE001 - see above
        return []


def forget(requests: list[dict]) -> int:
    """Drop these requests' entries from DSPy's memory and disk caches; returns how many entries were dropped."""
    from dspy.clients.execution import IGNORED_CACHE_KEYS

    cache = dspy.cache
    dropped = 0
    for request in requests:
        try:
            key = cache.cache_key(request, IGNORED_CACHE_KEYS)
        except Exception:  # noqa: BLE001 - an entry that cannot be keyed was never cached: nothing to drop
            continue
        if cache.enable_memory_cache:
            with getattr(cache, "_lock", contextlib.nullcontext()):  # the LRU dict is not thread-safe on its own
                dropped += int(cache.memory_cache.pop(key, None) is not None)
        if cache.enable_disk_cache:
            dropped += int(bool(cache.disk_cache.delete(key)))
    return dropped
