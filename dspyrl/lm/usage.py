"""What a run spent, per LM role (task, reflection, judge): calls, tokens and cost, and the cap on it.

    meter = UsageMeter(max_cost=2.0)
    assign_role(judge_lm, "judge"); assign_role(reflection_lm, "reflection")   # anything untagged is "task"
    with meter.active():
        ...                                  # every LM call in this context (and threads started from it) is counted
    meter.table()                            # {"task": {...}, "judge": {...}, "total": {...}}
    meter.over_cap()                         # True once the cap is reached: the optimizer stops between steps

Exact per call, also when threads share one LM: DSPy reports each finished call's usage to `settings.usage_tracker` in
the calling thread (a failed call's too, when the provider billed it), and our end-of-call hook, in that same thread,
books it to the role of the LM that made it. A reply served from DSPy's cache costs nothing and is counted as cached.

The cost of a call, and which source it came from (every table says which):
- "provider": the provider's own figure (OpenRouter's `usage.cost`), what the account was billed;
- "price map": LiteLLM's price map × the reported tokens (LITELLM_LOCAL_MODEL_COST_MAP keeps it offline);
- "tokens only": no price known (a local model, a self-hosted server): tokens are counted, cost stays 0.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import dspy
from dspy.utils.callback import BaseCallback

ROLES = ("task", "reflection", "judge")
SOURCES = ("provider", "price map", "tokens only")
_ROLE_ATTRIBUTE = "dspyrl_role"


def assign_role(lm, role: str):
    """Book `lm`'s calls (and its copies', which share the attribute) to `role`; returns `lm`."""
    if lm is not None:
        setattr(lm, _ROLE_ATTRIBUTE, role)
    return lm


def role_of(lm) -> str:
    return getattr(lm, _ROLE_ATTRIBUTE, None) or "task"


# models the price map did not know, with the map's size then: asked again only once the map has grown (a model
# registered later with litellm.register_model gets its price), not per call (LiteLLM prints a notice per miss)
_UNPRICED: dict[str, int] = {}


def price_of(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """LiteLLM's price-map cost of a call, or None when the map has no price for `model` (an in-process model is
    never looked up: its name changes with every adapter version, and each miss prints LiteLLM's notice)."""
    if _in_process(model):
        return None
    import litellm

    if _UNPRICED.get(model) == len(litellm.model_cost):
        return None
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(model=model, prompt_tokens=prompt_tokens,
                                                              completion_tokens=completion_tokens)
        return float(prompt_cost + completion_cost)
    # "model isn't mapped yet": an unknown price is not a zero price, the source says so
    except Exception:  # noqa: BLE001 - see above
        _UNPRICED[model] = len(litellm.model_cost)
        return None


def _in_process(model: str) -> bool:
    """An LM name of a model dspyrl runs in-process (dspyrl.lm.local names them local/<model>[+<adapter>@<version>])."""
    return model.startswith("local/")


