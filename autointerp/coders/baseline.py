"""Coders under a baseline (`baseline:` in the cache config; Heap et al., 2025, arXiv 2501.17727).

- `random-coder`: `random_coder` replaces a trained coder by one of the same shape with random
  weights.
- `random-model`: a coder means something only on the activations it was trained on, so
  `check_trained_for` refuses a coder made for the trained model (and one made for a random model
  in a run of the trained model). `autointerp train-sae --baseline random-model` records
  `baseline` and `baseline_seed` in the `cfg.json` it writes; other coders may say so in a
  `baseline.json` beside their weights (`{"baseline": "random-model", "baseline_seed": 0}`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch

from autointerp.coders.base import SparseCoder
from autointerp.errors import CoderError
from autointerp.paths import text_fingerprint

SIDECAR = "baseline.json"


def coder_seed(seed: int, name: str) -> int:
    """The random-coder seed of one coder: from the baseline's seed and the coder's name, so that
    two coders of one run get different weights and each is the same in every run."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_coder(trained: SparseCoder, seed: int) -> SparseCoder:
    """A coder of `trained`'s shape, hookpoint, activation function and k, with random weights.

    What is drawn, and why:
    - encoder rows: N(0, 1), each scaled to the trained encoder's mean row norm, so that the
      pre-activations have the trained coder's scale (a JumpReLU threshold or a ReLU bias keeps its
      meaning);
    - decoder rows: the encoder rows normalised to unit length (sparsify's init ties them the same
      way), or, where the decoder's output width differs (a transcoder), N(0, 1) rows of unit length;
    - the encoder bias: zero for TopK coders (as sparsify initialises it, and as delphi's `random`
      option leaves it), since k alone sets how many latents fire; the trained bias and JumpReLU
      thresholds are kept for ReLU and JumpReLU coders, whose sparsity they alone set (zero biases
      would make half the latents fire on every token);
    - the input bias and decoder bias: kept. They centre the activations (sparsify initialises
      b_dec to the data mean) and carry no latent's direction; without them a random TopK coder
      picks the latents most aligned with the mean activation on nearly every token.
    The paper's random-coder baselines likewise keep the activation function and k.
    """
    if trained.W_enc is None:
        raise CoderError(
            f"coder {trained.name!r} is a `neurons` coder: it has no weights to randomise under "
            "`baseline: random-coder` (use `baseline: random-model` for neurons)"
        )
    g = torch.Generator().manual_seed(coder_seed(seed, trained.name))
    w_trained = trained.W_enc.float()
    rows = torch.randn(w_trained.shape, generator=g)
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-8)
    W_enc = rows * w_trained.norm(dim=1).mean()
    W_dec = None
    if trained.W_dec is not None:
        d_out = trained.W_dec.shape[1]
        dec = (
            rows if d_out == trained.d_in else torch.randn((trained.n_latents, d_out), generator=g)
        )
        W_dec = dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
    b_enc = trained.b_enc
    if trained.activation == "topk" and b_enc is not None:
        b_enc = torch.zeros_like(b_enc)
    dtype = trained.W_enc.dtype
    return replace(
        trained,
        fingerprint=text_fingerprint(f"random-coder seed {seed} of {trained.fingerprint}"),
        W_enc=W_enc.to(dtype),
        b_enc=b_enc,
        W_dec=None if W_dec is None else W_dec.to(dtype),
    )


def recorded_baseline(folder: Path) -> tuple[str | None, int]:
    """The baseline a coder in `folder` was trained for, from its `cfg.json` or `baseline.json`:
    (None, 0) for a coder of the trained model."""
    for name in ("cfg.json", SIDECAR):
        path = folder / name
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # the format's loader reports a broken cfg.json
        if isinstance(meta, dict) and meta.get("baseline"):
            return str(meta["baseline"]), int(meta.get("baseline_seed", 0))
    return None, 0


def check_trained_for(
    name: str, folder: Path, random_model_seed: int | None, what: str = "the coder"
) -> None:
    """Refuse a coder trained on other activations than this run's model gives: one of the trained
    model under `baseline: random-model` (or of another seed), one of a random model without it."""
    baseline, seed = recorded_baseline(folder)
    made_for = seed if baseline == "random-model" else None
    if made_for == random_model_seed:
        return
    command = "autointerp train-sae --baseline random-model"
    if random_model_seed is None:
        raise CoderError(
            f"coder {name!r} ({folder}) was trained on a random re-initialisation of the model "
            f"(baseline random-model, seed {made_for}); its latents mean nothing on the trained "
            f"model. Set `baseline: random-model` and `baseline_seed: {made_for}`, or use a coder "
            "of the trained model."
        )
    source = (
        "the trained model's activations"
        if made_for is None
        else f"a random model of another seed ({made_for})"
    )
    raise CoderError(
        f"coder {name!r} ({what}, {folder}) was trained on {source}, so its latents mean nothing "
        f"on the model re-initialised by `baseline: random-model` (seed {random_model_seed}). "
        f"Train an SAE on the random model with `{command} --baseline-seed {random_model_seed} "
        "--out DIR` and set the coder's `path` to DIR, or use a `neurons` coder (`format: neurons`)."
    )
