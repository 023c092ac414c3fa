"""The batched forwards of the local engine: the decode loop (one forward per step over every live row, each row on
its own terms) and the scoring of choice candidates.

Why our own loop and not `model.generate`: a row here carries its own settings (temperature, top_p, max_tokens, stop
strings), its own grammar matcher (constrained and free rows share a batch) and its own `torch.Generator` (a seeded
request gives the same sample whichever rows it was batched with and whichever thread sent it). The model, its
attention and its KV cache are transformers' own (`DynamicCache`); this loop only picks tokens.

**Prefix cache.** Many calls share a prompt head (the system message and demos of one predictor). When every row of
a batch starts with the same head, that head's keys and values come from `PrefixCache` (computed once, reused across
calls and across the rows of a batch) and only the rest of each prompt is run. Rows whose prompts have different
lengths are left-padded *after* the shared head; position ids follow the real tokens and the attention mask hides
the padding, so the result equals an unbatched forward (tests check greedy output token for token).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MIN_PREFIX_TOKENS = 32  # shorter shared heads are not worth an entry


@dataclass
class Row:
    """One sequence to generate."""

    prompt_ids: list[int]
    head_len: int  # how many leading prompt tokens are a shareable head (system + demos), never the question
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    generator: Any = None  # torch.Generator for sampled rows
    matcher: Any = None  # llguidance LLMatcher for constrained rows
    cancel: threading.Event | None = None
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None  # "stop", "length" or "cancelled" once done


def row_seed(seed: int, sample: int) -> int:
    """The generator seed of sample `sample` of a request seeded with `seed` (distinct samples, stable across runs)."""
    digest = hashlib.sha256(f"{seed}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class PrefixCache:
    """Keys and values of recently seen prompt heads (batch of one), least recently used dropped first."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, ...], list] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, model, prefix: list[int]):
        """The head's per-layer (keys, values), computed with one forward on a miss."""
        import torch

        key = tuple(prefix)
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        out = model(input_ids=torch.tensor([prefix]), use_cache=True, logits_to_keep=1)
        layers = [(k, v) for k, v, *_ in out.past_key_values]
        self._entries[key] = layers
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return layers


