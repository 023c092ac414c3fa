"""Only real failures are failures: LM/HTTP errors and unparseable output are counted and the run goes on; the user's
own bugs (a NameError in forward, a KeyError in the reward) stop the run with their traceback, in the library and
in the CLI (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dspy
import pytest

from dspyrl.rollout import run_rollouts
from tests.test_rollout import EXAMPLES, QUESTIONS, WholeTextAdapter, length_reward


class Buggy(dspy.Module):
    """A program with a typo: the LM answers, then the user's code raises NameError."""

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question):
        answer = self.predict(question=question).answer
        return dspy.Prediction(answer=answr)  # noqa: F821 - the bug under test


@pytest.fixture
def lm(tiny_model_dir):
    from dspyrl.lm import local_lm

    return local_lm(str(tiny_model_dir), max_tokens=6, cache=False)


def test_a_bug_in_the_program_stops_the_run_with_its_traceback(lm):
    with pytest.raises(NameError, match="answr"):
        run_rollouts(Buggy(), EXAMPLES, length_reward, lm=lm, format=WholeTextAdapter(), num_threads=2,
                     progress=False)


def test_a_bug_in_the_reward_stops_the_run(lm):
    def reward(example, pred, trace=None):
        return float(example["label"])  # KeyError: the examples have no label

    with pytest.raises(KeyError, match="label"):
        run_rollouts(dspy.Predict("question -> answer"), EXAMPLES, reward, lm=lm, format=WholeTextAdapter(),
                     progress=False)


def test_max_errors_tolerates_that_many_bugs_then_raises(lm):
    def reward(example, pred, trace=None):
        if example.question == QUESTIONS[0]:
            raise KeyError("label")
        return 1.0

    batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES, reward, lm=lm, format=WholeTextAdapter(),
                         progress=False, max_errors=1)
    assert batch.reward_failures == 1 and batch.rollouts[0].reward.failed
    assert "program error KeyError" in batch.rollouts[0].reward.feedback
    with pytest.raises(NameError):
        run_rollouts(Buggy(), EXAMPLES, length_reward, lm=lm, format=WholeTextAdapter(), progress=False,
                     num_threads=1, max_errors=2)
    batch = run_rollouts(Buggy(), EXAMPLES[:2], length_reward, lm=lm, format=WholeTextAdapter(), progress=False,
                         num_threads=1, max_errors=2)
    assert batch.failures == 2 and batch.program_errors == 2


class _FlakyServer(BaseHTTPRequestHandler):
    """OpenAI-compatible chat completions that answer HTTP 500 to every other request."""

    count = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _FlakyServer.lock:
            _FlakyServer.count += 1
            fail = _FlakyServer.count % 2 == 1
        if fail:
            body = json.dumps({"error": {"message": "upstream exploded", "type": "server_error", "code": 500}})
            self.send_response(500)
        else:
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "a fine answer"}}],
                               "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_http_500s_are_counted_failures_and_the_run_finishes():
    from dspyrl.lm.hosted import openai_compatible

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm = openai_compatible(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", num_retries=0, max_tokens=8,
                               cache=False)
        batch = run_rollouts(dspy.Predict("question -> answer"), EXAMPLES, length_reward, lm=lm,
                             format=WholeTextAdapter(), num_threads=1, progress=False)
    finally:
        server.shutdown()
    assert batch.failures == 2 and batch.metric_calls == 2 and batch.program_errors == 0
    assert all(not r.failed for r in batch.rollouts if r.prediction is not None)


BUGGY_PROGRAM = '''
import dspy


def build_program():
    class Buggy(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predict = dspy.Predict("text -> label")

        def forward(self, text):
            self.predict(text=text)
            return dspy.Prediction(label=lable)  # noqa: F821

    return Buggy()


def build_reward(judge_lm=None):
    return lambda example, pred, trace=None: float(pred.label == example.label)


def load_examples():
    rows = [("good", "pos"), ("bad", "neg"), ("fine", "pos"), ("awful", "neg")] * 4
    return [dspy.Example(text=t, label=l).with_inputs("text") for t, l in rows]
'''


@pytest.mark.parametrize("command", ["eval", "optimize"])
def test_cli_stops_on_the_users_bug_with_its_traceback_and_exit_1(tiny_model_dir, tmp_path, command):
    program = tmp_path / "buggy.py"
    program.write_text(textwrap.dedent(BUGGY_PROGRAM))
    extra = ["--budget", "8"] if command == "optimize" else []
    result = subprocess.run([sys.executable, "-m", "dspyrl.cli", command, str(program), "--model", str(tiny_model_dir),
                             "--out", str(tmp_path / "run"), "--threads", "1", *extra],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "NameError" in result.stderr and "lable" in result.stderr
