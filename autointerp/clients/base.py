"""The batch-first LLM client interface shared by every backend.

A client takes a batch of chats and returns one `Completion` per chat, in order. A request that fails
after its retries comes back as a `Completion` with `error` set (never as an empty answer), so callers
record it as a failure; only problems that make every request fail (unknown model, server down at
start-up) raise `ClientError`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Chat = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": "..."}]


class GenParams(BaseModel):
    """Generation parameters of one request (immutable: each call builds its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    stop: tuple[str, ...] = ()


class TokenLogprob(BaseModel):
    model_config = ConfigDict(frozen=True)
    token: str
    logprob: float
    top: list[tuple[str, float]] = []


class Completion(BaseModel):
    model_config = ConfigDict(frozen=True)
    text: str | None
    """None when the request failed (see `error`)."""
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the backend's prefix cache."""
    completion_tokens: int = 0
    error: str | None = None
    from_cache: bool = False
    """Served from autointerp's on-disk response cache (cost no LLM call)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class LLMClient(Protocol):
    model: str

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]: ...


class BlockingClient:
    """Base of backends whose generation call blocks (local models): `complete` runs `_complete` in
    a worker thread, one call at a time across all local clients of the process (they share the
    machine), so the event loop stays free."""

    _lock = threading.Lock()

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        return await asyncio.to_thread(self._locked, list(chats), params)

    def _locked(self, chats: list[Chat], params: GenParams) -> list[Completion]:
        with self._lock:
            return self._complete(chats, params)

    def _complete(self, chats: list[Chat], params: GenParams) -> list[Completion]:
        raise NotImplementedError


class Usage(BaseModel):
    """Running totals of one client's work."""

    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    def add(self, c: Completion) -> None:
        if c.from_cache:
            self.cache_hits += 1
            return
        self.calls += 1
        self.failures += 0 if c.ok else 1
        self.prompt_tokens += c.prompt_tokens
        self.cached_tokens += c.cached_tokens
        self.completion_tokens += c.completion_tokens
