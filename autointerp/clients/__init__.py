"""LLM clients behind one batch-first interface, chosen by name in the config.

Backends are imported only when chosen: `transformers` (local), `llamacpp` (a local GGUF model run
by llama.cpp in this process), `openai` (any OpenAI-compatible server), `vllm` (vLLM's offline
engine).
"""

from __future__ import annotations

from pathlib import Path

from autointerp.clients.base import Chat, Completion, GenParams, LLMClient, TokenLogprob, Usage
from autointerp.clients.cache import CachedClient, ResponseCache, bypass_cache
from autointerp.config import ClientConfig

__all__ = [
    "Chat",
    "Completion",
    "GenParams",
    "LLMClient",
    "TokenLogprob",
    "Usage",
    "bypass_cache",
    "make_client",
]


def _transformers(cfg: ClientConfig) -> LLMClient:
    from autointerp.clients.local import TransformersClient

    return TransformersClient(
        cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size, device=cfg.device
    )


def _llamacpp(cfg: ClientConfig) -> LLMClient:
    from autointerp.clients.llamacpp import LlamaCppClient

    return LlamaCppClient(cfg.model, n_ctx=cfg.n_ctx, threads=cfg.threads)


def _openai(cfg: ClientConfig) -> LLMClient:
    from autointerp.clients.remote import OpenAIClient

    return OpenAIClient(
        cfg.model,
        base_url=cfg.base_url,
        api_key=cfg.api_key,
        api_key_env=cfg.api_key_env,
        max_concurrency=cfg.max_concurrency,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
    )


def _vllm(cfg: ClientConfig) -> LLMClient:
    from autointerp.clients.vllm import VLLMClient

    return VLLMClient(
        cfg.model,
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        enforce_eager=cfg.enforce_eager,
        kv_cache_memory_bytes=cfg.kv_cache_memory_bytes,
    )


BACKENDS = {
    "transformers": _transformers,
    "llamacpp": _llamacpp,
    "openai": _openai,
    "vllm": _vllm,
}
LOCAL_BACKENDS = {"TransformersClient", "LlamaCppClient"}
"""Clients computing on this machine: small models, one example per judge prompt, prefilled answers."""


def is_local(client: object) -> bool:
    """Whether a client (or the client inside its wrappers: a response cache, a coalescing client)
    is one of the local backends."""
    while type(client).__name__ not in LOCAL_BACKENDS and hasattr(client, "inner"):
        client = client.inner
    return type(client).__name__ in LOCAL_BACKENDS


def make_client(
    cfg: ClientConfig, response_cache: str | Path | None = None, inner: LLMClient | None = None
) -> LLMClient:
    """Build the configured client (or reuse `inner`, one already built from the same config),
    wrapped in the on-disk response cache when a path is given."""
    client = inner if inner is not None else BACKENDS[cfg.backend](cfg)
    if response_cache is not None and cfg.response_cache:
        if cfg.backend == "openai":
            server = cfg.base_url
        elif (
            cfg.backend == "transformers"
        ):  # the dtype in use here, not `auto`: answers differ by it
            from autointerp.subject import resolved_dtype

            server = f"dtype={resolved_dtype(cfg.dtype, cfg.device)}"
        elif cfg.backend == "llamacpp":  # the file's bytes, not its name, decide the answers
            from autointerp.clients.llamacpp import gguf_path
            from autointerp.paths import file_fingerprint

            server = f"gguf={file_fingerprint(gguf_path(cfg.model))}"
        else:
            server = f"dtype={cfg.dtype}"
        return CachedClient(client, ResponseCache(response_cache), cfg.backend, server)
    return client
