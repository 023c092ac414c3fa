"""Rollouts: run a DSPy program on examples × G samples, concurrently, and keep everything an optimizer needs.

This is the ONE place programs are run on examples; `dspyrl eval`, the GRPO prompt policy, LoRA GRPO and the
comparator all call `run_rollouts`. For each (example i, sample s) it

1. deep-copies the program (so per-rollout prompt choices never leak between threads) and calls
   `configure(program_copy, i, s)`, which may set instructions/demos and returns the JSON-able choices it made;
2. runs the copy under `dspy.context(lm=<a per-rollout copy of the LM>, adapter=..., callbacks=[recorder])`:
   the LM copy has its own history and, for sampled groups, its own `rollout_id`, so the G samples of one group
   are distinct draws (and still cached: rerunning the same rollout — e.g. after a resume — costs nothing);
3. records every predictor call (formatted messages, raw completion, parsed outputs, failure) with a DSPy
   callback that lives only in that rollout's context, so concurrent rollouts never see each other's calls;
4. scores the prediction with the reward, outside the rollout's context, so a judge's own LM calls are not
   mistaken for the program's.
   A group reward (`dspyrl.rewards.combine.scores_groups`: a group-mode judge, a reward model) is called once per
   example with the predictions of all its rollouts that ran, after every rollout finished.

Only real failures are failures (`dspyrl.errors.is_lm_failure`): an LM/HTTP error after the client's retries, a
timeout, or an unparseable output (AdapterParseError) makes the rollout `failed`, with `failure_reward` as its reward
and the error kept; a reward whose judge LM fails that way, or that returns NaN/None, is counted as a reward failure.
Anything else a program or a reward raises (a NameError, a KeyError) is the user's bug: it propagates with its
traceback, as DSPy's Evaluate does, after `max_errors` of them have been tolerated (default 0: the first one stops the
run; tolerated ones are counted in `program_errors` and scored with the failure reward).
"""

from __future__ import annotations

import contextvars
import copy
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import dspy
from dspy.utils.callback import BaseCallback

from dspy.utils.exceptions import LMAuthError, LMBillingError

from dspyrl.formats.per_predictor import predictor_format_settings
from dspyrl.lm.cache import cache_requests, forget
from dspyrl.lm.hosted import ProviderRefused
from dspyrl.lm.usage import entry_cost, price_here
from dspyrl.errors import ConfigError, is_lm_failure
from dspyrl.rewards.combine import RewardResult, score_group, scores_groups, to_reward_result


# ----------------------------------------------------------------------------------------------- records
@dataclass
class PredictorCall:
    """One call of one predictor inside a rollout."""

    predictor: str  # the name from program.named_predictors(), e.g. "predict" or "classify.predict"
    messages: list[dict] | None  # the chat messages the format formatted (last attempt, if the format retried)
    completion: str | None  # the raw LM text
    outputs: dict[str, Any] | None  # the parsed output fields, None if parsing failed
    failed: bool = False
    inputs: dict[str, Any] | None = None  # the predictor's input fields in this call (what demos are made of)

    def to_json(self) -> dict[str, Any]:
        return {"predictor": self.predictor, "inputs": to_jsonable(self.inputs), "messages": to_jsonable(self.messages),
                "completion": self.completion, "outputs": to_jsonable(self.outputs), "failed": self.failed}


@dataclass
class Rollout:
    example_index: int
    sample_index: int
    choices: dict[str, Any]  # what `configure` chose (JSON-able), {} without a configure hook
    prediction: Any  # dspy.Prediction, or None when the program failed
    calls: list[PredictorCall]
    reward: RewardResult
    error: str | None = None  # "<ExceptionType>: <message>" when the program failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0

    @property
    def failed(self) -> bool:
        """The program or its reward failed; the reward is then the failure reward."""
        return self.error is not None or self.reward.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "example_index": self.example_index, "sample_index": self.sample_index, "choices": to_jsonable(self.choices),
            "prediction": to_jsonable(dict(self.prediction.items())) if self.prediction is not None else None,
            "reward": self.reward.to_json(), "error": self.error, "failed": self.failed,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 4), "cost": self.cost,
            "calls": [c.to_json() for c in self.calls],
        }


