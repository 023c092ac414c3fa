"""Weights that leave the building: a run's LoRA adapter merged into its base model, as a folder or a GGUF file.

    export_merged("runs/lora", "out/merged")          # safetensors + tokenizer + chat template: transformers, vLLM
    export_gguf("runs/lora", "out/model.gguf", "q8_0")  # llama.cpp / Ollama; f16 or q8_0

Both merge with PEFT's `merge_and_unload` (the adapted model as one plain model) and copy the run's program.json
beside what they write (`<name>.program.json` next to a GGUF file), with export.json saying what was exported from
where. `check_export` loads the files back (transformers; its GGUF loader for a GGUF file, `gguf_file=`) and compares
greedy completions with the in-process adapter model.

The GGUF is written with the `gguf` package's GGUFWriter in the layout llama.cpp's converter gives Llama-family models
(the layout of the SmolLM2 GGUF this project ships with): `blk.N.attn_q` ... tensor names from gguf's own name map, Q
and K rows permuted as llama.cpp's rotary embedding expects (transformers' GGUF loader un-permutes them), the byte-level
BPE vocabulary with its merges, special token ids and chat template, and no `output.weight` when lm_head is tied to the
embeddings. Only the Llama architecture is written (SmolLM2 and the test model); others are a one-line ModelError.
transformers' GGUF loader de-quantizes to float32 and takes ~18 s for SmolLM2 (DESIGN.md).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from dspyrl.errors import ConfigError, ModelError

GGUF_TYPES = ("f16", "q8_0")
PROGRAM = "program.json"
ADAPTER = "adapter"
# A few plain chat prompts for the round-trip check (greedy: any difference is the export's, not sampling's).
CHECK_PROMPTS = ["What is 2 plus 3?", "Name a colour.", "Write one word that rhymes with cat.",
                 "Is the sky green? Answer yes or no.", "Count from one to five.", "Say hello in French.",
                 "What is the capital of Italy?", "Give a synonym for happy.", "Sort these letters: c a b",
                 "Reply with the number 7."]


# ----------------------------------------------------------------------------------------------- the run's adapter
def run_adapter(run_dir: str | Path) -> tuple[str, Path, Path | None]:
    """(base model spec, adapter folder, program.json or None) of a weights run folder (finetune, LoraGRPO, LoraDPO)
    or of a schedule run, whose result's adapter is that of the last weights phase up to its best phase."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist")
    program = run / PROGRAM if (run / PROGRAM).is_file() else None
    folder = run
    if not (run / ADAPTER).is_dir():
        record = _read_json(run / "checkpoint.json")
        phases = record.get("done") or []
        best = record.get("best_phase", len(phases))
        weights = [p for p in phases if p.get("kind") != "prompts" and p.get("phase", 0) <= best]
        if not phases or not weights:
            raise ConfigError(f"{run} holds no adapter/ folder" + (
                " and its schedule's best program runs on the base model (no weights phase before it)"
                if phases else ""), hint="export the folder of a finetune / LoRA run (or a schedule with a weights phase)")
        folder = run / weights[-1]["dir"]
    config = _read_json(folder / "config.json")
    spec = config.get("model")
    if not spec:
        spec = _read_json(folder / ADAPTER / "adapter_config.json").get("base_model_name_or_path")
    if not spec:
        raise ConfigError(f"{folder}: cannot tell the base model (no 'model' in config.json)")
    return spec, folder / ADAPTER, program


def merged_model(spec: str, adapter_dir: str | Path):
    """(model, tokenizer): the base model with the adapter merged in (PEFT merge_and_unload), float32, eval mode."""
    from dspyrl.lm.models import load_model

    model, tokenizer = load_model(spec, adapter=str(adapter_dir))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------- writers
def export_merged(run_dir: str | Path, out_dir: str | Path) -> Path:
    """The merged model as a transformers folder (safetensors, tokenizer, chat template) + program.json."""
    spec, adapter, program = run_adapter(run_dir)
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty", hint="pick a new folder for the export")
    model, tokenizer = merged_model(spec, adapter)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent if out.parent.exists() else None))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        if program is not None:
            shutil.copyfile(program, tmp / PROGRAM)
        _write_json(tmp / "export.json", {"from_run": str(Path(run_dir)), "base_model": spec,
                                          "adapter": str(adapter), "format": "transformers (merged LoRA)"})
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)  # the folder appears whole or not at all
    except BaseException:  # noqa: BLE001 - clean the temp folder on any exit, then re-raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_gguf(run_dir: str | Path, out_file: str | Path, gguf_type: str = "f16") -> Path:
    """The merged model as one GGUF file (module docstring) + `<name>.program.json` beside it."""
    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"unknown GGUF type '{gguf_type}'", hint=f"use one of {', '.join(GGUF_TYPES)}")
    spec, adapter, program = run_adapter(run_dir)
    out = Path(out_file).expanduser()
    if out.suffix != ".gguf":
        raise ConfigError(f"{out}: a GGUF file name ends in .gguf")
    model, tokenizer = merged_model(spec, adapter)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        write_gguf(model, tokenizer, tmp, gguf_type, name=Path(spec).name or spec)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    if program is not None:
        shutil.copyfile(program, out.with_suffix(".program.json"))
    _write_json(out.with_suffix(".export.json"), {"from_run": str(Path(run_dir)), "base_model": spec,
                                                   "adapter": str(adapter), "format": f"gguf {gguf_type}"})
    return out


