"""Embedding scorer: the explanation is a query, the examples are documents; the score of an example is
the cosine similarity of its embedding to the explanation's (the packaged all-MiniLM-L6-v2 by default).
The latent's metric is the AUROC of that similarity between activating and non-activating examples.
No LLM calls: the cheapest scorer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from autointerp.config import _Strict
from autointerp.score.base import LatentItem, LatentScore, continuous_score, prediction, text_of


class EmbeddingConfig(_Strict):
    model: str = "all-MiniLM-L6-v2"
    """`all-MiniLM-L6-v2` (packaged) or a sentence-transformers model folder."""
    batch_size: int = Field(128, ge=1)


@functools.cache
def sentence_model(name: str):
    """The sentence-transformers model `name` (`all-MiniLM-L6-v2`: the packaged one), loaded once
    per process and shared by the scorers that embed text."""
    if name == "all-MiniLM-L6-v2":
        from autointerp.embed import load_embedder

        return load_embedder()
    from sentence_transformers import SentenceTransformer

    from autointerp.subject import resolve_device

    return SentenceTransformer(name, device=resolve_device("auto"))


def encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-norm embeddings of `texts`, one row each. One call at a time per model: the model is
    shared (`sentence_model`) by scorers running in threads, and a Hugging Face fast tokenizer
    used by two threads at once raises "RuntimeError: Already borrowed"."""
    from autointerp.locks import model_lock

    with model_lock(model):
        return np.asarray(
            model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        )


class EmbeddingScorer:
    name = "embedding"

    def __init__(self, cfg: EmbeddingConfig):
        self.cfg = cfg
        self.model = sentence_model(cfg.model)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return encode(self.model, texts, self.cfg.batch_size)

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        return await asyncio.to_thread(self._score, items)

    def _score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        docs = [(i, e, label) for i, it in enumerate(items) for e, label in it.labelled()]
        queries = self._encode([it.text for it in items])
        emb = self._encode([text_of(e) for _, e, _ in docs]) if docs else np.zeros((0, 1))
        preds: list[list] = [[] for _ in items]
        for (i, e, label), d in zip(docs, emb, strict=True):
            preds[i].append(prediction(e, label, value=float(d @ queries[i])))
        return [continuous_score(it, self.name, p) for it, p in zip(items, preds, strict=True)]
