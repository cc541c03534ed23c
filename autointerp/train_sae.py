"""A short TopK SAE trainer, saving in EleutherAI sparsify's layout (`cfg.json` + `sae.safetensors`).

Usage: `autointerp train-sae --out DIR [--tokens N --latents M --k K --hookpoint layers.15]`;
`--baseline random-model [--baseline-seed 0]` trains on the subject re-initialised (the
`random-model` baseline), which is the only kind of SAE a `baseline: random-model` run accepts.
It made the embedded coder for SmolLM2-135M layer 15 (`autointerp/data/`). The recipe follows sparsify
(Gao et al., 2024, "Scaling and evaluating sparse autoencoders"): TopK activation, unit-norm decoder
rows, Adam with lr 2e-4 / sqrt(n_latents / 2**14), an AuxK loss on dead latents, FVU as the loss.
The first position of every window is left out of training: its residual norm is an outlier
(an attention sink) that would dominate the loss.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import save_file
from tqdm.auto import tqdm

from autointerp.config import CorpusConfig, SubjectConfig, _Strict
from autointerp.corpus import iter_windows
from autointerp.subject import Site, load_subject

log = logging.getLogger(__name__)


class TrainSaeConfig(_Strict):
    subject: SubjectConfig = SubjectConfig()
    corpus: CorpusConfig = CorpusConfig(n_tokens=1_000_000, shuffle_seed=1)
    hookpoint: str = "layers.15"
    n_latents: int = Field(4608, ge=1)
    k: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1)
    """Sequences per step."""
    lr: float | None = None
    auxk_alpha: float = 1 / 32
    dead_after_tokens: int = 100_000
    """A latent that has not fired for this many tokens counts as dead and gets the AuxK loss."""
    epochs: int = Field(1, ge=1)
    """Passes over the tokens; epochs after the first reuse activations kept in memory."""
    seed: int = 0
    baseline: Literal["random-model"] | None = None
    """`random-model`: train on the activations of the subject re-initialised with `baseline_seed`
    (as `baseline: random-model` in a run config); the SAE's cfg.json records it."""
    baseline_seed: int = 0


class TopKSae(torch.nn.Module):
    def __init__(self, d_in: int, n_latents: int, k: int):
        super().__init__()
        self.k = k
        self.encoder = torch.nn.Linear(d_in, n_latents)
        self.encoder.bias.data.zero_()
        self.W_dec = torch.nn.Parameter(self.encoder.weight.data.clone())
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.normalize_decoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.encoder(x - self.b_dec))

    def decode(self, acts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum") + self.b_dec


def _fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


class _Trainer:
    """One optimisation step at a time; tracks dead latents for the AuxK loss."""

    def __init__(self, cfg: TrainSaeConfig, d_in: int):
        self.cfg = cfg
        self.sae = TopKSae(d_in, cfg.n_latents, cfg.k)
        lr = cfg.lr or 2e-4 / math.sqrt(cfg.n_latents / 2**14)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=lr)
        self.since_fired = torch.zeros(cfg.n_latents, dtype=torch.long)
        self.k_aux = d_in // 2
        self.fvus: list[float] = []

    @property
    def dead(self) -> torch.Tensor:
        return self.since_fired > self.cfg.dead_after_tokens

    def step(self, x: torch.Tensor) -> None:
        sae, cfg = self.sae, self.cfg
        if not self.fvus:
            sae.b_dec.data = x.mean(0)
        pre = sae.pre_acts(x)
        acts, idx = pre.topk(cfg.k, dim=-1, sorted=False)
        x_hat = sae.decode(acts, idx)
        loss = fvu = _fvu(x, x_hat)
        self.since_fired += x.shape[0]
        self.since_fired[idx[acts > 0]] = 0
        dead = self.dead
        if cfg.auxk_alpha > 0 and dead.any():
            a_acts, a_idx = pre.masked_fill(~dead, 0).topk(min(self.k_aux, int(dead.sum())), dim=-1)
            err = (x - x_hat).detach()
            err_hat = F.embedding_bag(a_idx, sae.W_dec, per_sample_weights=a_acts, mode="sum")
            loss = loss + cfg.auxk_alpha * _fvu(err, err_hat)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        sae.normalize_decoder()
        self.fvus.append(float(fvu.detach()))

    def recent_fvu(self, n: int = 50) -> float:
        tail = self.fvus[-n:]
        return sum(tail) / max(len(tail), 1)


