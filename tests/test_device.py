"""Devices, dtypes and dependencies (issue 10, items 6, 9, 10).

The stages run on a small randomly initialised model of SmolLM2-135M's architecture (eval.gpu_check
builds it: no weights travel), on the CPU with device `cpu` and `auto`, and on CUDA where there is one
(tests marked `gpu`, skipped elsewhere), where they must agree with the CPU.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp import subject as subject_mod
from autointerp.config import (
    CacheConfig,
    ClientConfig,
    CoderConfig,
    CorpusConfig,
    SubjectConfig,
)
from eval.gpu_check import corpus_text, random_sae, tiny_model

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
on_cuda = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="no CUDA device")]
DEVICES = ["cpu", "auto", pytest.param("cuda", marks=on_cuda)]
HOOK = "layers.1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer random model of SmolLM2's width, its corpus, and a random TopK SAE at layers.1."""
    work = tmp_path_factory.mktemp("tiny")
    text = corpus_text(work / "corpus.txt", n_docs=60)
    model = tiny_model(work / "model", text, layers=2, vocab_size=4096)
    return {
        "work": work,
        "text": text,
        "model": model,
        "sae": random_sae(work / "sae" / HOOK, n=256),
    }


@pytest.fixture
def fresh_resolution():
    """Forget the process's cached dtype/device choice before and after the test."""
    if hasattr(subject_mod, "_resolved"):
        subject_mod._resolved.cache_clear()
    yield
    if hasattr(subject_mod, "_resolved"):
        subject_mod._resolved.cache_clear()


def _cache_cfg(tiny, device: str, dtype: str = "float32") -> CacheConfig:
    return CacheConfig(
        subject=SubjectConfig(model=str(tiny["model"]), device=device, dtype=dtype),
        corpus=CorpusConfig(source=str(tiny["text"]), ctx_len=32, n_tokens=1024),
        coders=[CoderConfig(hookpoint=HOOK, path=str(tiny["sae"]))],
        batch_size=8,
    )


# --- item 9: dtype auto ---------------------------------------------------------------------------

X86_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_dtype_auto_is_bf16_only_where_the_cpu_has_it_natively():
    assert subject_mod.cpu_flags(X86_AVX2) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert subject_mod.resolve_dtype("auto", "cpu", subject_mod.cpu_flags(X86_AVX2))[0] == "float32"
    assert subject_mod.resolve_dtype("auto", "cpu", subject_mod.cpu_flags(X86_BF16)) == (
        "bfloat16",
        "the CPU has native bf16 (avx512_bf16)",
    )
    assert subject_mod.resolve_dtype("auto", "cpu", {"amx_bf16", "avx2"})[0] == "bfloat16"
    assert (
        subject_mod.resolve_dtype("auto", "cpu", subject_mod.cpu_flags(ARM_BF16))[0] == "bfloat16"
    )
    why = subject_mod.resolve_dtype("auto", "cpu", subject_mod.cpu_flags(X86_AVX2))[1]
    assert "no native bf16" in why
    for explicit in ("bfloat16", "float16", "float32"):  # an explicit dtype is kept anywhere
        assert subject_mod.resolve_dtype(explicit, "cpu", subject_mod.cpu_flags(X86_AVX2)) == (
            explicit,
            "set in the config",
        )


def test_dtype_auto_on_cuda_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(subject_mod, "_cuda_bf16", lambda device: True)
    assert subject_mod.resolve_dtype("auto", "cuda")[0] == "bfloat16"
    monkeypatch.setattr(subject_mod, "_cuda_bf16", lambda device: False)
    assert subject_mod.resolve_dtype("auto", "cuda:1") == (
        "float32",
        "cuda:1 has no native bf16 (compute capability below 8.0): fp32",
    )


def test_defaults_are_auto():
    assert SubjectConfig().dtype == "auto" and SubjectConfig().device == "auto"
    assert ClientConfig().dtype == "auto" and ClientConfig().device == "auto"


