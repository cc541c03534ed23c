"""The activation cache: subject model + sparse coders over a corpus -> sparse activation shards.

Usage (CLI): `autointerp cache CONFIG.yaml --out DIR`; Python: `build_cache(CacheConfig(...), DIR)`,
then `ActivationCache(DIR)` to read it.

Layout of a cache folder:
```
cache.json                      config, fingerprints of model/coders/corpus, coders, status
shards/000000/meta.json         first sequence and number of sequences in the shard
shards/000000/tokens.npy        (n_seqs, ctx_len) token ids (uint16 when the vocabulary allows)
shards/000000/<coder>/offsets.npy   (n_latents + 1,) uint32: latent l's nonzeros are [off[l], off[l+1])
shards/000000/<coder>/pos.npy       uint16 offset of the token within the shard, ascending per latent
shards/000000/<coder>/values.npy    float16 activation value (float32 if a value overflows float16)
stats/<coder>.npz               per-latent count, max, sum; density = count / n_tokens
index/<coder>/...               each latent's nonzeros in one run, across shards (autointerp.index)
```
A shard is at most 65,536 tokens, so a nonzero costs 4 bytes (2 position + 2 value) plus the shard's
offsets; the latent is implicit in the latent-sorted order. Shards are written to a temporary folder and
renamed into place, so a shard either exists whole or not at all; an interrupted run resumes at the first
missing shard and re-checks the tokens of the shards it keeps.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from autointerp.coders import SparseCoder, load_coder
from autointerp.config import CacheConfig, CoderConfig
from autointerp.corpus import TokenWindows, check_corpus, corpus_fingerprint
from autointerp.errors import CacheError, CoderError, SubjectError
from autointerp.index import INDEX_DIR, build_index, ensure_index, open_index
from autointerp.locks import LOCK_FILE, folder_lock, model_lock
from autointerp.subject import (
    Site,
    Subject,
    load_config,
    load_subject,
    model_fingerprint,
    module_patterns,
    resolve_subject,
)

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MANIFEST = "cache.json"


def _shard_name(i: int) -> str:
    return f"{i:06d}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class _Pending:
    """One shard's encoded activations, gathered in memory before it is written."""

    index: int
    first_seq: int
    tokens: list[np.ndarray]
    latents: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # coder -> [(values, indices)]


def sparse_layout(values: np.ndarray, indices: np.ndarray, n_latents: int) -> dict[str, np.ndarray]:
    """(n_tokens, k) values/indices -> latent-sorted CSR arrays: offsets, pos, values."""
    n_tok, k = values.shape
    keep = values.ravel() > 0
    pos = np.repeat(np.arange(n_tok, dtype=np.uint16), k)[keep]
    lat = indices.ravel()[keep]
    lat = lat.astype(np.uint16 if n_latents <= 1 << 16 else np.uint32)
    order = np.argsort(lat, kind="stable")  # radix sort for 16-bit keys; keeps positions ascending
    vals = values.ravel()[keep][order]
    counts = np.bincount(lat, minlength=n_latents)
    offsets = np.zeros(n_latents + 1, dtype=np.uint32)
    np.cumsum(counts, out=offsets[1:])
    finite = np.isfinite(vals).all()
    if not finite:
        raise CacheError(
            f"sparse coder produced {int((~np.isfinite(vals)).sum())} non-finite activations"
        )
    big = vals.size and float(np.abs(vals).max()) > np.finfo(np.float16).max
    return {
        "offsets": offsets,
        "pos": pos[order],
        "values": vals.astype(np.float32 if big else np.float16),
    }


def _write_shard(root: Path, pending: _Pending, coders: list[SparseCoder], token_dtype) -> None:
    final = root / "shards" / _shard_name(pending.index)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        tokens = np.stack(pending.tokens).astype(token_dtype)
        _save_npy(tmp / "tokens.npy", tokens)
        for coder in coders:
            parts = pending.latents[coder.name]
            values = np.concatenate([v for v, _ in parts])
            indices = np.concatenate([i for _, i in parts])
            (tmp / coder.name).mkdir(parents=True)
            for key, arr in sparse_layout(values, indices, coder.n_latents).items():
                _save_npy(tmp / coder.name / f"{key}.npy", arr)
        meta = {"first_seq": pending.first_seq, "n_seqs": len(pending.tokens)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.rename(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "the disk is full" if _disk_full(e, final.parent) else str(e)
        raise CacheError(
            f"writing shard {pending.index} to {final} failed: {reason}. The shards already written are "
            "intact; free space and run the same command again to resume."
        ) from None


def _identity(m: dict) -> dict:
    """The parts of a manifest that must match for two runs to share a cache, flattened."""
    fp = m.get("fingerprints", {})
    out = {"format version": m.get("version"), "model": fp.get("model"), "corpus": fp.get("corpus")}
    out.update({f"coder {k!r}": v for k, v in (fp.get("coders") or {}).items()})
    out.update({f"coder {k!r} layout": v for k, v in (m.get("coders") or {}).items()})
    out.update(ctx_len=m.get("ctx_len"), shard_seqs=m.get("shard_seqs"))
    config = m.get("config") or {}
    out["dtype"] = (config.get("subject") or {}).get("dtype")
    # a baseline's cache and a trained one never share a folder (named, not only by fingerprints)
    out["baseline"] = config.get("baseline")
    if config.get("baseline"):
        out["baseline_seed"] = config.get("baseline_seed", 0)
    return out


def _same_config(old: dict | None, new: dict | None) -> bool:
    """Whether two cache configs make the same cache: all but the device it was computed on (as
    for the run folder; the dtype does count)."""

    def contents(c: dict | None) -> dict | None:
        if not c:
            return c
        return {
            "baseline": None,  # caches made before baselines existed are of the trained model
            "baseline_seed": 0,
            **c,
            "subject": {k: v for k, v in (c.get("subject") or {}).items() if k != "device"},
        }

    return contents(old) == contents(new)


def _differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    a, b = _identity(old), _identity(new)
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def _disk_full(e: OSError, folder: Path) -> bool:
    """numpy reports a full disk as a short write without errno; check the free space too."""
    if e.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


_EMPTY_OK = {".gitkeep", LOCK_FILE, "shards", MANIFEST + ".tmp"}


def _has_shards(root: Path) -> bool:
    shards = root / "shards"
    return shards.is_dir() and any(p.is_dir() and p.name.isdigit() for p in shards.iterdir())


class _Manifest:
    """cache.json: what the cache was made from; refuses to mix with different inputs."""

    def __init__(self, root: Path, data: dict):
        self.root = root
        self.data = data

    @classmethod
    def open_or_create(cls, root: Path, data: dict) -> _Manifest:
        path = root / MANIFEST
        if path.exists() and not _has_shards(root):
            log.info("%s holds no shard yet: starting it afresh", root)
            path.unlink()  # a cache with no shard is not a cache (e.g. its corpus failed to read)
        if path.exists():
            old = json.loads(path.read_text())
            problems = [
                f"{key}: cache has {old_value!r}, this run has {new_value!r}"
                for key, old_value, new_value in _differences(old, data)
            ]
            if problems:
                raise CacheError(
                    f"{root} holds a cache made from different inputs; use another folder or delete it.\n  "
                    + "\n  ".join(problems)
                )
            if old.get("complete") and _same_config(old.get("config"), data["config"]):
                return cls(root, old)  # finished with this very config: nothing to do
            data = {**old, "config": data["config"], "complete": False}
        elif root.exists() and (
            _has_shards(root) or any(p.name not in _EMPTY_OK for p in root.iterdir())
        ):
            raise CacheError(
                f"{root} is not empty and holds no {MANIFEST}; refusing to write a cache there"
            )
        manifest = cls(root, data)
        manifest.save()
        return manifest

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.root / MANIFEST)


def _load_coders(
    cfg: CacheConfig, subject: Subject, loaded: dict[int, SparseCoder] | None = None
) -> list[SparseCoder]:
    """The coders of `cfg`, checked against the subject; `loaded`: those already read, by index."""
    coders = []
    for i, c in enumerate(cfg.coders):
        site = Site.parse(c.hookpoint, c.transcoder)
        with model_lock(subject.model):  # its hooks must not meet a scorer's (score/intervention)
            width = subject.width(site)
        coder = (loaded or {}).get(i) or load_coder(c, width, cfg.baseline, cfg.baseline_seed)
        with model_lock(subject.model):
            coder.check_width(subject.width(coder.site), subject.name)
        coders.append(coder.to(subject.dtype, subject.device))
    _check_names(cfg.coders)
    return coders


def _check_names(coders: list[CoderConfig]) -> None:
    names = [c.name or c.hookpoint for c in coders]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise CoderError(f"several coders are named {sorted(dup)}; give each a distinct `name`")


def check_inputs(cfg: CacheConfig) -> dict[int, SparseCoder]:
    """Check what can be checked without the subject's weights, so that bad input fails in
    seconds: the corpus opens and yields a document, every coder's files load, the hookpoints exist
    in the model's architecture (built from its config on the meta device) and, where the
    architecture tells the width, fit the coders. Returns the loaded coders by index."""
    check_corpus(cfg.corpus)
    _check_names(cfg.coders)
    loaded = {  # a `neurons` coder has no files (under random-coder, load_coder refuses it)
        i: load_coder(c, baseline=cfg.baseline, seed=cfg.baseline_seed)
        for i, c in enumerate(cfg.coders)
        if c.format != "neurons" or cfg.baseline == "random-coder"
    }
    skeleton = _skeleton(cfg)
    if skeleton is None:
        return loaded
    modules, hidden = skeleton
    for i, c in enumerate(cfg.coders):
        site = loaded[i].site if i in loaded else Site.parse(c.hookpoint, c.transcoder)
        if site.module not in modules or not site.module:
            raise SubjectError(
                f"unknown hookpoint {site.module!r} for {cfg.subject.model}. Valid module names: "
                + ", ".join(module_patterns(modules))
            )
        width = _known_width(site, modules, hidden)
        if i in loaded and width is not None:
            loaded[i].check_width(width, cfg.subject.model)
    return loaded


def _skeleton(cfg: CacheConfig) -> tuple[dict, int | None] | None:
    """The base model's modules, built from its config without weights (meta device), and its
    hidden size; None when the config cannot be read this way (the model load reports why)."""
    from transformers import AutoModelForCausalLM

    try:
        config = load_config(cfg.subject)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:  # noqa: BLE001 (any failure here is the model loader's to report)
        log.debug("cannot check the hookpoints before loading %s: %s", cfg.subject.model, e)
        return None
    base = getattr(model, "base_model", model)
    text = getattr(config, "get_text_config", lambda: config)()
    return dict(base.named_modules()), getattr(text, "hidden_size", None)


def _known_width(site: Site, modules: dict, hidden: int | None) -> int | None:
    """A hookpoint's width where the architecture says it plainly: a linear layer's input or
    output, or a decoder layer (the residual stream); None otherwise."""
    mod = modules[site.module]
    if isinstance(mod, torch.nn.Linear):
        return mod.in_features if site.port == "input" else mod.out_features
    parent, _, last = site.module.rpartition(".")
    if last.isdigit() and isinstance(modules.get(parent), torch.nn.ModuleList):
        if parent.rpartition(".")[2] in ("layers", "h", "blocks"):
            return hidden
    return None


def _finished(root: Path, cfg: CacheConfig, loaded: dict[int, SparseCoder]) -> bool:
    """Whether `root` holds this very cache, finished: same config, and the same model, coder and
    corpus files, by fingerprints taken without loading the model's weights. False when unsure
    (e.g. a hub model): the full check after loading the model decides then."""
    path = root / MANIFEST
    if not path.exists():
        return False
    old = json.loads(path.read_text())
    fp = old.get("fingerprints") or {}
    if not old.get("complete") or not _same_config(old.get("config"), cfg.model_dump(mode="json")):
        return False
    if any((fp.get("coders") or {}).get(c.name) != c.fingerprint for c in loaded.values()):
        return False
    model = model_fingerprint(cfg.subject, cfg.random_model_seed)
    if model is None or model != fp.get("model"):
        return False
    from autointerp.subject import load_tokenizer

    if fp.get("corpus") != corpus_fingerprint(cfg.corpus, load_tokenizer(cfg.subject)):
        return False
    try:
        ActivationCache(root)  # every file is there
    except CacheError:
        return False
    return True


def _corpus_shortfall(corpus, windows: TokenWindows, cached: int) -> dict | None:
    """When the corpus ran out before `n_tokens`: what was asked and what the corpus held."""
    if corpus.n_tokens is None or not windows.exhausted:
        return None
    asked = corpus.n_tokens // corpus.ctx_len * corpus.ctx_len
    if cached >= asked:
        return None
    log.warning(
        "corpus %r holds only %s tokens (%s cached in %d-token windows); n_tokens asked for %s",
        corpus.source,
        f"{windows.corpus_tokens:,}",
        f"{cached:,}",
        corpus.ctx_len,
        f"{asked:,}",
    )
    return {"asked": asked, "corpus_tokens": windows.corpus_tokens, "cached": cached}


def _grouped(windows: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    while group := list(islice(windows, size)):
        yield group


def new_manifest(cfg: CacheConfig, model_fp: str, corpus_fp: str, coders) -> dict:
    """cache.json as a cache starts, before its first shard (also what `eval.synthetic` writes)."""
    return {
        "version": FORMAT_VERSION,
        "config": cfg.model_dump(mode="json"),
        "fingerprints": {
            "model": model_fp,
            "corpus": corpus_fp,
            "coders": {c.name: c.fingerprint for c in coders},
        },
        "coders": {
            c.name: {
                "hookpoint": str(c.site),
                "n_latents": c.n_latents,
                "kind": c.kind,
                "d_in": c.d_in,
            }
            for c in coders
        },
        "ctx_len": cfg.corpus.ctx_len,
        "shard_seqs": max(1, cfg.shard_tokens // cfg.corpus.ctx_len),
        "complete": False,
    }


def build_cache(cfg: CacheConfig, out: str | Path, progress: bool = True) -> Path:
    """Cache the sparse activations of every coder in `cfg` into `out`; resumes an interrupted cache.
    One process at a time: another one writing `out` is refused, naming its PID."""
    with folder_lock(out, "cache folder"):
        return _build_cache(cfg, Path(out), progress)


def _build_cache(cfg: CacheConfig, root: Path, progress: bool) -> Path:
    loaded = check_inputs(cfg)  # seconds, before the subject's weights load
    # the manifest records the dtype `auto` chose, so caches of different machines compare
    dtype = resolve_subject(cfg.subject).dtype
    cfg = cfg.model_copy(update={"subject": cfg.subject.model_copy(update={"dtype": dtype})})
    if _finished(root, cfg, loaded):
        log.info("cache in %s is complete; nothing to do", root)
        _index_missing(root, progress)
        return root
    subject = load_subject(cfg.subject, cfg.random_model_seed)
    coders = _load_coders(cfg, subject, loaded)
    ctx = cfg.corpus.ctx_len
    shard_seqs = max(1, cfg.shard_tokens // ctx)
    manifest = _Manifest.open_or_create(
        root,
        new_manifest(
            cfg, subject.fingerprint, corpus_fingerprint(cfg.corpus, subject.tokenizer), coders
        ),
    )
    if manifest.data.get("complete"):
        log.info("cache in %s is complete; nothing to do", root)
        _index_missing(root, progress)
        return root
    shutil.rmtree(root / INDEX_DIR, ignore_errors=True)  # the shards change: rebuilt at the end
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for tmp in shards.glob("*.tmp"):
        shutil.rmtree(tmp)
    token_dtype = np.uint16 if len(subject.tokenizer) <= 1 << 16 else np.uint32
    total = None if cfg.corpus.n_tokens is None else (cfg.corpus.n_tokens // ctx) * ctx
    bar = tqdm(
        total=total, unit="tok", unit_scale=True, desc="cache", disable=not progress, smoothing=0.1
    )
    sites = list(dict.fromkeys(c.site for c in coders))
    n_seqs = 0
    writer = ThreadPoolExecutor(max_workers=1)
    inflight: Future | None = None
    try:
        windows = TokenWindows(cfg.corpus, subject.tokenizer)
        for index, group in enumerate(_grouped(iter(windows), shard_seqs)):
            first = index * shard_seqs
            n_seqs = first + len(group)
            if _shard_is_done(shards / _shard_name(index), group):
                bar.update(len(group) * ctx)
                continue
            pending = _encode_shard(
                subject, coders, sites, group, cfg.batch_size, index, first, bar
            )
            if inflight is not None:
                inflight.result()  # at most one shard waits in memory
            inflight = writer.submit(_write_shard, root, pending, coders, token_dtype)
        if inflight is not None:
            inflight.result()
    finally:
        writer.shutdown(wait=True)
        bar.close()
    _drop_stale_shards(shards, n_seqs, shard_seqs)
    short = _corpus_shortfall(cfg.corpus, windows, n_seqs * ctx)
    try:
        summary = write_stats(root, coders, n_seqs * ctx)
        manifest.data.update(complete=True, n_seqs=n_seqs, n_tokens=n_seqs * ctx, summary=summary)
        manifest.data["bos_id"] = windows.bos_id  # at position 0 of every window; None: no BOS
        manifest.data.pop("corpus_shortfall", None)
        if short:
            manifest.data["corpus_shortfall"] = short
        manifest.save()
    except OSError as e:
        raise CacheError(
            f"all shards are written, but writing the statistics to {root} failed: {e}. "
            "Free space and run the same command again to finish."
        ) from None
    try:
        cache = ActivationCache(root)
        for coder in coders:
            build_index(cache, coder.name, progress)
    except OSError as e:
        raise CacheError(
            f"the cache is complete, but writing its latent index to {root / INDEX_DIR} failed: {e}. "
            "Free space and run the same command again to finish (sampling also builds it)."
        ) from None
    log.info("cache complete: %d tokens in %s", n_seqs * ctx, root)
    return root


def _index_missing(root: Path, progress: bool) -> None:
    """Index the coders of a finished cache made before indexes existed (the caller holds its lock)."""
    cache = ActivationCache(root)
    for coder in cache.coders:
        if open_index(cache, coder) is None:
            log.info(
                "indexing the latents of %r in %s (a cache made before indexes existed)",
                coder,
                root,
            )
            try:
                build_index(cache, coder, progress)
            except OSError as e:  # the cache itself is whole: sampling reads its shards instead
                log.warning("could not write the latent index of %r in %s: %s", coder, root, e)


def _shard_is_done(folder: Path, group: list[np.ndarray]) -> bool:
    """A shard on disk is kept if it holds exactly these windows; a partial or stale one is redone."""
    if not folder.is_dir():
        return False
    tokens = np.load(folder / "tokens.npy")
    if tokens.shape == (len(group), len(group[0])) and np.array_equal(tokens, np.stack(group)):
        return True
    if tokens.shape[0] == len(group):
        raise CacheError(
            f"{folder} holds other tokens than the corpus now gives: the corpus changed"
        )
    shutil.rmtree(folder)  # a shorter last shard of a smaller earlier run: recompute it whole
    return False


def _drop_stale_shards(shards: Path, n_seqs: int, shard_seqs: int) -> None:
    n_shards = -(-n_seqs // shard_seqs)
    for folder in shards.iterdir():
        if folder.is_dir() and folder.name.isdigit() and int(folder.name) >= n_shards:
            shutil.rmtree(folder)


def _encode_shard(
    subject: Subject,
    coders: list[SparseCoder],
    sites: list[Site],
    group: list[np.ndarray],
    batch_size: int,
    index: int,
    first: int,
    bar: tqdm,
) -> _Pending:
    pending = _Pending(index, first, group, {c.name: [] for c in coders})
    for start in range(0, len(group), batch_size):
        ids = torch.from_numpy(np.stack(group[start : start + batch_size]))
        acts = subject.activations(ids, sites)
        for coder in coders:
            x = acts[coder.site]
            values, indices = coder.encode(x.reshape(-1, x.shape[-1]))
            pending.latents[coder.name].append(
                (values.float().cpu().numpy(), indices.to(torch.int32).cpu().numpy())
            )
        bar.update(ids.numel())
    return pending


def write_stats(root: Path, coders: list[SparseCoder], n_tokens: int) -> dict:
    """Per-latent firing count, max and sum, from the shards; returns a summary per coder."""
    cache = ActivationCache(root, require_complete=False)
    out = root / "stats"
    out.mkdir(exist_ok=True)
    summary = {}
    for coder in coders:
        count = np.zeros(coder.n_latents, dtype=np.int64)
        vmax = np.zeros(coder.n_latents, dtype=np.float32)
        vsum = np.zeros(coder.n_latents, dtype=np.float64)
        for shard in cache.shard_names:
            off, _, vals = cache.shard_arrays(shard, coder.name)
            c = np.diff(off.astype(np.int64))
            # numpy's stubs type np.diff of an int64 array of unknown shape as timedelta64
            count += c  # type: ignore[arg-type]
            live = c > 0
            if live.any():  # segments of the live latents are contiguous and tile `vals`
                starts = off[:-1][live].astype(np.int64)
                vmax[live] = np.maximum(vmax[live], np.maximum.reduceat(vals, starts))
                vsum[live] += np.add.reduceat(vals, starts, dtype=np.float64)
        np.savez(out / f"{coder.name}.npz", count=count, max=vmax, sum=vsum)
        summary[coder.name] = {
            "nonzeros": int(count.sum()),
            "mean_l0": float(count.sum() / max(n_tokens, 1)),
            "dead_latents": int((count == 0).sum()),
        }
    return summary


class ActivationCache:
    """Read access to a cache folder: tokens, per-latent nonzeros, statistics."""

    def __init__(self, path: str | Path, require_complete: bool = True, check_files: bool = True):
        """`check_files`: fail at once if a shard or statistics file of a finished cache is missing
        (reports and exports, which read the manifest and statistics, skip it)."""
        self.root = Path(path)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            raise CacheError(f"{self.root} is not an activation cache (no {MANIFEST})")
        self.manifest = json.loads(manifest.read_text())
        if require_complete and not self.manifest.get("complete"):
            raise CacheError(
                f"the cache in {self.root} is unfinished; run `autointerp cache` again to resume it"
            )
        self.ctx_len: int = self.manifest["ctx_len"]
        self.shard_seqs: int = self.manifest["shard_seqs"]
        self._arrays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._index: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        if require_complete and check_files:
            self._check_files()

    def _check_files(self) -> None:
        """Every shard and statistics file a finished cache has is there (a few stat calls), so
        that a damaged or half-copied cache fails before anything else loads."""
        n_shards = -(-int(self.manifest.get("n_seqs", 0)) // self.shard_seqs)
        names = [_shard_name(i) for i in range(n_shards)]
        missing = [
            f"shards/{n}/{part}"
            for n in names
            for part in ["tokens.npy", *(f"{c}/values.npy" for c in self.coders)]
            if not (self.root / "shards" / n / part).exists()
        ]
        missing += [
            f"stats/{c}.npz" for c in self.coders if not (self.root / "stats" / f"{c}.npz").exists()
        ]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise CacheError(
                f"the cache in {self.root} is damaged: {', '.join(missing[:3])}{more} missing "
                "(deleted, or copied in part); copy it again, or build it anew in an empty folder"
            )

    @property
    def coders(self) -> dict[str, dict]:
        return self.manifest["coders"]

    @cached_property
    def shard_names(self) -> list[str]:
        return sorted(
            p.name for p in (self.root / "shards").iterdir() if p.is_dir() and p.name.isdigit()
        )

    @property
    def n_tokens(self) -> int:
        return (
            self.manifest.get("n_tokens") or len(self.shard_names) * self.shard_seqs * self.ctx_len
        )

    def shard_arrays(self, shard: str, coder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, pos, values) of one shard, memory-mapped."""
        key = (shard, coder)
        if key not in self._arrays:
            if coder not in self.coders:
                raise CacheError(
                    f"no coder {coder!r} in {self.root} (has: {', '.join(self.coders)})"
                )
            folder = self.root / "shards" / shard / coder
            self._arrays[key] = tuple(  # type: ignore[assignment]
                np.load(folder / f"{k}.npy", mmap_mode="r") for k in ("offsets", "pos", "values")
            )
        return self._arrays[key]

    def latent(self, coder: str, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """Global token indices (seq * ctx_len + position, ascending) and float32 values of one latent."""
        n = self.coders.get(coder, {}).get("n_latents", 0)
        if not 0 <= latent < n:
            raise CacheError(f"latent {latent} out of range for coder {coder!r} with {n} latents")
        index = self.index(coder)
        if index is not None:
            off, tokens, values = index
            a, b = int(off[latent]), int(off[latent + 1])
            # np.array, not astype: a memmap's astype stays a memmap, slow to index in Python
            return np.array(tokens[a:b], dtype=np.int64), np.array(values[a:b], dtype=np.float32)
        tok, val = [], []
        shard_tokens = self.shard_seqs * self.ctx_len
        for shard in self.shard_names:
            off, pos, vals = self.shard_arrays(shard, coder)
            a, b = int(off[latent]), int(off[latent + 1])
            tok.append(pos[a:b].astype(np.int64) + int(shard) * shard_tokens)
            val.append(vals[a:b].astype(np.float32))
        return np.concatenate(tok), np.concatenate(val)

    def latent_tokens(
        self, coder: str, latent: int, most: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, bool]:
        """(token indices, all): the latent's global token indices, ascending; where it fires more
        than `most` times, `most` of them drawn at random without replacement (all False). With the
        latent index only the drawn entries are read, so the cost does not grow with the latent's
        firings; without it every firing is read and the draw is made from them."""
        index = self.index(coder)
        if index is None:
            tok = self.latent(coder, latent)[0]
            if len(tok) <= most:
                return tok, True
            return tok[np.sort(rng.choice(len(tok), most, replace=False))], False
        off, tokens, _ = index
        a, b = int(off[latent]), int(off[latent + 1])
        if b - a <= most:
            return np.array(tokens[a:b], dtype=np.int64), True
        picked = a + np.sort(rng.choice(b - a, most, replace=False))
        return tokens[picked].astype(np.int64), False

    def index(self, coder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The coder's latent index (offsets, tokens, values), memory-mapped; None without one."""
        if coder not in self._index:
            self._index[coder] = open_index(self, coder)
        return self._index[coder]

    def ensure_index(self, coder: str, progress: bool = True) -> bool:
        """Build the coder's latent index if the cache lacks it (see autointerp.index.ensure_index);
        False when it cannot be built here, and `latent` then reads the shards."""
        self._index.pop(coder, None)
        built = ensure_index(self, coder, progress)
        self._index.pop(coder, None)
        return built

    def tokens(self) -> np.ndarray:
        """All token windows, (n_seqs, ctx_len)."""
        return np.concatenate(
            [np.load(self.root / "shards" / s / "tokens.npy") for s in self.shard_names]
        )

    def stats(self, coder: str) -> dict[str, np.ndarray]:
        """count, max, sum, mean (over firing tokens) and density of every latent."""
        path = self.root / "stats" / f"{coder}.npz"
        if not path.exists():
            raise CacheError(f"no statistics for coder {coder!r} in {self.root}")
        with np.load(path) as z:
            s = {k: z[k] for k in z.files}
        s["density"] = s["count"] / max(self.n_tokens, 1)
        s["mean"] = np.divide(
            s["sum"], s["count"], out=np.zeros_like(s["sum"]), where=s["count"] > 0
        )
        return s


from autointerp._callable import make_callable  # noqa: E402 (see autointerp._callable)

make_callable(__name__)
