"""A client wrapper that joins the requests concurrent tasks make at the same moment into one call.

The score stage runs its scorers at once (`asyncio.gather`). Detection and fuzzing in the shared
layout (`autointerp.score.classifier`) send prompts that share everything up to the question; a
prefix-caching backend gains from that only when it sees them together: llama.cpp keeps one KV cache
and runs the prompts of a call in sorted order, so that prompts with a common prefix follow each
other. `CoalescingClient.complete` waits for the other tasks that are ready to run to make their
requests, then sends every request made with the same generation parameters as one call to the inner
client and hands each caller its own answers, in its order. A failed call fails every request in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autointerp.clients.base import Chat, Completion, GenParams, LLMClient

_TURNS = 3
"""Turns of the event loop to wait for other tasks' requests (a task reaches its request after
synchronous work: rendering its examples and prompts)."""


class CoalescingClient:
    def __init__(self, inner: LLMClient):
        self.inner = inner
        self.model = inner.model
        self._pending: dict[str, tuple[GenParams, list[tuple[list[Chat], asyncio.Future]]]] = {}

    def __getattr__(self, name: str):  # the inner client's other attributes (usage, backend ...)
        return getattr(self.inner, name)

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        key = params.model_dump_json()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        if key not in self._pending:
            self._pending[key] = (params, [])
            asyncio.get_running_loop().create_task(self._flush(key))
        self._pending[key][1].append((list(chats), future))
        return await future

    async def _flush(self, key: str) -> None:
        for _ in range(_TURNS):
            await asyncio.sleep(0)
        params, requests = self._pending.pop(key)
        joined = [c for chats, _ in requests for c in chats]
        try:
            answers = await self.inner.complete(joined, params)
        except BaseException as e:  # every caller sees the failure
            for _, future in requests:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        at = 0
        for chats, future in requests:
            if not future.done():
                future.set_result(list(answers[at : at + len(chats)]))
            at += len(chats)
