"""The one interface every sparse coder implements."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from autointerp.errors import CoderError
from autointerp.subject import Site

_TENSORS = ("W_enc", "b_enc", "input_bias", "threshold", "W_dec", "b_dec")


@dataclass(eq=False)
class SparseCoder:
    """A linear encoder followed by a sparsifying activation.

    `activation` is `topk` (ReLU then the k largest), `relu`, `jumprelu` (zero below a per-latent
    threshold) or `identity_topk` (no encoder: the activations themselves, ReLU then top-k; neurons).
    """

    name: str
    site: Site
    kind: str  # sparsify | saelens | gemmascope | neurons (for reports)
    activation: str
    d_in: int
    n_latents: int
    fingerprint: str
    W_enc: Tensor | None = None  # (n_latents, d_in)
    b_enc: Tensor | None = None  # (n_latents,)
    input_bias: Tensor | None = None  # subtracted from the input before encoding (d_in,)
    threshold: Tensor | None = None  # jumprelu (n_latents,)
    k: int | None = None
    W_dec: Tensor | None = None  # (n_latents, d_out): decoder directions
    b_dec: Tensor | None = None
    transcoder: bool = False

    def to(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> SparseCoder:
        """A copy with every tensor cast (encoding in the subject's dtype is fastest)."""
        cast = {
            f: None if getattr(self, f) is None else getattr(self, f).to(device=device, dtype=dtype)
            for f in _TENSORS
        }
        return replace(self, **cast)

    def check_width(self, width: int, model_name: str) -> None:
        if width != self.d_in:
            raise CoderError(
                f"coder {self.name!r} expects inputs of width {self.d_in}, but hookpoint "
                f"{self.site} of {model_name} has width {width}"
            )

    def pre_activations(self, x: Tensor) -> Tensor:
        if self.W_enc is None:
            return x
        if self.input_bias is not None:
            x = x - self.input_bias
        return F.linear(x, self.W_enc, self.b_enc)

    @torch.inference_mode()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, d_in) activations -> (values, indices), both (N, k'); zero values are padding."""
        pre = self.pre_activations(x)
        if self.activation in ("topk", "identity_topk"):
            assert self.k is not None
            # top-k first, ReLU on the k values only: the same result, one pass less over (N, n_latents)
            values, indices = torch.topk(pre, min(self.k, self.n_latents), dim=-1, sorted=False)
            return values.clamp_(min=0), indices
        if self.activation == "relu":
            acts = F.relu(pre)
        elif self.activation == "jumprelu":
            acts = F.relu(pre) * (pre > self.threshold)
        else:
            raise CoderError(f"unknown activation {self.activation!r}")
        width = int((acts > 0).sum(-1).max()) if acts.numel() else 0
        return torch.topk(acts, max(width, 1), dim=-1, sorted=False)
