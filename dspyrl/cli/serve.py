"""`dspyrl serve`: a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API",
                       description="Serve a local model as /v1/chat/completions and /v1/models (OpenAI-compatible).")
    p.add_argument("--model", default="smollm2", help="local model: 'smollm2', a local folder or a cached HF id (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="PEFT LoRA adapter folder to apply on top of the model")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the --model value)")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.lm.server import serve

    serve(args.model, adapter=args.adapter, host=args.host, port=args.port, served_name=args.name)
    return 0