@pytest.mark.parametrize(
    ("flags", "want"), [({"avx2", "fma"}, "float32"), ({"avx2", "avx512_bf16"}, "bfloat16")]
)
def test_auto_dtype_is_logged_loaded_and_recorded(
    tiny, tmp_path, monkeypatch, caplog, fresh_resolution, flags, want
):
    from autointerp.cache import ActivationCache, build_cache
    from autointerp.pipeline import RunConfig, config_dict

    monkeypatch.setattr(subject_mod, "cpu_flags", lambda cpuinfo=None: set(flags))
    cfg = _cache_cfg(tiny, "cpu", dtype="auto")
    with caplog.at_level(logging.INFO, logger="autointerp.subject"):
        assert subject_mod.resolve_subject(cfg.subject).dtype == want
        loaded = subject_mod.load_subject(cfg.subject)
    assert loaded.dtype == getattr(torch, want)
    chosen = [r.getMessage() for r in caplog.records if "dtype" in r.getMessage()]
    assert chosen == [
        f"dtype {want} on device cpu: "
        + subject_mod.resolve_dtype("auto", "cpu", set(flags))[1]  # said once, with the reason
    ]
    # a cache made with auto records what auto chose, so caches of different machines compare
    root = build_cache(cfg, tmp_path / "cache", progress=False)
    assert ActivationCache(root).manifest["config"]["subject"]["dtype"] == want
    assert json.loads((root / "cache.json").read_text())["config"]["subject"]["dtype"] == want
    # and so does a run folder's config, for the subject and the local client
    saved = config_dict(RunConfig(subject=cfg.subject))
    assert saved["subject"]["dtype"] == want and saved["client"]["dtype"] == want


def test_local_client_dtype_auto(tiny, monkeypatch, fresh_resolution):
    from autointerp.clients.local import TransformersClient

    monkeypatch.setattr(subject_mod, "cpu_flags", lambda cpuinfo=None: {"avx2"})
    client = TransformersClient(str(tiny["model"]), device="cpu")  # dtype auto by default
    assert client.lm.dtype == torch.float32


# --- item 6: devices ------------------------------------------------------------------------------


def test_device_auto_is_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert subject_mod.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert subject_mod.resolve_device("auto") == "cpu"
    assert (
        subject_mod.resolve_device("cuda:1") == "cuda:1"
        and subject_mod.resolve_device("cpu") == "cpu"
    )


def _kind(device: str) -> str:
    """The device type that `device` should land on here."""
    return "cuda" if device.startswith("cuda") or (device == "auto" and CUDA) else "cpu"


def _stages(tiny, device: str, out: Path) -> dict:
    """Cache, surprisal losses and an intervention score on `device`, as the pipeline runs them."""
    from autointerp.cache import ActivationCache, _load_coders, build_cache
    from autointerp.score.base import LatentItem
    from autointerp.score.intervention import InterventionConfig, InterventionScorer
    from autointerp.score.surprisal import LossModel, SurprisalConfig, SurprisalScorer
    from autointerp.types import Example, Explanation, LatentId, SampledLatent

    cfg = _cache_cfg(tiny, device)
    cache = ActivationCache(build_cache(cfg, out, progress=False))
    subj = subject_mod.load_subject(cfg.subject)
    want = _kind(device)
    assert subj.device.type == want
    coder = _load_coders(cfg, subj)[0]
    assert coder.W_dec.device.type == want
    acts = np.zeros((coder.n_latents, cache.n_tokens), dtype=np.float32)
    for lat in range(coder.n_latents):
        where, values = cache.latent(coder.name, lat)
        acts[lat, where] = values

    lm = LossModel.wrap(subj, batch_size=4)
    lid = LatentId(coder=coder.name, latent=int(np.argmax((acts > 0).sum(1))))
    windows = cache.tokens()[:4]
    examples = [
        Example(
            tokens=[subj.tokenizer.decode([t]) for t in w[:12]],
            activations=[0.0] * 12,
            seq=i,
            start=0,
            kind="activating" if i < 2 else "random",
        )
        for i, w in enumerate(windows)
    ]
    record = SampledLatent(
        id=lid,
        status="ok",
        density=0.1,
        max_activation=float(acts[lid.latent].max()),
        n_activating_windows=4,
    )
    expl = Explanation(latent=lid, text="rivers and bridges", raw="", model="t", prompt="t")
    item = LatentItem(record=record, explanation=expl, test=examples[:2], negatives=examples[2:])
    [surprisal] = asyncio.run(SurprisalScorer(SurprisalConfig(), lm).score([item]))
    icfg = InterventionConfig(n_prompts=2, prompt_len=8, new_tokens=4, batch_size=2)
    scorer = InterventionScorer(icfg, subj, coder, cache.tokens(), lm)
    [intervention] = asyncio.run(scorer.score([item]))
    assert scorer.direction(lid.latent).device.type == want
    assert surprisal.status == "ok" and intervention.status == "ok", (surprisal, intervention)
    return {
        "acts": acts,
        "surprisal": [p.value for p in surprisal.predictions],
        "intervention": intervention,
    }


