"""`dspyrl serve` bounds every request and checks who asks (issue 18's server defects, one test each), and answers
vLLM's structured-output fields to the `openai` SDK over real HTTP on 127.0.0.1."""

import json
import re
import socket
import threading
import time

import httpx
import openai
import pydantic
import pytest

from dspyrl.cli.main import main
from dspyrl.lm.local import LocalEngine
from dspyrl.lm.server import API_KEY_ENV, ServerLimits, serve_in_thread
from tests.lm.torch_threads import one_torch_thread  # noqa: F401

KEY = "test-key-1234"
HEADERS = {"Authorization": f"Bearer {KEY}"}



@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return LocalEngine(str(tiny_model_dir))


@pytest.fixture(scope="module")
def server(engine):
    limits = ServerLimits(max_request_tokens=1600, max_candidate_tokens=64, max_queue=2, api_key=KEY)
    handle = serve_in_thread(engine=engine, served_name="tiny", limits=limits)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


def _chat(server, timeout=60, **body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return httpx.post(server.base_url + "/chat/completions", json=body, headers=HEADERS, timeout=timeout)


class Item(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # else the schema allows extra keys, of unbounded length
    label: str = pydantic.Field(max_length=10)
    count: int
    kind: str = pydantic.Field(pattern="^(a|b)$")


# ----------------------------------------------------------------------------------------------- structured outputs
def test_openai_sdk_response_format_json_schema(client):
    schema = Item.model_json_schema()
    for _ in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "an item"}], temperature=1.0, max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "item", "schema": schema}})
        Item.model_validate_json(reply.choices[0].message.content)


def test_openai_sdk_extra_body_structured_outputs(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a code"}],
                                           temperature=1.0, max_tokens=20, n=4,
                                           extra_body={"structured_outputs": {"regex": "[A-Z]{2}-[0-9]{3}"}})
    assert len(reply.choices) == 4 and all(re.fullmatch("[A-Z]{2}-[0-9]{3}", c.message.content) for c in reply.choices)
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pick"}],
                                           extra_body={"structured_outputs": {"choice": ["alpha", "beta"]}})
    assert reply.choices[0].message.content in ("alpha", "beta")
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "json"}], max_tokens=60,
                                           extra_body={"guided_json": {"type": "object", "properties": {
                                               "n": {"type": "integer"}}, "required": ["n"]}})
    assert isinstance(json.loads(reply.choices[0].message.content)["n"], int)


def test_malformed_schema_is_a_400_naming_the_field_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}})
    assert "response_format.json_schema.schema" in err.value.message and "strng" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"structured_outputs": {"regex": "[a-"}})
    assert "structured_outputs.regex" in err.value.message
    ok = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert ok.choices[0].message.content is not None


# ----------------------------------------------------------------------------------------------- bounds
def test_prompt_beyond_the_context_is_a_400_naming_the_lengths(server):
    r = _chat(server, messages=[{"role": "user", "content": "plus minus " * 3000}], max_tokens=50)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "maximum context length is 2048 tokens" in message and "50 in the completion" in message


def test_n_times_max_tokens_over_the_cap_is_a_400(server):
    r = _chat(server, n=8, max_tokens=250)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens" and "8 × 250" in r.json()["error"]["message"]


def test_candidate_tokens_over_the_cap_is_a_400(server):
    r = _chat(server, guided_choice=[f"candidate number {i} " * 4 for i in range(8)])
    assert r.status_code == 400 and r.json()["error"]["param"] == "guided_choice"


# A regex with no early end: the random model cannot stop before max_tokens by emitting its end token.
LONG = {"guided_regex": "[a-z]{4000}", "max_tokens": 1500}


def test_queue_bound_answers_503_with_retry_after(server):
    threads = [threading.Thread(target=_chat, args=(server,), kwargs=LONG) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while server.app.state.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = _chat(server, max_tokens=2)
    for t in threads:
        t.join()
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "server_overloaded"
    assert _chat(server, max_tokens=2).status_code == 200


def test_a_client_that_disconnects_cancels_its_generation(server, engine):
    before = engine.cancelled_jobs
    with pytest.raises(httpx.ReadTimeout):
        _chat(server, timeout=0.5, **LONG)
    deadline = time.monotonic() + 30
    while engine.cancelled_jobs == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.cancelled_jobs == before + 1
    assert _chat(server, max_tokens=2).status_code == 200


# ----------------------------------------------------------------------------------------------- who may ask
def test_api_key_is_checked_on_every_route(server):
    for method, path in (("GET", "/models"), ("POST", "/chat/completions"), ("GET", "/nope")):
        r = httpx.request(method, server.base_url + path, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.request(method, server.base_url + path, json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    assert httpx.get(server.base_url + "/models", headers=HEADERS).status_code == 200


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServerLimits().api_key == "from-env"


def test_only_allowed_hosts_are_answered(server):
    port = server.base_url.split(":")[2].split("/")[0]
    r = httpx.get(server.base_url + "/models", headers={**HEADERS, "Host": "evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(server.base_url + "/models", headers={**HEADERS, "Host": host}).status_code == 200


def test_docs_are_off_unless_asked_for(server, engine):
    assert httpx.get(server.base_url.removesuffix("/v1") + "/docs", headers=HEADERS).status_code == 404
    assert httpx.get(server.base_url.removesuffix("/v1") + "/openapi.json", headers=HEADERS).status_code == 404
    with_docs = serve_in_thread(engine=engine, limits=ServerLimits(docs=True, api_key=None))
    try:
        assert httpx.get(with_docs.base_url.removesuffix("/v1") + "/docs").status_code == 200
    finally:
        with_docs.stop()


def test_404_405_and_validation_errors_have_the_openai_error_body(server):
    missing = httpx.get(server.base_url + "/nope", headers=HEADERS)
    wrong_method = httpx.get(server.base_url + "/chat/completions", headers=HEADERS)
    invalid = httpx.post(server.base_url + "/chat/completions", json={"messages": "no"}, headers=HEADERS)
    for r, status in ((missing, 404), (wrong_method, 405), (invalid, 400)):
        body = r.json()
        assert r.status_code == status and "detail" not in body and body["error"]["message"]


def test_serve_port_errors_are_one_line(tiny_model_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tiny_model_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "70000 is not a port number" in err and "Traceback" not in err
