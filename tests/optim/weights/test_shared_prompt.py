"""The shared-prompt GRPO path on the real tiny random Llama: the same completions and log-probabilities as the plain
batched path (the G copies of each prompt run separately), and training through it."""

from __future__ import annotations

import json

import dspy
import pytest

from dspyrl.optim.weights.shared_prompt import group_generate, run_lengths, shared_prompt_logps


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    """The tiny model under a LoRA adapter with non-zero weights (a fresh adapter is the identity), with TRL's fused
    LM head patched in as GRPOTrainer patches it."""
    from trl.trainer.utils import add_fused_lm_head

    from dspyrl.lm.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    return nonzero_lora(model, seed=1, std=0.05).eval(), tokenizer


def nonzero_lora(model, *, seed: int, std: float):
    """`model` under a fresh all-linear LoRA (r=4) whose B matrices are random: PEFT starts B at zero (the identity),
    which would make any with/without-adapter comparison vacuous."""
    import torch
    from peft import get_peft_model

    from dspyrl.optim.weights.base import lora_config

    model = get_peft_model(model, lora_config(4, 8, 0.0, "all-linear", None))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)
    return model


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["what is 2 plus 2?", "name a colour, please, in one short word or a longer phrase"]
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"] for t in texts]


def _plain_generate(model, prompts, counts, config, pad, eos):
    """TRL's transformers path: every prompt repeated, left-padded, one generate call, cut after the first EOS."""
    import torch

    rows = [ids for ids, n in zip(prompts, counts) for _ in range(n)]
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in out]


def _config(tokenizer, **kwargs):
    from transformers import GenerationConfig

    kwargs.setdefault("max_new_tokens", 12)
    return GenerationConfig(pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=[tokenizer.eos_token_id], disable_compile=True, **kwargs)


def test_run_lengths():
    assert run_lengths(["a", "a", "b", "a", "a"]) == [("a", 2), ("b", 1), ("a", 2)]
    assert run_lengths([]) == []


