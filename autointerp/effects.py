"""What a latent does to the model's output: the evidence of the output-side explainers.

- Direct logits (`logits`, `mixed` explainers): the latent's decoder direction read out through the
  model's final norm and unembedding, W_U · norm(d), the direct path only (the layers after the
  coder's hookpoint are skipped, as in a logit lens). The tokens with the largest values are the ones
  the latent promotes, those with the smallest the ones it suppresses. The norm is applied as the
  model applies it, less its value at zero (a LayerNorm's bias is the same for every latent), so the
  ranking does not depend on the direction's scale.
- Steered continuations (`intervention` explainer, the paper's intervention explainer): the subject
  model continues a few cached prompts greedily, clean and with the latent steered, with the same
  steering as the intervention scorer (`score.intervention`: hookpoint, scale, prompt and
  continuation lengths), on prompts the scorer never uses (`prompt_rows(..., exclude=...)`), so that
  the explainer does not see the scorer's answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from autointerp.errors import AutointerpError
from autointerp.types import _Record

if TYPE_CHECKING:
    from autointerp.score.intervention import InterventionConfig, Steerer
    from autointerp.score.stage import ScoreContext
    from autointerp.subject import Subject
    from autointerp.types import SampledLatent

_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


class Continuation(_Record):
    """One prompt continued by the subject model, clean and with the latent steered."""

    prompt: str
    clean: str
    steered: str


class LatentEffects(_Record):
    """The output-side evidence shown to an explainer for one latent."""

    promoted: list[str] = []
    """Tokens the latent's direction raises most in the direct logits, strongest first."""
    suppressed: list[str] = []
    """Tokens it lowers most, strongest first."""
    continuations: list[Continuation] = []


def final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    """The causal LM's norm before the unembedding (`model.norm`, `transformer.ln_f`, ...), or None
    when the architecture has none under a known name."""
    base = getattr(model, "base_model", model)
    for owner in (base, model):
        for name in _NORMS:
            mod = getattr(owner, name, None)
            if isinstance(mod, torch.nn.Module):
                return mod
    return None


@torch.inference_mode()
def direct_logits(subject: Subject, directions: torch.Tensor) -> torch.Tensor:
    """(n, d_model) directions -> (n, vocab) direct-path logits W_U · (norm(d) - norm(0)), fp32."""
    head = subject.model.get_output_embeddings()  # type: ignore[operator]
    if head is None:
        raise AutointerpError(f"{subject.name} has no output embedding (unembedding) to read")
    w_u = head.weight
    if directions.shape[-1] != w_u.shape[1]:
        raise AutointerpError(
            f"a latent direction of width {directions.shape[-1]} is not in the residual stream of "
            f"{subject.name} (width {w_u.shape[1]}): the logits explainers need a coder whose "
            "decoder writes to the residual stream"
        )
    d = directions.to(w_u.device, w_u.dtype)
    norm = final_norm(subject.model)
    if norm is not None:
        d = norm(d) - norm(torch.zeros_like(d[:1]))
    return (d @ w_u.T).float()


def _shown(tokenizer, ids: Sequence[int]) -> list[str]:
    """Token ids as quoted strings (spaces and newlines visible), skipping tokens that decode to
    nothing printable (part of a character)."""
    out = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        if text and "\ufffd" not in text:
            out.append(json.dumps(text, ensure_ascii=False))
    return out


def top_tokens(
    subject: Subject, directions: torch.Tensor, k: int
) -> list[tuple[list[str], list[str]]]:
    """Per direction, the k tokens it promotes most and the k it suppresses most (as quoted text)."""
    logits = direct_logits(subject, directions)
    spare = min(logits.shape[1], 2 * k + 8)  # room for tokens that decode to no printable text
    high = logits.topk(spare, dim=1).indices.tolist()
    low = (-logits).topk(spare, dim=1).indices.tolist()
    tok = subject.tokenizer
    return [(_shown(tok, h)[:k], _shown(tok, lo)[:k]) for h, lo in zip(high, low, strict=True)]


class Effects:
    """Output-side evidence for the explainer, from the subject model and coders of a score
    context (loaded on first use, and shared with the scorers)."""

    def __init__(
        self,
        ctx: ScoreContext,
        top: int,
        n_prompts: int,
        steer: InterventionConfig,
    ):
        self.ctx, self.top, self.n_prompts, self.steer = ctx, top, n_prompts, steer
        self._steerers: dict[str, Steerer] = {}
        self._clean: dict[str, list[str]] = {}

    def logits(self, coder: str, latents: Sequence[int]) -> list[tuple[list[str], list[str]]]:
        subject, c = self.ctx.subject, self.ctx.coder(coder)
        dirs = torch.stack([c.direction(i, subject.device) for i in latents])
        return top_tokens(subject, dirs, self.top)

    def steerer(self, coder: str) -> Steerer:
        """The coder's Steerer on the explainer's prompts: `n_prompts` cache rows that the
        intervention scorer's rows (same `seed` and `n_prompts` as `score.intervention`) exclude."""
        from autointerp.score.intervention import Steerer, prompt_rows

        if coder not in self._steerers:
            tokens, s = self.ctx.tokens, self.steer
            scorer_rows = prompt_rows(len(tokens), s.n_prompts, s.seed).tolist()
            if len(scorer_rows) >= len(tokens):
                raise AutointerpError(
                    f"the cache holds {len(tokens)} sequences, all used by the intervention "
                    "scorer: none is left for the intervention explainer's prompts"
                )
            rows = prompt_rows(len(tokens), self.n_prompts, s.seed + 1, exclude=scorer_rows)
            prompts = torch.as_tensor(tokens[rows, : s.prompt_len].astype("int64"))
            self._steerers[coder] = Steerer(
                self.ctx.subject, self.ctx.coder(coder), prompts, s.new_tokens, s.batch_size
            )
        return self._steerers[coder]

    def continuations(self, coder: str, latent: int, max_activation: float) -> list[Continuation]:
        """The explainer's prompts continued clean and steered (the clean ones computed once)."""
        st = self.steerer(coder)
        subject = self.ctx.subject
        if coder not in self._clean:
            self._clean[coder] = st.continue_prompts(None)[0]
        clean = self._clean[coder]
        steered, finite = st.continue_prompts(
            self.steer.scale * max_activation * st.direction(latent)
        )
        if not finite:
            raise AutointerpError(
                f"steering at scale {self.steer.scale} x max activation {max_activation:.3g} made "
                "the model produce NaN or inf; lower `score.intervention.scale`"
            )
        texts = subject.tokenizer.batch_decode(st.prompts, skip_special_tokens=True)
        return [
            Continuation(prompt=p, clean=c, steered=s)
            for p, c, s in zip(texts, clean, steered, strict=True)
        ]

    def _of(
        self, records: Sequence[SampledLatent], logits: bool, steer: bool
    ) -> list[LatentEffects | str]:
        by_coder: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            by_coder.setdefault(r.id.coder, []).append(i)
        out: list[LatentEffects | str] = [LatentEffects() for _ in records]
        for coder, idx in by_coder.items():
            tops = self.logits(coder, [records[i].id.latent for i in idx]) if logits else None
            for j, i in enumerate(idx):
                fields: dict = {}
                if tops is not None:
                    fields["promoted"], fields["suppressed"] = tops[j]
                if steer:
                    try:
                        fields["continuations"] = self.continuations(
                            coder, records[i].id.latent, records[i].max_activation
                        )
                    except AutointerpError as e:
                        out[i] = str(e)
                        continue
                out[i] = LatentEffects(**fields)
        return out

    async def of(
        self, records: Sequence[SampledLatent], logits: bool, steer: bool
    ) -> list[LatentEffects | str]:
        """Per record its evidence, or the reason it could not be had (the latent then fails)."""
        return await asyncio.to_thread(self._of, records, logits, steer)
