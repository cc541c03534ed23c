"""An on-disk response cache: a re-run of a finished stage costs no LLM calls.

The key is a hash of the whole request (backend, model, chat, parameters). Only successful completions
are stored, so a re-run retries the failures. SQLite keeps it safe to share between processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from autointerp.clients.base import Chat, Completion, GenParams, LLMClient


def request_key(backend: str, model: str, chat: Chat, params: GenParams) -> str:
    blob = json.dumps([backend, model, chat, params.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._db.commit()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return (
            None
            if row is None
            else Completion.model_validate_json(row[0]).model_copy(update={"from_cache": True})
        )

    def put(self, key: str, completion: Completion) -> None:
        if not completion.ok:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?)",
                (key, completion.model_dump_json()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


class CachedClient:
    """Wraps any client; answers repeated requests from the cache and sends only the misses."""

    def __init__(self, inner: LLMClient, cache: ResponseCache, backend: str):
        self.inner, self.cache, self.backend = inner, cache, backend
        self.model = inner.model

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        keys = [request_key(self.backend, self.model, c, params) for c in chats]
        out: list[Completion | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, c in enumerate(out) if c is None]
        if missing:
            fresh = await self.inner.complete([chats[i] for i in missing], params)
            for i, c in zip(missing, fresh, strict=True):
                self.cache.put(keys[i], c)
                out[i] = c
        return out  # type: ignore[return-value]