def write_gguf(model, tokenizer, path: str | Path, gguf_type: str = "f16", *, name: str = "model") -> Path:
    """Write a Llama-family transformers model and its byte-level BPE tokenizer as GGUF (module docstring)."""
    import gguf
    import numpy as np

    config = model.config
    if config.model_type != "llama":
        raise ModelError(f"GGUF export writes Llama-family models; this one is '{config.model_type}'",
                         hint="export --merged and convert that folder with llama.cpp's convert_hf_to_gguf.py")
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    writer = gguf.GGUFWriter(str(path), arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_tokenizer(writer, tokenizer, config.vocab_size, name)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the embeddings as the output layer when output.weight is absent
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            if "rotary_emb" in hf_name:
                continue  # a computed buffer, not a weight
            raise ModelError(f"no GGUF name for tensor '{hf_name}'")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_attention_heads, config.num_key_value_heads)
        if data.ndim == 1:  # norms stay float32, as llama.cpp writes them
            writer.add_tensor(target, data.astype(np.float32))
        elif gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            quantized = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_tokenizer(writer, tokenizer, vocab_size: int, name: str) -> None:
    """The byte-level BPE vocabulary (tokens, types, merges), special ids and chat template, as gguf reads them from a
    saved tokenizer (gguf.SpecialVocab)."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    model_info = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model_info.get("type") != "BPE":
        raise ModelError("GGUF export writes byte-level BPE tokenizers (GPT-2 style); this one is "
                         f"{model_info.get('type') or type(tokenizer).__name__}")
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    tokens, types = [], []
    for i in range(vocab_size):
        token = tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else None
        if token is None:  # the embedding matrix is wider than the vocabulary: llama.cpp's placeholder names
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if "smollm" in name.lower() else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:  # SpecialVocab reads merges/ids/template from saved files
        tokenizer.save_pretrained(folder)
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's row order for Q/K (pairs of rotary halves interleaved); transformers' loader reverses it."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


# ----------------------------------------------------------------------------------------------- the round trip
def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int = 24) -> list[list[int]]:
    """Greedy completion token ids of each prompt (one at a time: no padding differences between models)."""
    import torch

    results = []
    for text in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        results.append(out[0, len(ids):].tolist())
    return results


def load_export(path: str | Path):
    """(model, tokenizer) from an exported folder or GGUF file, with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if path.suffix == ".gguf":
        kwargs = {"gguf_file": path.name}
        folder = path.parent
    else:
        kwargs, folder = {}, path
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **kwargs)
    return model.eval(), tokenizer


def check_export(run_dir: str | Path, exported: str | Path, prompts: list[str] | None = None,
                 max_new_tokens: int = 24) -> dict:
    """Greedy completions of the in-process adapter model vs the exported files on `prompts` (default: 10 fixed
    chat prompts, through the run's tokenizer and chat template): identical count and per-token agreement."""
    from dspyrl.lm.models import load_model

    spec, adapter, _ = run_adapter(run_dir)
    prompts = prompts or CHECK_PROMPTS
    model, tokenizer = load_model(spec, adapter=str(adapter))
    reference = greedy_completions(model, tokenizer, prompts, max_new_tokens)
    del model
    loaded, _ = load_export(exported)
    got = greedy_completions(loaded, tokenizer, prompts, max_new_tokens)
    same_tokens = sum(a == b for ref, out in zip(reference, got) for a, b in zip(ref, out))
    return {"prompts": len(prompts), "identical": sum(r == g for r, g in zip(reference, got)),
            "token_agreement": same_tokens / max(1, sum(len(r) for r in reference))}


def _portable_tokenizer_config(folder: Path) -> None:
    """transformers 5 saves `"tokenizer_class": "TokenizersBackend"`, a name only transformers 5 knows (DESIGN.md);
    PreTrainedTokenizerFast loads the same tokenizer.json in transformers 4 and 5 (and in vLLM, which uses either)."""
    path = folder / "tokenizer_config.json"
    config = _read_json(path)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        _write_json(path, config)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from err


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
