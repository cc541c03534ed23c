"""What the benchmarks and evaluations share: CPU time, package versions, results files."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("eval")


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process has used, CPU seconds this process has used)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system irq softirq steal
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def versions(dists: Iterable[str]) -> dict[str, str]:
    """Python's version and those of the installed distributions among `dists`."""
    out = {"python": platform.python_version()}
    for dist in dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def write_results(res: dict, folder: Path, name: str, render: Callable[[dict], str]) -> None:
    """`folder/<name>.json` (the results) and `folder/<name>.md` (`render(res)`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (folder / f"{name}.md").write_text(render(res))
    log.info("wrote %s and %s", folder / f"{name}.md", folder / f"{name}.json")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
