"""`dspyrl serve`: a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def add_parser(sub) -> None:
    from dspyrl.lm.server import API_KEY_ENV, LOOPBACK_HOSTS, ServerLimits

    d = ServerLimits()
    p = sub.add_parser("serve", help="serve a local model (+ LoRA adapter) as an OpenAI-compatible HTTP API",
                       description="Serve a local model as /v1/chat/completions and /v1/models (OpenAI-compatible, "
                                   "with vLLM's structured-output fields).")
    p.add_argument("--model", default="smollm2", help="local model: 'smollm2', a local folder or a cached HF id (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="PEFT LoRA adapter folder to apply on top of the model")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="port to bind (default: %(default)s)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the --model value)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer <key>' on every route (default: ${API_KEY_ENV}, else none); "
                        f"prefer the variable: a command line is visible to other users")
    p.add_argument("--allowed-hosts", default=",".join(LOOPBACK_HOSTS),
                   help="comma-separated Host header names to answer ('*': any); set it when binding a non-loopback "
                        "--host (default: %(default)s)")
    p.add_argument("--docs", action="store_true", help="serve the interactive API docs at /docs (off by default)")
    p.add_argument("--max-request-tokens", type=_positive, default=d.max_request_tokens,
                   help="cap on n × max_tokens of one request (default: %(default)s)")
    p.add_argument("--max-candidate-tokens", type=_positive, default=d.max_candidate_tokens,
                   help="cap on the total tokens of one request's choice candidates (default: %(default)s)")
    p.add_argument("--max-queue", type=_positive, default=d.max_queue,
                   help="requests in flight before new ones are answered 503 with Retry-After (default: %(default)s)")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.lm.server import ServerLimits, serve

    hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    limits = ServerLimits(max_request_tokens=args.max_request_tokens, max_candidate_tokens=args.max_candidate_tokens,
                          max_queue=args.max_queue, allowed_hosts=hosts, docs=args.docs)
    if args.api_key:
        limits.api_key = args.api_key
    serve(args.model, adapter=args.adapter, host=args.host, port=args.port, served_name=args.name, limits=limits)
    return 0
