"""Wide sparse coders and synthetic activation caches in the real on-disk formats, for benchmarks and
tests of scale: a random TopK SAE of any width in the sparsify layout, and a cache for it that
`autointerp run` takes for one it built itself (same cache.json, fingerprints, shards, statistics and
latent index), without running the subject model.

The activations are synthetic, the tokens are real: token windows of the configured corpus (the
packaged Wikipedia leads by default) through the subject's tokenizer, repeated from the start when more
tokens are asked for than the corpus holds (cache.json records how often, under `synthetic`). Each
latent fires with its own density, log-normal across latents (some dead, many rare, a few dense, as in
trained SAEs); each token gets k latents drawn from those densities, fewer when a draw repeats; values
are log-normal. Generation streams one shard (65,536 tokens) at a time, so memory does not grow with
the token count.

Usage (Python):
    coder = write_coder(Path("coder"), n_latents=100_000)
    cfg = cache_config(coder, n_tokens=1_000_000)
    info = write_cache(cfg, Path("run/cache"))      # then `autointerp run` with the same cache keys
CLI:
    python -m eval.synthetic --latents 65536 --tokens 1000000 --out runs/synthetic
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from autointerp import cache as cache_mod
from autointerp.coders import load_coder
from autointerp.config import CacheConfig, CoderConfig, CorpusConfig
from autointerp.corpus import TokenWindows, corpus_fingerprint
from autointerp.errors import CacheError
from autointerp.subject import load_tokenizer, model_fingerprint, resolve_subject

log = logging.getLogger(__name__)
D_MODEL = 576  # SmolLM2-135M's residual width
K = 32
HOOKPOINT = "layers.15"
DENSITY_SIGMA = 1.5
"""Spread (log-space standard deviation) of the per-latent firing densities."""
DEAD_FRACTION = 0.02
"""Latents that never fire."""
MAX_DENSITY = 0.5
"""No latent fires on more than this share of tokens."""


def write_coder(
    folder: Path, n_latents: int, d_in: int = D_MODEL, k: int = K, seed: int = 0
) -> Path:
    """A TopK SAE with random weights in the sparsify layout (`sae.safetensors` + `cfg.json`)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dec = rng.standard_normal((n_latents, d_in), dtype=np.float32)
    dec /= np.linalg.norm(dec, axis=1, keepdims=True)  # sparsify's normalize_decoder
    weights = {
        "encoder.weight": rng.standard_normal((n_latents, d_in), dtype=np.float32) / d_in**0.5,
        "encoder.bias": rng.standard_normal(n_latents, dtype=np.float32) * 0.1,
        "W_dec": dec,
        "b_dec": rng.standard_normal(d_in, dtype=np.float32) * 0.1,
    }
    save_file(weights, str(folder / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, n_latents // d_in),
        "normalize_decoder": True,
        "num_latents": n_latents,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def cache_config(
    coder: Path, n_tokens: int, hookpoint: str = HOOKPOINT, corpus: CorpusConfig | None = None
) -> CacheConfig:
    """The cache keys of a run config for one sparsify coder over `n_tokens` of the corpus."""
    corpus = (corpus or CorpusConfig()).model_copy(update={"n_tokens": n_tokens})
    return CacheConfig(
        corpus=corpus, coders=[CoderConfig(hookpoint=hookpoint, path=str(coder.resolve()))]
    )


def densities(n_latents: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each latent's probability of being one draw of a token's k: log-normal, some exactly 0."""
    w = np.exp(DENSITY_SIGMA * rng.standard_normal(n_latents))
    w[rng.random(n_latents) < DEAD_FRACTION] = 0.0
    p = w / w.sum()
    for _ in range(4):  # cap the densest (a token draws k times), then spread the rest again
        p = np.minimum(p, MAX_DENSITY / k)
        p /= p.sum()
    return p


def _repeated_windows(
    cfg: CorpusConfig, tokenizer, n_seqs: int
) -> tuple[Iterator[np.ndarray], dict]:
    """`n_seqs` windows of the corpus, from its start again whenever it runs out; and a dict that
    holds, once the iterator is spent, how many windows one pass gave and how many passes it took."""
    windows = TokenWindows(cfg.model_copy(update={"n_tokens": n_seqs * cfg.ctx_len}), tokenizer)
    info = {"corpus_windows": 0, "passes": 1}

    def gen() -> Iterator[np.ndarray]:
        first: list[np.ndarray] = []
        for w in windows:  # the first pass, kept (the corpus is small next to the cache)
            first.append(w.astype(np.uint32))
            yield w
        info["corpus_windows"] = len(first)
        for i in range(n_seqs - len(first)):
            info["passes"] = 2 + i // len(first)
            yield first[i % len(first)].astype(np.int64)

    return gen(), info


def _shard_latents(
    n_tok: int, k: int, cdf: np.ndarray, scale: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(n_tok, k) values and latent indices: k draws per token, a repeated draw's value 0 (dropped
    by the sparse layout, so that token has fewer than k latents)."""
    idx = np.searchsorted(cdf, rng.random((n_tok, k)), side="right")
    np.minimum(idx, len(cdf) - 1, out=idx)
    idx.sort(axis=1)
    vals = scale[idx] * np.exp(rng.standard_normal((n_tok, k), dtype=np.float32) * 0.5)
    vals[:, 1:][idx[:, 1:] == idx[:, :-1]] = 0.0
    return vals, idx.astype(np.int32)


def write_cache(cfg: CacheConfig, root: Path, seed: int = 0, progress: bool = True) -> dict:
    """Write a finished synthetic cache of `cfg` (sparsify coders) into `root`, which must be empty
    or absent. Returns what was written and how fast."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    if root.exists() and any(root.iterdir()):
        raise CacheError(f"{root} is not empty; a synthetic cache needs an empty folder")
    dtype = resolve_subject(cfg.subject).dtype  # as build_cache records it
    cfg = cfg.model_copy(update={"subject": cfg.subject.model_copy(update={"dtype": dtype})})
    tokenizer = load_tokenizer(cfg.subject)
    coders = [load_coder(c) for c in cfg.coders]
    ctx = cfg.corpus.ctx_len
    shard_seqs = max(1, cfg.shard_tokens // ctx)
    n_seqs = (cfg.corpus.n_tokens or 0) // ctx
    if n_seqs < 1:
        raise CacheError(f"corpus.n_tokens must hold at least one window of {ctx} tokens")
    manifest = cache_mod._Manifest(root, _manifest(cfg, coders, tokenizer, shard_seqs))
    manifest.save()
    rng = np.random.default_rng(seed)
    tables = {}
    for c in coders:
        p = densities(c.n_latents, c.k or K, rng)
        scale = np.exp(rng.normal(1.0, 0.5, c.n_latents)).astype(np.float32)
        tables[c.name] = (np.cumsum(p), scale, c.k or K)
    token_dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    windows, repeats = _repeated_windows(cfg.corpus, tokenizer, n_seqs)
    bar = tqdm(
        total=n_seqs * ctx,
        unit="tok",
        unit_scale=True,
        desc="synthetic cache",
        disable=not progress,
    )
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for index in itertools.count():
        group = list(itertools.islice(windows, shard_seqs))
        if not group:
            break
        n_tok = len(group) * ctx
        latents = {
            name: [_shard_latents(n_tok, k, cdf, scale, rng)]
            for name, (cdf, scale, k) in tables.items()
        }
        pending = cache_mod._Pending(index, index * shard_seqs, group, latents)
        cache_mod._write_shard(root, pending, coders, token_dtype)
        bar.update(n_tok)
    bar.close()
    n_tokens = n_seqs * ctx
    summary = cache_mod.write_stats(root, coders, n_tokens)
    manifest.data.update(
        complete=True,
        n_seqs=n_seqs,
        n_tokens=n_tokens,
        summary=summary,
        bos_id=TokenWindows(cfg.corpus, tokenizer).bos_id,
        synthetic={"seed": seed, "density_sigma": DENSITY_SIGMA, **repeats},
    )
    manifest.save()
    shards_s = time.perf_counter() - t0
    index_s = _build_index(root, [c.name for c in coders], progress)
    return {
        "n_tokens": n_tokens,
        "nonzeros": sum(s["nonzeros"] for s in summary.values()),
        "corpus_passes": repeats["passes"],
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "shards_s": round(shards_s, 2),
        "index_s": None if index_s is None else round(index_s, 2),
        "tokens_per_s": round(n_tokens / shards_s),
    }


def _manifest(cfg: CacheConfig, coders, tokenizer, shard_seqs: int) -> dict:
    """cache.json as build_cache writes it before its first shard."""
    fp = model_fingerprint(cfg.subject, cfg.random_model_seed)
    out = cache_mod.new_manifest(cfg, fp, corpus_fingerprint(cfg.corpus, tokenizer), coders)
    assert out["shard_seqs"] == shard_seqs, (out["shard_seqs"], shard_seqs)
    return out


def _build_index(root: Path, coders: list[str], progress: bool) -> float | None:
    """The latent index build_cache leaves beside the shards, where this version has one; seconds."""
    try:
        from autointerp.index import build_index
    except ImportError:
        return None
    t0 = time.perf_counter()
    cache = cache_mod.ActivationCache(root)
    for name in coders:
        build_index(cache, name, progress)
    return time.perf_counter() - t0


def tiny_embedder(folder: Path) -> Path:
    """A sentence-transformers model of one BERT layer of width 32 (random weights) with the packaged
    all-MiniLM-L6-v2's tokenizer: the embedding scorer's work per example, at little cost."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from autointerp.embed import embedder_folder

    if (folder / "modules.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(embedder_folder(), local_files_only=True)
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    )
    bert_dir = folder / "bert"
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")], device="cpu").save(
        str(folder)
    )
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", type=int, default=65_536)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument(
        "--out", type=Path, required=True, help="run folder: coder/ and cache/ go in it"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    coder = write_coder(args.out / "coder", args.latents, seed=args.seed)
    info = write_cache(cache_config(coder, args.tokens), args.out / "cache", args.seed)
    log.info("%s", json.dumps(info))


if __name__ == "__main__":
    main()