def test_group_generate_greedy_equals_the_plain_path(lora_model):
    model, tokenizer = lora_model
    prompts, counts = _prompts(tokenizer), [3, 2]
    config = _config(tokenizer, do_sample=False)
    plain = _plain_generate(model, prompts, counts, config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    grouped = group_generate(model, prompts, counts, config, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    assert grouped == plain
    assert len(grouped) == 5 and all(len(c) > 0 for c in grouped)


def test_group_generate_sampled_distribution_matches_the_plain_path(lora_model):
    """At temperature 1 the first sampled token of each path follows the model's own next-token distribution: the
    empirical frequencies of 400 seeded samples per path are within sampling noise of it and of each other."""
    import torch

    model, tokenizer = lora_model
    prompt = _prompts(tokenizer)[:1]
    config = _config(tokenizer, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=2)
    n = 400
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(prompt)).logits[0, -1]
    exact = torch.softmax(logits.float(), -1)
    frequencies = []
    for seed, path in ((0, "plain"), (1, "group")):
        torch.manual_seed(seed)
        if path == "plain":
            rows = _plain_generate(model, prompt, [n], config, tokenizer.pad_token_id, tokenizer.eos_token_id)
        else:
            rows = group_generate(model, prompt, [n], config, tokenizer.pad_token_id, [tokenizer.eos_token_id])
        frequencies.append(torch.bincount(torch.tensor([r[0] for r in rows]), minlength=exact.numel()).float() / n)
    plain, grouped = frequencies
    top = torch.topk(exact, 5).indices
    # total variation against the exact distribution: ~0.3 expected for 400 draws over a ~500-token random vocabulary
    # (sampling noise alone); a wrong cache (shifted positions, mixed rows) gives a different distribution entirely
    for freq in (plain, grouped):
        assert 0.5 * (freq - exact).abs().sum() < 0.45
        assert torch.allclose(freq[top], exact[top], atol=4 * (exact[top] / n).sqrt().max().item() + 0.01)
    # the same seed gives the same samples on both paths (one multinomial draw per row per step, in row order)
    torch.manual_seed(7)
    a = _plain_generate(model, prompt, [16], config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    torch.manual_seed(7)
    b = group_generate(model, prompt, [16], config, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    assert sum(x == y for x, y in zip(a, b)) >= 14  # all but float-rounding near-ties


def test_shared_prompt_logps_and_gradients_equal_trls_forward(lora_model):
    """The loss forward with one prompt pass per group gives TRL's per-token log-probs and the same LoRA gradients."""
    import torch

    model, tokenizer = lora_model
    prompts, counts = _prompts(tokenizer), [3, 2]
    completions = group_generate(model, prompts, counts, _config(tokenizer, do_sample=True),
                                 tokenizer.pad_token_id, [tokenizer.eos_token_id])
    rows = [ids for ids, n in zip(prompts, counts) for _ in range(n)]
    pw, cw = max(map(len, rows)), max(map(len, completions))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (pw - len(p)) + p + c + [pad] * (cw - len(c)) for p, c in zip(rows, completions)])
    mask = torch.tensor([[0] * (pw - len(p)) + [1] * (len(p) + len(c)) + [0] * (cw - len(c))
                         for p, c in zip(rows, completions)])

    def trl_forward():  # what GRPOTrainer._get_per_token_logps_and_entropies does for one chunk
        labels = input_ids.masked_fill(mask == 0, -100)
        labels[:, :-cw] = -100
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        return out.log_probs[:, -cw:], out.entropy[:, -cw:]

    results = []
    for forward in (trl_forward, lambda: shared_prompt_logps(model, input_ids, mask, cw, compute_entropy=True)):
        model.zero_grad()
        logps, entropy = forward()
        (logps * mask[:, -cw:]).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((logps.detach(), entropy.detach(), grads))
    (ref, ref_entropy, ref_grads), (ours, our_entropy, our_grads) = results
    valid = mask[:, -cw:].bool()
    assert torch.allclose(ours[valid], ref[valid], atol=1e-5)
    assert torch.allclose(our_entropy[valid], ref_entropy[valid], atol=1e-5)
    assert ref_grads.keys() == our_grads.keys() and any(g.abs().sum() > 0 for g in ref_grads.values())
    for name in ref_grads:
        assert torch.allclose(our_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4), name
    # rows without a shared prompt: nothing to share, TRL's own forward is used
    assert shared_prompt_logps(model, input_ids[[0, 3]], mask[[0, 3]], cw) is None


def test_under_gradient_checkpointing_the_loss_forward_falls_back_to_trls(lora_model):
    """A training forward under gradient checkpointing keeps no cache, so sharing would score the completions without
    their prompt: the shortcut must step aside (TRL's forward is used)."""
    import torch

    model, tokenizer = lora_model
    prompts = _prompts(tokenizer)[:1] * 2
    width = len(prompts[0])
    input_ids = torch.tensor([p + [5, 6, 7] for p in prompts])
    mask = torch.ones_like(input_ids)
    assert shared_prompt_logps(model, input_ids, mask, 3) is not None
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    try:
        assert input_ids.size(1) == width + 3 and shared_prompt_logps(model, input_ids, mask, 3) is None
    finally:
        model.gradient_checkpointing_disable()
        model.eval()


def test_first_step_kl_is_zero_through_the_shared_prompt_path(tiny_lm, tmp_path):
    """Before any update the policy is the reference: KL 0. With the loss forward scoring completions without their
    prompt (gradient checkpointing dropped the cache) the first step's KL was 0.008 here and 8499 on SmolLM2."""
    from tests.optim.weights.test_grpo import RawAdapter, digit_share, fast, questions
    from dspyrl.optim.weights.grpo import LoraGRPO

    optimizer = LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "run",
                         **fast(steps=1, beta=0.02, learning_rate=1e-4, save_every=0))
    optimizer.compile(dspy.Predict("question -> answer"), trainset=questions(4))
    (metrics,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert abs(metrics["kl"]) < 1e-5, metrics["kl"]


def test_lora_grpo_trains_through_the_shared_prompt_path(tiny_lm, tmp_path):
    from tests.optim.weights.test_grpo import RawAdapter, digit_share, fast, questions
    from dspyrl.optim.weights.grpo import LoraGRPO

    program = dspy.Predict("question -> answer")
    optimizer = LoraGRPO(digit_share, lm=tiny_lm, format=RawAdapter(), run_dir=tmp_path / "run",
                         **fast(steps=3, num_generations=4, prompts_per_step=2, save_every=0,
                                merge_lora_for_generation=True))
    optimizer.compile(program, trainset=questions(6))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["completions/mean_length"] > 0 for m in metrics)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from dspyrl.lm import local_lm

    return local_lm(str(tiny_model_dir), max_tokens=8)
