"""`dspyrl serve`: a local model (+ optional LoRA adapter) behind an OpenAI-compatible HTTP API.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (n > 1, stop, temperature, top_p, max_tokens, seed, usage),
with vLLM's structured-output fields: `response_format` (json_schema, json_object), `structured_outputs` (json,
regex, grammar in Lark, choice) and the older `guided_json` / `guided_regex` / `guided_grammar` / `guided_choice`
(see dspyrl.lm.constraints). A choice is answered by the model's own pick among the candidates (`LocalEngine.choose`).
Requests go through the same `LocalEngine` queue, so concurrent clients are generated in shared batches.

Every request's work is bounded, as vLLM's server bounds it (`ServerLimits`): a prompt that does not fit the context
with its max_tokens is a 400 naming both lengths; n × max_tokens and the candidates' total tokens have caps (400);
more requests in flight than the queue bound get a 503 with Retry-After; a client that disconnects cancels its
generation. `--api-key` (or DSPYRL_SERVE_API_KEY) is checked on every route, the Host header must be one of
`--allowed-hosts` (the loopback names by default: a page in a browser cannot reach the server through DNS
rebinding), and /docs is off unless asked for. Every error, 404 and 405 included, has OpenAI's error body; a
malformed request gets a 400 and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dspyrl.errors import MissingExtraError

try:  # FastAPI resolves an endpoint's (postponed) annotations in module globals; the serve extra is optional
    from fastapi import Request
except ImportError:  # pragma: no cover - _require_serve_extra reports it
    Request = Any


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
    seed: int | None = None
    # vLLM's fields: answer with one of these completions, picked by the model's log-probabilities (no free generation),
    # or generate under a grammar (dspyrl.lm.constraints checks them and names the field of a malformed one).
    guided_choice: list[str] | None = Field(default=None, min_length=1, max_length=256)
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None

    @field_validator("guided_choice")
    @classmethod
    def _distinct_choices(cls, choices: list[str] | None) -> list[str] | None:
        if choices is not None and len(set(choices)) != len(choices):
            raise ValueError("guided_choice candidates must be distinct")
        return choices


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
API_KEY_ENV = "DSPYRL_SERVE_API_KEY"


@dataclass
class ServerLimits:
    """What bounds one request's work, and who may ask (the `dspyrl serve` options of the same names)."""

    max_request_tokens: int = 8192  # n × max_tokens of one request
    max_candidate_tokens: int = 4096  # all guided_choice candidates of one request together
    max_queue: int = 32  # requests in flight (running or waiting) before new ones get 503
    # required as "Authorization: Bearer <key>" on every route when set; from the environment by default
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header names accepted; "*" accepts any
    docs: bool = False  # serve /docs and /openapi.json
    retry_after_s: int = 1


def _require_serve_extra():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise MissingExtraError("serve", err.name or "fastapi") from err


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
           code: str | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, headers=headers,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})


