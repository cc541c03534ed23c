"""Example-embedding scorer (Paulo & Belrose, arXiv 2507.08473): an explanation-free score.

The latent's own activating examples, those the explainer saw (`train`), stand in for an
explanation: each held-out example (activating `test` ones and non-activating `negatives`) is scored by
its mean cosine similarity to the train examples' embeddings (the packaged all-MiniLM-L6-v2 by
default, loaded once per process). The metric is the AUROC of that similarity between activating and
non-activating examples, overall, per activation quantile and per kind of negative; no LLM call.

Mean cosine to the train examples rather than the cosine to their normalised centroid: with unit-norm
embeddings the two differ only by a factor that is the same for every example of a latent (the
centroid's length), so they rank a latent's examples identically and give the same AUROC; the mean
cosine keeps a readable scale (the average similarity to one train example), comparable between
latents. Texts are embedded plain (no `<<marks>>`), as the embedding scorer embeds them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from autointerp.score.base import (
    LatentItem,
    LatentScore,
    continuous_score,
    failed,
    prediction,
    text_of,
)
from autointerp.score.embedding import EmbeddingConfig, encode, sentence_model


class ExampleEmbeddingScorer:
    name = "example-embedding"
    needs_train = True
    """The scorer reads the latent's rendered train examples (`LatentItem.train`)."""

    def __init__(self, cfg: EmbeddingConfig):
        self.cfg = cfg
        self.model = sentence_model(cfg.model)

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        return await asyncio.to_thread(self._score, items)

    def _score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        texts = []
        for it in items:
            texts += [text_of(x) for x in it.train] + [text_of(x) for x, _ in it.labelled()]
        emb = encode(self.model, texts, self.cfg.batch_size) if texts else np.zeros((0, 1))
        out, at = [], 0
        for it in items:
            n_train, docs = len(it.train), it.labelled()
            train, rows = emb[at : at + n_train], emb[at + n_train : at + n_train + len(docs)]
            at += n_train + len(docs)
            out.append(self._one(it, train, docs, rows))
        return out

    def _one(self, it: LatentItem, train: np.ndarray, docs, rows: np.ndarray) -> LatentScore:
        reason = None
        if not it.train:
            reason = "the latent has no train examples to compare its test examples with"
        elif not it.negatives:
            reason = "the latent has no non-activating examples (AUROC needs both kinds)"
        if reason is not None:
            return failed(it.record.id, self.name, reason)
        similarity = rows @ train.mean(axis=0)  # = mean cosine to each train example
        preds = [
            prediction(e, label, value=float(v))
            for (e, label), v in zip(docs, similarity, strict=True)
        ]
        score = continuous_score(it, self.name, preds)
        return score.model_copy(update={"explanation": None})
