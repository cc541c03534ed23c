"""Shared fixtures: the real packaged subject model, and real coder files in every supported layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.config import SubjectConfig
from autointerp.subject import Subject, load_subject

D_MODEL = 576  # SmolLM2-135M
D_MLP = 1536


@pytest.fixture(scope="session")
def subject() -> Subject:
    return load_subject(SubjectConfig())


@pytest.fixture(scope="session")
def tokenizer(subject):
    return subject.tokenizer


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_sparsify(
    folder: Path,
    d_in: int = D_MODEL,
    n: int = 256,
    k: int = 8,
    transcode: bool = False,
    d_out: int | None = None,
    seed: int = 0,
) -> Path:
    g = _gen(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w = {
        "encoder.weight": torch.randn(n, d_in, generator=g) / d_in**0.5,
        "encoder.bias": torch.randn(n, generator=g) * 0.1,
        "W_dec": torch.randn(n, d_out or d_in, generator=g),
        "b_dec": torch.randn(d_out or d_in, generator=g) * 0.1,
    }
    save_file(w, folder / "sae.safetensors")
    cfg = {
        "activation": "topk",
        "expansion_factor": 1,
        "normalize_decoder": True,
        "num_latents": n,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": transcode,
        "d_in": d_in,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def write_saelens(
    folder: Path, architecture: str, d_in: int = D_MODEL, n: int = 192, seed: int = 1
) -> Path:
    g = _gen(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w = {
        "W_enc": torch.randn(d_in, n, generator=g) / d_in**0.5,
        "b_enc": torch.randn(n, generator=g) * 0.1,
        "W_dec": torch.randn(n, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
    }
    cfg = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": n,
        "hook_name": "blocks.15.hook_resid_post",
        "apply_b_dec_to_input": architecture != "jumprelu",
        "normalize_activations": "none",
    }
    if architecture == "jumprelu":
        w["threshold"] = torch.rand(n, generator=g) * 0.5
    if architecture == "topk":
        cfg["k"] = 16
    save_file(w, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def write_gemmascope(folder: Path, d_in: int = D_MODEL, n: int = 160, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "params.npz",
        W_enc=(rng.standard_normal((d_in, n)) / d_in**0.5).astype(np.float32),
        b_enc=(rng.standard_normal(n) * 0.1).astype(np.float32),
        W_dec=rng.standard_normal((n, d_in)).astype(np.float32),
        b_dec=(rng.standard_normal(d_in) * 0.1).astype(np.float32),
        threshold=(rng.random(n) * 0.3).astype(np.float32),
    )
    return folder


@pytest.fixture
def sparsify_dir(tmp_path) -> Path:
    return write_sparsify(tmp_path / "sparsify" / "layers.15")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A finished run folder without LLM calls: the embedded SAE and top-k neurons at layers.15 over
    16k tokens, 12 latents each, token-statistics explanations and embedding scores. Read-only."""
    from typer.testing import CliRunner

    from autointerp.cli import app

    root = tmp_path_factory.mktemp("small_run")
    cfg = root / "config.yaml"
    cfg.write_text(
        "corpus: {n_tokens: 16384}\n"
        "coders:\n"
        "  - {hookpoint: layers.15}\n"
        "  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}\n"
    )
    run = root / "run"
    runner = CliRunner()
    steps = [
        ["cache", str(cfg), "--out", str(run / "cache")],
        ["sample", str(run / "cache"), "--latents", "0-11"],
        ["explain", str(run / "cache"), "--explainer", "token-stats"],
        ["score", str(run / "cache"), "--scorer", "embedding"],
    ]
    for args in steps:
        done = runner.invoke(app, args)
        assert done.exit_code == 0, (args, done.output, done.exception)
    return run
