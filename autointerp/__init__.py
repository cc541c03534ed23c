"""autointerp: explain and score the latents of sparse coders with LLMs.

Stages (each a module and a CLI command): cache -> sample -> explain -> score -> report/export.
As a library (`autointerp.api`): `run`, `cache`, `report`, `export` on run folders; `explain`,
`score` (and `aexplain`, `ascore`) on examples in memory; `make_client`; the stages one at a time
on folders in `autointerp.stages`.
"""

from __future__ import annotations

from importlib import import_module

from autointerp.errors import AutointerpError

__version__ = "0.1.0"

# Read on first use: `import autointerp` stays light (no torch, no pandas).
_API = ("run", "run_config", "aexplain", "ascore", "make_client", "to_examples")
# Stage modules that are also the API call of their name (`autointerp._callable`).
_CALLABLE = ("cache", "report", "export", "explain", "score")
__all__ = ["AutointerpError", "__version__", *_API, *_CALLABLE]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module("autointerp.api"), name)
    if name in _CALLABLE:
        return import_module(f"autointerp.{name}")
    raise AttributeError(f"module 'autointerp' has no attribute {name!r}")
