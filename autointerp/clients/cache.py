"""An on-disk response cache: a re-run of a finished stage costs no LLM calls.

The key is a hash of the whole request: the backend, the model, where it is served (the server's URL,
or the local dtype), the chat and every generation parameter. Only completions that succeeded at the
transport level are stored, so a re-run retries the failed requests; an answer that arrived but could
not be parsed is stored too, and `--retry-failed` asks again by bypassing the cache (`bypass_cache`).
SQLite keeps it safe to share between processes. A cache that cannot be written (a full disk) costs
nothing: the fresh answer is used, one warning names the file and its free space, and the cache is no
longer written for the rest of the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

from autointerp.clients.base import Chat, Completion, GenParams, LLMClient

log = logging.getLogger(__name__)

_BYPASS: ContextVar[bool] = ContextVar("autointerp_bypass_response_cache", default=False)


@contextlib.contextmanager
def bypass_cache() -> Iterator[None]:
    """Within this block (and the tasks it starts), cached answers are not read: every request goes
    to the LLM and its fresh answer replaces the cached one. `--retry-failed` uses it."""
    token = _BYPASS.set(True)
    try:
        yield
    finally:
        _BYPASS.reset(token)


def request_key(
    backend: str, model: str, chat: Chat, params: GenParams, server: str | None = None
) -> str:
    blob = json.dumps(
        [backend, model, server, chat, params.model_dump(mode="json")], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        return "free space unknown"


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.writable = True
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as e:
            self._give_up(e, "cannot be opened")

    def _give_up(self, e: Exception, what: str) -> None:
        """Stop writing (and, if it never opened, reading) the cache after one warning."""
        self.writable = False
        log.warning(
            "the LLM response cache %s %s (%s; %s): answers are used as they come but no longer "
            "cached in this run",
            self.path,
            what,
            e,
            _free_space(self.path),
        )

    def get(self, key: str) -> Completion | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return (
            None
            if row is None
            else Completion.model_validate_json(row[0]).model_copy(update={"from_cache": True})
        )

    def put(self, key: str, completion: Completion) -> None:
        if not completion.ok or not self.writable or self._db is None:
            return
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?)",
                    (key, completion.model_dump_json()),
                )
                self._db.commit()
            except (sqlite3.Error, OSError) as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                self._give_up(e, "cannot be written")

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


class CachedClient:
    """Wraps any client; answers repeated requests from the cache and sends only the misses.

    `server` is where the model is served (the base URL, or the local dtype): the same model behind
    another server may answer differently, so it is part of the key."""

    def __init__(
        self, inner: LLMClient, cache: ResponseCache, backend: str, server: str | None = None
    ):
        self.inner, self.cache, self.backend, self.server = inner, cache, backend, server
        self.model = inner.model

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        keys = [request_key(self.backend, self.model, c, params, self.server) for c in chats]
        bypass = _BYPASS.get()
        out: list[Completion | None] = [None if bypass else self.cache.get(k) for k in keys]
        missing = [i for i, c in enumerate(out) if c is None]
        if missing:
            fresh = await self.inner.complete([chats[i] for i in missing], params)
            for i, c in zip(missing, fresh, strict=True):
                self.cache.put(keys[i], c)
                out[i] = c
        return out  # type: ignore[return-value]
