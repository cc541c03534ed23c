"""The OpenAI-compatible client against servers that fail on purpose, and the response cache."""

import asyncio
import logging
import re
import socket
import sqlite3

import pytest
from openai_fake import FakeOpenAI
from pydantic import SecretStr

from autointerp.clients import make_client
from autointerp.clients.base import Completion, GenParams
from autointerp.clients.cache import CachedClient, ResponseCache, bypass_cache, request_key
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
    kw = {"max_retries": 4, **kw}
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


@pytest.fixture
def sdk_sleeps(monkeypatch):
    """The delays the OpenAI SDK asks for before its retries, recorded instead of waited."""
    import anyio

    asked, real = [], anyio.sleep

    async def record(delay):
        asked.append(delay)
        await real(0)

    monkeypatch.setattr(anyio, "sleep", record)
    return asked


def test_a_429_is_retried_after_the_servers_retry_after(fake, sdk_sleeps):
    """The SDK's own retries wait as long as the server's Retry-After asks, then the request goes
    through; the hand-made loop of old retried at its own pace."""
    fake.script = [(429, {"Retry-After": "2"})]
    [c] = _run(_client(fake, max_retries=2), [CHAT])
    assert c.ok and c.text == "echo: Say something."
    assert len(fake.requests) == 2  # one 429, then the answer
    assert sdk_sleeps == [2.0]  # waited what the server asked


def test_errors_of_a_logprobs_request_are_retried_as_the_server_asks(fake, sdk_sleeps):
    """Before any request with logprobs has succeeded, a 429 or 503 still goes through the SDK's
    retries, after the server's Retry-After, with logprobs (only a refusal of logprobs is sent
    again at once, without them)."""
    fake.script = [(429, {"Retry-After": "3"}), (503, {"Retry-After": "1"})]
    [c] = _run(_client(fake, max_retries=3), [CHAT], logprobs=True, top_logprobs=2)
    assert c.ok and c.logprobs[0].token == "echo"
    assert [r["logprobs"] for r in fake.requests] == [True, True, True]
    assert sdk_sleeps == [3.0, 1.0]


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
    """Eight requests are in the server at once: none is answered before all eight arrived."""
    import threading

    together = threading.Barrier(8, timeout=30)

    def reply(body):
        together.wait()  # broken (an error answer) unless eight requests are in flight at once
        return "together"

    fake.reply = reply
    out = _run(_client(fake, max_concurrency=8, max_retries=0), [CHAT] * 8)
    assert [c.text for c in out] == ["together"] * 8 and len(fake.requests) == 8


