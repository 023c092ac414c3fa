"""`dspyrl serve`: a local model (+ optional LoRA adapter) behind an OpenAI-compatible HTTP API.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (n > 1, stop, temperature, top_p, max_tokens, usage, and
vLLM's `guided_choice`: a list of candidate completions, answered by the model's own choice among them, see
`LocalEngine.choose`).
Requests are handled on FastAPI's thread pool and go through the same `LocalEngine` queue, so concurrent
clients are generated in shared batches. A malformed request gets a 400 with an OpenAI-style error body and the
server keeps serving.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dspyrl.errors import MissingExtraError


# Request schemas live at module level: FastAPI resolves the (postponed) annotations in module globals.
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in {"system", "developer", "user", "assistant", "tool"}:
            raise ValueError(f"unknown role '{role}'")
        return role

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""

class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields we may ignore
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=64)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    stop: str | list[str] | None = None
    stream: bool | None = False
    # vLLM's field: answer with one of these completions, picked by the model's log-probabilities (no free generation).
    guided_choice: list[str] | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("guided_choice")
    @classmethod
    def _distinct_choices(cls, choices: list[str] | None) -> list[str] | None:
        if choices is not None and len(set(choices)) != len(choices):
            raise ValueError("guided_choice candidates must be distinct")
        return choices


def _require_serve_extra():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise MissingExtraError("serve", err.name or "fastapi") from err


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": None}})


def build_app(engine, served_name: str):
    """The ASGI app over one LocalEngine."""
    _require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    from dspyrl.lm.local import GenerationSettings

    app = FastAPI(title="dspyrl serve", description=f"OpenAI-compatible API over {served_name}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return _error(400, f"{param + ': ' if param else ''}{first.get('msg')}", param)

    @app.exception_handler(Exception)
    async def _crashed(request: Request, exc: Exception):
        return _error(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": 0, "owned_by": "dspyrl"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatRequest):
        if body.stream:
            return _error(400, "stream=true is not supported by dspyrl serve", "stream")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        settings = GenerationSettings(
            max_tokens=body.max_completion_tokens or body.max_tokens or engine.default_max_tokens,
            temperature=body.temperature or 0.0, top_p=body.top_p, stop=tuple(stop))
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        if body.guided_choice is not None:
            seed = (body.model_extra or {}).get("seed")
            generations, _ = engine.choose(messages, body.guided_choice, n=body.n, temperature=settings.temperature,
                                           seed=seed if isinstance(seed, int) else None)
        else:
            generations = engine.generate(messages, n=body.n, settings=settings)
        prompt_tokens = generations[0].prompt_tokens
        completion_tokens = sum(g.completion_tokens for g in generations)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.model or served_name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason}
                        for i, g in enumerate(generations)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    return app


@dataclass
class ServerHandle:
    base_url: str  # ends in /v1
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(model_spec: str = "smollm2", adapter: str | None = None, port: int = 0, *,
                    host: str = "127.0.0.1", served_name: str | None = None, engine=None) -> ServerHandle:
    """Start the server in a background thread (tests, examples, benchmarks); port 0 picks a free port."""
    _require_serve_extra()
    import socket

    import uvicorn

    from dspyrl.lm.local import local_engine

    engine = engine or local_engine(model_spec, adapter)
    app = build_app(engine, served_name or model_spec)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="dspyrl-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ServerHandle(f"http://{host}:{sock.getsockname()[1]}/v1", server, thread)


def serve(model_spec: str = "smollm2", adapter: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          served_name: str | None = None) -> None:
    """Blocking server for the CLI."""
    _require_serve_extra()
    import uvicorn
    from rich.console import Console

    from dspyrl.lm.local import local_engine

    engine = local_engine(model_spec, adapter)
    name = served_name or model_spec
    Console(stderr=True).print(f"dspyrl serve: [bold]{name}[/bold]{' + ' + adapter if adapter else ''} on "
                               f"http://{host}:{port}/v1  (OpenAI-compatible; Ctrl-C stops)")
    uvicorn.run(build_app(engine, name), host=host, port=port, log_level="info")