@dataclass
class RolloutBatch:
    """All rollouts of one run_rollouts call, ordered by (example_index, sample_index), plus counters."""

    rollouts: list[Rollout]
    group_size: int = 1
    lm_calls: int = 0
    failures: int = 0  # rollouts whose program failed (LM error, unparseable output)
    reward_failures: int = 0  # rollouts whose program ran but whose reward failed (judge LM failure, NaN, None)
    program_errors: int = 0  # user-code exceptions tolerated under max_errors (also counted in failures)
    metric_calls: int = 0
    truncated: int = 0  # LM calls cut off at max_tokens (often why an output does not parse)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    wall_s: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)  # exception type name -> count

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def rewards_by_group(self) -> list[list[float]]:
        """One list of G rewards per example, in example order (the input to group-relative advantages)."""
        groups: dict[int, list[float]] = {}
        for rollout in self.rollouts:
            groups.setdefault(rollout.example_index, []).append(rollout.reward.total)
        return [groups[i] for i in sorted(groups)]

    def mean_reward(self) -> float:
        return sum(r.reward.total for r in self.rollouts) / len(self.rollouts) if self.rollouts else 0.0

    def component_means(self, names: list[str] | None = None) -> dict[str, float]:
        """Mean of each named reward component over ALL rollouts; a rollout without the component (its program
        failed) counts 0.0, so components and the mean reward describe the same runs. `names` adds components
        that no rollout reached (e.g. every program run failed)."""
        order = list(names or [])
        for rollout in self.rollouts:
            order += [name for name in rollout.reward.components if name not in order]
        n = len(self.rollouts)
        return {name: sum(r.reward.components.get(name, 0.0) for r in self.rollouts) / n if n else 0.0
                for name in order}

    def counters(self) -> dict[str, Any]:
        return {"rollouts": len(self.rollouts), "group_size": self.group_size, "lm_calls": self.lm_calls,
                "failures": self.failures, "reward_failures": self.reward_failures,
                "program_errors": self.program_errors, "metric_calls": self.metric_calls,
                "truncated": self.truncated,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens": self.tokens, "cost": self.cost, "wall_s": round(self.wall_s, 3),
                "error_types": dict(self.error_types)}


def best_and_worst(rollouts: list[Rollout], *, min_gap: float = 0.0) -> list[tuple[int, Rollout, Rollout, float]]:
    """(example index, best rollout, worst rollout, reward gap) for each example whose best and worst rewards differ
    by more than `min_gap`, in example order: the preference pair of a group, as DPO trains on it and a reward model
    learns from it (each decides what of the two runs it keeps)."""
    groups: dict[int, list[Rollout]] = {}
    for rollout in rollouts:
        groups.setdefault(rollout.example_index, []).append(rollout)
    chosen = []
    for index in sorted(groups):
        best = max(groups[index], key=lambda r: r.reward.total)
        worst = min(groups[index], key=lambda r: r.reward.total)
        gap = float(best.reward.total - worst.reward.total)
        if gap > min_gap:
            chosen.append((index, best, worst, gap))
    return chosen


