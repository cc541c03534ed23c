"""Locks: one process per output folder, one forward pass at a time per loaded model.

- `folder_lock(path)`: an exclusive `flock` on `path/.lock`, which holds the owner's PID. A second
  `autointerp run` (or `cache`) on the same folder is refused at once, naming that PID, instead of
  writing every line twice. The kernel releases the lock when its process exits, also on a crash or
  a kill, so a stale `.lock` file never blocks anyone.
- `model_lock(model)`: a re-entrant thread lock per model object. Scorers that run a shared model
  (surprisal, intervention, the cache's hookpoint reads) take it around their forward passes and
  around registering and using a hook, so a steering hook never leaks into another scorer's pass.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autointerp.errors import RunError

LOCK_FILE = ".lock"

_model_locks: weakref.WeakKeyDictionary[object, threading.RLock] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def model_lock(model: object) -> threading.RLock:
    """The lock of one model object (the same lock for every holder of that object)."""
    with _guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid else "a process that has not written its PID yet"


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold `folder/.lock` for the duration of the block (the folder is created if needed);
    RunError naming the holder's PID when another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    f = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"{what} {folder} is in use by another autointerp process ({_holder(path)}); "
                "wait for it to finish, or stop it, then run again"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield folder
    finally:
        f.close()  # closing the file releases the lock
