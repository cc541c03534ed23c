"""The one interface every sparse coder implements."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from autointerp.errors import CoderError
from autointerp.subject import Site

_TENSORS = ("W_enc", "b_enc", "input_bias", "threshold", "W_dec", "b_dec")
# Bytes of pre-activations one encode step may hold. A batch of 16 x 256 tokens against 1M latents
# is 16 GiB of float32 pre-activations at once; in steps of this size it is 64 of 256 MiB each.
ENCODE_BUDGET_BYTES = 256 << 20
# Fewest latents per step: past this the step takes fewer tokens instead (narrower matrix
# products than this waste more time on overhead than they save in memory).
MIN_CHUNK_LATENTS = 64


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
    encode_budget: int = ENCODE_BUDGET_BYTES  # bytes of pre-activations one encode step may hold

    def to(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> SparseCoder:
        """A copy with every tensor cast (encoding in the subject's dtype is fastest)."""
        cast = {
            f: None if getattr(self, f) is None else getattr(self, f).to(device=device, dtype=dtype)
            for f in _TENSORS
        }
        # mypy checks the dict's values against every field; its keys are tensor fields only
        return replace(self, **cast)  # type: ignore[arg-type]

    def direction(self, latent: int, device: torch.device | str = "cpu") -> Tensor:
        """What the latent writes: its decoder row (fp32); a neuron baseline's unit vector."""
        if self.W_dec is not None:
            return self.W_dec[latent].to(device, torch.float32)
        d = torch.zeros(self.d_in, device=device)
        d[latent] = 1.0
        return d

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

    def chunk_shape(self, n_tokens: int, element_size: int) -> tuple[int, int]:
        """(tokens, latents) per encode step, so that one step's pre-activations fit in
        `encode_budget` bytes (at least one token by MIN_CHUNK_LATENTS latents)."""
        budget = max(1, self.encode_budget // element_size)
        cols = min(self.n_latents, max(budget // max(n_tokens, 1), MIN_CHUNK_LATENTS))
        rows = min(n_tokens, budget // cols)
        if 8 <= rows < n_tokens:
            rows -= rows % 8  # whole blocks of 8 rows: BLAS computes them as in the full product
        return max(1, rows), cols

    @torch.inference_mode()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, d_in) activations -> (values, indices), both (N, k'); zero values are padding.

        Where the (N, n_latents) pre-activations exceed `encode_budget`, they are computed in steps
        of latents and never held whole; the result is the same, up to the order of equal values.
        A batch so long that even MIN_CHUNK_LATENTS latents exceed the budget is also split into
        steps of tokens; there a float32 BLAS may round a short last step's products differently
        in the last bit."""
        dtype = x.dtype if self.W_enc is None else torch.promote_types(x.dtype, self.W_enc.dtype)
        rows, cols = self.chunk_shape(x.shape[0], dtype.itemsize)
        if rows >= x.shape[0] and cols >= self.n_latents:
            return self._encode_whole(x)
        if self.input_bias is not None:
            x = x - self.input_bias
        steps = range(0, x.shape[0], rows)
        if self.activation in ("topk", "identity_topk"):
            parts = [self._topk_rows(x[r : r + rows], cols) for r in steps]
            return torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])
        found = [t for r in steps for t in self._nonzeros(x[r : r + rows], cols, r)]
        rows_, lats, vals = (torch.cat(t) for t in zip(*found, strict=True))
        return _pack(rows_, lats, vals, x.shape[0])

    def _encode_whole(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pre_activations(x)
        if self.activation in ("topk", "identity_topk"):
            assert self.k is not None
            # top-k first, ReLU on the k values only: the same result, one pass less over (N, n_latents)
            values, indices = torch.topk(pre, min(self.k, self.n_latents), dim=-1, sorted=False)
            return values.clamp_(min=0), indices
        acts = self._sparsify(pre, self.threshold)
        width = int((acts > 0).sum(-1).max()) if acts.numel() else 0
        return torch.topk(acts, max(width, 1), dim=-1, sorted=False)

    def _sparsify(self, pre: Tensor, threshold: Tensor | None) -> Tensor:
        """ReLU or JumpReLU, in place: `pre` is a fresh product, and a second copy of it would
        double the memory a step holds."""
        if self.activation not in ("relu", "jumprelu"):
            raise CoderError(f"unknown activation {self.activation!r}")
        if self.W_enc is None:
            pre = pre.clone()  # the caller's activations themselves
        mask = None
        if self.activation == "jumprelu":
            assert threshold is not None  # the loaders refuse a JumpReLU coder without
            mask = pre > threshold
        acts = pre.relu_()
        return acts if mask is None else acts.mul_(mask)

    def _chunks(self, x: Tensor, cols: int):
        """(first latent, pre-activations of latents first..first+cols) for each step; `x` has had
        `input_bias` subtracted already."""
        for lo in range(0, self.n_latents, cols):
            hi = min(lo + cols, self.n_latents)
            if self.W_enc is None:
                yield lo, x[:, lo:hi]
            else:
                bias = None if self.b_enc is None else self.b_enc[lo:hi]
                yield lo, F.linear(x, self.W_enc[lo:hi], bias)

    def _topk_rows(self, x: Tensor, cols: int) -> tuple[Tensor, Tensor]:
        """A running top-k over steps of latents: each step's k best merged with the k best so far."""
        assert self.k is not None
        k = min(self.k, self.n_latents)
        best_v = best_i = None
        for lo, pre in self._chunks(x, cols):
            v, i = torch.topk(pre, min(k, pre.shape[1]), dim=-1, sorted=False)
            i += lo
            if best_v is not None and best_i is not None:
                v, i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i], dim=1)
                if v.shape[1] > k:
                    v, keep = torch.topk(v, k, dim=-1, sorted=False)
                    i = i.gather(1, keep)
            best_v, best_i = v, i
            del pre  # before the next step's product is made
        assert best_v is not None and best_i is not None
        return best_v.clamp_(min=0), best_i

    def _nonzeros(
        self, x: Tensor, cols: int, first_row: int
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Threshold coders: each step's nonzeros as (row, latent, value), gathered sparsely."""
        out = []
        for lo, pre in self._chunks(x, cols):
            thr = None if self.threshold is None else self.threshold[lo : lo + pre.shape[1]]
            acts = self._sparsify(pre, thr)
            r, c = acts.nonzero(as_tuple=True)
            out.append((r + first_row, c + lo, acts[r, c]))
            del pre, acts  # before the next step's product is made
        return out


def _pack(rows: Tensor, lats: Tensor, vals: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Nonzeros as (row, latent, value) triples, latents ascending within a row -> (values,
    indices), both (n, widest row's count). As with top-k over the dense row, a shorter row is
    padded with zero values at distinct latents it does not use (so a scatter never overwrites)."""
    device = rows.device
    counts = torch.bincount(rows, minlength=n)
    width = max(int(counts.max()) if n else 0, 1)
    order = torch.argsort(rows, stable=True)  # keeps latents ascending within each row
    rows, lats, vals = rows[order], lats[order], vals[order]
    slot = torch.arange(rows.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[rows]
    values = vals.new_zeros(n, width)
    values[rows, slot] = vals
    # before active latent a_s lie a_s - s unused ones; the j-th unused latent of a row is then
    # j + #{s : a_s - s <= j}
    before = torch.full((n, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    before[rows, slot] = lats - slot
    j = (torch.arange(width, device=device) - counts[:, None]).clamp_(min=0)
    indices = j + torch.searchsorted(before, j, right=True)
    indices[rows, slot] = lats
    return values, indices