# ----------------------------------------------------------------------------------------------- call capture
class _CallRecorder(BaseCallback):
    """Collects one rollout's predictor calls and token usage. It is installed only in that rollout's dspy.context,
    so it sees only that rollout's calls; a lock covers programs that fan out into threads (dspy.Parallel)."""

    def __init__(self, predictor_names: dict[int, str]):
        self._names = predictor_names
        self._lock = threading.Lock()
        self._open: dict[str, dict[str, Any]] = {}  # Predict call_id -> the call being built
        self._active = threading.local()  # per-thread stack of open Predict call_ids
        self._lms: dict[str, Any] = {}  # LM call_id -> LM instance
        self.calls: list[PredictorCall] = []
        self.lm_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.truncated = 0  # LM calls cut off at max_tokens
        self.empty = 0  # LM calls answered with no text at all (an empty `choices`, a blank message)
        self.requests: dict[str, tuple] = {}  # LM call_id -> (LM, call inputs): its cache entry, keyed when needed
        self.unusable: list[tuple] = []  # calls whose replies were empty: never replayed from the cache

    def _stack(self) -> list[str]:
        if not hasattr(self._active, "stack"):
            self._active.stack = []
        return self._active.stack

    def _current(self) -> dict[str, Any] | None:
        stack = self._stack()
        return self._open.get(stack[-1]) if stack else None

    def on_module_start(self, call_id, instance, inputs):
        if isinstance(instance, dspy.Predict):
            name = self._names.get(id(instance)) or type(instance.signature).__name__
            kwargs = inputs.get("kwargs") or {}
            call_inputs = {k: v for k, v in kwargs.items() if k in instance.signature.input_fields}
            with self._lock:
                self._open[call_id] = {"predictor": name, "messages": None, "completion": None, "outputs": None,
                                       "inputs": call_inputs, "fields": set(instance.signature.output_fields)}
            self._stack().append(call_id)

    def on_module_end(self, call_id, outputs, exception=None):
        with self._lock:
            frame = self._open.pop(call_id, None)
        if frame is None:
            return
        stack = self._stack()
        if stack and stack[-1] == call_id:
            stack.pop()
        if exception is None and outputs is not None:  # the parsed output fields
            frame["outputs"] = {k: v for k, v in outputs.items() if k in frame["fields"]} if frame["fields"] \
                else dict(outputs.items())
        with self._lock:
            self.calls.append(PredictorCall(frame["predictor"], frame["messages"], frame["completion"],
                                            frame["outputs"], failed=exception is not None, inputs=frame["inputs"]))

    def on_lm_start(self, call_id, instance, inputs):
        with self._lock:
            self._lms[call_id] = instance
            self.requests[call_id] = (instance, inputs)
        frame = self._current()
        if frame is not None:  # what the format wrote (the last attempt's, when it retried)
            frame["messages"] = _sent_messages(inputs)

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            lm = self._lms.pop(call_id, None)
            self.lm_calls += 1
        if exception is None and not _has_text(outputs):
            with self._lock:
                self.empty += 1
                self.unusable.append(self.requests[call_id])
        if exception is None and outputs:
            # A canonical Request call (ChoiceAdapter's guided_choice) returns one lm15 Response, not a list.
            first = outputs.text if hasattr(outputs, "message") else outputs[0]
            text = first.get("text") if isinstance(first, dict) else first
            frame = self._current()
            if frame is not None:
                frame["completion"] = text if isinstance(text, str) else str(text)
        # The LM's history got this call's entry just before the end callbacks ran. Our per-rollout LM copy is used by
        # this rollout only, so its last entry is ours; a predictor's own LM (shared) is read the same way, best effort.
        history = getattr(lm, "history", None)
        if exception is None and history:
            entry = history[-1]
            usage = entry.get("usage") or {}  # empty on a cache hit: a cached answer costs no tokens
            cost = entry_cost(lm, entry)
            with self._lock:
                self.truncated += finish_reason(entry.get("response")) == "length"
                self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.completion_tokens += int(usage.get("completion_tokens") or 0)
                self.cost += cost


