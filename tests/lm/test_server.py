"""dspy.LM (DSPy's default engine and LiteLLM) → HTTP → `dspyrl serve` on 127.0.0.1 → the tiny local model."""

import dspy
import httpx
import pytest

from dspyrl.lm import openai_compatible
from dspyrl.lm.server import serve_in_thread


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    handle = serve_in_thread(str(tiny_model_dir), served_name="tiny")
    yield handle
    handle.stop()


def test_models_endpoint(server):
    body = httpx.get(server.base_url + "/models").json()
    assert body["data"][0]["id"] == "tiny"


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_dspy_lm_over_http_with_n(server, engine):
    lm = openai_compatible(server.base_url, "tiny", engine=engine, max_tokens=8, temperature=1.0, cache=False)
    outs = lm("hello", n=3)
    assert len(outs) == 3 and len(set(outs)) > 1
    assert lm.history[-1]["usage"]["prompt_tokens"] > 0


def test_predict_over_http(server):
    class QA(dspy.Signature):
        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    lm = openai_compatible(server.base_url, "tiny", max_tokens=16, cache=False)
    with dspy.context(lm=lm):
        try:
            dspy.Predict(QA)(question="hi?")
        except dspy.utils.exceptions.AdapterParseError:
            pass  # random weights; the HTTP round trip is what is under test
    assert "hi?" in lm.history[-1]["messages"][-1]["content"]


def test_raw_n_stop_and_usage(server):
    r = httpx.post(server.base_url + "/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "count"}], "n": 2, "temperature": 0.9,
        "max_tokens": 6, "stop": ["\n"]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["choices"]) == 2 and all("\n" not in c["message"]["content"] for c in body["choices"])
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


@pytest.mark.parametrize("payload, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
])
def test_malformed_requests_get_400_and_server_keeps_serving(server, payload, param):
    r = httpx.post(server.base_url + "/chat/completions", json=payload)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    ok = httpx.post(server.base_url + "/chat/completions",
                    json={"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 2})
    assert ok.status_code == 200


def test_body_that_is_not_json_gets_400(server):
    r = httpx.post(server.base_url + "/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_structured_and_auto_formats_over_http(server):
    from typing import Literal

    from dspyrl.formats import AutoFormat, StructuredAdapter, resolve_format

    class Label(dspy.Signature):
        text: str = dspy.InputField()
        label: Literal["spam", "ham"] = dspy.OutputField()
        score: int = dspy.OutputField()

    lm = openai_compatible(server.base_url, "tiny", max_tokens=60, temperature=1.0, cache=False)
    assert isinstance(resolve_format("auto", lm), AutoFormat)  # a server-backed model gets auto, like a local one
    with dspy.context(lm=lm, adapter=StructuredAdapter(max_text_tokens=16)):
        for i in range(3):
            out = dspy.ChainOfThought(Label)(text=f"message {i}")
            assert out.label in ("spam", "ham") and isinstance(out.score, int) and out.reasoning
