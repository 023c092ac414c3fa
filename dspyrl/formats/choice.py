"""Constrained choice: when every output field has a finite set of values, let the model pick a whole reply.

For `sentiment: Literal["positive", "negative"]` the candidates are the two complete replies a format format would
write (`sentiment: positive`, `sentiment: negative` with the compact format). They travel to the LM as vLLM's
`guided_choice` request field; our local engine and `dspyrl serve` answer with the candidate of highest total
log-probability (or a draw from their normalised distribution at temperature > 0), so the reply always parses: a
parse failure is impossible by construction, not merely rare.

Where the field goes, decided once here:
- an in-process local model (`dspyrl.lm.local_lm`): always — its engine reads `config.extensions["guided_choice"]`;
- an LM with an `api_base` (an OpenAI-compatible server: `dspyrl serve`, vLLM): by default — the field is sent in the
  JSON body; a server that does not know it answers freely and the reply is parsed leniently like any other;
- any other hosted model (OpenRouter, OpenAI, …): never — OpenAI rejects unknown body fields, so the format just
  runs its format format (free generation + lenient parsing).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import dspy

from dspyrl.formats.compact import CompactAdapter, finite_values

MAX_CHOICES = 64  # all finite output fields together (their product); beyond this, free generation is the better tool

# Generation settings a canonical Request carries; client settings (api_base, api_key) stay with the LM's engine.
_REQUEST_SETTINGS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "stop", "seed")


def choice_outputs(signature, max_choices: int = MAX_CHOICES) -> list[dict[str, Any]] | None:
    """Every possible outputs dict when all output fields are Literal / Enum / bool, else None.

    One finite field gives its values; several give their product (e.g. two bools: four replies), up to max_choices.
    """
    fields = list(signature.output_fields.items())
    value_lists = [finite_values(field.annotation) for _, field in fields]
    if not fields or any(values is None or not values for values in value_lists):
        return None
    count = 1
    for values in value_lists:
        count *= len(values)
    if count > max_choices:
        return None
    names = [name for name, _ in fields]
    return [dict(zip(names, combo)) for combo in itertools.product(*value_lists)]


def guided_choice_route(lm) -> str | None:
    """'engine' for an in-process local model, 'server' for an OpenAI-compatible base URL, None for hosted models."""
    from dspyrl.lm.local import LocalEngine

    if isinstance(getattr(lm, "engine", None), LocalEngine):
        return "engine"
    if str(getattr(lm, "model", "")).startswith("openrouter/"):  # OpenRouter LMs carry an api_base, yet are hosted
        return None
    kwargs = getattr(lm, "kwargs", {}) or {}
    if kwargs.get("api_base") or kwargs.get("base_url"):
        return "server"
    return None


def constrained_request(lm, messages: list[dict], lm_kwargs: dict[str, Any], fields: dict[str, Any]):
    """A canonical dspy Request for `messages` with the LM's generation settings and vLLM request `fields` set
    (`guided_choice`, `structured_outputs`).

    dspy 3.4 refuses unknown keyword arguments on canonical engines, but carries `config.extensions` to custom
    engines (our LocalEngine reads it) and writes them verbatim into an OpenAI-compatible JSON body.
    """
    from dspy.lm15 import request_from_openai_chat

    settings = {**(getattr(lm, "kwargs", {}) or {}), **lm_kwargs}
    body = {"model": lm.model, "messages": messages,
            **{key: settings[key] for key in _REQUEST_SETTINGS if settings.get(key) is not None}}
    if "max_tokens" in body and "max_completion_tokens" in body:
        body.pop("max_tokens")
    request = request_from_openai_chat(body)
    extensions = {**(request.config.extensions or {}), **fields}
    return replace(request, config=replace(request.config, extensions=extensions))


def guided_choice_request(lm, messages: list[dict], candidates: list[str], lm_kwargs: dict[str, Any]):
    return constrained_request(lm, messages, lm_kwargs, {"guided_choice": list(candidates)})


def sample_texts(lm, request, n: int, rollout_id, cache: dict) -> list[str]:
    """n replies to a canonical Request: n calls (a Request is one reply), told apart in DSPy's cache by rollout_id
    and, when the request is seeded, each sample with a seed of its own (n equal seeds would give n equal samples)."""
    from dspyrl.lm.decode import row_seed

    texts = []
    for sample in range(n):
        sample_id = rollout_id if n == 1 else f"{rollout_id}/{sample}"
        call = request
        if n > 1 and request.config.seed is not None:
            call = replace(request, config=replace(request.config, seed=row_seed(request.config.seed, sample)))
        texts.append(lm(call, rollout_id=sample_id, **cache).text or "")
    return texts


class ChoiceAdapter(dspy.Adapter):
    """Constrained choice over a format format's replies (CompactAdapter by default); see the module docstring.

    Signatures with a non-finite output field, and LMs that cannot take `guided_choice`, are handed to the format
    format unchanged, so this format is safe to set globally.
    """

    def __init__(self, text_format: dspy.Adapter | None = None, *, send_guided_choice: bool | None = None,
                 max_choices: int = MAX_CHOICES, callbacks=None):
        super().__init__(callbacks=callbacks)
        self.text_format = text_format or CompactAdapter()
        self.send_guided_choice = send_guided_choice  # None: decide by guided_choice_route; False: never; True: always
        self.max_choices = max_choices

    def applies(self, lm, signature) -> bool:
        if self.send_guided_choice is False or choice_outputs(signature, self.max_choices) is None:
            return False
        return self.send_guided_choice is True or guided_choice_route(lm) is not None

    def __call__(self, lm, lm_kwargs, signature, demos, inputs) -> list[dict[str, Any]]:
        if not self.applies(lm, signature):
            return self.text_format(lm, lm_kwargs, signature, demos, inputs)
        outputs = choice_outputs(signature, self.max_choices)
        messages = self.text_format.format(signature, demos, inputs)
        replies = [self.text_format.format_assistant_message_content(signature, o) for o in outputs]
        lm_kwargs = dict(lm_kwargs)
        n = int(lm_kwargs.pop("n", None) or getattr(lm, "kwargs", {}).get("n") or 1)
        rollout_id = lm_kwargs.pop("rollout_id", None)
        cache = {"cache": lm_kwargs.pop("cache")} if "cache" in lm_kwargs else {}
        request = guided_choice_request(lm, messages, replies, lm_kwargs)
        # Parsed even when it is one of our own replies (they round-trip), so parse callbacks see every output;
        # a server that ignored guided_choice answered freely, and that reply is read leniently like any other.
        return [self.text_format.parse(signature, text) for text in sample_texts(lm, request, n, rollout_id, cache)]

    async def acall(self, lm, lm_kwargs, signature, demos, inputs) -> list[dict[str, Any]]:
        if not self.applies(lm, signature):
            return await self.text_format.acall(lm, lm_kwargs, signature, demos, inputs)
        return await asyncio.to_thread(self.__call__, lm, lm_kwargs, signature, demos, inputs)

    # Everything else (what a prompt looks like, how a reply is read) is the format format's.
    def format(self, signature, demos, inputs):
        return self.text_format.format(signature, demos, inputs)

    def parse(self, signature, completion):
        return self.text_format.parse(signature, completion)

    def format_field_description(self, signature):
        return self.text_format.format_field_description(signature)

    def format_field_structure(self, signature):
        return self.text_format.format_field_structure(signature)

    def format_task_description(self, signature):
        return self.text_format.format_task_description(signature)

    def format_user_message_content(self, signature, inputs, prefix="", suffix="", main_request=False):
        return self.text_format.format_user_message_content(signature, inputs, prefix, suffix, main_request)

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None):
        return self.text_format.format_assistant_message_content(signature, outputs, missing_field_message)

    def format_demos(self, signature, demos):
        return self.text_format.format_demos(signature, demos)
