"""`dspyrl export` on the real tiny random Llama with a real (non-identity) LoRA adapter: the merged folder reloads in
plain transformers and is token-identical greedy; the GGUF file has llama.cpp's tensor names and shapes and reloads
through transformers' GGUF loader with the same logits (f16) or close ones (q8_0)."""

from __future__ import annotations

import json

import dspy
import pytest

from dspyrl.cli.main import main
from dspyrl.optim.weights import export


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A run folder as LoraGRPO writes it: config.json naming the model, adapter/ (LoRA with random non-zero weights on
    every linear layer), program.json."""
    from dspyrl.lm.models import load_model
    from dspyrl.optim.weights.base import save_adapter
    from tests.optim.weights.test_shared_prompt import nonzero_lora

    run = tmp_path_factory.mktemp("run")
    model, _ = load_model(str(tiny_model_dir))
    save_adapter(nonzero_lora(model, seed=3, std=0.1), run / "adapter")
    (run / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "optimizer": "LoraGRPO"}))
    program = dspy.Predict("question -> answer")
    program.save(str(run / "program.json"))
    return run


def _logits(model, tokenizer, text="what is 2 plus 2?"):
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_export_merged_reloads_token_identical(lora_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert main(["export", str(lora_run), "--merged", str(out), "--check", "3"]) == 0
    printed = capsys.readouterr().out
    assert "check: 3/3 greedy completions identical, 100.0% of tokens agree" in printed
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads((out / "program.json").read_text()) == json.loads((lora_run / "program.json").read_text())
    assert not (out / "adapter_config.json").exists()  # one plain model, no PEFT needed to load it
    # plain transformers, nothing of ours: the same greedy tokens as the base model with the adapter
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    from dspyrl.lm.models import load_model

    adapted, base_tokenizer = load_model(json.loads((lora_run / "config.json").read_text())["model"],
                                         adapter=str(lora_run / "adapter"))
    prompts = export.CHECK_PROMPTS[3:5]
    assert export.greedy_completions(model, tokenizer, prompts) == export.greedy_completions(adapted, base_tokenizer,
                                                                                              prompts)
    # the adapter really changed the model (an identity adapter would make this test vacuous)
    base, _ = load_model(json.loads((lora_run / "config.json").read_text())["model"])
    assert not _logits(base, base_tokenizer).allclose(_logits(model, tokenizer), atol=1e-3)


@pytest.mark.parametrize("gguf_type, atol", [("f16", 2e-2), ("q8_0", 0.15)])
def test_export_gguf_has_llama_cpp_layout_and_reloads_in_transformers(lora_run, tmp_path, capsys, gguf_type, atol):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model.gguf"
    check = ["--check", "2"] if gguf_type == "f16" else []  # the check reloads the GGUF once more: once is enough
    assert main(["export", str(lora_run), "--gguf", str(out), "--gguf-type", gguf_type, *check]) == 0
    assert ("check: " in capsys.readouterr().out) == bool(check)
    assert (tmp_path / "model.program.json").is_file()
    merged, tokenizer = export.merged_model(*export.run_adapter(lora_run)[:2])
    config = merged.config
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: (list(map(int, t.shape)), t.tensor_type.name) for t in reader.tensors}
    hidden, inter, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * config.head_dim
    assert tensors["token_embd.weight"][0] == [hidden, config.vocab_size]  # GGUF lists the fastest dimension first
    assert tensors["blk.0.attn_q.weight"][0] == [hidden, hidden]
    assert tensors["blk.0.attn_k.weight"][0] == [hidden, kv]
    assert tensors["blk.1.ffn_down.weight"][0] == [inter, hidden]
    assert tensors["output_norm.weight"] == ([hidden], "F32")
    assert tensors["blk.0.attn_q.weight"][1] == gguf_type.upper()
    assert len(tensors) == 2 + 9 * config.num_hidden_layers + (0 if config.tie_word_embeddings else 1)
    assert str(reader.fields["general.architecture"].contents()) == "llama"
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name)
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    text = "what is 2 plus 2? <|im_end|>"
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    ours, theirs = _logits(merged, tokenizer), _logits(loaded, tokenizer)
    assert (ours - theirs).abs().max() < atol  # Q/K permutation, names, tie: any mistake is far off this


def test_export_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--merged", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no adapter/ folder" in err
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "nothing to write" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--gguf", str(tmp_path / "x.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_schedule_run_exports_the_adapter_its_best_phase_runs_on(tmp_path):
    from dspyrl.errors import ConfigError

    run = tmp_path / "schedule"
    (run / "2-lora" / "adapter").mkdir(parents=True)
    (run / "2-lora" / "config.json").write_text(json.dumps({"model": "some/model"}))
    done = [{"phase": 1, "kind": "prompts", "dir": "1-prompts"}, {"phase": 2, "kind": "lora", "dir": "2-lora"},
            {"phase": 3, "kind": "prompts", "dir": "3-prompts"}]
    (run / "checkpoint.json").write_text(json.dumps({"phases": ["prompts", "lora", "prompts"], "done": done,
                                                     "best_phase": 3}))
    assert export.run_adapter(run)[:2] == ("some/model", run / "2-lora" / "adapter")
    (run / "checkpoint.json").write_text(json.dumps({"done": done, "best_phase": 1}))
    with pytest.raises(ConfigError, match="best program runs on the base model"):
        export.run_adapter(run)
