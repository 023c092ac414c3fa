"""Build a tiny, randomly initialised chat model on disk, offline, in seconds.

It is a real transformers LlamaForCausalLM with a real `tokenizers` byte-level BPE tokenizer and a ChatML chat template,
so every code path (chat template, generate, PEFT, TRL) runs exactly as it does on SmolLM2 — only smaller and untrained.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The movie was wonderful and the acting was great.",
    "I hated this film; it was boring and far too long.",
    "Answer the question with a short phrase. The capital of France is Paris.",
    "Sentiment: positive. Sentiment: negative. Label: neutral.",
    "[[ ## answer ## ]] [[ ## reasoning ## ]] [[ ## completed ## ]] <answer>42</answer> <reasoning>because</reasoning>",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 plus minus times equals",
    '{"answer": "yes", "score": 0.5, "feedback": "good"}',
    "Your input fields are: Your output fields are: All interactions will be structured in the following way",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(folder: str | Path, *, seed: int = 0, vocab_size: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", padding_side="left", chat_template=CHATML_TEMPLATE)
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder
