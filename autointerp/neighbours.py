"""Each latent's nearest other latents, whose windows give the sampler its "similar" negatives.

Usage: `neighbours(cache, coder, k)` -> (n_latents, k) array, row i the k latents nearest to latent
i, nearest first; `by="cooccurrence"` ranks latents by how often they fire in the same sequences.

Two ways to measure nearness:
- decoder: cosine of the unit-normalised decoder rows. Exact search multiplies tiles of W W^T (each
  tile at most 4,096 x 4,096 floats, 64 MiB), and keeps a running top-k per row; W W^T is symmetric,
  so only the tiles on and above the diagonal are computed and each serves the rows of both its
  sides, halving the work. It is O(n^2 d): ~42 s for 65,536 x 576 on two idle cores (83 CPU-s), ~3 h
  for 1M latents. Above `EXACT_MAX_LATENTS` an inverted-file index of FAISS (`pip install
  faiss-cpu`, the `scale` extra) searches a few of its lists per latent instead; without FAISS the
  exact search runs with a warning that says how long it will take. A coder with no config in the
  cache, or no decoder (neurons), falls back to co-occurrence. The random-coder baseline is compared
  through its own (random) decoder.
- co-occurrence: Jaccard |A ∩ B| / |A ∪ B| of the sets of sequences two latents fire in, over every
  sequence of the cache, from a sparse binary (sequence x latent) matrix; X^T X is multiplied and
  made dense one block of latents at a time, so memory is bounded by the block, never n x n.

A latent is never its own neighbour, not even when two decoder rows are identical. Co-occurrence
ties (common: Jaccard 0 for rare latents) go to the lower latent index.

The answer is computed once per coder and stored beside the cache, in
`CACHE/neighbours/<coder>.<by>.k<k>.npy` with a JSON record of what it was computed from (the
coder's fingerprint from cache.json, n_latents, the method, and for co-occurrence the cache's
n_tokens); every later `sample` call and every Ray worker reads it, a stored answer for a larger k
serves a smaller one, and one whose record no longer matches the cache is computed again. A cache
folder that cannot be written to is served from memory, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from autointerp.cache import ActivationCache
from autointerp.errors import ConfigError

log = logging.getLogger(__name__)

By = Literal["decoder", "cooccurrence"]

TILE = 4096
"""Rows (and columns) of one tile of W W^T: 4,096^2 float32 is 64 MiB, and the transposed top-k of a
tile needs as much again, so the search stays well under 256 MiB beside W itself."""
EXACT_MAX_LATENTS = 131_072
"""Exact decoder search up to this many latents (~40 s at 65,536 on two cores, O(n^2): ~3 min here);
above it FAISS when installed."""
EXACT_PAIRS_PER_S = 5e7
"""Measured pace of the exact search on two idle cores, in latent pairs per second (n^2 / 2 pairs:
83 CPU-s, ~42 s, at 65,536 x 576), for the time the no-FAISS warning names."""
COOC_BLOCK_ENTRIES = 1 << 23
"""Latent pairs per co-occurrence block (block x n_latents): 64 MiB per dense float64 array of the
block, a few of which are alive at once."""

_warned: set[str] = set()
_in_memory: dict[tuple, np.ndarray] = {}  # answers for caches whose folder is not writable


def neighbours(
    cache: ActivationCache, coder: str, k: int, by: By = "decoder", progress: bool = True
) -> np.ndarray:
    """(n_latents, k) nearest other latents of `coder`, nearest first (k is capped at
    n_latents - 1), read from the cache's neighbours folder when stored there, else computed and
    stored."""
    if by not in ("decoder", "cooccurrence"):
        raise ConfigError(f"neighbours by {by!r}: use 'decoder' or 'cooccurrence'")
    if coder not in cache.coders:
        raise ConfigError(f"no coder {coder!r} in {cache.root} (has: {', '.join(cache.coders)})")
    n = int(cache.coders[coder]["n_latents"])
    k = max(0, min(int(k), n - 1))
    folder = cache.root / "neighbours"
    stored = _stored(cache, folder, coder, by, k, n)
    if stored is not None:
        return stored
    key = (str(cache.root), coder, by, _fingerprint(cache, coder), n, cache.n_tokens)
    if key in _in_memory and _in_memory[key].shape[1] >= k:
        return _in_memory[key][:, :k].copy()
    result, record = compute(cache, coder, k, by, progress)
    record.update(
        coder=coder, requested=by, k=k, n_latents=n, fingerprint=_fingerprint(cache, coder)
    )
    if not _store(folder, f"{coder}.{by}.k{k}", result, record):
        _in_memory[key] = result
    return result


def _fingerprint(cache: ActivationCache, coder: str) -> str | None:
    return ((cache.manifest.get("fingerprints") or {}).get("coders") or {}).get(coder)


def _matches(record: dict, cache: ActivationCache, coder: str, by: str, n: int) -> bool:
    """A stored answer still describes this cache's coder (for co-occurrence: these tokens)."""
    same = (
        record.get("requested") == by
        and record.get("n_latents") == n
        and record.get("fingerprint") == _fingerprint(cache, coder)
    )
    if record.get("by") == "cooccurrence":
        same = same and record.get("n_tokens") == cache.n_tokens
    return same


