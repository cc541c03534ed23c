"""Per-latent result files: one JSON record per line, appended as latents finish.

A run killed mid-write leaves at most one torn last line; readers skip it and writers cut it off before
appending, so a resumed run continues at the first unfinished latent and writes nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)


def read_jsonl(path: Path, model: type[R]) -> Iterator[R]:
    """The records of a results file (none if it does not exist), skipping an unreadable line."""
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            try:
                yield model.model_validate_json(line)
            except ValueError:
                log.warning("ignoring an unreadable line in %s (interrupted write)", path)


def cut_torn_line(path: Path) -> None:
    """Drop a last line that has no newline (a write that was interrupted)."""
    if path.exists() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
