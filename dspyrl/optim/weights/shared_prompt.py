"""One prompt, G completions: GRPO's group shares its prompt's KV cache, in generation and in the loss forward.

TRL's sampler repeats every prompt G times, and TRL's transformers path runs the batch as it comes: the prompt goes
through the model G times before the first new token, and G times again (with gradients) in the loss forward. On CPU
the prompt (instruction, demos, the input) is most of a step's tokens. Here each distinct prompt runs once; its
DynamicCache rows are repeated per sample (`index_select` on its layers, as transformers' `batch_select_indices`; no
attention code of ours) and the G completions continue from them:

- `group_generate`: prefill the distinct prompts (all but the last token), repeat the cache, and `model.generate`
  decodes the G rows from there with TRL's own GenerationConfig (same sampler, processors, stopping rules);
  `GroupRollouts` is the TRL `rollout_func` that calls it inside GRPOTrainer (LoraGRPO's predictor mode).
- `shared_prompt_trainer_class()`: GRPOTrainer with one method replaced, the per-token log-probabilities of the
  completions. The prompt prefix runs once per distinct prompt with gradients; the repeated cache is differentiable
  (indexing), so the gradient of each shared prompt is the sum over its samples, as in the G separate forwards. The
  completions then go through TRL's own fused LM head (`fused_lm_head=True` with pre-shifted labels). TRL offers no
  hook for this (its forward is one batched call over prompt+completion rows), hence the subclass; anything the
  shortcut does not cover (images, MoE aux loss, rows that share no prompt, a model under gradient checkpointing,
  which keeps no cache in a training forward) goes to TRL's own method. LoraGRPO therefore turns TRL's default
  gradient checkpointing off when it shares prompts (on CPU and small models checkpointing only costs time).

`merged_lora` (opt-in, `LoraGRPOConfig.merge_lora_for_generation`) merges the LoRA weights into the base weights for
the generation and unmerges them after (PEFT's `merge_adapter` / `unmerge_adapter`, as TRL does to sync vLLM): decode
steps then skip the two LoRA matmuls per module. It changes the float rounding of the logits, not the distribution.
"""

from __future__ import annotations

import contextlib
from typing import Any


def run_lengths(rows: list) -> list[tuple[Any, int]]:
    """[(row, count)] for runs of consecutive equal rows (TRL's sampler puts a prompt's G copies together)."""
    runs: list[tuple[Any, int]] = []
    for row in rows:
        if runs and runs[-1][0] == row:
            runs[-1] = (row, runs[-1][1] + 1)
        else:
            runs.append((row, 1))
    return runs


