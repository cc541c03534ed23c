"""Surprisal scorer: does the explanation make a base LM less surprised by activating text?

For each example, a local causal LM's mean loss on the example's tokens is computed twice: after a
prefix holding the explanation, and after the same prefix holding an uninformative one. The example's
value is the drop in loss (uninformative minus explained); the latent's metric is the AUROC of the drop
between activating and non-activating examples. It needs the loss of given text, which chat APIs do not
return, so it runs on a local model (the packaged SmolLM2 by default; any transformers model folder):
the subject's own weights on its device, or a model of its own with `device` and `dtype` `auto`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field

from autointerp.config import EMBEDDED_MODEL, SubjectConfig, _Strict
from autointerp.locks import model_lock
from autointerp.score.base import LatentItem, LatentScore, continuous_score, prediction, text_of


class SurprisalConfig(_Strict):
    model: str = EMBEDDED_MODEL
    """Local causal LM that reads the text (a model spec as in `subject.model`)."""
    prefix: str = "The following text is an example of {explanation}.\n\n"
    uninformative: str = "text"
    """Stands in for the explanation in the baseline prefix."""
    batch_size: int = Field(16, ge=1)


class LossModel:
    """Mean token loss of texts after prefixes, with a local causal LM."""

    def __init__(self, model: str, batch_size: int = 16):
        from autointerp.subject import load_subject

        subject = load_subject(SubjectConfig(model=model))
        self.lm, self.tok, self.batch_size = subject.model, subject.tokenizer, batch_size

    @classmethod
    def wrap(cls, subject, batch_size: int = 16) -> LossModel:
        """A LossModel on an already loaded subject model (no second copy of the weights)."""
        m = cls.__new__(cls)
        m.lm, m.tok, m.batch_size = subject.model, subject.tokenizer, batch_size
        return m

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def _ids(self, prefix: str, text: str) -> tuple[list[int], int]:
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        p = bos + self.tok(prefix, add_special_tokens=False).input_ids
        t = self.tok(text, add_special_tokens=False).input_ids
        return p + t, len(p)

    def losses(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean loss (nats per token) of each text after its prefix; NaN for an empty text. The
        model runs nothing else meanwhile (`model_lock`: no other scorer's hook is on it)."""
        with model_lock(self.lm):
            return self._losses(pairs)

    @torch.inference_mode()
    def _losses(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        enc = [self._ids(p, t) for p, t in pairs]
        out = [float("nan")] * len(enc)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            width = max(len(enc[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, : len(enc[i][0])] = torch.tensor(enc[i][0])
                mask[r, : len(enc[i][0])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logits = self.lm(input_ids=ids, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            for r, i in enumerate(batch):
                full, start = len(enc[i][0]), enc[i][1]
                if full > start:
                    out[i] = float(-logp[r, start - 1 : full - 1].mean())
        return out


class SurprisalScorer:
    name = "surprisal"

    def __init__(self, cfg: SurprisalConfig, model: LossModel | None = None):
        self.cfg = cfg
        self.model = model or LossModel(cfg.model, cfg.batch_size)

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        return await asyncio.to_thread(self._score, items)

    def _score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        docs = [(i, e, label) for i, it in enumerate(items) for e, label in it.labelled()]
        neutral = self.cfg.prefix.format(explanation=self.cfg.uninformative)
        pairs = []
        for i, e, _ in docs:
            text = "".join(e.tokens)
            pairs += [(self.cfg.prefix.format(explanation=items[i].text), text), (neutral, text)]
        loss = self.model.losses(pairs)
        preds: list[list] = [[] for _ in items]
        for j, (i, e, label) in enumerate(docs):
            drop = loss[2 * j + 1] - loss[2 * j]
            bad = not np.isfinite(drop)
            preds[i].append(
                prediction(
                    e,
                    label,
                    value=None if bad else drop,
                    error=f"loss is not finite on {text_of(e)[:40]!r}" if bad else None,
                )
            )
        return [continuous_score(it, self.name, p) for it, p in zip(items, preds, strict=True)]