def _host_name(host_header: str) -> str:
    """The name in a Host header, without its port ('[::1]:8000' -> '::1')."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Gate:
    """ASGI middleware: the Host header and the API key, checked before any route (404s included) sees a request."""

    def __init__(self, app, limits: ServerLimits):
        self.app, self.limits = app, limits
        self.hosts = {h.lower().strip("[]") for h in limits.allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        response = None
        if "*" not in self.hosts and _host_name(headers.get("host", "")) not in self.hosts:
            response = _error(400, f"Host '{headers.get('host', '')}' is not allowed; start the server with "
                                   f"--allowed-hosts naming it", code="invalid_host")
        elif self.limits.api_key:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.limits.api_key.encode()):
                response = _error(401, "Incorrect or missing API key (send it as 'Authorization: Bearer <key>')",
                                  code="invalid_api_key")
        if response is not None:
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def build_app(engine, served_name: str, limits: ServerLimits | None = None):
    """The ASGI app over one LocalEngine."""
    _require_serve_extra()
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from dspyrl.lm.constraints import ConstraintError, parse_constraints
    from dspyrl.lm.local import GenerationCancelled, GenerationSettings

    limits = limits or ServerLimits()
    docs = {} if limits.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="dspyrl serve", description=f"OpenAI-compatible API over {served_name}", **docs)
    app.add_middleware(_Gate, limits=limits)
    app.state.in_flight = 0  # requests admitted and not yet answered (tests read it)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return _error(400, f"{param + ': ' if param else ''}{first.get('msg')}", param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, message, kind=kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crashed(request: Request, exc: Exception):
        return _error(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": 0, "owned_by": "dspyrl"}]}

    def checked(body: ChatRequest):
        """(messages, settings, candidates) of a request, or a 400 response naming what is too big or malformed."""
        if body.stream:
            return _error(400, "stream=true is not supported by dspyrl serve", "stream")
        try:
            constraint, candidates = parse_constraints({k: getattr(body, k) for k in (
                "response_format", "structured_outputs", "guided_json", "guided_regex", "guided_grammar",
                "guided_choice")})
            if constraint is not None:
                engine.grammars.check(constraint)
        except ConstraintError as err:
            return _error(400, str(err), err.param)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        settings = GenerationSettings(
            max_tokens=body.max_completion_tokens or body.max_tokens or engine.default_max_tokens,
            temperature=body.temperature or 0.0, top_p=body.top_p, stop=tuple(stop), seed=body.seed,
            constraint=constraint)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        prompt_tokens = len(engine.encode_chat(messages))
        if candidates is not None:
            if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
                return _error(400, "choice candidates must be a list of strings", "structured_outputs.choice")
            lengths = [len(engine.tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for c in candidates]
            if sum(lengths) > limits.max_candidate_tokens:
                return _error(400, f"the {len(candidates)} choice candidates are {sum(lengths)} tokens together; at "
                                   f"most {limits.max_candidate_tokens} are scored per request", "guided_choice")
            longest = max(lengths, default=0)
            if engine.context_length and prompt_tokens + longest > engine.context_length:
                return _error(400, f"This model's maximum context length is {engine.context_length} tokens. However, "
                                   f"the messages are {prompt_tokens} tokens and the longest candidate {longest}.",
                              "messages")
            return messages, settings, candidates
        if body.n * settings.max_tokens > limits.max_request_tokens:
            return _error(400, f"n × max_tokens is {body.n} × {settings.max_tokens} = {body.n * settings.max_tokens} "
                               f"tokens; at most {limits.max_request_tokens} per request", "max_tokens")
        try:
            engine.check_context(prompt_tokens, settings.max_tokens)
        except ValueError as err:
            return _error(400, str(err), "messages")
        return messages, settings, None

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if app.state.in_flight >= limits.max_queue:
            return _error(503, f"the server has {app.state.in_flight} requests in flight (its queue bound); retry "
                               f"after {limits.retry_after_s} s", kind="server_overloaded",
                          headers={"Retry-After": str(limits.retry_after_s)})
        app.state.in_flight += 1
        try:
            prepared = await run_in_threadpool(checked, body)
            if not isinstance(prepared, tuple):
                return prepared
            messages, settings, candidates = prepared
            cancel = threading.Event()
            if candidates is not None:
                work = run_in_threadpool(engine.choose, messages, candidates, n=body.n,
                                         temperature=settings.temperature, seed=body.seed)
            else:
                work = run_in_threadpool(engine.generate, messages, n=body.n, settings=settings, cancel=cancel)
            task = asyncio.ensure_future(work)
            while not task.done():
                await asyncio.wait({task}, timeout=0.1)
                if not task.done() and await request.is_disconnected():
                    cancel.set()  # the engine drops the rows; nobody is left to read them
                    task.add_done_callback(lambda t: t.exception())  # retrieved, so asyncio does not log it
                    return _error(499, "client disconnected", kind="cancelled")
            try:
                result = task.result()
            except GenerationCancelled:
                return _error(499, "client disconnected", kind="cancelled")
            except ValueError as err:  # malformed candidates, and the like: the request's fault
                return _error(400, str(err), "guided_choice" if candidates is not None else None)
            generations = result[0] if candidates is not None else result
        finally:
            app.state.in_flight -= 1
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
    app: Any = None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _bind(host: str, port: int):
    """A listening socket, bound before anything says it is serving (a port in use is a one-line error)."""
    import socket

    from dspyrl.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number (0-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                          hint="pick another --port, or stop what is using this one") from None
    return sock


def serve_in_thread(model_spec: str = "smollm2", adapter: str | None = None, port: int = 0, *,
                    host: str = "127.0.0.1", served_name: str | None = None, engine=None,
                    limits: ServerLimits | None = None) -> ServerHandle:
    """Start the server in a background thread (tests, examples, benchmarks); port 0 picks a free port."""
    _require_serve_extra()
    import uvicorn

    from dspyrl.lm.local import local_engine

    engine = engine or local_engine(model_spec, adapter)
    app = build_app(engine, served_name or model_spec, limits)
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="dspyrl-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ServerHandle(f"http://{host}:{sock.getsockname()[1]}/v1", server, thread, app)


def serve(model_spec: str = "smollm2", adapter: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          served_name: str | None = None, limits: ServerLimits | None = None) -> None:
    """Blocking server for the CLI."""
    _require_serve_extra()
    import uvicorn
    from rich.console import Console

    from dspyrl.lm.local import local_engine

    limits = limits or ServerLimits()
    sock = _bind(host, port)
    engine = local_engine(model_spec, adapter)
    name = served_name or model_spec
    guard = "API key required" if limits.api_key else "no API key"
    Console(stderr=True).print(f"dspyrl serve: [bold]{name}[/bold]{' + ' + adapter if adapter else ''} on "
                               f"http://{host}:{sock.getsockname()[1]}/v1  (OpenAI-compatible; {guard}; hosts "
                               f"{', '.join(limits.allowed_hosts)}; Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(build_app(engine, name, limits), log_level="info")).run(sockets=[sock])
