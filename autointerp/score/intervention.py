"""Intervention scorer: does the explanation predict what the latent does to the model's output?

The subject model continues `n_prompts` prompts (the first `prompt_len` tokens of sequences of the
cache) twice, greedily: clean, and with the latent steered: its decoder direction, times `scale` times
the latent's largest cached activation, added at its hookpoint at every position. A local LM then reads
each continuation followed by the explanation; the prompt's value is the explanation's surprisal after
the clean continuation minus after the steered one (positive: steering made the explanation more
predictable). The latent's `score` is the mean over prompts; `auroc` separates steered from clean
continuations by the explanation's log-likelihood. This scores output-side latents, which
activation-based scorers miss (Paulo et al., 2024, after Gur-Arieh et al.).

A scale that drives the model to non-finite values fails the latent with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field

from autointerp.coders.base import SparseCoder
from autointerp.config import _Strict
from autointerp.locks import model_lock
from autointerp.score import metrics
from autointerp.score.base import LatentItem, LatentScore, Prediction, continuous_score, failed
from autointerp.score.surprisal import LossModel
from autointerp.subject import Subject


class InterventionConfig(_Strict):
    n_prompts: int = Field(16, ge=2)
    """Prompts continued per latent (the paper: 40)."""
    prompt_len: int = Field(16, ge=1)
    """Tokens of each prompt, taken from the start of cached sequences."""
    new_tokens: int = Field(16, ge=1)
    """Tokens generated per continuation."""
    scale: float = Field(4.0, gt=0)
    """Steering strength in units of the latent's largest cached activation."""
    prefix: str = "{text}\n\nThe text above is about"
    """What the scoring LM reads before the explanation."""
    batch_size: int = Field(16, ge=1)
    seed: int = 0


class InterventionScorer:
    name = "intervention"

    def __init__(
        self,
        cfg: InterventionConfig,
        subject: Subject,
        coder: SparseCoder,
        tokens: np.ndarray,
        loss_model: LossModel,
    ):
        self.cfg, self.subject, self.coder, self.loss = cfg, subject, coder, loss_model
        rng = np.random.default_rng(cfg.seed)
        rows = rng.choice(len(tokens), size=min(cfg.n_prompts, len(tokens)), replace=False)
        self.prompts = torch.as_tensor(tokens[np.sort(rows), : cfg.prompt_len].astype(np.int64))
        self._clean: list[str] | None = None

    def direction(self, latent: int) -> torch.Tensor:
        """The latent's decoder direction (fp32, on the subject's device)."""
        if self.coder.W_dec is not None:
            return self.coder.W_dec[latent].to(self.subject.device, torch.float32)
        d = torch.zeros(self.coder.d_in, device=self.subject.device)  # neurons: the unit vector
        d[latent] = 1.0
        return d

    @torch.inference_mode()
    def continue_prompts(self, add: torch.Tensor | None) -> tuple[list[str], bool]:
        """Greedy continuations with `add` added at the coder's site; and whether every value stayed
        finite."""
        # one flag per steered pass, read once at the end (no GPU sync per step)
        finite: list[torch.Tensor] = []
        handle = None
        if add is not None:
            mod = self.subject.module(self.coder.site)
            vec = add.to(self.subject.device, self.subject.dtype)

            def steer(value):
                out = value + vec
                finite.append(torch.isfinite(out).all())
                return out

            if self.coder.site.port == "input" and not self.coder.transcoder:

                def pre(m, args, kwargs):
                    if args:
                        return (steer(args[0]), *args[1:]), kwargs
                    key = next(iter(kwargs))
                    return args, {**kwargs, key: steer(kwargs[key])}

                handle = mod.register_forward_pre_hook(pre, with_kwargs=True)
            else:
                handle = mod.register_forward_hook(
                    lambda m, i, o: (steer(o[0]), *o[1:]) if isinstance(o, tuple) else steer(o)
                )
        try:
            texts = []
            for s in range(0, len(self.prompts), self.cfg.batch_size):
                ids = self.prompts[s : s + self.cfg.batch_size].to(self.subject.device)
                # nn.Module.__getattr__ is typed Tensor | Module; the model is a causal LM
                out = self.subject.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.cfg.new_tokens,
                    min_new_tokens=self.cfg.new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.subject.tokenizer.eos_token_id,
                )
                texts += self.subject.tokenizer.batch_decode(
                    out[:, ids.shape[1] :], skip_special_tokens=True
                )
        finally:
            if handle is not None:
                handle.remove()
        return texts, bool(torch.stack(finite).all()) if finite else True

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        return await asyncio.to_thread(lambda: [self._locked_score(it) for it in items])

    def _locked_score(self, item: LatentItem) -> LatentScore:
        """One latent with the subject model to itself (`model_lock`): no other scorer's pass sees
        the steering hook, and no other hook is on the model while this one continues prompts."""
        with model_lock(self.subject.model):
            return self._score(item)

    def _score(self, item: LatentItem) -> LatentScore:
        lid = item.record.id
        if self._clean is None:
            self._clean, _ = self.continue_prompts(None)
        strength = self.cfg.scale * item.record.max_activation
        steered, finite = self.continue_prompts(strength * self.direction(lid.latent))
        if not finite:
            return failed(
                lid,
                self.name,
                f"steering at scale {self.cfg.scale} x max activation {item.record.max_activation:.3g}"
                " made the model produce NaN or inf; lower `intervention.scale`",
                explanation=item.text,
            )
        texts = self._clean + steered
        loss = self.loss.losses([(self.cfg.prefix.format(text=t), " " + item.text) for t in texts])
        n = len(self._clean)
        preds = [
            Prediction(
                seq=i % n,
                start=0,
                kind="steered" if i >= n else "clean",
                label=i >= n,
                value=-loss[i] if np.isfinite(loss[i]) else None,
                error=None if np.isfinite(loss[i]) else "loss is not finite",
            )
            for i in range(len(texts))
        ]
        result = continuous_score(item, self.name, preds)
        drops = [loss[i] - loss[i + n] for i in range(n) if np.isfinite(loss[i] - loss[i + n])]
        changed = sum(a != b for a, b in zip(self._clean, steered, strict=True))
        m = dict(result.metrics)
        m["score"] = float(np.mean(drops)) if drops else None
        m["changed"] = changed / n
        intervals = dict(result.intervals)
        if (t := metrics.mean_interval(drops)) is not None:
            intervals["score"] = t  # Student t over prompts
        return result.model_copy(update={"metrics": m, "intervals": intervals})
