"""The OpenAI-compatible client against servers that fail on purpose, and the response cache."""

import asyncio
import logging
import socket

import pytest
from openai_fake import FakeOpenAI
from pydantic import SecretStr

from autointerp.clients import make_client
from autointerp.clients.base import Completion, GenParams
from autointerp.clients.cache import CachedClient, ResponseCache
from autointerp.clients.remote import OpenAIClient
from autointerp.config import ClientConfig, validate
from autointerp.errors import ClientError, ConfigError

CHAT = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def _client(fake, **kw):
    kw = {"backoff": 0.01, "max_retries": 4, **kw}
    return OpenAIClient("fake-model", base_url=fake.url, **kw)


def _run(client, chats, **params):
    return asyncio.run(client.complete(chats, GenParams(**params)))


def test_answers_with_logprobs_and_token_counts(fake):
    [c] = _run(_client(fake), [CHAT], logprobs=True, top_logprobs=2)
    assert c.ok and c.text == "echo: Say something."
    assert (c.prompt_tokens, c.cached_tokens, c.completion_tokens) == (11, 4, 3)
    assert c.logprobs[0].token == "echo" and c.logprobs[0].top[1] == ("no", -2.5)
    assert fake.requests[0]["logprobs"] is True and fake.requests[0]["top_logprobs"] == 2


def test_retries_429_and_500_with_backoff(fake):
    fake.script = [429, 500, 503]
    [c] = _run(_client(fake), [CHAT])
    assert c.ok and len(fake.requests) == 4


def test_gives_up_after_max_retries_as_a_recorded_failure(fake):
    fake.script = [500] * 10
    out = _run(_client(fake, max_retries=2), [CHAT])
    assert not out[0].ok and out[0].text is None and "InternalServerError" in out[0].error
    assert len(fake.requests) == 3


def test_timeouts_are_retried(fake):
    fake.script = [("slow", 1.5)]
    [c] = _run(_client(fake, timeout=0.5), [CHAT])
    assert c.ok and len(fake.requests) == 2


def test_many_requests_in_flight(fake):
    fake.script = [("slow", 0.5)] * 8
    import time

    t = time.time()
    out = _run(_client(fake, max_concurrency=8), [CHAT] * 8)
    assert all(c.ok for c in out) and time.time() - t < 2.0  # eight 0.5 s requests, at once


def test_client_errors_that_stop_everything(fake):
    with pytest.raises(ClientError, match="does not serve model 'other'.*fake-model"):
        asyncio.run(OpenAIClient("other", base_url=fake.url).complete([CHAT], GenParams()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = OpenAIClient("m", base_url=f"http://127.0.0.1:{port}/v1", backoff=0.01)
    with pytest.raises(
        ClientError, match=f"no OpenAI-compatible server answers at http://127.0.0.1:{port}/v1"
    ):
        asyncio.run(down.complete([CHAT], GenParams()))


def test_missing_logprobs_is_a_failure():
    server = FakeOpenAI(logprobs=False)
    try:
        [c] = _run(_client(server), [CHAT], logprobs=True)
        assert not c.ok and "no logprobs" in c.error
    finally:
        server.close()


def test_api_key_from_env_is_sent_but_never_logged_or_dumped(fake, monkeypatch, caplog):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    cfg = ClientConfig(
        backend="openai", model="fake-model", base_url=fake.url, api_key_env="MY_KEY"
    )
    _run(make_client(cfg), [CHAT])
    assert fake.headers[0]["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in caplog.text
    secret = ClientConfig(api_key=SecretStr("sk-other"))
    assert "sk-other" not in secret.model_dump_json() and "sk-other" not in repr(secret)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(
        ConfigError, match="backend: Input should be 'transformers', 'openai' or 'vllm'"
    ):
        validate({"backend": "gpt5"}, ClientConfig)


class Counting:
    model = "m"

    def __init__(self):
        self.calls = 0

    async def complete(self, chats, params):
        self.calls += len(chats)
        return [
            Completion(text=None, error="boom")
            if "fail" in c[0]["content"]
            else Completion(text="ok")
            for c in chats
        ]


def test_response_cache_serves_repeats_and_retries_failures(tmp_path):
    inner = Counting()
    client = CachedClient(inner, ResponseCache(tmp_path / "r.sqlite"), "test")
    chats = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "fail"}]]
    first = _run(client, chats)
    second = _run(CachedClient(inner, ResponseCache(tmp_path / "r.sqlite"), "test"), chats)
    assert [c.text for c in first] == [
        "ok",
        None,
    ] and inner.calls == 3  # only the failure was resent
    assert second[0].from_cache and not second[1].from_cache
    _run(client, chats, max_tokens=5)  # other parameters: another request
    assert inner.calls == 5
