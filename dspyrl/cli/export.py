"""`dspyrl export RUN_DIR --merged OUT_DIR | --gguf OUT.gguf`: a run's LoRA merged into its base model, for serving
elsewhere (transformers / vLLM from the folder, llama.cpp / Ollama from the GGUF). See dspyrl.optim.weights.export."""

from __future__ import annotations

from dataclasses import dataclass

from dspyrl.config import setting
from dspyrl.optim.weights.export import GGUF_TYPES


@dataclass(kw_only=True)
class ExportOptions:
    run_dir: str = setting(None, "a finetune / LoRA run folder (its adapter/), or a schedule run with a weights phase",
                           positional=True)
    merged: str | None = setting(None, "write the merged model here: safetensors + tokenizer + chat template + "
                                       "program.json (a new folder)")
    gguf: str | None = setting(None, "write the merged model as one GGUF file (llama.cpp, Ollama)")
    gguf_type: str = setting("f16", "GGUF tensor type of the weight matrices (norms stay float32)",
                             choices=GGUF_TYPES)
    check: int = setting(0, "load each export back (transformers; its GGUF loader for --gguf) and compare greedy "
                            "completions of N fixed prompts with the adapter model (0: no check)", ge=0, le=10)


def add_parser(sub) -> None:
    from dspyrl.cli.options import add_settings

    p = sub.add_parser("export", help="merge a run's LoRA adapter into its model: a transformers folder or a GGUF file",
                       description="Merge RUN_DIR's LoRA adapter into its base model (PEFT merge_and_unload) and write "
                                   "it as a transformers folder (--merged) and/or a GGUF file (--gguf); the run's "
                                   "program.json travels with it.")
    add_settings(p, ExportOptions)
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.cli.options import settings_of
    from dspyrl.errors import ConfigError
    from dspyrl.optim.weights import export

    options = settings_of(ExportOptions, args)
    if not options.merged and not options.gguf:
        raise ConfigError("nothing to write", hint="pass --merged OUT_DIR and/or --gguf OUT.gguf")
    spec, adapter, _ = export.run_adapter(options.run_dir)  # bad folders fail before the model loads
    written = []
    if options.merged:
        written.append(export.export_merged(options.run_dir, options.merged))
    if options.gguf:
        written.append(export.export_gguf(options.run_dir, options.gguf, options.gguf_type))
    for path in written:
        line = f"{path}  ({spec} + {adapter}, merged)"
        if options.check:
            result = export.check_export(options.run_dir, path, export.CHECK_PROMPTS[: options.check])
            line += (f"  check: {result['identical']}/{result['prompts']} greedy completions identical, "
                     f"{result['token_agreement']:.1%} of tokens agree")
        print(line)
    return 0