def _stored(
    cache: ActivationCache, folder: Path, coder: str, by: str, k: int, n: int
) -> np.ndarray | None:
    """The stored answer with the smallest k' >= k whose record matches, sliced to k columns."""
    if not folder.is_dir():
        return None
    prefix = f"{coder}.{by}.k"
    found = []
    for path in folder.glob(f"{prefix}*.json"):
        digits = path.name[len(prefix) : -len(".json")]
        if digits.isdigit() and int(digits) >= k:
            found.append((int(digits), path))
    for stored_k, path in sorted(found):
        try:
            record = json.loads(path.read_text())
            if not _matches(record, cache, coder, by, n):
                log.info("%s was computed from another coder or cache: computing again", path.name)
                continue
            array = np.load(path.with_suffix(".npy"))
        except (OSError, ValueError) as e:  # a half-copied or damaged file: compute again
            log.warning("stored neighbours %s unreadable (%s): computing again", path.name, e)
            continue
        if array.shape != (n, stored_k):
            continue
        log.info("neighbours of %s read from %s", coder, path.with_suffix(".npy"))
        return np.ascontiguousarray(array[:, :k])
    return None


def _store(folder: Path, stem: str, result: np.ndarray, record: dict) -> bool:
    """Write the answer and its record, each under a temporary name renamed into place, the record
    last (removed first), so that a reader never pairs a record with another answer. False when the
    folder cannot be written to (a read-only cache)."""
    npy, meta = folder / f"{stem}.npy", folder / f"{stem}.json"
    tmp = f".{os.getpid()}.tmp"
    try:
        folder.mkdir(exist_ok=True)
        meta.unlink(missing_ok=True)
        with open(npy.with_name(npy.name + tmp), "wb") as f:
            np.save(f, result)
        os.replace(npy.with_name(npy.name + tmp), npy)
        meta.with_name(meta.name + tmp).write_text(json.dumps(record, indent=1))
        os.replace(meta.with_name(meta.name + tmp), meta)
        return True
    except OSError as e:
        for partial in (npy.with_name(npy.name + tmp), meta.with_name(meta.name + tmp)):
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass  # the folder itself could not be made
        if str(folder) not in _warned:
            _warned.add(str(folder))
            log.warning(
                "cannot store neighbours in %s (%s): they are kept in memory and computed again "
                "by every new process",
                folder,
                e.strerror or e,
            )
        return False


def compute(
    cache: ActivationCache, coder: str, k: int, by: By = "decoder", progress: bool = True
) -> tuple[np.ndarray, dict]:
    """The neighbours and a record of how they were found ({"by", "method"[, "n_tokens"]})."""
    n = int(cache.coders[coder]["n_latents"])
    bar = tqdm(total=n, desc=f"neighbours {coder}", unit="latent", disable=not progress)
    with bar:
        if by == "decoder":
            W = _decoder(cache, coder)
            if W is not None:
                found, method = decoder_neighbours(W, k, bar=bar, owned=True)
                return _index_dtype(found, n), {"by": "decoder", "method": method}
        found = cooccurrence_neighbours(cache, coder, k, bar=bar)
        record = {"by": "cooccurrence", "method": "exact", "n_tokens": cache.n_tokens}
        return _index_dtype(found, n), record


