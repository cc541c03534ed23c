"""The in-process llama.cpp backend, on the packaged SmolLM2 GGUF (the same file the transformers
backend converts)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from autointerp.clients import GenParams, is_local, make_client
from autointerp.config import ClientConfig
from autointerp.errors import AutointerpError

pytest.importorskip("llama_cpp")

SYSTEM = {"role": "system", "content": "You judge whether a text matches a description."}


def _chat(text: str, prefill: str | None = "[") -> list[dict[str, str]]:
    chat = [
        SYSTEM,
        {
            "role": "user",
            "content": f"Description: months of the year.\nText: {text}\nAnswer 1 or 0.",
        },
    ]
    return chat + ([{"role": "assistant", "content": prefill}] if prefill is not None else [])


@pytest.fixture(scope="module")
def client():
    return make_client(ClientConfig(backend="llamacpp", model="smollm2", threads=1, n_ctx=512))


def test_one_token_answers_carry_logprobs_and_reuse_the_shared_prefix(client):
    chats = [_chat("We met in March."), _chat("The cat sat on the mat."), _chat("In May.")]
    params = GenParams(max_tokens=1, logprobs=True, top_logprobs=5)
    out = asyncio.run(client.complete(chats, params))
    assert [c.error for c in out] == [None] * 3
    for c in out:
        assert c.completion_tokens == 1 and len(c.logprobs) == 1
        top = c.logprobs[0].top
        assert len(top) == 5 and top[0][1] >= top[-1][1]
        assert top[0][0] == c.logprobs[0].token == c.text
        assert np.exp([lp for _, lp in top]).sum() <= 1.0 + 1e-6
    # The three prompts share the instructions: at most one of them computes them.
    shared = sum(c.cached_tokens > 20 for c in out)
    assert shared >= 2
    again = asyncio.run(client.complete(chats, params))
    assert [c.text for c in again] == [c.text for c in out]  # greedy and deterministic
    assert [c.logprobs[0].logprob for c in again] == pytest.approx(
        [c.logprobs[0].logprob for c in out], abs=1e-4
    )


def test_a_prefilled_answer_is_continued_not_closed(client):
    inner = client
    text = inner.render(_chat("In May.", prefill="[EXPLANATION]:"))
    assert text.endswith("[EXPLANATION]:")
    assert text.count("[EXPLANATION]:") == 1
    open_answer = inner.render(_chat("In May.", prefill=None))
    assert open_answer.rstrip().endswith("assistant")


def test_generation_stops_at_max_tokens_and_stop_strings(client):
    chat = _chat("Write the months of spring.", prefill=None)
    out = asyncio.run(client.complete([chat], GenParams(max_tokens=6, logprobs=True)))[0]
    assert out.ok and 1 <= out.completion_tokens <= 6
    assert len(out.logprobs) == out.completion_tokens
    stopped = asyncio.run(client.complete([chat], GenParams(max_tokens=40, stop=(" ",))))[0]
    assert stopped.ok and " " not in stopped.text.strip()


def test_sampling_is_seeded_per_prompt_whatever_the_batch(client):
    """At temperature > 0 a prompt's answer depends on the client's seed and the prompt only: the
    same alone, in a batch, in another order, and from a fresh client."""
    chats = [_chat(f"Name a {x}.", prefill=None) for x in ("month", "colour", "fruit")]
    params = GenParams(max_tokens=12, temperature=1.5)

    def texts(c, batch) -> list[str]:
        return [x.text for x in asyncio.run(c.complete(batch, params))]

    batch = texts(client, chats)
    assert [texts(client, [c])[0] for c in chats] == batch
    assert texts(client, chats[::-1]) == batch[::-1]
    fresh = make_client(ClientConfig(backend="llamacpp", model="smollm2", threads=1, n_ctx=512))
    assert texts(fresh, chats) == batch
    greedy = asyncio.run(client.complete(chats, GenParams(max_tokens=12)))
    assert [x.text for x in greedy] != batch  # it samples


def test_a_recurrent_model_computes_every_prompt_from_the_start(client, monkeypatch):
    """llama.cpp cannot cut a recurrent (or hybrid) model's state back to a shared prefix: such a
    model is reset before each prompt (flagged here on the packaged model), with the same answers."""
    chats = [_chat("We met in March."), _chat("In May.")]
    params = GenParams(max_tokens=1, logprobs=True, top_logprobs=3)
    reused = asyncio.run(client.complete(chats, params))
    assert max(c.cached_tokens for c in reused) > 20
    monkeypatch.setattr(client.llm, "_is_recurrent", True)
    fresh = asyncio.run(client.complete(chats, params))
    assert [c.cached_tokens for c in fresh] == [0, 0]
    assert [c.text for c in fresh] == [c.text for c in reused]
    assert [c.logprobs[0].logprob for c in fresh] == pytest.approx(
        [c.logprobs[0].logprob for c in reused], abs=1e-3
    )


def test_a_prompt_longer_than_the_context_fails_alone(client):
    long = _chat("word " * 600)
    out = asyncio.run(client.complete([long, _chat("In May.")], GenParams(max_tokens=1)))
    assert out[0].text is None and "exceeds the llama.cpp context of 512" in out[0].error
    assert out[1].ok


def test_a_missing_file_and_an_unknown_name_are_clear_errors(tmp_path):
    with pytest.raises(AutointerpError, match="model file not found"):
        make_client(ClientConfig(backend="llamacpp", model=str(tmp_path / "x.gguf")))
    with pytest.raises(AutointerpError):
        make_client(ClientConfig(backend="llamacpp", model="no-such-model"))


def test_it_counts_as_a_local_judge_and_its_cache_key_names_the_file(client, tmp_path):
    assert is_local(client)
    cached = make_client(
        ClientConfig(backend="llamacpp", model="smollm2", threads=1, n_ctx=512),
        tmp_path / "cache.sqlite",
        client,
    )
    assert is_local(cached) and cached.server.startswith("gguf=")
    first = asyncio.run(cached.complete([_chat("In May.")], GenParams(max_tokens=1)))[0]
    second = asyncio.run(cached.complete([_chat("In May.")], GenParams(max_tokens=1)))[0]
    assert not first.from_cache and second.from_cache and second.text == first.text


def test_a_process_holding_a_client_exits_without_errors(tmp_path):
    """llama-cpp-python frees its model in __del__, which fails at interpreter exit once module
    globals are gone; the client frees it before that."""
    import subprocess
    import sys

    script = (
        "from autointerp.clients import make_client\n"
        "from autointerp.config import ClientConfig\n"
        "c = make_client(ClientConfig(backend='llamacpp', model='smollm2', threads=1, n_ctx=256))\n"
        "print('loaded')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "loaded" in r.stdout
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_run_whose_llamacpp_model_is_missing_fails_before_any_work(tmp_path):
    from autointerp.pipeline import RunConfig, run_job

    for where in ("client", "score_client"):
        cfg = RunConfig.model_validate(
            {where: {"backend": "llamacpp", "model": str(tmp_path / "missing.gguf")}}
        )
        with pytest.raises(AutointerpError, match="missing.gguf"):
            run_job(cfg, tmp_path / where, progress=False)
        assert not (tmp_path / where / "cache").exists()
    # a token-stats explainer and LLM-free scorers never start the client
    idle = RunConfig.model_validate(
        {
            "client": {"backend": "llamacpp", "model": str(tmp_path / "missing.gguf")},
            "explain": {"explainer": "token-stats"},
            "score": {"scorers": ["embedding"]},
        }
    )
    from autointerp.pipeline import check_clients

    check_clients(idle)


def test_threads_follow_the_cores_idle_now_not_the_minutes_average(monkeypatch):
    """A run's own cache stage raises the one-minute load average right before its judge starts;
    the thread count follows the idle share of the CPUs measured now."""
    import os

    from autointerp.clients import llamacpp

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # just busy, quiet now
    samples = iter([(100.0, 200.0), (159.0, 260.0)])  # 59 of 60 jiffies idle
    monkeypatch.setattr(llamacpp, "_cpu_times", lambda: next(samples))
    assert llamacpp.default_threads() == 2
    samples = iter([(100.0, 200.0), (130.0, 260.0)])  # half idle: one core busy
    monkeypatch.setattr(llamacpp, "_cpu_times", lambda: next(samples))
    assert llamacpp.default_threads() == 1
    samples = iter([(100.0, 200.0), (100.0, 260.0)])  # all busy: still one
    monkeypatch.setattr(llamacpp, "_cpu_times", lambda: next(samples))
    assert llamacpp.default_threads() == 1
    monkeypatch.setattr(llamacpp, "_cpu_times", lambda: None)  # no /proc/stat: load average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert llamacpp.default_threads() == 2
    assert llamacpp.idle_cores(0.01) is None
