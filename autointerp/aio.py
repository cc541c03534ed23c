"""`run_sync`: run a coroutine to its end from synchronous code, also where an event loop is
already running in this thread (a Jupyter notebook, an async web handler), where `asyncio.run`
raises "cannot be called from a running event loop"."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`; inside a running loop, the same in a worker thread with its own loop,
    this thread waiting for it (the running loop is blocked meanwhile, as any synchronous call
    blocks it; use the `a...` functions with `await` to keep it free)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="autointerp-run-sync") as pool:
        return pool.submit(asyncio.run, coro).result()
