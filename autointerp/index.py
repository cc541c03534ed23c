"""A latent-major index of a cache: each latent's nonzeros in one contiguous run, so that reading a
latent costs two slices, however many shards the cache has (a shard holds at most 65,536 tokens).

Layout, beside the shards:
```
index/<coder>/offsets.npy   (n_latents + 1,) int64: latent l's nonzeros are [off[l], off[l+1])
index/<coder>/tokens.npy    global token index (seq * ctx_len + position), ascending per latent;
                            uint32 when the cache holds fewer than 2**32 tokens, else int64
index/<coder>/values.npy    activation values, in the shards' dtype
index/<coder>.json          format version, tokens, shards, latents and nonzeros it was built from
```
A nonzero costs 6 bytes here (4 + 2 with float16 values), on top of its 4 in the shards.

`build_cache` writes the index of every coder when the cache completes; a cache made before then
gets it on first use by sampling (`ensure_index`). The build streams: it reads the shards once per
group of latents whose nonzeros fit a fixed budget, fills that group's part of the index in memory and
appends it to the files, so memory stays bounded whatever the cache size and the files are written
in order. It writes to `index/<coder>.tmp/`, renames that folder into place, then writes the JSON
file, which marks a finished index: a killed build leaves no index that looks finished, and the next
build deletes what it left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from autointerp.errors import CacheError, RunError
from autointerp.locks import folder_lock

if TYPE_CHECKING:
    from autointerp.cache import ActivationCache

log = logging.getLogger(__name__)
INDEX_VERSION = 1
INDEX_DIR = "index"
INDEX_FILES = ("offsets", "tokens", "values")
BUDGET = 1 << 23
"""Nonzeros filled in memory at a time (~100 MiB with uint32 tokens and their positions)."""


def _paths(cache: ActivationCache, coder: str) -> tuple[Path, Path, Path]:
    """(final folder, temporary folder, JSON file) of one coder's index."""
    root = cache.root / INDEX_DIR
    return root / coder, root / f"{coder}.tmp", root / f"{coder}.json"


def _identity(cache: ActivationCache, coder: str) -> dict:
    """What an index must have been built from to serve this cache."""
    return {
        "version": INDEX_VERSION,
        "n_tokens": cache.n_tokens,
        "n_shards": len(cache.shard_names),
        "n_latents": cache.coders[coder]["n_latents"],
    }


