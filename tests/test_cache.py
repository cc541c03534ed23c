"""The activation cache on the real model: correctness, resume, refusal to mix, bad input."""

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_sparsify

import autointerp.cache as cache_mod
from autointerp.cache import ActivationCache, build_cache
from autointerp.coders import load_coder
from autointerp.config import CacheConfig, CoderConfig, CorpusConfig, SubjectConfig
from autointerp.errors import CacheError, CoderError, CorpusError, SubjectError

CTX = 64


def _cfg(sae: Path, n_tokens: int = 64 * 40, **corpus) -> CacheConfig:
    return CacheConfig(
        corpus=CorpusConfig(ctx_len=CTX, n_tokens=n_tokens, **corpus),
        coders=[
            CoderConfig(path=str(sae), hookpoint="layers.15", name="sae"),
            CoderConfig(
                format="neurons", hookpoint="layers.4.mlp.down_proj:input", k=8, name="neurons"
            ),
        ],
        batch_size=6,
        shard_tokens=1024,  # 16 windows per shard: 40 windows make 3 shards, the last one partial
    )


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.load(p) for p in sorted((root / "shards").rglob("*.npy"))}


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    return write_sparsify(tmp_path_factory.mktemp("coder") / "layers.15", n=256, k=8)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sae):
    return build_cache(_cfg(sae), tmp_path_factory.mktemp("ref") / "cache", progress=False)


def test_cache_holds_exactly_the_coder_outputs(reference, sae, subject):
    c = ActivationCache(reference)
    tokens = c.tokens()
    assert tokens.shape == (40, CTX) and len(c.shard_names) == 3
    assert c.manifest["complete"] and c.n_tokens == 40 * CTX
    coder = load_coder(CoderConfig(path=str(sae), hookpoint="layers.15")).to(subject.dtype)
    site = coder.site
    ids = torch.from_numpy(tokens.astype(np.int64))
    parts = []
    # the cache's batches (6 windows, restarting at each 16-window shard): bf16 depends on batch shape
    for start in [s + b for s in range(0, 40, 16) for b in range(0, min(16, 40 - s), 6)]:
        acts = subject.activations(ids[start : min(start + 6, start - start % 16 + 16)], [site])[
            site
        ]
        values, indices = coder.encode(acts.reshape(-1, acts.shape[-1]))
        parts.append(torch.zeros(len(values), 256).scatter_(1, indices.long(), values.float()))
    dense = torch.cat(parts).numpy()
    for latent in (0, 7, 100, 255):
        tok, val = c.latent("sae", latent)
        expected_tok = np.flatnonzero(dense[:, latent])
        np.testing.assert_array_equal(tok, expected_tok)
        np.testing.assert_allclose(val, dense[expected_tok, latent], rtol=2e-3)
    stats = c.stats("sae")
    np.testing.assert_array_equal(stats["count"], (dense > 0).sum(0))
    np.testing.assert_allclose(stats["max"], dense.max(0), rtol=2e-3)
    assert stats["density"].sum() == pytest.approx(c.manifest["summary"]["sae"]["mean_l0"])
    neurons = c.stats("neurons")
    assert neurons["count"].shape == (1536,) and neurons["count"].sum() <= 8 * 40 * CTX


def test_bytes_per_nonzero(reference):
    c = ActivationCache(reference)
    nnz = c.manifest["summary"]["sae"]["nonzeros"]
    size = sum(f.stat().st_size for f in (reference / "shards").glob("*/sae/*.npy"))
    # 4 bytes per nonzero plus npy headers and the per-shard offsets (tiny at real shard sizes)
    assert 4 * nnz < size <= 4 * nnz + 3 * (4 * 257 + 3 * 128)


