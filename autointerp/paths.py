"""Where autointerp keeps files it derives (converted models), and how it fingerprints inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed whole
_SAMPLE = 16 << 20  # larger files: size + first and last 16 MiB


def cache_home() -> Path:
    """Folder for derived artefacts; `AUTOINTERP_HOME` overrides `~/.cache/autointerp`."""
    root = os.environ.get("AUTOINTERP_HOME") or Path.home() / ".cache" / "autointerp"
    return Path(root)


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (sampled for files over 1 GiB), as a short hex string."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_SAMPLE))
            f.seek(size - _SAMPLE)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()[:16]


def tree_fingerprint(paths: list[Path]) -> str:
    """One fingerprint for several files (order-independent by name)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(file_fingerprint(p).encode())
    return h.hexdigest()[:16]


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