def train_sae(cfg: TrainSaeConfig, out: str | Path, progress: bool = True) -> dict:
    """Train on activations streamed from the subject model; returns the final metrics.

    The first epoch streams from the model; with `epochs > 1` it also keeps the activations in memory
    (bf16: n_tokens * d_in * 2 bytes) and later epochs reshuffle them without running the model again.
    """
    torch.manual_seed(cfg.seed)
    subject = load_subject(cfg.subject, cfg.baseline_seed if cfg.baseline else None)
    site = Site.parse(cfg.hookpoint)
    d_in = subject.width(site)
    trainer = _Trainer(cfg, d_in)
    total = (cfg.corpus.n_tokens or 0) // cfg.corpus.ctx_len * cfg.corpus.ctx_len or None
    bar = tqdm(
        total=total, unit="tok", unit_scale=True, desc="train-sae epoch 1", disable=not progress
    )
    windows = iter_windows(cfg.corpus, subject.tokenizer)
    kept: list[torch.Tensor] = []
    n_tokens, start = 0, time.time()
    while batch := [w for _, w in zip(range(cfg.batch_size), windows, strict=False)]:
        ids = torch.from_numpy(np.stack(batch))
        # the SAE trains on the CPU whatever the subject's device (`device: auto` may be CUDA)
        x = subject.activations(ids, [site])[site][:, 1:].reshape(-1, d_in).cpu()
        if cfg.epochs > 1:
            kept.append(x.to(torch.bfloat16).clone())
        trainer.step(x.float())
        n_tokens += ids.numel()
        bar.update(ids.numel())
        bar.set_postfix(fvu=f"{trainer.recent_fvu(20):.3f}", dead=int(trainer.dead.sum()))
    bar.close()
    if kept:
        data = torch.cat(kept)
        step_rows = cfg.batch_size * (cfg.corpus.ctx_len - 1)
        for epoch in range(2, cfg.epochs + 1):
            order = torch.randperm(len(data))
            for i in tqdm(
                range(0, len(data), step_rows),
                desc=f"train-sae epoch {epoch}",
                disable=not progress,
            ):
                trainer.step(data[order[i : i + step_rows]].float())
    metrics = {
        "hookpoint": cfg.hookpoint,
        "n_latents": cfg.n_latents,
        "k": cfg.k,
        "n_tokens": n_tokens,
        "epochs": cfg.epochs,
        "steps": len(trainer.fvus),
        "fvu_last_50_steps": round(trainer.recent_fvu(), 4),
        "dead_latents": int(trainer.dead.sum()),
        "seconds": round(time.time() - start, 1),
        "model": cfg.subject.model,
    }
    if cfg.baseline:
        metrics.update(baseline=cfg.baseline, baseline_seed=cfg.baseline_seed)
    save_sparsify(trainer.sae, out, metrics)
    return metrics


def save_sparsify(sae: TopKSae, out: str | Path, metrics: dict | None = None) -> Path:
    """Write `cfg.json` + `sae.safetensors` (bf16) as sparsify does; `train.json` keeps the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n, d = sae.encoder.weight.shape
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, n // d),
        "normalize_decoder": True,
        "num_latents": n,
        "k": sae.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d,
    }
    tensors = {
        "encoder.weight": sae.encoder.weight,
        "encoder.bias": sae.encoder.bias,
        "W_dec": sae.W_dec,
        "b_dec": sae.b_dec,
    }
    save_file(
        {k: v.detach().to(torch.bfloat16).contiguous() for k, v in tensors.items()},
        out / "sae.safetensors",
    )
    if metrics and metrics.get("baseline"):  # what it was trained on (coders.baseline checks it)
        cfg.update(baseline=metrics["baseline"], baseline_seed=metrics["baseline_seed"])
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2))
    if metrics is not None:
        (out / "train.json").write_text(json.dumps(metrics, indent=2))
    return out
