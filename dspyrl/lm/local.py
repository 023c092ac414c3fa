"""An in-process Hugging Face model as a DSPy 3.4 LM, through DSPy's engine API.

`local_lm("smollm2")` returns a plain `dspy.LM` whose engine is a `LocalEngine`. DSPy owns caching, retries, history
and callbacks; the engine only turns one canonical `Request` into one `Response`.

Two things make it fast on a CPU:
- **Dynamic batching.** Concurrent requests (DSPy's threaded Evaluate, our rollout engine, the HTTP server) are
  queued and generated together: one `generate` call over a left-padded batch instead of one call each.
- **One generate for n samples.** DSPy 3.4 asks a canonical engine for n candidates one at a time. A callback
  records the requested n when the call starts; the first of those n requests samples all n in one batched
  `generate`, and the following n-1 identical requests are served from that group.

**Grammar-constrained decoding** (`dspyrl.lm.constraints`, llguidance): `response_format` (json_schema, json_object;
the engine declares both the way DSPy's JSONAdapter checks, so DSPy sends its signature's schema) and vLLM's
`structured_outputs` / `guided_json` / `guided_regex` / `guided_grammar` in `config.extensions`. Each row of a batch
has its own matcher, so constrained and free rows share one decode loop (`dspyrl.lm.decode`).

**Seeded sampling.** A request's `seed` seeds its own `torch.Generator` per row: the same seeded request gives the
same tokens alone or batched with others, from any thread. Without a seed each row draws a fresh random seed.

**Constrained choice** (`guided_choice`, the field vLLM's OpenAI server uses): a request whose
`config.extensions["guided_choice"]` lists candidate completions is answered by scoring each candidate's total
log-probability given the prompt (prompt once, then all candidates in one batched forward over the prompt's KV cache;
concurrent requests are scored together, like generations)
instead of generating: the argmax at temperature 0, a draw from softmax(logprob / temperature) otherwise. Small
models that cannot follow an output format can still rank a handful of well-formed answers (see dspyrl.formats).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import queue
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils.callback import BaseCallback

from dspyrl.lm.constraints import Constraint, GrammarCompiler, parse_constraints
from dspyrl.lm.decode import PrefixCache, Row, decode, row_seed, score_candidates
from dspyrl.lm.models import SMOLLM2, load_model


# ----------------------------------------------------------------------------------------------- n → one generate
@dataclass
class _SampleGroup:
    n: int
    pending: dict[str, list] = field(default_factory=dict)  # request fingerprint -> samples not yet handed out


_current_group: contextvars.ContextVar[_SampleGroup | None] = contextvars.ContextVar("dspyrl_sample_group", default=None)


class _GroupSizeCallback(BaseCallback):
    """Tells the engine how many candidates the current LM call wants (DSPy fans n out into n engine calls)."""

    def __init__(self):
        self._tokens: dict[str, contextvars.Token] = {}

    def on_lm_start(self, call_id, instance, inputs):
        n = inputs.get("n") or inputs.get("kwargs", {}).get("n") or getattr(instance, "kwargs", {}).get("n") or 1
        self._tokens[call_id] = _current_group.set(_SampleGroup(int(n)) if int(n) > 1 else None)

    def on_lm_end(self, call_id, outputs, exception=None):
        token = self._tokens.pop(call_id, None)
        if token is not None:
            _current_group.reset(token)


# ----------------------------------------------------------------------------------------------- generation
# DSPy's ChatAdapter ends every reply with this marker and parses nothing after it; a model that writes it would
# otherwise go on until max_tokens.
END_OF_REPLY = ("[[ ## completed ## ]]",)


@dataclass(frozen=True)
class GenerationSettings:
    """How one request is generated; every row of a batch has its own (requests with different settings share it)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None  # seeds the rows' generators (sample i of n: `row_seed(seed, i)`)
    constraint: Constraint | None = None  # the grammar the reply must match


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    token_ids: list[int] = field(default_factory=list)  # the sampled tokens (TRL trains on these, not on a re-encoding)


class ContextLengthError(ValueError):
    """The prompt plus the tokens asked for do not fit the model's context."""


class GenerationCancelled(RuntimeError):
    """The caller gave up (a client disconnected from `dspyrl serve`)."""


@dataclass
class _Job:
    prompt_ids: list[int]
    n: int
    settings: GenerationSettings
    head_len: int = 0  # the shareable prompt head (see dspyrl.lm.decode.PrefixCache)
    cancel: threading.Event | None = None
    kind: str = "generate"  # the batching key: generate jobs batch together, score jobs together
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    error: BaseException | None = None


@dataclass
class _ScoreJob:
    """Score candidate completions of one prompt; runs on the generate worker so the model is used by one thread."""

    prompt_ids: list[int]
    candidate_ids: list[list[int]]
    kind: str = "score"
    done: threading.Event = field(default_factory=threading.Event)
    result: list[float] | None = None
    error: BaseException | None = None

    @property
    def n(self) -> int:  # rows this job adds to a batch
        return len(self.candidate_ids)