@contextlib.contextmanager
def eval_mode(model):
    """Generate in eval mode even when a trainer left the model in training mode: with gradient checkpointing on,
    transformers' layers drop the KV cache in training mode (each step would see only its new token), and dropout
    would perturb the samples. The mode is restored afterwards; trainers generate between their steps, not during."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _shared_prefix(rows: list[Row]) -> int:
    """Length of the head every row shares (capped so each row still has a token of its own to run)."""
    limit = min(min(r.head_len for r in rows), min(len(r.prompt_ids) for r in rows) - 1)
    first = rows[0].prompt_ids
    length = 0
    while length < limit and all(r.prompt_ids[length] == first[length] for r in rows):
        length += 1
    return length


def _pick(row: Row, logits) -> int:
    """The next token of one row from its (already masked) logits."""
    import torch

    if not torch.isfinite(logits).any():
        return -1  # the grammar allows nothing: end the row
    if row.temperature <= 0:
        return int(torch.argmax(logits))
    scores = logits / row.temperature
    probs = torch.softmax(scores, dim=-1)
    if row.top_p is not None and row.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(ordered, dim=-1)
        drop = cumulative - ordered > row.top_p  # keep the smallest head whose mass reaches top_p
        ordered[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=row.generator))


def decode(model, tokenizer, rows: list[Row], eos_ids: set[int], prefix_cache: PrefixCache | None = None) -> None:
    """Generate every row in place (row.tokens, row.finish); one model forward per step over the live rows."""
    with eval_mode(model):
        _decode(model, tokenizer, rows, eos_ids, prefix_cache)


def _decode(model, tokenizer, rows: list[Row], eos_ids: set[int], prefix_cache: PrefixCache | None) -> None:
    import torch
    from transformers import DynamicCache

    from dspyrl.lm.constraints import apply_masks

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    head = _shared_prefix(rows) if prefix_cache is not None else 0
    cache = DynamicCache(config=model.config)
    if head >= MIN_PREFIX_TOKENS:
        layers = prefix_cache.get(model, rows[0].prompt_ids[:head])
        cache = DynamicCache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in layers],
                             config=model.config)
    else:
        head = 0
    tails = [r.prompt_ids[head:] for r in rows]
    width = max(len(t) for t in tails)
    input_ids = torch.tensor([[pad_id] * (width - len(t)) + t for t in tails])
    mask = torch.cat([torch.ones(len(rows), head, dtype=torch.long),
                      torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
    live = list(range(len(rows)))  # rows still generating, in cache order
    stop_window = {i: max((len(s) for s in r.stop), default=0) + 2 for i, r in enumerate(rows)}
    with torch.inference_mode():
        while live:
            # logits_to_keep=1: only the last position's logits (the prompt's would be rows × length × vocab floats)
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            apply_masks(logits, [rows[i].matcher for i in live])
            keep, next_ids = [], []
            for slot, i in enumerate(live):
                row = rows[i]
                token = _pick(row, logits[slot])
                if row.cancel is not None and row.cancel.is_set():
                    row.finish = "cancelled"
                    continue
                if token < 0:
                    row.finish = "stop"
                    continue
                row.tokens.append(token)
                if row.matcher is not None:
                    row.matcher.consume_token(token)
                if token in eos_ids or token == pad_id or (row.matcher is not None and row.matcher.is_stopped()):
                    row.finish = "stop"
                elif row.stop and any(s in tokenizer.decode(row.tokens[-stop_window[i]:], skip_special_tokens=True)
                                      for s in row.stop):
                    row.finish = "stop"
                elif len(row.tokens) >= row.max_tokens:
                    row.finish = "length"
                else:
                    keep.append(slot)
                    next_ids.append(token)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                live = [live[s] for s in keep]
            input_ids = torch.tensor(next_ids).unsqueeze(1)
            mask = torch.cat([mask, torch.ones(len(live), 1, dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1


def score_candidates(model, tokenizer, prompts: list[list[int]], candidates: list[list[list[int]]]) -> list[list[float]]:
    """Total log-probability of each candidate continuation of each prompt.

    Every prompt once (left-padded, one forward, its KV cache), then every candidate of every prompt in one
    right-padded forward on top of its own prompt's cache rows. Position ids follow the real tokens and the attention
    mask hides all padding, so each score equals an unbatched forward of prompt + candidate (tests check this against
    a direct computation).
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    prompt_ids = torch.tensor([[pad_id] * (width - n) + p for p, n in zip(prompts, lengths)])
    prompt_mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    owner = [b for b, rows in enumerate(candidates) for _ in rows]  # candidate row -> its prompt
    rows = [ids for group in candidates for ids in group]
    tail_width = max(len(r) for r in rows)
    tails = torch.tensor([r + [pad_id] * (tail_width - len(r)) for r in rows])
    tail_mask = torch.tensor([[1] * len(r) + [0] * (tail_width - len(r)) for r in rows])
    owner_index = torch.tensor(owner)
    with torch.inference_mode(), eval_mode(model):
        head = model(input_ids=prompt_ids, attention_mask=prompt_mask, logits_to_keep=1,
                     position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
        cache = head.past_key_values
        cache.batch_select_indices(owner_index)
        positions = torch.tensor(lengths)[owner_index].unsqueeze(1) + torch.arange(tail_width).unsqueeze(0)
        tail = model(input_ids=tails, past_key_values=cache, use_cache=False, position_ids=positions,
                     attention_mask=torch.cat([prompt_mask[owner_index], tail_mask], dim=1))
        # Logits that predict candidate token j: the prompt's last position for j = 0, candidate position j-1 after.
        logits = torch.cat([head.logits[owner_index, -1:, :], tail.logits[:, :-1, :]], dim=1)
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tails.unsqueeze(-1)).squeeze(-1)
        totals = (logprobs * tail_mask).sum(dim=-1).tolist()
    results, start = [], 0
    for group in candidates:
        results.append(totals[start:start + len(group)])
        start += len(group)
    return results
