"""The OpenAI client against a real OpenAI-compatible server: llama.cpp's, serving the packaged SmolLM2
GGUF on 127.0.0.1; stopped, restarted and slowed (SIGSTOP) by the tests."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from autointerp.clients.base import GenParams
from autointerp.clients.remote import OpenAIClient
from autointerp.subject import embedded_gguf

pytest.importorskip(
    "llama_cpp.server",
    reason="needs llama-cpp-python[server] (installed by scripts/setup.sh --dev)",
)

CHATS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "What is the capital of France?"}],
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra: str):
        self.extra = list(extra)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_gguf()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            "2",
            "--n_ctx",
            "4096",
            *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, "llama.cpp server exited at start-up"
            try:
                urllib.request.urlopen(self.url + "/models", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("llama.cpp server did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def server():
    s = Server()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server_without_logprobs():
    """llama.cpp's server with logits_all off: a request asking for logprobs gets HTTP 500."""
    s = Server("--logits_all", "false")
    s.start()
    yield s
    s.stop()


def _run(client, chats, **params):
    return asyncio.run(client.complete(chats, GenParams(**params)))


def test_real_server_answers_with_logprobs(server):
    client = OpenAIClient("smollm2", base_url=server.url)
    out = _run(client, CHATS, max_tokens=12, logprobs=True, top_logprobs=3)
    for c in out:
        assert c.ok and c.text.strip(), c.error
        assert c.prompt_tokens > 5 and 0 < c.completion_tokens <= 12
        assert c.logprobs and all(lp.logprob <= 0 for lp in c.logprobs)
        assert len(c.logprobs[0].top) == 3
        assert (
            c.logprobs[0].top[0][1] >= c.logprobs[0].logprob
        )  # greedy: the chosen token ranks first


def test_unknown_model_on_a_real_server(server):
    from autointerp.errors import ClientError

    with pytest.raises(ClientError, match="does not serve model 'gpt-9'.*smollm2"):
        _run(OpenAIClient("gpt-9", base_url=server.url), CHATS[:1])


def test_stopped_then_restarted_server(server):
    client = OpenAIClient("smollm2", base_url=server.url, max_retries=1, timeout=10)
    assert _run(client, CHATS[:1], max_tokens=4)[0].ok
    server.stop()
    failed = _run(client, CHATS[:1], max_tokens=4)
    assert not failed[0].ok and "Connection" in failed[0].error  # recorded, not raised
    server.start()
    assert _run(client, CHATS[:1], max_tokens=4)[0].ok


def test_slowed_server_times_out_and_is_retried(server):
    """SIGSTOP the server longer than the client's timeout; the retry after SIGCONT succeeds."""
    client = OpenAIClient("smollm2", base_url=server.url, max_retries=3, timeout=3)
    assert _run(client, CHATS[:1], max_tokens=4)[0].ok  # model list checked while the server runs
    os.kill(server.proc.pid, signal.SIGSTOP)
    threading.Timer(4.0, os.kill, (server.proc.pid, signal.SIGCONT)).start()
    t = time.time()
    [c] = _run(client, CHATS[:1], max_tokens=4)
    assert c.ok, c.error
    assert time.time() - t >= 3.5  # it waited out at least one timeout


def test_detection_scorer_through_a_real_server(server):
    """The detection scorer through the OpenAI client and llama.cpp: five examples per prompt, the
    answers parsed from real responses (or recorded as failures with the reason), tokens counted."""
    from test_score import NUMBERS, PROSE, item

    from autointerp.score.classifier import ClassifierConfig, ClassifierScorer
    from autointerp.score.metrics import classification

    client = OpenAIClient("smollm2", base_url=server.url)
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(examples_per_prompt=5, prefill=False)
    [s] = asyncio.run(ClassifierScorer("detection", client, cfg).score([it]))
    assert s.calls == 3 and s.prompt_tokens > 3 * 150 and s.completion_tokens > 0
    assert len(s.predictions) == 12
    for p in s.predictions:  # every example has a verdict or the reason it has none
        assert (p.prediction is None) == (p.error is not None)
    answered = [p for p in s.predictions if p.error is None]
    if answered:
        expect = classification(
            [p.label for p in answered], [p.prediction for p in answered], [None]
        )
        assert s.metrics["balanced_accuracy"] == expect["balanced_accuracy"]
    else:
        assert s.status == "failed" and s.error.startswith("no answer could be used")


def test_a_real_server_without_logprobs_still_scores(server_without_logprobs):
    """llama.cpp's server started without logits_all refuses logprobs (HTTP 500). The client asks
    again without them: the answers arrive, and the detection scorer counts them (balanced
    accuracy) with AUROC unavailable and the reason noted, never a failed request."""
    from test_score import NUMBERS, PROSE, item

    from autointerp.score.classifier import ClassifierConfig, ClassifierScorer

    client = OpenAIClient("smollm2", base_url=server_without_logprobs.url)
    out = _run(client, CHATS, max_tokens=8, logprobs=True, top_logprobs=3)
    for c in out:
        assert c.ok and c.text.strip() and c.logprobs is None, c.error
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(examples_per_prompt=5, prefill=False)
    [s] = asyncio.run(ClassifierScorer("detection", client, cfg).score([it]))
    assert s.calls == 3 and len(s.predictions) == 12
    for p in s.predictions:  # a verdict, or an answer that could not be parsed; no failed request
        assert (p.prediction is None) == (p.error is not None)
        assert p.probability is None and "request failed" not in (p.error or "")
    if any(p.error is None for p in s.predictions):
        assert s.status == "ok" and s.metrics["balanced_accuracy"] is not None
        assert s.metrics["auroc"] is None and any("logprobs" in n for n in s.notes)
    else:  # the small model answered nothing parseable: said so, not blamed on logprobs
        assert s.status == "failed" and "logprobs" not in s.error