MAX_GUIDED_CHOICES = 256  # one forward row per candidate; more than this is a misuse, not a classification


class LocalEngine:
    """Generates chat completions with a local transformers model; thread-safe, batches concurrent requests."""

    # What DSPy reads off a custom engine (dspy.clients.capabilities): JSONAdapter sends its signature's JSON schema as
    # `response_format` only when both are declared.
    supports_response_schema = True
    supported_params = frozenset({"response_format", "seed", "n", "temperature", "max_tokens", "top_p", "stop"})

    def __init__(self, model: str = SMOLLM2, adapter: str | None = None, *, max_batch: int = 16,
                 batch_wait_s: float = 0.005, default_max_tokens: int = 256, loaded=None, prefix_cache: bool = True):
        self.model_spec = model
        self.adapter = adapter
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.default_max_tokens = default_max_tokens
        self.model, self.tokenizer = loaded if loaded is not None else load_model(model, adapter=adapter)
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self.generate_calls = 0  # how many batched generate() calls ran (benchmarks and tests read it)
        self.score_calls = 0  # how many batched candidate-scoring passes ran (a cached distribution is not re-scored)
        self._choice_cache: OrderedDict[str, list[float]] = OrderedDict()  # recent (prompt, candidates) -> logprobs
        self._choice_cache_lock = threading.Lock()
        self._rng = random.Random()
        self.prefix_cache = PrefixCache() if prefix_cache else None
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.grammars = GrammarCompiler(self.tokenizer, int(self.model.config.vocab_size))
        self.cancelled_jobs = 0  # generations stopped because their caller went away (the server's tests read it)

    # -- DSPy engine API ------------------------------------------------------------------------------------
    def complete(self, request) -> Response:
        messages = request_to_messages(request)
        extensions = request.config.extensions or {}
        constraint, candidates = parse_constraints({**extensions, "response_format": request.config.response_format})
        settings = replace(self._settings_from(request.config), constraint=constraint)
        if candidates is not None:
            return self._complete_choice(messages, candidates, settings, seed=request.config.seed)
        group = _current_group.get()
        if group is None or settings.temperature <= 0:
            generation = self.generate(messages, n=1, settings=settings)[0]
        else:
            key = _fingerprint(messages, settings)
            if not group.pending.get(key):
                group.pending[key] = self.generate(messages, n=group.n, settings=settings)
            generation = group.pending[key].pop(0)
        return Response(
            id=None, model=self.model_spec, message=Message.assistant([TextPart(generation.text)]),
            finish_reason=generation.finish_reason,
            usage=Usage(input_tokens=generation.prompt_tokens, output_tokens=generation.completion_tokens,
                        total_tokens=generation.prompt_tokens + generation.completion_tokens))

    def _complete_choice(self, messages, candidates, settings: GenerationSettings, seed=None) -> Response:
        # DSPy fans n samples out into n calls; each draws independently from the same (cached) distribution.
        generation, logprobs = self.choose(messages, candidates, n=1, temperature=settings.temperature, seed=seed)
        generation = generation[0]
        return Response(
            id=None, model=self.model_spec, message=Message.assistant([TextPart(generation.text)]),
            finish_reason=generation.finish_reason,
            usage=Usage(input_tokens=generation.prompt_tokens, output_tokens=generation.completion_tokens,
                        total_tokens=generation.prompt_tokens + generation.completion_tokens),
            provider_data={"guided_choice": {"candidates": list(candidates), "logprobs": logprobs}})

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    # Saved programs record the engine as its class path and this state (never weights, never secrets).
    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model_spec, "adapter": self.adapter}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LocalEngine:
        return cls(state.get("model", SMOLLM2), adapter=state.get("adapter"))

    # -- generation -----------------------------------------------------------------------------------------
    def _settings_from(self, config) -> GenerationSettings:
        return GenerationSettings(
            max_tokens=int(config.max_tokens or self.default_max_tokens),
            temperature=float(config.temperature or 0.0),
            top_p=config.top_p,
            stop=tuple(dict.fromkeys((*(config.stop or ()), *END_OF_REPLY))),
            seed=config.seed)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _head_length(self, messages: list[dict], prompt_ids: list[int]) -> int:
        """How many leading tokens of the prompt are its messages before the last one (system, demos): the head that
        other calls of the same predictor share. Measured as a common token prefix, so a merge across the boundary
        only shortens it."""
        if len(messages) < 2:
            return 0
        text = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=False)
        head = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        length = 0
        for a, b in zip(head, prompt_ids):
            if a != b:
                break
            length += 1
        return length

    def check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        if self.context_length and prompt_tokens + max_tokens > self.context_length:
            raise ContextLengthError(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                f"completion). Please reduce the length of the messages or completion.")

    def generate(self, messages: list[dict], n: int = 1, settings: GenerationSettings | None = None, *,
                 cancel: threading.Event | None = None) -> list[Generation]:
        """n completions of one chat; queued, so concurrent callers share batched generate calls.

        Raises ContextLengthError (too long), ConstraintError (a constraint that does not compile) before any work,
        GenerationCancelled when `cancel` is set while it waits or runs."""
        settings = settings or GenerationSettings(max_tokens=self.default_max_tokens)
        prompt_ids = self.encode_chat(messages)
        self.check_context(len(prompt_ids), settings.max_tokens)
        if settings.constraint is not None:
            self.grammars.check(settings.constraint)
        job = _Job(prompt_ids, n, settings, head_len=self._head_length(messages, prompt_ids), cancel=cancel)
        self._ensure_worker()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    # -- constrained choice -----------------------------------------------------------------------------------
    def choice_logprobs(self, messages: list[dict], candidates: list[str]) -> list[float]:
        """Total log-probability of each candidate as the complete assistant reply (its tokens, then end-of-turn).

        Candidates are tokenized on their own, as the model would emit them after the generation prompt; the
        end-of-turn token is included so that "sci" does not win over "science" just by being a prefix of it.
        """
        candidates = _check_candidates(candidates)
        key = _fingerprint(messages, candidates)
        with self._choice_cache_lock:
            if key in self._choice_cache:
                self._choice_cache.move_to_end(key)
                return list(self._choice_cache[key])
        end = self.tokenizer.eos_token_id
        candidate_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] + [end] for c in candidates]
        job = _ScoreJob(self.encode_chat(messages), candidate_ids)
        self._ensure_worker()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        with self._choice_cache_lock:
            self._choice_cache[key] = list(job.result)
            while len(self._choice_cache) > 512:
                self._choice_cache.popitem(last=False)
        return list(job.result)

    def choose(self, messages: list[dict], candidates: list[str], n: int = 1, temperature: float = 0.0,
               seed: int | None = None) -> tuple[list[Generation], list[float]]:
        """n picks among `candidates`: the argmax at temperature 0, else draws from softmax(logprob / temperature).

        Returns the picks and the candidates' log-probabilities (so callers can report the distribution).
        """
        candidates = _check_candidates(candidates)
        logprobs = self.choice_logprobs(messages, candidates)
        if temperature <= 0:
            best = max(range(len(candidates)), key=logprobs.__getitem__)
            picks = [best] * n
        else:
            top = max(logprobs)
            weights = [math.exp((lp - top) / temperature) for lp in logprobs]
            rng = random.Random(seed) if seed is not None else self._rng
            picks = rng.choices(range(len(candidates)), weights=weights, k=n)
        prompt_tokens = len(self.encode_chat(messages))
        generations = [
            Generation(candidates[i], prompt_tokens, len(self.tokenizer(candidates[i], add_special_tokens=False)["input_ids"]) + 1,
                       "stop") for i in picks]
        return generations, logprobs

    def _score_batch(self, jobs: list[_ScoreJob]) -> list[list[float]]:
        totals = score_candidates(self.model, self.tokenizer, [job.prompt_ids for job in jobs],
                                  [job.candidate_ids for job in jobs])
        self.score_calls += 1
        return totals

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="dspyrl-local-generate", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        held: list[_Job | _ScoreJob] = []  # jobs taken from the queue that did not fit the last batch
        while True:
            first = held.pop(0) if held else self._queue.get()
            batch, size = [first], first.n
            deadline = time.monotonic() + self.batch_wait_s
            # Gather requests of the same kind that arrive within a few milliseconds.
            for job in list(held):
                if job.kind == first.kind and size + job.n <= self.max_batch:
                    held.remove(job)
                    batch.append(job)
                    size += job.n
            while size < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job.kind == first.kind and size + job.n <= self.max_batch:
                    batch.append(job)
                    size += job.n
                else:
                    held.append(job)
            try:
                results = self._score_batch(batch) if isinstance(first, _ScoreJob) else self._generate_batch(batch)
                for job, result in zip(batch, results):
                    if isinstance(result, BaseException):
                        job.error = result
                    else:
                        job.result = result
            # hand the error to every waiting caller; the worker keeps serving
            except BaseException as err:  # noqa: BLE001 - see above
                for job in batch:
                    job.error = err
            finally:
                for job in batch:
                    job.done.set()

    def _generate_batch(self, batch: list[_Job]) -> list[list[Generation] | BaseException]:
        """Every row of every job in one decode loop; a cancelled job's entry is its GenerationCancelled."""
        import torch

        rows, owners = [], []
        for job_index, job in enumerate(batch):
            if job.cancel is not None and job.cancel.is_set():
                continue
            s = job.settings
            seed = s.seed if s.seed is not None else self._rng.getrandbits(63)
            for sample in range(job.n):
                generator = None
                if s.temperature > 0:
                    generator = torch.Generator().manual_seed(row_seed(seed, sample))
                matcher = self.grammars.matcher(s.constraint) if s.constraint is not None else None
                rows.append(Row(job.prompt_ids, job.head_len, s.max_tokens, s.temperature, s.top_p, s.stop,
                                generator, matcher, job.cancel))
                owners.append(job_index)
        if rows:
            decode(self.model, self.tokenizer, rows, _eos_ids(self.model, self.tokenizer), self.prefix_cache)
            self.generate_calls += 1
        eos_ids = _eos_ids(self.model, self.tokenizer)
        results: list = [[] for _ in batch]
        for row, job_index in zip(rows, owners):
            ended = bool(row.tokens) and (row.tokens[-1] in eos_ids or row.tokens[-1] == self.tokenizer.pad_token_id)
            used = row.tokens[:-1] if ended else row.tokens
            text = self.tokenizer.decode(used, skip_special_tokens=True)
            finish = "length" if row.finish == "length" else "stop"
            for stop in row.stop:
                if stop in text:
                    text, finish = text[: text.index(stop)], "stop"
            results[job_index].append(Generation(text, len(row.prompt_ids), len(row.tokens), finish, list(row.tokens)))
        for job_index, job in enumerate(batch):
            if job.cancel is not None and job.cancel.is_set():
                self.cancelled_jobs += 1
                results[job_index] = GenerationCancelled("the caller cancelled this generation")
        return results


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _fingerprint(messages: list[dict], settings) -> str:
    blob = json.dumps([messages, getattr(settings, "__dict__", settings)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_candidates(candidates) -> list[str]:
    """guided_choice must be a non-empty list of distinct strings (ValueError otherwise: DSPy and the server report it)."""
    if isinstance(candidates, str) or not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError("guided_choice must be a non-empty list of strings")
    if not all(isinstance(c, str) for c in candidates):
        raise ValueError("guided_choice must contain only strings")
    if len(candidates) > MAX_GUIDED_CHOICES:
        raise ValueError(f"guided_choice has {len(candidates)} candidates; at most {MAX_GUIDED_CHOICES} are scored")
    if len(set(candidates)) != len(candidates):
        raise ValueError("guided_choice candidates must be distinct")
    return list(candidates)


def request_to_messages(request) -> list[dict]:
    """A canonical dspy Request as plain chat messages for a chat template."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(part, "text", "") or "" for part in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages


# ----------------------------------------------------------------------------------------------- public entry
_engines: dict[tuple[str, str | None], tuple[str | None, LocalEngine]] = {}
_engines_lock = threading.Lock()


def adapter_version(adapter: str | None) -> str | None:
    """A short fingerprint of a PEFT folder's weights file (inode, size, mtime): saving new weights to the same path
    (a schedule's second LoRA phase, a user retraining into one folder) is a new version, so neither the engine
    cache below nor DSPy's answer cache can hand back what the old weights said."""
    if not adapter:
        return None
    folder = Path(adapter).expanduser()
    weights = next((folder / name for name in ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")
                    if (folder / name).is_file()), None)
    if weights is None:
        return None
    stat = weights.stat()
    return hashlib.sha1(f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]


def local_engine(model: str = SMOLLM2, adapter: str | None = None) -> LocalEngine:
    """One shared engine per (model, adapter) in a process, so two LMs on one model do not load it twice; a new
    version of the adapter's weights gets a new engine (LMs made before keep the one they were made with)."""
    key = (str(model), str(adapter) if adapter else None)
    version = adapter_version(adapter)
    with _engines_lock:
        if key not in _engines or _engines[key][0] != version:
            _engines[key] = (version, LocalEngine(model, adapter=adapter))
        return _engines[key][1]


def local_lm(model: str = SMOLLM2, adapter: str | None = None, *, temperature: float = 0.0, max_tokens: int = 256,
             cache: bool = True, callbacks: list | None = None, **kwargs) -> dspy.LM:
    """A `dspy.LM` backed by a local Hugging Face model (optionally + a PEFT LoRA adapter folder)."""
    engine = local_engine(model, adapter)
    # The adapter's version is part of the name, which is part of DSPy's cache key: retrained weights at the same
    # path never get the old weights' cached answers.
    version = adapter_version(adapter)
    name = "local/" + (str(model) if not adapter else f"{model}+{adapter}" + (f"@{version}" if version else ""))
    return dspy.LM(name, engine=engine, temperature=temperature, max_tokens=max_tokens, cache=cache,
                   callbacks=[_GroupSizeCallback(), *(callbacks or [])], num_retries=1, **kwargs)
