"""Sampling: a finished cache -> one record per latent (train / test / non-activating examples).

Usage: `autointerp sample RUN/cache --out RUN/sample [--latents 0-99] [--ray local --workers 2]`;
Python: `sample_coder(...)`. A latent's nonzeros come from the cache's latent index (two slices,
whatever the shard count; built on first use for a cache made before it existed).

An example is a window of `example_len` tokens around one activation peak (`context_before` tokens of
left context, since a causal model's activation depends only on what comes before). Candidates are the
peaks of each aligned `example_len` block of the cache, so a latent that fires on a run of tokens gives
one candidate per block, not dozens of near-duplicates. Candidates are split into `n_quantiles` equal
bins by the strongest activation inside the window. Non-overlapping windows are accepted round-robin
across the bins; the test set takes exact per-bin quotas that sum to `n_test` (the remainder one each to
the strongest bins; a bin short of windows passes its share on), and every accepted window it does not
take is the explainer's pool (up to `n_train`). With fewer than `n_train + n_test` windows both shrink
in proportion, the explainer keeping at least `min_train`; a latent left with fewer is skipped. Every
window drawn (train, test and negatives) is checked against every window already drawn for the latent:
no two examples share a token, so the explainer never sees a scorer's text.
Non-activating examples are windows where the latent is zero throughout: random ones, and "similar" ones
where the latent's nearest neighbours (by decoder cosine, or by co-occurrence for coders without a
decoder) fire. A set the cache cannot fill is recorded in the record's `shortfall`. Latents with fewer
than `min_examples` candidates are recorded as skipped, with the reason. With `filter_bos` (default),
activations at the BOS the corpus placed at the start of each window are left out of all of this and
of the record's density and maximum.
Each draw uses its own RNG seeded by (seed, coder, latent): results do not depend on which latents run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from autointerp.cache import ActivationCache
from autointerp.config import _Strict
from autointerp.errors import ConfigError, SubjectError
from autointerp.jsonl import SampleHead, cut_torn_line, read_jsonl, scan
from autointerp.neighbours import By, neighbours
from autointerp.types import Example, ExampleRef, LatentId, SampledLatent

log = logging.getLogger(__name__)


class SampleConfig(_Strict):
    example_len: int = Field(32, ge=2)
    """Tokens per example window."""
    context_before: int = Field(24, ge=0)
    """Tokens of the window before the activation peak (when the sequence allows)."""
    n_train: int = Field(40, ge=1)
    """Activating examples for the explainer."""
    n_test: int = Field(100, ge=0)
    """Activating examples for the scorers (n_test / n_quantiles from each quantile)."""
    n_quantiles: int = Field(10, ge=1)
    train_strategy: Literal["quantiles", "top", "random", "mix"] = "quantiles"
    """How the explainer's examples are drawn: across quantiles, the strongest, at random, or half
    strongest and half across quantiles."""
    n_random_negatives: int = Field(50, ge=0)
    n_similar_negatives: int = Field(50, ge=0)
    n_explain_negatives: int = Field(10, ge=0)
    """Similar non-activating examples for a contrastive explainer (disjoint from the scorers')."""
    similar_by: Literal["decoder", "cooccurrence", "embedding"] = "decoder"
    """How "similar" negatives are found: windows where the nearest latents by decoder cosine fire
    (co-occurrence for coders without a decoder), where the latents that most often fire in the same
    sequences fire, or the windows closest in sentence-embedding space (all-MiniLM-L6-v2) to the
    latent's activating windows."""
    n_neighbours: int = Field(10, ge=1)
    """Neighbouring latents whose windows serve as similar negatives."""
    min_examples: int = Field(20, ge=1)
    """Latents with fewer activating windows are skipped (recorded with the reason)."""
    min_train: int = Field(10, ge=1)
    """Latents left with fewer explainer examples (at most n_train) once the test set has its
    share are skipped (recorded with the reason): an explanation needs examples to explain."""
    filter_bos: bool = True
    """Leave activations at the BOS token that starts each window out of sampling and of the record's
    density and max_activation (as delphi's `filter_bos`, on by default): BOS often carries huge
    activations that say nothing about the text."""
    seed: int = 0


SIMILAR_DRAWS = 256
"""Firings drawn from each neighbour of a latent for its similar negatives (all of them when it fires
less often): enough blocks to choose a few from, without reading a dense neighbour's every firing."""


_SIMILAR_DRAWS_PER_NEGATIVE = 16
"""...and at least this many per similar negative wanted."""


def _run_starts(x: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values of `x` starts (x sorted: where each distinct value
    first occurs)."""
    if not len(x):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))


def _rng(seed: int, latent: LatentId, purpose: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{latent.coder}:{latent.latent}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class _Windows:
    """Windows drawn so far for one latent, per sequence; refuses any window that overlaps them."""

    def __init__(self) -> None:
        self.taken: dict[int, list[tuple[int, int]]] = {}

    def take(self, seq: int, start: int, length: int) -> bool:
        spans = self.taken.setdefault(seq, [])
        if any(start < e and s < start + length for s, e in spans):
            return False
        spans.append((start, start + length))
        return True


def _quotas(n: int, sizes: list[int]) -> list[int]:
    """`n` examples from bins ordered weakest to strongest, holding `sizes` windows: equal shares,
    the remainder one each to the strongest bins; a bin too small for its share passes the rest on
    to the bins with room, strongest first. Sums to min(n, sum(sizes))."""
    k = len(sizes)
    quota = [min(n // k + (q >= k - n % k), size) for q, size in enumerate(sizes)]
    left = n - sum(quota)
    while left > 0 and any(quota[q] < sizes[q] for q in range(k)):
        for q in reversed(range(k)):
            if left > 0 and quota[q] < sizes[q]:
                quota[q] += 1
                left -= 1
    return quota


class Sampler:
    """Samples the latents of one coder of a cache."""

    def __init__(
        self,
        cache: ActivationCache,
        coder: str,
        cfg: SampleConfig,
        embeddings: np.ndarray | None = None,
        bos_id: int | None | Literal["auto"] = "auto",
    ):
        """`bos_id`: the BOS token to leave out when `cfg.filter_bos` ("auto": the subject's)."""
        if cache.ctx_len % cfg.example_len:
            raise ConfigError(
                f"example_len {cfg.example_len} must divide the cache's ctx_len {cache.ctx_len}"
            )
        if cfg.context_before >= cfg.example_len:
            raise ConfigError(
                f"context_before ({cfg.context_before}) must be < example_len ({cfg.example_len})"
            )
        self.cache, self.coder, self.cfg = cache, coder, cfg
        self.ctx = cache.ctx_len
        self.n_blocks = cache.n_tokens // cfg.example_len
        self.stats = cache.stats(coder)
        cache.ensure_index(coder)  # a latent's nonzeros in two slices, not one per shard
        self._neighbours: np.ndarray | None = None
        if cfg.similar_by == "embedding" and embeddings is None:
            raise ConfigError("similar_by: embedding needs the block embeddings (autointerp.embed)")
        self.embeddings = embeddings
        self._is_bos: np.ndarray | None = None  # per global token index: a BOS the corpus placed
        self.bos_id: int | None = None  # the BOS left out, resolved (Ray workers need no tokenizer)
        if cfg.filter_bos:
            tokens = cache.tokens()
            bos = self.bos_id = cache_bos_id(cache, tokens) if bos_id == "auto" else bos_id
            # BOS is placed at position 0 of a window only: the same id elsewhere (GPT-2-style
            # tokenizers separate documents with it) is text and stays
            starts = tokens[:, 0] == bos if bos is not None else np.zeros(0, dtype=bool)
            if starts.any():
                self._is_bos = np.zeros(tokens.shape, dtype=bool)
                self._is_bos[:, 0] = starts
                self._is_bos = self._is_bos.ravel()
                log.info("%s: %d BOS positions left out", coder, int(starts.sum()))

    def _latent(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """The latent's nonzeros, without those at BOS positions when BOS is filtered."""
        tok, val = self.cache.latent(self.coder, latent)
        if self._is_bos is None:
            return tok, val
        keep = ~self._is_bos[tok]
        return tok[keep], val[keep]

    def _statistics(self, latent: int, val: np.ndarray) -> dict[str, float]:
        """density and max_activation: the cache's, or recomputed without the BOS positions."""
        if self._is_bos is None:
            return {
                "density": float(self.stats["density"][latent]),
                "max_activation": float(self.stats["max"][latent]),
            }
        counted = max(len(self._is_bos) - int(self._is_bos.sum()), 1)
        return {
            "density": len(val) / counted,
            "max_activation": float(val.max()) if len(val) else 0.0,
        }

    # --- candidates -------------------------------------------------------------------------
    def _candidates(self, tok: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One window per aligned block that fires: placed around the block's strongest token, valued
        by the strongest activation inside the window. Returns (window start as a global token index,
        window max), sorted by window max, without duplicate windows."""
        E = self.cfg.example_len
        # tok ascends, so blocks come in runs: each block's peak is the first of its largest
        # values, found in O(n) by reductions over the runs (no sort)
        block = tok // E
        starts = _run_starts(block)
        lengths = np.diff(np.append(starts, len(block)))
        run = np.repeat(np.arange(len(starts)), lengths)
        at_max = np.flatnonzero(val == np.maximum.reduceat(val, starts)[run]) if len(val) else run
        peaks = tok[at_max[_run_starts(run[at_max])]]
        seq, pos = np.divmod(peaks, self.ctx)
        lo = seq * self.ctx + np.clip(pos - self.cfg.context_before, 0, self.ctx - E)
        lo = lo[_run_starts(lo)]  # ascending with the peaks: equal starts are neighbours
        # the max of val[a:b] per window in one pass: reduceat over the interleaved bounds (a
        # window holds its peak, so a < b; val ends with a sentinel so that b may equal len(val))
        a, b = np.searchsorted(tok, lo), np.searchsorted(tok, lo + E)
        bounds = np.stack([a, b], axis=1).ravel()
        vmax = np.maximum.reduceat(np.append(val, np.float32(-np.inf)), bounds)[::2]
        vmax = vmax.astype(np.float32, copy=False)
        by_value = np.argsort(vmax, kind="stable")
        return lo[by_value], vmax[by_value]

    def _window(self, lo: int) -> tuple[int, int]:
        return divmod(int(lo), self.ctx)

    def _ref(self, seq: int, start: int, tok: np.ndarray, val: np.ndarray, **kw) -> ExampleRef:
        lo = seq * self.ctx + start
        a, b = np.searchsorted(tok, [lo, lo + self.cfg.example_len])
        acts = [(int(t - lo), round(float(v), 4)) for t, v in zip(tok[a:b], val[a:b], strict=True)]
        return ExampleRef(seq=seq, start=start, acts=acts, **kw)

    # --- activating examples ----------------------------------------------------------------
    def _take(self, i: int, peaks: np.ndarray, windows: _Windows) -> bool:
        seq, start = self._window(peaks[i])
        return windows.take(seq, start, self.cfg.example_len)

    def _split(self, total: int, reserved: int = 0) -> tuple[int, int]:
        """(n_train, n_test) for `total` usable windows, `reserved` of them already train. Scarce
        windows keep the configured proportion, but the explainer gets at least `min_train`."""
        cfg = self.cfg
        if total >= cfg.n_train + cfg.n_test:
            return cfg.n_train, cfg.n_test
        share = round(total * cfg.n_train / (cfg.n_train + cfg.n_test))
        most = total - 1 if cfg.n_test else total  # the scorers get at least one
        n_train = min(most, max(share, reserved, min(cfg.min_train, cfg.n_train)))
        return n_train, total - n_train

    def _activating(self, lid: LatentId, peaks: np.ndarray, windows: _Windows):
        """(train, test, quantile): indices into `peaks`, windows pairwise disjoint. The test set
        takes exact per-bin quotas; every accepted window it does not take is the explainer's pool."""
        cfg = self.cfg
        rng = _rng(cfg.seed, lid, "activating")
        bins = np.array_split(np.arange(len(peaks)), min(cfg.n_quantiles, len(peaks)))
        quantile = np.empty(len(peaks), dtype=int)
        for q, members in enumerate(bins):
            quantile[members] = q
        train: list[int] = []
        if cfg.train_strategy in ("top", "mix"):  # the strongest first, before the test set
            planned, _ = self._split(len(peaks))
            want = planned if cfg.train_strategy == "top" else planned // 2
            for i in range(len(peaks) - 1, -1, -1):
                if len(train) >= want:
                    break
                if self._take(i, peaks, windows):
                    train.append(i)
        # Accept non-overlapping windows round-robin across the quantile bins, so that no bin wins
        # the overlaps. A bin never needs more than n_train + n_test (this bounds dense latents).
        # Each bin's pool is its windows in a seeded random order, the train windows left out, and
        # read lazily: a dense latent's bins hold 10^5 windows, of which a few dozen are looked at.
        reserved = set(train)
        pools = [rng.permutation(b) for b in bins]
        cap = cfg.n_train + cfg.n_test
        accepted: list[list[int]] = [[] for _ in bins]
        cursors = [0] * len(bins)
        active = set(range(len(bins)))

        def usable(q: int) -> bool:
            i = int(pools[q][cursors[q]])
            return i not in reserved and self._take(i, peaks, windows)

        while active:
            for q in list(active):
                pool = pools[q]
                while cursors[q] < len(pool) and not usable(q):
                    cursors[q] += 1
                if cursors[q] >= len(pool):
                    active.discard(q)
                    continue
                accepted[q].append(int(pool[cursors[q]]))
                cursors[q] += 1
                if len(accepted[q]) >= cap:
                    active.discard(q)
        n_train, n_test = self._split(len(train) + sum(map(len, accepted)), len(train))
        quota = _quotas(n_test, [len(a) for a in accepted])
        test = [i for acc, k in zip(accepted, quota, strict=True) for i in acc[:k]]
        rest = [acc[k:] for acc, k in zip(accepted, quota, strict=True)]
        room = n_train - len(train)
        if cfg.train_strategy == "random":
            flat = [i for r in rest for i in r]
            train += [flat[j] for j in rng.permutation(len(flat))[:room]]
        else:  # quantiles (and the second half of mix): round-robin, strongest bins first
            strongest = rest[::-1]
            depth = 0
            while len(train) < n_train and any(depth < len(r) for r in strongest):
                train += [r[depth] for r in strongest if depth < len(r)][: n_train - len(train)]
                depth += 1
        return train, test, quantile

    # --- non-activating examples ------------------------------------------------------------
    def _random_negatives(
        self, lid: LatentId, active: np.ndarray, windows: _Windows, n: int
    ) -> list[ExampleRef]:
        """Up to `n` random blocks where the latent is silent: uniform draws first (cheap for
        sparse latents), then, for a dense latent, the silent blocks themselves in random order."""
        rng = _rng(self.cfg.seed, lid, "random-negatives")
        out: list[ExampleRef] = []

        def take(block: int) -> None:
            seq, start = divmod(block * self.cfg.example_len, self.ctx)
            if windows.take(seq, start, self.cfg.example_len):
                out.append(ExampleRef(seq=seq, start=start, kind="random"))

        draws = rng.integers(0, self.n_blocks, size=max(4 * n, 64))
        for block in draws[~np.isin(draws, active)]:
            if len(out) >= n:
                return out
            take(int(block))
        if len(out) < n:
            silent = np.setdiff1d(np.arange(self.n_blocks), active)
            for block in rng.permutation(silent):
                if len(out) >= n:
                    break
                take(int(block))
        return out

    @property
    def wants_neighbours(self) -> bool:
        """Similar negatives are drawn where neighbouring latents fire."""
        cfg = self.cfg
        similar = cfg.n_similar_negatives > 0 or cfg.n_explain_negatives > 0
        return similar and cfg.similar_by != "embedding"

    def neighbours(self, progress: bool = False) -> np.ndarray:
        """(n_latents, n_neighbours) nearest latents by decoder cosine or co-occurrence, computed
        once per coder and stored beside the cache (autointerp.neighbours)."""
        if self._neighbours is None:
            by: By = "cooccurrence" if self.cfg.similar_by == "cooccurrence" else "decoder"
            self._neighbours = neighbours(
                self.cache, self.coder, self.cfg.n_neighbours, by=by, progress=progress
            )
        return self._neighbours

    def _similar_candidates(self, lid: LatentId, active: np.ndarray) -> np.ndarray:
        """Inactive blocks ordered from most to least similar to the latent's activating ones
        (`active`: the latent's blocks, sorted)."""
        if self.cfg.similar_by == "embedding":
            assert self.embeddings is not None
            # the first 256 blocks in a Python set's order (by hash slot, not ascending), as records
            # were always drawn: the centroid's rounding, hence the ranking, depends on the order
            own = np.fromiter(set(active.tolist()), dtype=np.int64)[:256]
            centroid = self.embeddings[own].astype(np.float32).mean(0)
            order = np.argsort(-(self.embeddings.astype(np.float32) @ centroid), kind="stable")
            top = order[
                : 8 * (self.cfg.n_similar_negatives + self.cfg.n_explain_negatives) + len(active)
            ]
            return top[~np.isin(top, active)]
        need = self.cfg.n_similar_negatives + self.cfg.n_explain_negatives
        most = max(SIMILAR_DRAWS, _SIMILAR_DRAWS_PER_NEGATIVE * need)
        blocks, complete = self._neighbour_blocks(lid, active, most)
        if not complete and len(blocks) < 4 * need:  # draws fell mostly on the latent's own blocks
            blocks, _ = self._neighbour_blocks(lid, active, None)
        return _rng(self.cfg.seed, lid, "similar-negatives").permutation(blocks)

    def _neighbour_blocks(
        self, lid: LatentId, active: np.ndarray, most: int | None
    ) -> tuple[np.ndarray, bool]:
        """(blocks, complete): the blocks where the latent's neighbours fire and it does not, each
        once, where the nearest neighbour that fires there lists it. With `most`, a neighbour that
        fires more often gives the blocks of `most` of its firings drawn at random (complete
        False): the cost per latent stays bounded however dense its neighbours are, or however
        large the cache."""
        E = self.cfg.example_len
        draws = _rng(self.cfg.seed, lid, "similar-draws")
        found, complete = [np.zeros(0, dtype=np.int64)], True
        for o in self.neighbours()[lid.latent]:
            if most is None:
                tok, whole = self._latent(int(o))[0], True
            else:
                tok, whole = self.cache.latent_tokens(self.coder, int(o), most, draws)
                if self._is_bos is not None:
                    tok = tok[~self._is_bos[tok]]
            complete &= whole
            found.append(np.unique(tok // E))
        blocks = np.concatenate(found)
        blocks = blocks[~np.isin(blocks, active)]
        _, first = np.unique(blocks, return_index=True)
        return blocks[np.sort(first)], complete

    def _similar_negatives(self, lid, active, windows, n_explain, n_score):
        candidates = self._similar_candidates(lid, active)
        refs: list[ExampleRef] = []
        for block in candidates:
            if len(refs) >= n_explain + n_score:
                break
            seq, start = divmod(int(block) * self.cfg.example_len, self.ctx)
            if windows.take(seq, start, self.cfg.example_len):
                refs.append(ExampleRef(seq=seq, start=start, kind="similar"))
        return refs[:n_explain], refs[n_explain:]

    # --- one latent -------------------------------------------------------------------------
    def sample(self, latent: int) -> SampledLatent:
        cfg = self.cfg
        lid = LatentId(coder=self.coder, latent=latent)
        tok, val = self._latent(latent)
        peaks, _ = self._candidates(tok, val)
        base = dict(id=lid, n_activating_windows=len(peaks), **self._statistics(latent, val))
        if len(peaks) < cfg.min_examples:
            reason = f"only {len(peaks)} activating windows (min_examples is {cfg.min_examples})"
            return SampledLatent(status="skipped", reason=reason, **base)
        windows = _Windows()
        train, test, quantile = self._activating(lid, peaks, windows)
        min_train = min(cfg.min_train, cfg.n_train)
        if len(train) < min_train:
            reason = (
                f"only {len(train)} explainer examples from {len(train) + len(test)} "
                f"non-overlapping activating windows (min_train is {min_train})"
            )
            return SampledLatent(status="skipped", reason=reason, **base)
        blocks = tok // cfg.example_len
        active = blocks[_run_starts(blocks)]  # ascending: unique without a sort
        explain_neg, similar = self._similar_negatives(
            lid, active, windows, cfg.n_explain_negatives, cfg.n_similar_negatives
        )
        random_ = self._random_negatives(lid, active, windows, cfg.n_random_negatives)
        got = {
            "train": (len(train), cfg.n_train),
            "test": (len(test), cfg.n_test),
            "random": (len(random_), cfg.n_random_negatives),
            "similar": (len(similar), cfg.n_similar_negatives),
            "explain_negatives": (len(explain_neg), cfg.n_explain_negatives),
        }
        shortfall = {k: want - n for k, (n, want) in got.items() if n < want}
        if shortfall.get("random"):
            log.debug("%s: %d random negatives short", lid, shortfall["random"])

        def refs(ids: list[int]) -> list[ExampleRef]:
            return [
                self._ref(*self._window(peaks[i]), tok, val, quantile=int(quantile[i])) for i in ids
            ]

        return SampledLatent(
            status="ok",
            train=refs(train),
            test=refs(test),
            explain_negatives=explain_neg,
            negatives=random_ + similar,
            shortfall=shortfall,
            **base,
        )


def cache_bos_id(cache: ActivationCache, tokens: np.ndarray) -> int | None:
    """The BOS token the corpus placed at position 0 of the cache's windows, or None. Caches record
    it (`bos_id` in cache.json); for a cache made before they did, the subject tokenizer's BOS when
    every window starts with it (so a BOS id that only separates documents is never taken for one)."""
    if "bos_id" in cache.manifest:
        return cache.manifest["bos_id"]
    config = cache.manifest.get("config") or {}
    first = tokens[:, 0]
    if (config.get("corpus") or {}).get("bos") == "never" or len(np.unique(first)) != 1:
        return None
    if "subject" not in config:
        log.warning("the cache records no subject; BOS positions are not filtered")
        return None
    from autointerp.config import SubjectConfig
    from autointerp.subject import load_tokenizer

    subject = SubjectConfig(**config["subject"])
    try:
        bos = load_tokenizer(subject).bos_token_id
    except Exception as e:  # transformers raises OSError, ValueError, ... for a missing model
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SubjectError(
            f"the cache in {cache.root} predates the BOS record, and its subject's tokenizer "
            f"({subject.model}) cannot be loaded to find the BOS token: {reason}. Make the model "
            "available, or set sample.filter_bos: false"
        ) from None
    return bos if bos is not None and bool((first == bos).all()) else None


def parse_latents(spec: str | None, n_latents: int) -> list[int]:
    """`None` = all; `0-99`, `5,9,12`, `0-9,100-109`."""
    if not spec:
        return list(range(n_latents))
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            ids = range(int(lo), int(hi) + 1) if hi else [int(lo)]
        except ValueError:
            raise ConfigError(f"bad latent range {part!r}: use e.g. 0-99 or 5,9,12") from None
        if not ids:
            raise ConfigError(f"latent range {part.strip()!r} is empty: write the lower end first")
        bad = [i for i in ids if not 0 <= i < n_latents]
        if bad:
            raise ConfigError(f"latent {bad[0]} out of range: the coder has {n_latents} latents")
        out.extend(ids)
    return list(dict.fromkeys(out))


def read_records(path: Path) -> Iterator[SampledLatent]:
    """Records of a sample file; a torn last line (a run killed mid-write) is ignored."""
    return read_jsonl(path, SampledLatent)


def sample_coder(
    cache: ActivationCache,
    coder: str,
    cfg: SampleConfig,
    out: Path,
    latents: list[int] | None = None,
    progress: bool = True,
    embeddings: np.ndarray | None = None,
    bos_id: int | None | Literal["auto"] = "auto",
    ray: str | None = None,
    workers: int = 2,
) -> Path:
    """Sample `latents` (default all) of one coder into `out/<coder>.jsonl`, resuming a partial file
    (`bos_id`: see Sampler). With `ray` (an address, as `autointerp run --ray`), `workers` Ray
    actors sample chunks of latents and this process alone writes the file, in the same order."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{coder}.jsonl"
    done = {h.id.latent for _, h in scan(path, SampleHead)}
    cut_torn_line(path)
    todo = [
        i
        for i in (latents if latents is not None else range(cache.coders[coder]["n_latents"]))
        if i not in done
    ]
    sampler = Sampler(cache, coder, cfg, embeddings, bos_id)
    if todo and sampler.wants_neighbours:
        sampler.neighbours(progress=progress)  # its own bar, before the sample bar starts its ETA
    if ray and todo:
        from autointerp.distributed import sample_ray

        lines = sample_ray(ray, workers, sampler, todo)
    else:
        lines = (sampler.sample(latent).model_dump_json() for latent in todo)
    with open(path, "a") as f:
        bar = tqdm(
            lines, total=len(todo), desc=f"sample {coder}", unit="latent", disable=not progress
        )
        for line in bar:
            f.write(line + "\n")
            f.flush()
    return path


REPLACEMENT = "\ufffd"


class TokenDecoder:
    """Token ids -> the strings an example shows, one per token, for prompts, reports and exports
    alike. A character the tokenizer splits across tokens is shown whole on the token that completes
    it, and the tokens before it show "" (decoding one token at a time gives U+FFFD halves); a
    character cut by the start or end of the sequence is left out. Callable as token id -> string."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._one = lru_cache(maxsize=None)(lambda t: tokenizer.decode([t]))
        self._sequence = lru_cache(maxsize=1024)(self._pieces)

    def __call__(self, token: int) -> str:
        return self._one(token)

    def window(self, row: np.ndarray, start: int, length: int) -> list[str]:
        """The strings of `row[start : start + length]`, `row` being the whole token sequence (so
        that a character split across the window's edge is attributed as in the sequence)."""
        one = [self._one(int(t)) for t in row[start : start + length]]
        if not any(REPLACEMENT in t for t in one):
            return one
        return list(self._sequence(tuple(int(t) for t in row))[start : start + length])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """One string per token of a whole sequence; they join to its decoded text."""
        return list(self._pieces(tuple(int(t) for t in ids)))

    def _pieces(self, ids: tuple[int, ...]) -> tuple[str, ...]:
        # Incremental decoding: a token's string is what decoding up to it adds to the text, once
        # the text no longer ends inside a character; the last two boundaries give the context
        # (some tokenizers decode a token differently at the start of a text).
        out: list[str] = []
        prefix = read = 0  # ids[prefix:read] is text already shown; `read` is a boundary
        for k in range(1, len(ids) + 1):
            shown = self._decode(ids[prefix:read]) if read > prefix else ""
            text = self._decode(ids[prefix:k])
            if text.endswith(REPLACEMENT):
                out.append("")
                continue
            if not text.startswith(shown):  # decoding is not prefix-stable here: this token alone
                out.append(self._one(ids[k - 1]))
            else:
                piece = text[len(shown) :]
                out.append(piece.lstrip(REPLACEMENT) if read == 0 else piece)  # bytes cut at 0
            prefix, read = read, k
        return tuple(out)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def render(ref: ExampleRef, tokens: np.ndarray, decode: TokenDecoder, example_len: int) -> Example:
    """An ExampleRef with its token strings and dense activations. `decode` is the one renderer of
    prompts, reports and exports (characters split across tokens shown whole)."""
    strings = decode.window(tokens[ref.seq], ref.start, example_len)
    acts = [0.0] * len(strings)
    for offset, value in ref.acts:
        acts[offset] = value
    return Example(
        tokens=strings,
        activations=acts,
        seq=ref.seq,
        start=ref.start,
        quantile=ref.quantile,
        kind=ref.kind,
    )


def write_config(out: Path, cfg: SampleConfig) -> None:
    """The sample folder records its config; a different config into the same folder is refused."""
    path = out / "sample_config.json"
    data = cfg.model_dump(mode="json")
    old = json.loads(path.read_text()) if path.exists() else data
    diffs = [
        f"{k}: folder has {old[k]!r}, now {data.get(k)!r}"
        if k in old
        else f"{k}: not recorded (samples made by an older autointerp), now {data[k]!r}"
        for k in dict.fromkeys([*old, *data])
        if old.get(k, ...) != data.get(k, ...)
    ]
    if diffs:
        raise ConfigError(
            f"{out} holds samples made with another config ({'; '.join(diffs)}); "
            "use another folder or delete it"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