def call_cost(model: str, usage: dict, dspy_cost: float | None = None,
              reported_cost: float | None = None) -> tuple[float, str]:
    """(cost in USD, source) of one call: the provider's figure (what was billed: in the usage, else reported_cost,
    read off its response body), else DSPy's (the cost of its history entry, from the same price map), else the price
    map, else none. The one cost decision of the meter (UsageMeter.on_lm_end) and of rollouts and the judge
    (entry_cost), so their totals agree."""
    if usage.get("cost") is not None:
        return float(usage["cost"]), "provider"
    if reported_cost is not None:
        return float(reported_cost), "provider"
    if dspy_cost is not None:
        return float(dspy_cost), "price map"
    priced = price_of(model, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return (priced, "price map") if priced is not None else (0.0, "tokens only")


def entry_cost(lm, entry: dict) -> float:
    """The cost of the call behind one LM history entry (call_cost); 0 for a cache hit (no usage: nothing was
    billed)."""
    usage = entry.get("usage") or {}
    if not usage:
        return 0.0
    return call_cost(getattr(lm, "model", "?"), usage, entry.get("cost"), _reported_cost(entry.get("response")))[0]


# -------------------------------------------------------------------------- calls dspyrl prices itself
_PRICED_HERE = "dspyrl_priced_here"


def price_here(lm):
    """Mark `lm` (a rollout's own copy) as priced by dspyrl (entry_cost), so DSPy skips its advisory estimate for its
    calls. For a model missing from DSPy's price table that estimate scans the whole table twice per call: half the
    client CPU of a call to a fast server (profiled with benchmarks/rollouts.py), spent on a figure we compute anyway.
    DSPy has no switch for it, so `_skip_dspy_estimate` wraps the one function that makes it; unmarked LMs (the
    user's, a judge's) are priced by DSPy as before."""
    _skip_dspy_estimate()
    setattr(lm, _PRICED_HERE, True)
    return lm


_SKIP_INSTALLED = threading.Lock()


@functools.cache  # installed once per process; price_here runs once per rollout
def _skip_dspy_estimate() -> None:
    from dspy.clients import execution

    with _SKIP_INSTALLED:
        dspy_estimate = execution._price_result
        if getattr(dspy_estimate, "dspyrl_wrapper", False):
            return

        def price_result(lm, result, *args, **kwargs):
            if getattr(lm, _PRICED_HERE, False):
                result.cost, result.cost_details = None, {"kind": "unknown", "reason": "priced by dspyrl"}
                return None
            return dspy_estimate(lm, result, *args, **kwargs)

        price_result.dspyrl_wrapper = True
        execution._price_result = price_result


@dataclass
class RoleUsage:
    """One role's counters."""

    calls: int = 0  # LM calls made (each retry of DSPy's is inside one call)
    cached: int = 0  # calls answered from DSPy's cache: no request, no cost
    failed: int = 0  # calls that raised after DSPy's retries (timeouts, 5xx, 429 after retries, 402 ...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)  # cost source -> calls priced by it
    models: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def source(self) -> str:
        """Where this role's cost came from: one source, or 'mixed (…)'; 'none' before any billed call."""
        used = [s for s in SOURCES if self.sources.get(s)]
        if not used:
            return "none"
        return used[0] if len(used) == 1 else "mixed (" + ", ".join(f"{s}: {self.sources[s]}" for s in used) + ")"

    def add(self, other: "RoleUsage") -> None:
        for name in ("calls", "cached", "failed", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost += other.cost
        for source, n in other.sources.items():
            self.sources[source] = self.sources.get(source, 0) + n
        self.models += [m for m in other.models if m not in self.models]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cost": round(self.cost, 10), "tokens": self.tokens, "cost_source": self.source}

    @classmethod
    def from_json(cls, data: dict) -> "RoleUsage":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


class UsageMeter(BaseCallback):
    """Counts every LM call made in its context, per role, and knows whether the cost cap is reached (module doc).

    It is both a DSPy callback (it sees which LM made a call and how it ended) and DSPy's usage tracker (it is told
    each call's exact usage, in the calling thread). `spent` restores a resumed run's earlier counters."""

    def __init__(self, max_cost: float | None = None, spent: dict | None = None):
        if max_cost is not None and not max_cost > 0:
            from dspyrl.errors import ConfigError

            raise ConfigError(f"max_cost must be a positive amount in USD, got {max_cost}")
        self.max_cost = max_cost
        self.roles: dict[str, RoleUsage] = {}
        self._lock = threading.Lock()
        self._pending = threading.local()  # usage reported by DSPy for the call now ending in this thread
        self._lms: dict[str, Any] = {}  # call_id -> the LM instance making it
        self._outer = None  # the usage tracker active where this meter's block began
        if spent:
            self.load(spent)

    # DSPy's usage-tracker interface (execution.finalize and the failed-call accounting call it)
    def add_usage(self, model: str, usage: dict) -> None:
        if not hasattr(self._pending, "items"):
            self._pending.items = []
        self._pending.items.append(dict(usage or {}))
        if self._outer is not None:  # a meter of an enclosing block (the command's, around the optimizer's) counts too
            self._outer.add_usage(model, usage)

    def on_lm_start(self, call_id, instance, inputs):
        self._pending.items = []
        with self._lock:
            self._lms[call_id] = instance

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            lm = self._lms.pop(call_id, None)
        if lm is None:
            return
        reported = getattr(self._pending, "items", None)
        self._pending.items = []
        model = getattr(lm, "model", "?")
        entry = None
        if reported is None or (not reported and exception is None):
            # DSPy did not report to us (another usage tracker was active, or a cache hit): the LM's own last
            # history entry is this call's when no other thread shares the LM (best effort otherwise).
            history = getattr(lm, "history", None) or []
            entry = history[-1] if history and exception is None else None
            reported = [entry.get("usage") or {}] if entry is not None and entry.get("usage") else []
        # one figure off the response body belongs to the call only when it made one request
        reported_cost = _reported_cost(outputs) if len(reported) == 1 else None
        call = RoleUsage(calls=1, failed=int(exception is not None), models=[model])
        if exception is None and not reported:
            call.cached = 1
        for usage in reported:
            call.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            call.completion_tokens += int(usage.get("completion_tokens") or 0)
            cost, source = call_cost(model, usage, entry.get("cost") if entry is not None else None, reported_cost)
            call.cost += cost
            call.sources[source] = call.sources.get(source, 0) + 1
        with self._lock:
            self.roles.setdefault(role_of(lm), RoleUsage()).add(call)

    # --------------------------------------------------------------------------------------------- reading
    @contextlib.contextmanager
    def active(self) -> Iterator["UsageMeter"]:
        """Count every LM call inside this block (threads that copy the context, as run_rollouts does, included)."""
        callbacks = [c for c in (dspy.settings.callbacks or []) if c is not self]
        outer = dspy.settings.usage_tracker
        self._outer = outer if outer is not self else None
        try:
            with dspy.context(usage_tracker=self, callbacks=[*callbacks, self]):
                yield self
        finally:
            self._outer = None

    @property
    def cost(self) -> float:
        with self._lock:
            return sum(r.cost for r in self.roles.values())

    def total(self) -> RoleUsage:
        out = RoleUsage()
        with self._lock:
            for usage in self.roles.values():
                out.add(usage)
        return out

    def over_cap(self, projected: float = 0.0) -> bool:
        """True when the spend (plus `projected`, e.g. what the last step cost) reaches the cap."""
        return self.max_cost is not None and self.cost + projected >= self.max_cost

    def table(self) -> dict[str, dict]:
        """{role: counters, ..., "total": counters}: what run folders, summaries and reports carry."""
        with self._lock:
            rows = {role: usage.to_json() for role, usage in sorted(self.roles.items(), key=_role_order)}
        rows["total"] = self.total().to_json()
        return rows

    def to_json(self) -> dict[str, dict]:
        with self._lock:
            return {role: asdict(usage) for role, usage in self.roles.items()}

    def load(self, data: dict) -> None:
        with self._lock:
            self.roles = {role: RoleUsage.from_json(d) for role, d in (data or {}).items() if role != "total"}

    def summary_line(self) -> str:
        """One line for the end of a command: cost per role, with its source, and the cap."""
        parts = []
        for role, row in self.table().items():
            if role == "total":
                continue
            parts.append(f"{role} {row['calls']} calls, {row['tokens']} tokens, " + _spent(row))
        cap = f"; cap ${self.max_cost:.4f}" if self.max_cost is not None else ""
        return "spent: " + ("; ".join(parts) or "no LM calls") + f"; total ${self.cost:.4f}{cap}"


def _spent(row: dict) -> str:
    """`$0.0012 (provider)`, or `free (local model)` for a role whose every model ran in-process."""
    if not row["cost"] and row.get("models") and all(_in_process(m) for m in row["models"]):
        return "free (local model)"
    return f"${row['cost']:.4f} ({row['cost_source']})"


def _reported_cost(outputs) -> float | None:
    """The provider's own cost in a typed (lm15 Request) call's Response: DSPy's usage for such a call carries only
    tokens, while the raw reply (provider_data) still has e.g. OpenRouter's `usage.cost`."""
    data = getattr(outputs, "provider_data", None) if hasattr(outputs, "message") else None
    usage = (data or {}).get("usage") if isinstance(data, dict) else None
    cost = usage.get("cost") if isinstance(usage, dict) else None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def _role_order(item) -> tuple[int, str]:
    role = item[0]
    return (ROLES.index(role) if role in ROLES else len(ROLES), role)


def active_meter() -> UsageMeter | None:
    """The meter counting the current context's calls, if any."""
    tracker = dspy.settings.usage_tracker
    return tracker if isinstance(tracker, UsageMeter) else None


# ----------------------------------------------------------------------------------------------- a dry estimate
@dataclass
class RoleEstimate:
    """What one role is expected to spend: `calls` × (prompt + completion tokens per call), priced by the map."""

    role: str
    model: str
    calls: int
    prompt_tokens_per_call: int
    completion_tokens_per_call: int

    @property
    def local(self) -> bool:
        """A model run in-process ('smollm2', a folder, 'local/…'): free, and not a price-map question."""
        from dspyrl.lm.hosted import is_hosted_spec

        return not is_hosted_spec(self.model)

    @property
    def cost(self) -> float | None:
        if self.local:
            return 0.0
        price = price_of(self.model, self.prompt_tokens_per_call, self.completion_tokens_per_call)
        return None if price is None else price * self.calls

    def line(self) -> str:
        tokens = self.calls * (self.prompt_tokens_per_call + self.completion_tokens_per_call)
        cost = self.cost
        priced = ("free (local model)" if self.local else f"~${cost:.4f} (LiteLLM price map)" if cost is not None
                  else "cost unknown (no price in LiteLLM's map)")
        return (f"{self.role:<10} {self.model}: ~{self.calls} calls × ({self.prompt_tokens_per_call} prompt + ≤"
                f"{self.completion_tokens_per_call} completion tokens) = ~{tokens} tokens, {priced}")


def prompt_tokens(program, example, format=None) -> int:
    """Tokens of the first prompt `program` sends for `example` (DSPy's adapter formats it; no LM call is made)."""
    adapter = format or dspy.settings.adapter or dspy.ChatAdapter()
    total = 0
    for _, predictor in program.named_predictors():
        inputs = {k: example.get(k, "") for k in predictor.signature.input_fields}
        try:
            messages = adapter.format(predictor.signature, predictor.demos, inputs)
        # a program whose inputs need more than the example gives: count the example's text
        except Exception:  # noqa: BLE001 - see above
            messages = [{"content": " ".join(str(v) for v in inputs.values())}]
        text = " ".join(str(m.get("content") or "") for m in messages)
        total = max(total, _count_tokens(text))
    return total


def _count_tokens(text: str) -> int:
    try:
        import litellm

        return int(litellm.token_counter(model="gpt-4o-mini", text=text))
    except Exception:  # noqa: BLE001 - no tokenizer for the estimate: fall back to a word count
        return max(1, int(len(text.split()) * 1.3))


def format_estimate(rows: list[RoleEstimate], max_cost: float | None = None) -> str:
    costs = [r.cost for r in rows]
    known = [c for c in costs if c is not None]
    total = (f"~${sum(known):.4f}" + ("" if len(known) == len(costs) else " for the priced roles")) if known else "unknown"
    lines = ["estimate (no LM was called):", *("  " + r.line() for r in rows), f"  total: {total}"]
    if max_cost is not None:
        lines.append(f"  cap: ${max_cost:.4f}")
    return "\n".join(lines)