def open_index(
    cache: ActivationCache, coder: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(offsets, tokens, values), memory-mapped, or None when the cache has no finished index of
    this coder that matches it (never built, killed mid-build, or the cache changed since)."""
    final, _, meta_path = _paths(cache, coder)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if {k: meta.get(k) for k in _identity(cache, coder)} != _identity(cache, coder):
        return None
    nonzeros = ((cache.manifest.get("summary") or {}).get(coder) or {}).get("nonzeros")
    if nonzeros is not None and meta.get("nonzeros") != nonzeros:
        return None
    try:
        arrays = tuple(np.load(final / f"{k}.npy", mmap_mode="r") for k in INDEX_FILES)
    except (OSError, ValueError) as e:  # a file deleted or cut short after the build
        log.warning(
            "the latent index of %r in %s is unreadable (%s); not using it", coder, cache.root, e
        )
        return None
    off, tok, val = arrays
    if len(off) != meta["n_latents"] + 1 or len(tok) != len(val) or len(tok) != int(off[-1]):
        return None
    return arrays  # type: ignore[return-value]


def ensure_index(cache: ActivationCache, coder: str, progress: bool = True) -> bool:
    """Make sure `coder` has a finished index in the cache, building it where there is none (a cache
    made before indexes existed). False when it cannot be built here (a read-only cache folder, or
    another process holds the folder): reading then goes through the shards, with the same results."""
    if open_index(cache, coder) is not None:
        return True
    if not os.access(cache.root, os.W_OK):
        log.warning(
            "the cache in %s has no latent index for %r and its folder is read-only: reading the "
            "shards instead (slower with many shards; the results are the same)",
            cache.root,
            coder,
        )
        return False
    log.info(
        "the cache in %s has no latent index for %r (made before indexes existed, or its build was "
        "interrupted): building it once",
        cache.root,
        coder,
    )
    try:
        with folder_lock(cache.root, "cache folder"):
            if open_index(cache, coder) is None:  # another process may have built it meanwhile
                build_index(cache, coder, progress)
    except (RunError, OSError) as e:
        log.warning(
            "could not build the latent index of %r in %s (%s): reading the shards instead",
            coder,
            cache.root,
            e,
        )
        return False
    return True


def build_index(
    cache: ActivationCache, coder: str, progress: bool = True, budget: int = BUDGET
) -> Path:
    """Write the index of `coder` (replacing any); the caller holds the cache folder's lock."""
    final, tmp, meta_path = _paths(cache, coder)
    meta_path.unlink(missing_ok=True)  # first: an index without its JSON file is never used
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        nonzeros = _write(cache, coder, tmp, progress, budget)
        os.rename(tmp, final)
        meta = {**_identity(cache, coder), "nonzeros": nonzeros}
        part = meta_path.with_name(meta_path.name + ".tmp")
        part.write_text(json.dumps(meta))
        os.replace(part, meta_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _counts(cache: ActivationCache, coder: str) -> np.ndarray:
    """Nonzeros per latent: from the statistics when they are there, else from the shards."""
    path = cache.root / "stats" / f"{coder}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["count"].astype(np.int64)
    count = np.zeros(cache.coders[coder]["n_latents"], dtype=np.int64)
    for shard in cache.shard_names:
        count += np.diff(cache.shard_arrays(shard, coder)[0].astype(np.int64))
    return count


def _groups(offsets: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Latent ranges [a, b) of at most `budget` nonzeros each (one latent alone may hold more)."""
    out, a, n = [], 0, len(offsets) - 1
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + budget, side="right")) - 1
        b = min(max(b, a + 1), n)
        out.append((a, b))
        a = b
    return out


def _npy(path: Path, dtype: np.dtype, n: int):
    """An .npy file of shape (n,) opened for appending its data in order."""
    f = open(path, "wb")  # noqa: SIM115 (closed by the caller)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def _write(cache: ActivationCache, coder: str, folder: Path, progress: bool, budget: int) -> int:
    shards = cache.shard_names
    offsets = np.zeros(cache.coders[coder]["n_latents"] + 1, dtype=np.int64)
    np.cumsum(_counts(cache, coder), out=offsets[1:])
    nonzeros = int(offsets[-1])
    tok_dtype = np.dtype(np.uint32 if cache.n_tokens < 1 << 32 else np.int64)
    val_dtype = np.result_type(np.float16, *(cache.shard_arrays(s, coder)[2].dtype for s in shards))
    shard_tokens = cache.shard_seqs * cache.ctx_len
    groups = _groups(offsets, budget)
    np.save(folder / "offsets.npy", offsets)
    desc = f"index {coder}" + (f" ({len(groups)} passes)" if len(groups) > 1 else "")
    bar = tqdm(total=len(shards) * len(groups), desc=desc, unit="shard", disable=not progress)
    files = [
        _npy(folder / "tokens.npy", tok_dtype, nonzeros),
        _npy(folder / "values.npy", val_dtype, nonzeros),
    ]
    try:
        for a, b in groups:
            start = offsets[a]
            tok = np.empty(offsets[b] - start, dtype=tok_dtype)
            val = np.empty(offsets[b] - start, dtype=val_dtype)
            fill = offsets[a:b] - start  # where each latent's next nonzero goes in this group
            for shard in shards:
                off, pos, vals = cache.shard_arrays(shard, coder)
                o = off[a : b + 1].astype(np.int64)
                lo, hi = int(o[0]), int(o[-1])
                bar.update(1)
                if hi == lo:
                    continue
                counts = np.diff(o)
                if (fill + counts > offsets[a + 1 : b + 1] - start).any():
                    raise CacheError(
                        f"shard {shard} of {cache.root} holds more nonzeros than its statistics count"
                    )
                # a latent's segment of this shard follows its segments of the earlier shards
                dest = np.repeat(fill - (o[:-1] - lo), counts) + np.arange(hi - lo)
                tok[dest] = pos[lo:hi].astype(np.int64) + int(shard) * shard_tokens
                val[dest] = vals[lo:hi]
                fill += counts
            if not np.array_equal(fill, offsets[a + 1 : b + 1] - start):
                raise CacheError(
                    f"the shards of {cache.root} hold fewer nonzeros for {coder!r} than its statistics "
                    "count: the cache is damaged; build it anew in an empty folder"
                )
            tok.tofile(files[0])
            val.tofile(files[1])
        for f in files:
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in files:
            f.close()
        bar.close()
    return nonzeros