def _index_dtype(found: np.ndarray, n: int) -> np.ndarray:
    return found.astype(np.int32 if n < 2**31 else np.int64)


def _decoder(cache: ActivationCache, coder: str):
    """The coder's decoder rows (n_latents, d) as in the cache (the random-coder baseline's own), or
    None for a coder without one."""
    from autointerp.coders import load_coder
    from autointerp.config import CoderConfig

    config = cache.manifest.get("config") or {}
    cfg = next(
        (
            CoderConfig(**c)
            for c in config.get("coders", [])
            if (c.get("name") or c["hookpoint"]) == coder
        ),
        None,
    )
    if cfg is None:  # a coder added to the cache by other means: no decoder to compare
        log.warning("coder %r has no config in the cache; neighbours by co-occurrence", coder)
        return None
    baseline, seed = config.get("baseline"), config.get("baseline_seed", 0)
    meta = cache.coders[coder]
    W = load_coder(cfg, width=meta["d_in"], baseline=baseline, seed=seed).W_dec
    if W is None:
        log.info("coder %r has no decoder; neighbours by co-occurrence", coder)
    return W


def decoder_neighbours(
    W,
    k: int,
    bar: tqdm | None = None,
    method: Literal["auto", "exact", "faiss"] = "auto",
    owned: bool = False,
) -> tuple[np.ndarray, str]:
    """(n, k) nearest rows of W by cosine, self excluded, and the method used ("exact"/"faiss").
    `owned`: W is the caller's to overwrite, and its rows are normalised in place (no second copy
    of the decoder: 230 MiB at 100k latents)."""
    import torch

    given = torch.as_tensor(W)
    W = given.float()
    owned = owned or W.data_ptr() != given.data_ptr()  # .float() made a copy
    n = len(W)
    if method == "auto":
        method = "exact"
        if n > EXACT_MAX_LATENTS:
            try:
                import faiss  # noqa: F401

                method = "faiss"
            except ImportError:
                hours = n * n / 2 / EXACT_PAIRS_PER_S / 3600
                log.warning(
                    "exact neighbour search for %d latents: about %.1f h on two cores (O(n^2)); "
                    "`pip install faiss-cpu` (or autointerp[scale]) searches approximately in "
                    "minutes",
                    n,
                    hours,
                )
    if owned:
        with torch.no_grad():
            W.div_(W.norm(dim=1, keepdim=True).clamp_min_(1e-12))  # as F.normalize computes it
    else:
        W = torch.nn.functional.normalize(W, dim=1)
    if method == "faiss":
        return faiss_neighbours(W.numpy(), k, bar=bar), "faiss"
    return exact_neighbours(W, k, bar=bar).numpy(), "exact"