# ----------------------------------------------------------------------------------------------- the engine
def run_rollouts(program: dspy.Module, examples: list, reward: Callable[..., Any], *, group_size: int = 1,
                 lm: dspy.LM | None = None, format: Any = None, num_threads: int = 4,
                 configure: Callable[[dspy.Module, int, int], dict] | None = None, progress: bool = True,
                 temperature: float | None = None, cache: bool = True, failure_reward: float = 0.0,
                 rollout_offset: int = 0, description: str = "rollouts", max_errors: int = 0,
                 seed: int = 0) -> RolloutBatch:
    """Run `program` on every example `group_size` times; see the module docstring.

    `lm` defaults to `dspy.settings.lm`. `temperature` overrides the LM's (samples of a group differ only when it is
    > 0). `rollout_offset` shifts the samples' rollout ids: an optimizer passes e.g. step × group_size so that step 2
    does not get step 1's cached samples back, while a resumed run still hits the cache. `cache=False` bypasses
    DSPy's cache altogether. `format` is a dspy Adapter instance (or None for the context's format).
    Every sampled request carries `seed=request_seed(seed, rollout_id)` (DESIGN 11): an engine that honours a
    per-request seed returns the same samples run after run, however the requests are batched.
    `max_errors`: how many exceptions from the user's own program or reward to tolerate before re-raising one
    (module docstring); LM and parse failures never count against it.
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be at least 1, got {group_size}")
    if num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
    if max_errors < 0:
        raise ConfigError(f"max_errors must be at least 0, got {max_errors}")
    base_lm = lm if lm is not None else dspy.settings.lm
    if base_lm is None:
        raise ConfigError("no language model: pass lm= or set one with dspy.configure(lm=...)")
    effective_temperature = temperature if temperature is not None else (base_lm.kwargs.get("temperature") or 0.0)
    jobs = [(i, s) for i in range(len(examples)) for s in range(group_size)]
    started = time.perf_counter()
    tolerated = _ErrorBudget(max_errors)
    grouped = scores_groups(reward)  # a group reward (e.g. a group-mode judge) is called once per example, below
    shared = _shared_objects(program)  # once per batch: walking the program's parameters costs ~1 ms a time

    def run_one(job: tuple[int, int]) -> tuple[Rollout, _CallRecorder]:
        i, s = job
        updates: dict[str, Any] = {}
        if temperature is not None:
            updates["temperature"] = temperature
        if effective_temperature and effective_temperature > 0:
            updates["rollout_id"] = rollout_offset + s
            updates["seed"] = request_seed(seed, rollout_offset + s)
        if not cache:
            updates["cache"] = False
        rollout_lm = price_here(base_lm.copy(**updates))  # this rollout's own LM: its calls are priced by entry_cost
        return _rollout(program, examples[i], i, s, None if grouped else reward, rollout_lm, format, configure,
                        failure_reward, tolerated, shared)

    results: list[tuple[Rollout, _CallRecorder]] = []
    with _progress_bar(progress, description, len(jobs)) as advance:
        if num_threads == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(run_one(job))
                advance()
        else:
            with ThreadPoolExecutor(max_workers=min(num_threads, len(jobs))) as pool:
                # Each job runs in a copy of the caller's context, so dspy.context() settings made by the caller
                # (format, callbacks, track_usage) hold inside the worker threads too.
                futures = [pool.submit(contextvars.copy_context().run, run_one, job) for job in jobs]
                try:
                    for future in futures:
                        results.append(future.result())
                        advance()
                # cancel the queued rollouts on any exit (a bug, Ctrl-C), then re-raise
                except BaseException:  # noqa: BLE001 - see above
                    for future in futures:
                        future.cancel()
                    raise

    if grouped:
        _score_groups([rollout for rollout, _ in results], examples, reward, failure_reward, tolerated, num_threads)
    batch = RolloutBatch([rollout for rollout, _ in results], group_size=group_size)
    errors: Counter[str] = Counter()
    for rollout, recorder in results:
        batch.lm_calls += recorder.lm_calls
        batch.truncated += recorder.truncated
        batch.prompt_tokens += rollout.prompt_tokens
        batch.completion_tokens += rollout.completion_tokens
        batch.cost += rollout.cost
        if rollout.error is not None:
            batch.failures += 1
            errors[rollout.error.split(":", 1)[0]] += 1
            batch.program_errors += rollout.error.startswith(PROGRAM_ERROR)
        else:
            batch.metric_calls += 1
            if rollout.reward.failed:
                batch.reward_failures += 1
    batch.error_types = dict(errors)
    batch.wall_s = time.perf_counter() - started
    return batch


def request_seed(run_seed: int, rollout_id: int) -> int:
    """The sampling seed of one request: a fixed mix of the run's seed and the rollout id (fits a 31-bit seed)."""
    return (int(run_seed) * 1_000_003 + int(rollout_id)) % (2**31 - 1)