def test_finished_cache_is_reused_and_extended(reference, sae, tmp_path):
    before = _arrays(reference)
    build_cache(_cfg(sae), reference, progress=False)  # complete: nothing recomputed
    assert _arrays(reference).keys() == before.keys()
    # More tokens: the partial last shard is redone, the result equals a fresh cache of that size.
    small = build_cache(_cfg(sae, n_tokens=64 * 20), tmp_path / "grow", progress=False)
    build_cache(_cfg(sae), small, progress=False)
    fresh = _arrays(reference)
    grown = _arrays(small)
    assert grown.keys() == fresh.keys()
    for k in fresh:
        np.testing.assert_array_equal(grown[k], fresh[k], err_msg=k)


def test_interrupted_cache_resumes_to_the_same_result(reference, sae, tmp_path):
    """Kill a real `autointerp cache` process after its first shard, resume, compare with uninterrupted."""
    out = tmp_path / "killed"
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps(_cfg(sae).model_dump(mode="json")))
    cmd = [sys.executable, "-m", "autointerp.cli", "cache", str(config), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (
        not (out / "shards" / "000000").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "shards" / "000000").exists(), "the first shard was never written"
    assert not (out / "shards" / "000002").exists(), (
        "the run finished before it could be interrupted"
    )
    assert not json.loads((out / "cache.json").read_text())["complete"]
    with pytest.raises(CacheError, match="unfinished"):
        ActivationCache(out)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    expected, got = _arrays(reference), _arrays(out)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    for name in ("sae", "neurons"):
        np.testing.assert_array_equal(
            ActivationCache(out).stats(name)["count"],
            ActivationCache(reference).stats(name)["count"],
        )


def test_refuses_a_folder_with_another_cache(reference, tmp_path):
    other = write_sparsify(tmp_path / "other", n=256, k=8, seed=9)
    with pytest.raises(
        CacheError, match=r"(?s)different inputs.*coder 'sae': cache has '\w+', this run has"
    ):
        build_cache(_cfg(other), reference, progress=False)
    with pytest.raises(
        CacheError, match=r"(?s)different inputs.*ctx_len: cache has 64, this run has 32"
    ):
        build_cache(
            _cfg(other).model_copy(update={"corpus": CorpusConfig(ctx_len=32, n_tokens=640)}),
            reference,
            progress=False,
        )
    (tmp_path / "notacache").mkdir()
    (tmp_path / "notacache" / "file.txt").write_text("x")
    with pytest.raises(CacheError, match="not empty"):
        build_cache(_cfg(other), tmp_path / "notacache", progress=False)


def test_disk_full_keeps_finished_shards(sae, tmp_path, monkeypatch):
    real_save = cache_mod._save_npy
    calls = {"n": 0}

    def failing_save(path, array):
        if "000001" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        calls["n"] += 1
        real_save(path, array)

    monkeypatch.setattr(cache_mod, "_save_npy", failing_save)
    out = tmp_path / "full"
    with pytest.raises(CacheError, match=r"shard 1 .*the disk is full.*resume"):
        build_cache(_cfg(sae), out, progress=False)
    assert (out / "shards" / "000000" / "sae" / "values.npy").exists()
    assert not list((out / "shards").glob("*.tmp")) and not (out / "shards" / "000001").exists()
    monkeypatch.setattr(cache_mod, "_save_npy", real_save)
    build_cache(_cfg(sae), out, progress=False)
    assert len(ActivationCache(out).shard_names) == 3


def test_bad_coder_inputs(sae, tmp_path):
    cfg = _cfg(sae)
    wrong = write_sparsify(tmp_path / "narrow", d_in=512)
    with pytest.raises(CoderError, match="width 512.*width 576"):
        build_cache(
            cfg.model_copy(update={"coders": [CoderConfig(path=str(wrong))]}), tmp_path / "a"
        )
    with pytest.raises(SubjectError, match="unknown hookpoint 'layers.40'"):
        build_cache(
            cfg.model_copy(update={"coders": [CoderConfig(path=str(sae), hookpoint="layers.40")]}),
            tmp_path / "b",
        )
    twice = [CoderConfig(path=str(sae)), CoderConfig(path=str(sae))]
    with pytest.raises(CoderError, match="named"):
        build_cache(cfg.model_copy(update={"coders": twice}), tmp_path / "c")


@pytest.fixture
def small_disk(tmp_path):
    """A real 120 kB filesystem (tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk(reference, sae, small_disk):
    out = small_disk / "cache"
    with pytest.raises(CacheError, match=r"shard \d+ .*failed: the disk is full.*resume"):
        build_cache(_cfg(sae), out, progress=False)
    kept = sorted(p.name for p in (out / "shards").iterdir())
    assert kept and not [k for k in kept if k.endswith(".tmp")]
    for shard in kept:  # every shard that exists is whole and correct
        for p in (out / "shards" / shard).rglob("*.npy"):
            np.testing.assert_array_equal(np.load(p), np.load(reference / p.relative_to(out)))
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    build_cache(_cfg(sae), out, progress=False)
    expected, got = _arrays(reference), _arrays(out)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


def _no_weights(monkeypatch):
    """The subject's weights must not load: any call fails the test."""

    def refuse(cfg):
        raise AssertionError(
            "the subject model's weights were loaded before the inputs were checked"
        )

    monkeypatch.setattr(cache_mod, "load_subject", refuse)


def test_bad_inputs_fail_before_the_model_loads(sae, tmp_path, monkeypatch):
    _no_weights(monkeypatch)
    cfg = _cfg(sae)
    coders = cfg.coders
    cases = [
        (
            {"coders": [CoderConfig(path=str(tmp_path / "none"), hookpoint="layers.15")]},
            CoderError,
            "coder path not found",
        ),
        (
            {"coders": [CoderConfig(path=str(write_sparsify(tmp_path / "n", d_in=512)))]},
            CoderError,
            "width 512.*width 576",
        ),
        (
            {"coders": [CoderConfig(path=str(sae), hookpoint="layers.40")]},
            SubjectError,
            "unknown hookpoint 'layers.40'.*layers.{0..29}",
        ),
        (
            {"coders": [coders[1].model_copy(update={"hookpoint": "layers.4.mlpp:input"})]},
            SubjectError,
            "unknown hookpoint 'layers.4.mlpp'",
        ),
        ({"coders": [coders[0], coders[0]]}, CoderError, "several coders are named"),
    ]
    broken = write_sparsify(tmp_path / "broken")
    (broken / "cfg.json").write_text("{not json")
    cases.append(({"coders": [CoderConfig(path=str(broken))]}, CoderError, "not valid JSON"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("na\xefve ".encode("latin-1") * 100)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for source, match in [
        (latin1, "latin1.txt is not UTF-8"),
        (tmp_path / "missing.txt", "corpus source not found"),
        (empty, "holds no text"),
    ]:
        corpus = CorpusConfig(ctx_len=CTX, n_tokens=640, source=str(source))
        cases.append(({"corpus": corpus}, CorpusError, match))
    for i, (update, error, match) in enumerate(cases):
        with pytest.raises(error, match=match):
            build_cache(cfg.model_copy(update=update), tmp_path / f"out{i}", progress=False)


def test_dtype_change_is_refused(reference, sae, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(reference, copy)
    before = (copy / "cache.json").read_text()
    # The reference cache holds the dtype `auto` chose on this machine; ask for the other one.
    had = json.loads(before)["config"]["subject"]["dtype"]
    other = "float32" if had == "bfloat16" else "bfloat16"
    changed = _cfg(sae).model_copy(update={"subject": SubjectConfig(dtype=other)})
    with pytest.raises(CacheError, match=f"dtype: cache has '{had}', this run has '{other}'"):
        build_cache(changed, copy, progress=False)
    assert (copy / "cache.json").read_text() == before


def test_a_device_change_keeps_a_finished_cache(reference, sae, tmp_path, monkeypatch):
    """The device does not change what a cache holds: a finished cache made with `device: auto`
    is reused as it is with `cpu`, without loading the model or rewriting anything."""
    copy = tmp_path / "cache"
    shutil.copytree(reference, copy)
    before, arrays = (copy / "cache.json").read_text(), _arrays(copy)
    assert json.loads(before)["config"]["subject"]["device"] == "auto"
    _no_weights(monkeypatch)
    on_cpu = _cfg(sae).model_copy(update={"subject": SubjectConfig(device="cpu")})
    assert build_cache(on_cpu, copy, progress=False) == copy
    assert (copy / "cache.json").read_text() == before
    assert _arrays(copy).keys() == arrays.keys()


def test_short_corpus_is_reported(sae, tmp_path, caplog):
    text = tmp_path / "short.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    cfg = _cfg(sae, n_tokens=64 * 100, source=str(text))
    with caplog.at_level("WARNING", logger="autointerp.cache"):
        root = build_cache(cfg, tmp_path / "c", progress=False)
    c = ActivationCache(root)
    short = c.manifest["corpus_shortfall"]
    assert short["asked"] == 6400 and short["cached"] == c.n_tokens < 6400
    windows = c.n_tokens // CTX  # each holds BOS and CTX - 1 tokens of text
    assert windows * (CTX - 1) <= short["corpus_tokens"] < (windows + 1) * (CTX - 1)
    assert f"holds only {short['corpus_tokens']:,} tokens" in caplog.text
    build_cache(_cfg(sae, n_tokens=64 * 3, source=str(text)), root, progress=False)
    assert "corpus_shortfall" not in ActivationCache(root).manifest  # enough now: no note


def test_failed_corpus_read_does_not_block_the_retry(sae, tmp_path):
    docs = tmp_path / "docs.jsonl"
    rows = [
        json.dumps({"text": f"Document number {i} is about birds and trees."}) for i in range(300)
    ]
    docs.write_text("\n".join(rows[:200] + ["{broken"] + rows[200:]) + "\n")
    cfg = _cfg(sae, n_tokens=64 * 20, source=str(docs))
    out = tmp_path / "c"
    with pytest.raises(CorpusError, match=r"docs.jsonl:201 is not valid JSON"):
        build_cache(cfg, out, progress=False)
    docs.write_text("\n".join(rows) + "\n")  # the user fixes the file and runs again
    build_cache(cfg, out, progress=False)
    assert ActivationCache(out).n_tokens == 64 * 20


def test_damaged_cache_fails_at_once(reference, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(reference, copy)
    shutil.rmtree(copy / "shards" / "000001")
    with pytest.raises(CacheError, match=r"damaged: shards/000001/tokens.npy, .* missing"):
        ActivationCache(copy)


def _dense(root: Path, name: str, n_latents: int) -> np.ndarray:
    c = ActivationCache(root)
    out = np.zeros((c.n_tokens, n_latents), dtype=np.float32)
    for latent in range(n_latents):
        tok, val = c.latent(name, latent)
        out[tok, latent] = val
    return out


def test_cache_of_a_coder_encoded_in_steps_is_the_same(reference, sae, tmp_path, monkeypatch):
    """Coders whose pre-activations exceed their encode budget (forced small here: 64 latents a
    step in float32, 128 in bf16, all of a batch's tokens at once) are encoded in steps of
    latents; the cache holds the same nonzeros, up to which of two equal values at a token's k-th
    place is kept."""
    load = cache_mod._load_coders

    def small_steps(*args, **kwargs):
        return [
            dataclasses.replace(c, encode_budget=6 * CTX * 64 * 4) for c in load(*args, **kwargs)
        ]

    monkeypatch.setattr(cache_mod, "_load_coders", small_steps)
    steps = build_cache(_cfg(sae), tmp_path / "cache", progress=False)
    for name, n in (("sae", 256), ("neurons", 1536)):
        whole, stepped = _dense(reference, name, n), _dense(steps, name, n)
        np.testing.assert_array_equal(np.sort(whole, 1), np.sort(stepped, 1))
        rows, cols = np.nonzero(whole != stepped)  # only ties at the k-th value may differ
        kth = np.where(whole > 0, whole, np.inf).min(1)
        assert (np.maximum(whole, stepped)[rows, cols] == kth[rows]).all(), name
