"""Embedding scorer: the explanation is a query, the examples are documents; the score of an example is
the cosine similarity of its embedding to the explanation's (the packaged all-MiniLM-L6-v2 by default).
The latent's metric is the AUROC of that similarity between activating and non-activating examples.
No LLM calls: the cheapest scorer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from autointerp.config import _Strict
from autointerp.score.base import LatentItem, LatentScore, continuous_score, prediction, text_of


class EmbeddingConfig(_Strict):
    model: str = "all-MiniLM-L6-v2"
    """`all-MiniLM-L6-v2` (packaged) or a sentence-transformers model folder."""
    batch_size: int = Field(128, ge=1)


class EmbeddingScorer:
    name = "embedding"

    def __init__(self, cfg: EmbeddingConfig):
        self.cfg = cfg
        if cfg.model == "all-MiniLM-L6-v2":
            from autointerp.embed import load_embedder

            self.model = load_embedder()
        else:
            from sentence_transformers import SentenceTransformer

            from autointerp.subject import resolve_device

            self.model = SentenceTransformer(cfg.model, device=resolve_device("auto"))

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                texts,
                batch_size=self.cfg.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        )

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