def _rollout(program, example, i, s, reward, rollout_lm, format, configure, failure_reward, tolerated, shared):
    program_copy = _copy_program(program, shared)
    choices = configure(program_copy, i, s) if configure is not None else {}
    predictors = program_copy.named_predictors()
    recorder = _CallRecorder({id(p): name for name, p in predictors})
    settings: dict[str, Any] = {"lm": rollout_lm}
    if any(getattr(p, "lm", None) is not None for _, p in predictors):
        # a predictor with its own LM (shared by every rollout): only a context-wide callback sees its calls
        settings["callbacks"] = [*(dspy.settings.callbacks or []), recorder]
    else:
        # On the copies only (this rollout's predictors and LM): DSPy then runs no callback machinery for the
        # program's other modules or the format, which was most of what the engine cost over dspy.Evaluate.
        for _, predictor in predictors:
            predictor.callbacks = [*(getattr(predictor, "callbacks", None) or []), recorder]
        rollout_lm.callbacks = [*rollout_lm.callbacks, recorder]
    if format is not None:
        settings["adapter"] = format
    # per-predictor formats (the prompt policy's choice) route over `format`
    settings.update(predictor_format_settings(program_copy, settings.get("adapter"), settings.get("callbacks")))
    prediction, error = None, None
    start = time.perf_counter()
    with dspy.context(**settings):
        try:
            prediction = program_copy(**example.inputs())
        except (LMAuthError, LMBillingError) as err:  # a bad key or no credits: every later call fails the same way
            raise ProviderRefused(err) from err
        except Exception as err:  # noqa: BLE001 - LM/parse failures counted, bugs re-raised by absorb()
            error = _describe(err) if is_lm_failure(err) else tolerated.absorb(err)
    if error is None and recorder.empty:
        error = "LMFailure: the model returned an empty reply"
    # a reply that did not become an answer (unparseable, empty, or cut off so that it did not parse) is asked for again
    # next time, not replayed from DSPy's cache; a cut-off reply that parsed is the model's answer at this max_tokens
    replayable = list(recorder.requests.values()) if error is not None else recorder.unusable
    if replayable:
        forget([request for lm, inputs in replayable for request in cache_requests(lm, inputs)])
    recorder.requests, recorder.unusable = {}, []  # the calls' inputs are not kept beyond the rollout
    latency = time.perf_counter() - start
    if error is not None:
        result = RewardResult(failure_reward, feedback=error, failed=True)
    elif reward is None:  # a group reward scores this rollout with the rest of its group
        result = RewardResult(failure_reward)
    else:
        try:
            result = to_reward_result(reward(example, prediction, None), failure_score=failure_reward)
        except (LMAuthError, LMBillingError) as err:  # the judge's key or credits: stop, as for the program's
            raise ProviderRefused(err) from err
        except Exception as err:  # noqa: BLE001 - LM/parse failures counted, bugs re-raised by absorb()
            feedback = _describe(err) if is_lm_failure(err) else tolerated.absorb(err)
            result = RewardResult(failure_reward, feedback=f"reward failed: {feedback}", failed=True)
    rollout = Rollout(i, s, choices or {}, prediction, list(recorder.calls), result, error,
                      recorder.prompt_tokens, recorder.completion_tokens, latency, recorder.cost)
    return rollout, recorder


