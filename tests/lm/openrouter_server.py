"""A loopback server that speaks OpenRouter's chat-completions dialect, with the faults a hosted run meets.

What it reproduces of OpenRouter (https://openrouter.ai/docs/api-reference): `POST /api/v1/chat/completions` (also
`/v1/...`) with `vendor/model` names, a bearer key checked on every request, replies with `id: gen-…`, `provider`, and a
`usage` carrying `cost` (USD, what the call was billed) and `prompt_tokens_details` / `completion_tokens_details`;
errors as `{"error": {"code": <status>, "message": ...}}`: 401 (bad key), 402 (out of credits), 429 with
`Retry-After`, 5xx. On top, faults no provider documents but every run meets: slow and hanging replies, and replies
that are HTTP 200 but useless (empty `choices`, cut off at max_tokens, garbage text).

It answers a DSPy ChatAdapter prompt the way a good model would: the output fields named in the system message, each
with the value `answer(messages)` gives (by default the label of the first known input found in the prompt). Every
request is recorded (path, headers, body, what was done), and every 200 reply's cost is added to `billed`, so a test can
check a run's own accounting against what the provider would have charged.

It costs almost no CPU (stdlib ThreadingHTTPServer; a hang waits on an Event that `stop()` releases).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# Prices in USD per token, as OpenRouter lists them per model (these are made up; only the arithmetic matters).
PRICES = {"acme/task-small": (1e-6, 2e-6), "acme/reflect-large": (5e-6, 1.5e-5), "acme/judge-mid": (2e-6, 4e-6)}

FAULTS = ("429", "500", "502", "503", "hang", "slow", "empty", "truncated", "garbage")


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict
    outcome: str  # "ok" or the fault served ("429", "hang", "garbage", ...)
    cost: float = 0.0  # what this reply was billed (0 for an error)
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic), for backoff checks


@dataclass
class OpenRouterServer:
    """Start with `start()`; `base_url` is what LiteLLM's `api_base` (and OPENROUTER_API_BASE) takes.

    `fault(i, body)` returns the fault for the i-th request (or None); `fault_rate` + `seed` draw one of `faults` at
    random instead. `credits` is a balance in USD: once spent, every request gets 402.
    """

    key: str | None = "sk-or-test-key"
    answers: dict[str, str] = field(default_factory=dict)  # input text -> the value every output field gets
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PRICES))
    fault: Callable[[int, dict], str | None] | None = None
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 0
    delay: float = 0.0  # seconds before every reply
    slow_delay: float = 1.5  # seconds a "slow" reply takes
    retry_after: float = 0.2  # seconds, sent with every 429
    credits: float | None = None  # None: unlimited
    always: str | None = None  # a fault served to every request (e.g. "402", "hang")

    def __post_init__(self):
        self.received: list[Received] = []
        self.billed = 0.0
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        self._released = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> "OpenRouterServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"data": [{"id": name, "pricing": {"prompt": str(p), "completion": str(c)}}
                                              for name, (p, c) in server.prices.items()]})
                else:
                    self._send(404, {"error": {"code": 404, "message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                status, payload, headers = server._respond(self.path, dict(self.headers.items()), body)
                if status is None:  # the connection was dropped (a hang released at stop)
                    self.close_connection = True
                    return
                self._send(status, payload, headers)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): fine
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="openrouter-test-server").start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1"

    # ------------------------------------------------------------------------------------------- figures
    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.received:
            counts[request.outcome] = counts.get(request.outcome, 0) + 1
        return counts

    def billed_for(self, model: str) -> float:
        return sum(r.cost for r in self.received if r.body.get("model") == model)

    # ------------------------------------------------------------------------------------------- one request
    def _respond(self, path: str, headers: dict[str, str], body: dict):
        with self._lock:
            index = len(self.received)
            record = Received(path, headers, body, "ok")
            self.received.append(record)
            if self.always:
                fault = self.always
            elif self.fault is not None:
                fault = self.fault(index, body)
            elif self.fault_rate and self._random.random() < self.fault_rate:
                fault = self._random.choice(self.faults)
            else:
                fault = None
        if not path.rstrip("/").endswith("/chat/completions"):
            record.outcome = "404"
            return 404, _error(404, f"no route {path}"), {}
        if self.key is not None and headers.get("Authorization", headers.get("authorization")) != f"Bearer {self.key}":
            record.outcome = "401"
            return 401, _error(401, "No auth credentials found"), {}
        model = body.get("model", "")
        if model not in self.prices:
            record.outcome = "400"
            return 400, _error(400, f"{model} is not a valid model ID"), {}
        if self.credits is not None and self.billed >= self.credits:
            fault = "402"
        if self.delay:
            time.sleep(self.delay)
        if fault:
            record.outcome = fault
        if fault == "402":
            return 402, _error(402, "Insufficient credits. Add more using https://openrouter.ai/settings/credits"), {}
        if fault == "401":
            return 401, _error(401, "User not found."), {}
        if fault == "429":
            return 429, _error(429, "Rate limit exceeded: free-models-per-min"), {"Retry-After": f"{self.retry_after:g}"}
        if fault in ("500", "502", "503"):
            return int(fault), _error(int(fault), "Provider returned error"), {}
        if fault == "hang":
            self._released.wait()  # until stop(): the client's timeout is what ends it
            return None, None, None
        if fault == "slow":
            time.sleep(self.slow_delay)
        return self._completion(record, body, fault)

    def _completion(self, record: Received, body: dict, fault: str | None):
        messages = body.get("messages") or []
        prompt_text = " ".join(str(m.get("content") or "") for m in messages)
        prompt_tokens = max(1, len(prompt_text.split()))
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1000)
        text = self.reply_text(messages)
        finish = "stop"
        if fault == "garbage":
            text = "\u00bf\u00bf lorem %%%% ipsum ]] ## [[ \x07"
        elif fault == "truncated" or len(text.split()) > max_tokens:
            text, finish = " ".join(text.split()[:max(1, min(max_tokens, 3))])[:12], "length"
        completion_tokens = max(1, len(text.split()))
        price_in, price_out = self.prices[body["model"]]
        cost = round(prompt_tokens * price_in + completion_tokens * price_out, 12)
        with self._lock:
            self.billed += cost
            record.cost = cost
        choices = [] if fault == "empty" else [
            {"index": 0, "logprobs": None, "finish_reason": finish, "native_finish_reason": finish,
             "message": {"role": "assistant", "content": text, "refusal": None, "reasoning": None}}]
        return 200, {
            "id": f"gen-{int(time.time())}-{len(self.received)}", "provider": "Acme", "model": body["model"],
            "object": "chat.completion", "created": int(time.time()), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens, "cost": cost, "is_byok": False,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "cost_details": {"upstream_inference_cost": None},
                      "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0}}}, {}

    def reply_text(self, messages: list[dict]) -> str:
        """A ChatAdapter-shaped answer: every output field the system message names gets `answer(...)`."""
        system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
        outputs = system.split("Your output fields are:", 1)[1] if "Your output fields are:" in system else ""
        outputs = outputs.split("All interactions will be structured", 1)[0]
        names = re.findall(r"^\d+\. `(\w+)`", outputs, flags=re.M) or ["answer"]
        value = self.answer(messages)
        return "\n\n".join(f"[[ ## {name} ## ]]\n{value}" for name in names) + "\n\n[[ ## completed ## ]]"

    def answer(self, messages: list[dict]) -> str:
        """The value of the known input that appears in the LAST user message (demos come earlier), else 'fine'."""
        last_user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        return next((value for text, value in self.answers.items() if text in last_user), "fine")


def _error(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "metadata": {}}}