def exact_neighbours(W, k: int, tile: int = TILE, bar: tqdm | None = None):
    """(n, k) int64 tensor: the k rows of W with the largest inner product with each row, self
    excluded, largest first. Tiles of W W^T on and above the diagonal only, each serving its rows
    and (transposed) its columns; a running top-k per row."""
    import torch

    n = len(W)
    k = min(k, n - 1)
    best = torch.full((n, k), -torch.inf)
    best_idx = torch.zeros((n, k), dtype=torch.int64)

    def merge(rows: slice, vals, idx) -> None:
        v = torch.cat([best[rows], vals], dim=1)
        i = torch.cat([best_idx[rows], idx], dim=1)
        top = v.topk(k, dim=1)
        best[rows], best_idx[rows] = top.values, i.gather(1, top.indices)

    if k == 0:
        return best_idx
    starts = range(0, n, tile)
    # the bar counts latents in proportion to the tiles done: a tile row holds fewer tiles the
    # further down the triangle it is, so counting finished rows would make the first ETA too long
    sizes = [min(tile, n - a) for a in starts]
    total = sum(r * c for i, r in enumerate(sizes) for c in sizes[i:])
    done = 0
    for a in starts:
        rows = slice(a, min(a + tile, n))
        for b in starts[a // tile :]:
            cols = slice(b, min(b + tile, n))
            sims = W[rows] @ W[cols].T
            done += sims.numel()
            if a == b:  # a latent is never its own neighbour, identical rows or not
                sims.fill_diagonal_(-torch.inf)
            kr, kc = min(k, sims.shape[1]), min(k, sims.shape[0])
            top = sims.topk(kr, dim=1)
            merge(rows, top.values, top.indices + b)
            if a != b:
                top = sims.T.topk(kc, dim=1)
                merge(cols, top.values, top.indices + a)
            if bar is not None:
                bar.update(round(n * done / total) - bar.n)
    return best_idx


FAISS_NPROBE = 32


def faiss_neighbours(x: np.ndarray, k: int, bar: tqdm | None = None, nprobe: int = FAISS_NPROBE):
    """Approximate (n, k) nearest rows of unit rows `x` by inner product: FAISS's inverted-file
    index (4 sqrt(n) lists, trained by k-means on a sample), searching `nprobe` lists per latent."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k = min(k, n - 1)
    # 4 sqrt(n) lists, each trained on >= 39 points (FAISS warns below that)
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = x[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
    index.train(train)
    index.add(x)
    index.nprobe = min(nprobe, nlist)
    out = np.empty((n, k), dtype=np.int64)
    step = 8192
    for a in range(0, n, step):
        _, found = index.search(x[a : a + step], k + 1)
        own = found == np.arange(a, a + len(found))[:, None]
        # drop the latent itself where it was found, else the last (farthest) hit
        own[~own.any(1), -1] = True
        out[a : a + len(found)] = found[~own].reshape(len(found), k)
        if bar is not None:
            bar.update(len(found))
    return out


def cooccurrence_matrix(cache: ActivationCache, coder: str):
    """Binary CSR (sequence x latent): 1 where the latent fires anywhere in the sequence. Built
    shard by shard from the cache's offsets and positions."""
    import scipy.sparse as sp

    n = int(cache.coders[coder]["n_latents"])
    ctx = cache.ctx_len
    parts = []
    for shard in cache.shard_names:
        off, pos, _ = cache.shard_arrays(shard, coder)
        # numpy's stubs type np.diff of an int64 array of unknown shape as timedelta64
        latent = np.repeat(np.arange(n, dtype=np.int32), np.diff(off.astype(np.int64)))  # type: ignore[arg-type]
        seq = (np.asarray(pos, dtype=np.int32) // ctx).astype(np.int32)
        part = sp.csr_matrix(
            (np.ones(len(seq), dtype=np.int32), (seq, latent)), shape=(cache.shard_seqs, n)
        )
        part.data[:] = 1  # several tokens of one sequence count once
        parts.append(part)
    # shards hold shard_seqs sequences each, in order: stacking them puts sequence s at row s
    if not parts:
        return sp.csr_matrix((0, n), dtype=np.int32)
    return sp.vstack(parts, format="csr")


def cooccurrence_neighbours(
    cache: ActivationCache, coder: str, k: int, bar: tqdm | None = None
) -> np.ndarray:
    """(n, k) latents with the largest Jaccard similarity of their sequence sets, self excluded,
    ties to the lower index. Blocks of latents: X^T[block] @ X is made dense one block at a time."""
    X = cooccurrence_matrix(cache, coder)
    n = X.shape[1]
    k = min(k, n - 1)
    XT = X.T.tocsr()
    count = np.diff(XT.indptr).astype(np.int64)
    out = np.zeros((n, k), dtype=np.int64)
    block = max(1, COOC_BLOCK_ENTRIES // max(n, 1))
    for a in range(0, n, block):
        b = min(a + block, n)
        inter = (XT[a:b] @ X).toarray().astype(np.int64)
        union = count[a:b, None] + count[None, :] - inter
        jaccard = inter / np.maximum(union, 1)
        jaccard[np.arange(b - a), np.arange(a, b)] = -1.0  # never its own neighbour
        out[a:b] = top_k_by_index(jaccard, k)
        if bar is not None:
            bar.update(b - a)
    return out


def top_k_by_index(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values of each row, largest first, equal values in ascending
    column order (so that the answer does not depend on the sort's whims)."""
    rows, n = values.shape
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1 : k]  # the k-th largest value per row
    above = values > kth
    # of the values equal to the k-th, the first (lowest columns) that fill the row to k
    tied = values == kth
    room = k - above.sum(1, keepdims=True)
    keep = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= room))
    cols = np.nonzero(keep)[1].reshape(rows, k)  # ascending column order within each row
    order = np.argsort(-np.take_along_axis(values, cols, 1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, 1)