def _score_groups(rollouts: list[Rollout], examples: list, reward, failure_reward: float, tolerated, num_threads: int):
    """One `score_group` call per example over the predictions of its rollouts that ran (concurrent across examples);
    failed program runs keep their failure reward. Scoring runs outside every rollout's context, as in `_rollout`."""
    groups: dict[int, list[Rollout]] = {}
    for rollout in rollouts:
        if rollout.error is None:
            groups.setdefault(rollout.example_index, []).append(rollout)

    def score(index: int) -> None:
        members = groups[index]
        try:
            results = score_group(reward, examples[index], [r.prediction for r in members], failure_score=failure_reward)
        except Exception as err:  # noqa: BLE001 - LM/parse failures counted, bugs re-raised by absorb()
            feedback = _describe(err) if is_lm_failure(err) else tolerated.absorb(err)
            results = [RewardResult(failure_reward, feedback=f"reward failed: {feedback}", failed=True)] * len(members)
        for rollout, result in zip(members, results):
            rollout.reward = result

    if num_threads == 1 or len(groups) <= 1:
        for index in groups:
            score(index)
        return
    with ThreadPoolExecutor(max_workers=min(num_threads, len(groups))) as pool:
        for future in [pool.submit(contextvars.copy_context().run, score, index) for index in groups]:
            future.result()


PROGRAM_ERROR = "program error"  # prefix of a tolerated user-code exception's description


class _ErrorBudget:
    """Counts the user's own exceptions across a run_rollouts call's threads; re-raises once `limit` are used."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def absorb(self, err: Exception) -> str:
        with self._lock:
            self.used += 1
            if self.used > self.limit:
                raise err  # the user's bug, with its own traceback
        return f"{PROGRAM_ERROR} {_describe(err)}"


def _sent_messages(inputs: dict) -> list | None:
    """The chat messages of an LM call, from a callback's inputs: messages=, or a typed lm15 Request's."""
    if inputs.get("messages") is not None:
        return inputs["messages"]
    request = inputs.get("prompt")
    if hasattr(request, "messages") and hasattr(request, "config"):
        from dspy.clients.lm15_boundary import history_messages

        return history_messages(request)
    return [{"role": "user", "content": request}] if isinstance(request, str) else None


def _has_text(outputs: Any) -> bool:
    """Whether an LM call's outputs hold any text (or tool call): [] is what an empty `choices` becomes."""
    if outputs is None:
        return False
    if hasattr(outputs, "message"):  # one lm15 Response
        return bool(outputs.text) or bool(getattr(outputs, "tool_calls", None))
    first = outputs[0] if outputs else None
    if isinstance(first, dict):
        return bool(first.get("text")) or bool(first.get("tool_calls"))
    return bool(first)


def finish_reason(response: Any) -> str | None:
    """finish_reason of a history entry's response: an lm15 Response, or a LiteLLM/OpenAI-style one."""
    if response is None:
        return None
    reason = getattr(response, "finish_reason", None)
    if reason is None:
        choices = getattr(response, "choices", None) or []
        reason = getattr(choices[0], "finish_reason", None) if choices else None
    return reason


def _shared_objects(program: dspy.Module) -> dict[int, Any]:
    """What every rollout's copy of `program` shares instead of copying: LMs attached to predictors (copying a local
    LM would copy its weights) and the demos (read-only while the program runs; `configure` replaces, never edits)."""
    shared: dict[int, Any] = {}
    for _, predictor in program.named_predictors():
        for value in [getattr(predictor, "lm", None), *(getattr(predictor, "demos", None) or [])]:
            if value is not None:
                shared[id(value)] = value
    return shared


def _copy_program(program: dspy.Module, shared: dict[int, Any]) -> dspy.Module:
    """A deep copy of `program` that shares `shared` (see _shared_objects)."""
    try:
        return copy.deepcopy(program, dict(shared))
    # uncopyable attributes: DSPy's own fallback copies parameters deeply, the rest shallowly
    except Exception:  # noqa: BLE001 - see above
        return program.deepcopy()


def _describe(err: BaseException) -> str:
    message = " ".join(str(err).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(err).__name__}: {message}"


class _progress_bar:
    """dspyrl.runs.LiveProgress over the rollouts, as a context manager yielding an advance() function."""

    def __init__(self, enabled: bool, description: str, total: int):
        from dspyrl.runs import LiveProgress

        self._live = LiveProgress(total, enabled=enabled, description=description, unit="runs")

    def __enter__(self) -> Callable[[], None]:
        return self._live.__enter__().advance

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types only: pydantic models dumped, anything else stringified."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump())
    return str(value)