def group_generate(model, prompt_ids: list[list[int]], counts: list[int], generation_config, pad_token_id: int,
                   eos_token_ids) -> list[list[int]]:
    """Completions for `counts[i]` samples of each prompt, in order (prompt 0's samples first), each cut after its
    first EOS as TRL cuts them. One forward pass over the distinct prompts (left-padded, all but the last token) fills
    a DynamicCache; its rows are repeated per sample and `generate` continues from the last prompt token."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    # the positions generate() gives left-padded rows (cumulative mask), so the cached prefix matches what it expects
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    repeat = torch.repeat_interleave(torch.arange(len(prompt_ids), device=device),
                                     torch.tensor(counts, device=device))
    with torch.no_grad():
        cache = DynamicCache(config=getattr(model, "config", None))
        if width > 1:
            model(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                  past_key_values=cache, use_cache=True)
        _repeat_rows(cache, repeat)  # row r of the cache → the rows of its samples
        output = model.generate(input_ids=input_ids[repeat], attention_mask=mask[repeat], past_key_values=cache,
                                generation_config=generation_config)
    completions = output[:, width:].cpu()
    eos = set(eos_token_ids if isinstance(eos_token_ids, (list, tuple, set)) else [eos_token_ids])
    result = []
    for row in completions.tolist():
        cut = next((i for i, token in enumerate(row) if token in eos), None)
        result.append(row[: cut + 1] if cut is not None else row)
    return result


@contextlib.contextmanager
def merged_lora(model, enabled: bool = True):
    """LoRA merged into the base weights inside the block (PEFT merge_adapter / unmerge_adapter), when `model` is a
    PEFT model and `enabled`; otherwise nothing happens."""
    merge = enabled and hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter")
    if merge:
        model.merge_adapter()
    try:
        yield model
    finally:
        if merge:
            model.unmerge_adapter()


class GroupRollouts:
    """TRL rollout_func for single-predictor GRPO: the rows' chat prompts, tokenized as TRL tokenizes them, generated
    with `group_generate` under TRL's generation settings (module docstring). Returns no sampling logprobs, as TRL's own
    transformers path does."""

    def __init__(self, merge_lora: bool = False):
        self.merge_lora = merge_lora

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        from trl.models.utils import unwrap_model_for_generation

        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)  # TRL's own chat templating (kwargs, template)
        groups = run_lengths([tuple(ids) for ids in prompt_ids])
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         generation_kwargs=trainer.generation_kwargs,
                                         gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
                                         ) as model, merged_lora(model, self.merge_lora):
            completions = group_generate(model, [list(ids) for ids, _ in groups], [n for _, n in groups],
                                         trainer.generation_config, trainer._tokenizer.pad_token_id,
                                         trainer.eos_token_ids)
        return {"prompt_ids": [list(ids) for ids, n in groups for _ in range(n)], "completion_ids": completions,
                "logprobs": None}


# ----------------------------------------------------------------------------------------------- the loss forward
def shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep: int, compute_entropy: bool = False):
    """(log-probs, entropies or None) of the last `logits_to_keep` tokens of each row, as TRL's fused forward computes
    them, with each distinct prompt (the rows' first columns, left-padded) run once; None when no two rows share one."""
    import torch
    from transformers import DynamicCache

    width = input_ids.size(1) - logits_to_keep
    prompts = torch.cat([input_ids[:, :width], attention_mask[:, :width]], dim=1)
    distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if distinct.size(0) == input_ids.size(0) or width < 2:
        return None
    first = torch.stack([torch.nonzero(inverse == k)[0, 0] for k in range(distinct.size(0))])
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    cache = DynamicCache(config=getattr(model, "config", None))
    # The prefix (all prompt tokens but the last) builds the cache; its logits are not needed (logits_to_keep=1).
    model(input_ids=input_ids[first, : width - 1], attention_mask=attention_mask[first, : width - 1],
          position_ids=positions[first, : width - 1], past_key_values=cache, use_cache=True, logits_to_keep=1)
    if cache.get_seq_length() != width - 1:
        # transformers turns the cache off for a training forward under gradient checkpointing: the completions would
        # then be scored without their prompt (a wrong loss, and a KL in the thousands), so TRL's own forward is used
        return None
    _repeat_rows(cache, inverse)
    # From the last prompt token on, each row predicts its completion: labels are pre-shifted (shift_labels).
    labels = input_ids[:, width:].masked_fill(attention_mask[:, width:] == 0, -100)
    outputs = model(input_ids=input_ids[:, width - 1: -1], attention_mask=attention_mask[:, :-1],
                    position_ids=positions[:, width - 1: -1], past_key_values=cache, shift_labels=labels,
                    fused_lm_head=True)
    return outputs.log_probs, (outputs.entropy if compute_entropy else None)


def _repeat_rows(cache, rows) -> None:
    """The cache's batch rows `rows` (with repeats), as transformers' `batch_select_indices` selects them, but through
    `index_select`: the gradient of `tensor[rows]` is an accumulating `index_put_`, which sums the G samples' gradients
    in a thread-dependent order on CPU, so two runs with one seed parted by float rounding and a resumed run did not
    end on the same adapter. `index_select`'s gradient (`index_add_`) sums in index order."""
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is DynamicLayer and layer.get_seq_length() > 0:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        else:  # other layer kinds keep more state per row: theirs
            layer.batch_select_indices(rows)


def shared_prompt_trainer_class():
    """trl.GRPOTrainer whose completion log-probabilities share the prompt forward (module docstring). Built on call
    so that importing this module does not import TRL."""
    import trl

    class SharedPromptGRPOTrainer(trl.GRPOTrainer):
        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **multimodal):
            import torch

            if compute_aux_loss or any(value is not None for value in multimodal.values()):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                    **multimodal)
            batch_size = batch_size or input_ids.size(0)
            logps, entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                rows = slice(start, start + batch_size)
                with self.accelerator.autocast():
                    shared = shared_prompt_logps(model, input_ids[rows], attention_mask[rows], logits_to_keep,
                                                 compute_entropy)
                if shared is None:  # nothing to share in this chunk: TRL's own forward
                    shared = super()._get_per_token_logps_and_entropies(
                        model, input_ids[rows], attention_mask[rows], logits_to_keep, None, compute_entropy)[:2]
                logps.append(shared[0])
                entropies.append(shared[1])
            return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None)

    return SharedPromptGRPOTrainer