@pytest.mark.parametrize("device", DEVICES)
def test_cache_surprisal_and_intervention_on_device(tiny, tmp_path, device):
    got = _stages(tiny, device, tmp_path / "cache")
    assert (got["acts"] > 0).any()
    assert all(v is not None and np.isfinite(v) for v in got["surprisal"])
    assert got["intervention"].metrics["score"] is not None
    if device == "cuda":  # the GPU agrees with the CPU
        ref = _stages(tiny, "cpu", tmp_path / "cpu-cache")
        np.testing.assert_allclose(got["acts"], ref["acts"], atol=1e-3)
        np.testing.assert_allclose(got["surprisal"], ref["surprisal"], atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_local_client_on_device(tiny, device):
    from autointerp.clients import make_client
    from autointerp.clients.base import GenParams

    cfg = ClientConfig(model=str(tiny["model"]), device=device, dtype="float32", batch_size=2)
    client = make_client(cfg)
    assert client.lm.device.type == _kind(device)
    chats = [[{"role": "user", "content": f"Name a river {i}."}] for i in range(3)]
    # one greedy token with logprobs (the classifiers' path, prefix shared) ...
    one = asyncio.run(
        client.complete(chats, GenParams(max_tokens=1, logprobs=True, top_logprobs=2))
    )
    # ... and batched generation (the explainer's path), a prefilled answer included
    chats.append([*chats[0], {"role": "assistant", "content": "The river"}])
    gen = asyncio.run(client.complete(chats, GenParams(max_tokens=4, logprobs=True)))
    for c in one + gen:
        assert c.error is None and c.text is not None and c.prompt_tokens > 0
    assert all(c.logprobs is not None and len(c.logprobs) == 1 for c in one)
    assert all(len(c.logprobs[0].top) == 2 for c in one)
    assert any(c.completion_tokens > 0 for c in gen)
    assert all(c.logprobs is not None and len(c.logprobs) == c.completion_tokens for c in gen)


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh with --cpu-only (as without CUDA) checks the CPU alone and says so; the
    model-bound stages import none of the heavy optional packages (the GPU machines lack them)."""
    env = {**os.environ, "PYTHON": sys.executable}
    args = ["--cpu-only", "--layers", "2", "--tokens", "512", "--latents", "1", "--prompts", "2"]
    args += ["--texts", "4", "--keep", str(tmp_path)]
    out = subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--cpu-only: the CPU only" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("cpu "))
    rates = [float(x.replace(",", "")) for x in row.split()[1:]]
    assert len(rates) == 3 and all(r > 0 for r in rates)  # cache, surprisal, intervention tok/s
    assert "optional packages imported: none" in out.stdout


# --- item 10: dependencies ------------------------------------------------------------------------


def test_package_asks_for_a_torch_range_and_setup_pins_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = [d for d in project["dependencies"] if d.replace(" ", "").startswith("torch")]
    assert torch_req and all("==" not in d for d in torch_req), torch_req
    assert any(d.startswith("vllm>=") for d in project["optional-dependencies"]["vllm"])
    assert "torch==" in (ROOT / "scripts" / "setup.sh").read_text()


def test_embedder_does_not_set_hf_hub_offline(monkeypatch):
    pytest.importorskip("sentence_transformers")
    from autointerp.embed import load_embedder

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = load_embedder(device="cpu")
    assert "HF_HUB_OFFLINE" not in os.environ
    emb = model.encode(["a river", "a bridge"], normalize_embeddings=True)
    assert emb.shape == (2, 384)