def test_client_errors_that_stop_everything(fake):
    with pytest.raises(ClientError, match="does not serve model 'other'.*fake-model"):
        asyncio.run(OpenAIClient("other", base_url=fake.url).complete([CHAT], GenParams()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = OpenAIClient("m", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(
        ClientError, match=f"no OpenAI-compatible server answers at http://127.0.0.1:{port}/v1"
    ):
        asyncio.run(down.complete([CHAT], GenParams()))


def test_missing_logprobs_still_answers():
    """A server that ignores `logprobs`: the answer counts, with no logprobs (the scorers then note
    that AUROC is unavailable); it is not a failed request."""
    server = FakeOpenAI(logprobs=False)
    try:
        [c] = _run(_client(server), [CHAT], logprobs=True, top_logprobs=2)
        assert c.ok and c.error is None and c.text == "echo: Say something."
        assert c.logprobs is None and server.requests[0]["logprobs"] is True
    finally:
        server.close()


def test_a_server_refusing_logprobs_is_asked_without_them(caplog, sdk_sleeps):
    """llama.cpp's server without logits_all answers a logprobs request with HTTP 500 naming them:
    the request is sent again without logprobs at once (no waiting out retries), one warning says
    so, and later requests no longer ask for them."""
    server = FakeOpenAI(logprobs="refuse")
    try:
        with caplog.at_level(logging.WARNING, logger="autointerp"):
            client = _client(server)
            first = _run(client, [CHAT], logprobs=True, top_logprobs=2)
            later = _run(client, [CHAT, CHAT], logprobs=True, top_logprobs=2)
    finally:
        server.close()
    assert all(c.ok and c.logprobs is None and c.text for c in first + later)
    assert [bool(r.get("logprobs")) for r in server.requests] == [True, False, False, False]
    assert sdk_sleeps == []  # the refusal was not retried: asked again at once, without them
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "refuses logprobs" in warning and "logits_all" in warning


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
        ConfigError, match="backend: Input should be 'transformers', 'llamacpp', 'openai' or 'vllm'"
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


def test_cache_key_covers_the_server_the_model_and_every_generation_parameter():
    base = request_key("openai", "m", CHAT, GenParams(), "http://a/v1")
    assert base == request_key("openai", "m", CHAT, GenParams(), "http://a/v1")
    others = {
        "server": request_key("openai", "m", CHAT, GenParams(), "http://b/v1"),
        "no server": request_key("openai", "m", CHAT, GenParams()),
        "backend": request_key("vllm", "m", CHAT, GenParams(), "http://a/v1"),
        "model": request_key("openai", "m2", CHAT, GenParams(), "http://a/v1"),
        "chat": request_key("openai", "m", [{"role": "user", "content": "x"}], GenParams()),
    }
    changed = {"max_tokens": 7, "temperature": 0.5, "logprobs": True, "top_logprobs": 3}
    changed["stop"] = ("]",)
    assert set(changed) == set(GenParams.model_fields)  # a new parameter needs a line here
    for name, value in changed.items():
        others[name] = request_key("openai", "m", CHAT, GenParams(**{name: value}), "http://a/v1")
    assert len({base, *others.values()}) == len(others) + 1, others


def test_answers_of_another_server_are_not_replayed(tmp_path):
    inner = Counting()
    cache = ResponseCache(tmp_path / "r.sqlite")
    _run(CachedClient(inner, cache, "openai", "http://a/v1"), [CHAT])
    _run(CachedClient(inner, cache, "openai", "http://a/v1"), [CHAT])
    assert inner.calls == 1
    [c] = _run(CachedClient(inner, cache, "openai", "http://b/v1"), [CHAT])
    assert inner.calls == 2 and not c.from_cache


def test_make_client_keys_the_cache_by_base_url(fake, tmp_path):
    other = FakeOpenAI()
    try:
        for server in (fake, fake, other):
            cfg = ClientConfig(backend="openai", model="fake-model", base_url=server.url)
            _run(make_client(cfg, tmp_path / "r.sqlite"), [CHAT])
        assert len(fake.requests) == 1 and len(other.requests) == 1
    finally:
        other.close()


def test_bypass_cache_asks_again_and_keeps_the_fresh_answer(tmp_path):
    inner = Counting()
    client = CachedClient(inner, ResponseCache(tmp_path / "r.sqlite"), "test")
    _run(client, [CHAT])
    with bypass_cache():
        [c] = _run(client, [CHAT])
    assert inner.calls == 2 and not c.from_cache
    [again] = _run(client, [CHAT])  # outside the block the cache serves again
    assert inner.calls == 2 and again.from_cache


def test_a_full_disk_loses_no_answer_and_warns_once(tmp_path, caplog):
    """sqlite reports a full disk on write: the fresh answers are still returned, one warning names
    the cache file and the free space, and the cache is not written again in this run."""
    path = tmp_path / "r.sqlite"
    cache = ResponseCache(path)

    class FullDisk:
        def __init__(self, db):
            self.db, self.writes = db, 0

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                self.writes += 1
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def commit(self):
            self.db.commit()

        def rollback(self):
            self.db.rollback()

    full = FullDisk(cache._db)
    cache._db = full
    inner = Counting()
    client = CachedClient(inner, cache, "test")
    chats = [[{"role": "user", "content": c}] for c in "abc"]
    with caplog.at_level(logging.WARNING, logger="autointerp"):
        first = _run(client, chats)
        second = _run(client, chats)
    assert [c.text for c in first + second] == ["ok"] * 6  # every answer returned and used
    assert inner.calls == 6 and full.writes == 1  # asked again; no second write attempt
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert str(path) in msg and "disk is full" in msg and "free" in msg


def test_a_cache_that_cannot_be_opened_is_skipped_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # the cache's folder would be inside a file
    with caplog.at_level(logging.WARNING, logger="autointerp"):
        cache = ResponseCache(blocker / "r.sqlite")
        [c] = _run(CachedClient(Counting(), cache, "test"), [CHAT])
    assert c.text == "ok" and len(cache) == 0
    assert str(blocker / "r.sqlite") in caplog.text


def test_retry_failed_asks_the_llm_again(fake, tmp_path, small_run):
    """An answer that arrived but had no explanation line is cached like any answer; a plain re-run
    keeps the failure, `run --retry-failed` asks the server again (not the response cache)."""
    import json
    import shutil

    from typer.testing import CliRunner

    from autointerp.cli import app

    out = tmp_path / "run"
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "corpus: {n_tokens: 16384}\n"
        "coders:\n"
        "  - {hookpoint: layers.15}\n"
        "  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}\n"
        "report: false\n"
        "max_latents: 2\n"
        f"client: {{backend: openai, model: fake-model, base_url: '{fake.url}'}}\n"
        "score: {scorers: [embedding]}\n"
    )
    fake.reply = lambda body: "I am not sure."

    def run(*extra):
        args = ["run", str(cfg), "--out", str(out), "--coder", "layers.15", *extra]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, (done.output, done.exception)
        path = out / "explanations" / "layers.15.jsonl"
        last = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            last[row["latent"]["latent"]] = row
        return last

    first = run()
    assert len(first) == 2 and all(e["text"] is None for e in first.values())
    assert len(fake.requests) == 2
    fake.reply = lambda body: "[EXPLANATION]: the digits"
    assert all(e["text"] is None for e in run().values()) and len(fake.requests) == 2
    retried = run("--retry-failed")
    assert len(fake.requests) == 4  # asked again, not replayed from the cache
    assert [e["text"] for e in retried.values()] == ["the digits"] * 2


PING = """
import asyncio, logging, sys
from autointerp.cli import app
from autointerp.clients.base import GenParams
from autointerp.clients.remote import OpenAIClient

@app.command()
def ping(url: str) -> None:
    logging.getLogger("autointerp.ping").info("pinging")
    logging.getLogger("autointerp.ping").debug("details")
    client = OpenAIClient("fake-model", base_url=url)
    asyncio.run(client.complete([[{"role": "user", "content": "hi"}]] * 3, GenParams()))

app(sys.argv[1:])
"""


@pytest.mark.parametrize("flags", [[], ["-v"], ["-vv"]])
def test_the_default_log_has_no_line_per_http_request(fake, flags):
    """The CLI's log: autointerp's INFO lines by default, without httpx's line per request; `-v`
    adds those lines and autointerp's DEBUG lines; `-vv` the libraries' DEBUG lines too."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PING, *flags, "ping", fake.url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert "INFO autointerp.ping: pinging" in log
    assert len(fake.requests) == 3
    if not flags:
        assert "HTTP Request:" not in log and "details" not in log
    else:
        assert len(re.findall(r"INFO httpx\w*: HTTP Request: POST", log)) == 3
        assert "DEBUG autointerp.ping: details" in log
    assert ("DEBUG openai" in log) == (flags == ["-vv"])
