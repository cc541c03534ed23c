"""Nearest latents: exact decoder search, FAISS, sparse co-occurrence, and the answer stored beside
the cache."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from autointerp import neighbours as nb
from autointerp.cache import ActivationCache
from autointerp.neighbours import (
    cooccurrence_neighbours,
    exact_neighbours,
    faiss_neighbours,
    neighbours,
)
from autointerp.sample import SampleConfig, sample_coder
from tests.conftest import D_MODEL, write_sparsify

CTX = 256


def _brute(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities (self at -inf) and the k nearest by a plain numpy sort."""
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    S = W @ W.T
    np.fill_diagonal(S, -np.inf)
    return S, np.argsort(-S, axis=1, kind="stable")[:, :k]


def test_exact_search_equals_brute_force_and_never_names_the_latent_itself():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((600, 24)).astype(np.float32)
    W[[7, 8]] = W[3]  # identical decoder rows: each is the other's nearest, never its own
    W[100] = W[50] * 2.0
    S, expected = _brute(W, 6)
    unit = torch.nn.functional.normalize(torch.from_numpy(W), dim=1)
    answers = [nb.decoder_neighbours(torch.from_numpy(W), 6)]
    # tiles smaller than n (the last one uneven) give the same answer as one tile
    answers += [(exact_neighbours(unit, 6, tile).numpy(), "exact") for tile in (128, 37)]
    for got, method in answers:
        assert method == "exact" and got.shape == (600, 6)
        assert not (got == np.arange(600)[:, None]).any()
        assert np.allclose(np.take_along_axis(S, got, 1), np.take_along_axis(S, expected, 1))
        # indices too, except where two are equally near (the duplicated rows, 50 and 100)
        tie = np.isclose(
            np.take_along_axis(S, expected, 1)[:, :, None], S[:, None, [3, 7, 8, 50, 100]]
        )
        assert (got == expected)[~tie.any(2)].all()
        assert set(got[3, :2]) == {7, 8} and set(got[7, :2]) == {3, 8} and got[50, 0] == 100


def test_a_coder_with_fewer_latents_than_k_gets_all_the_others():
    W = torch.randn(4, 8)
    got = exact_neighbours(torch.nn.functional.normalize(W, dim=1), 10, tile=3).numpy()
    assert got.shape == (4, 3)
    assert all(sorted(row) == sorted(set(range(4)) - {i}) for i, row in enumerate(got))


def test_faiss_recall_at_10():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    # latents in groups around shared directions, as a wide SAE splits one feature into several:
    # each latent's 10 nearest stand out from the rest (isotropic random rows have no neighbours
    # worth the name, and no approximate index finds their noise-level nearest)
    rng = np.random.default_rng(0)
    n = 20_000
    centres = rng.standard_normal((n // 32, D_MODEL)).astype(np.float32)
    x = centres[np.arange(n) % len(centres)] + rng.standard_normal((n, D_MODEL)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = exact_neighbours(torch.from_numpy(x), 10).numpy()
    approx = faiss_neighbours(x, 10)
    assert approx.shape == (n, 10) and not (approx == np.arange(n)[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact, strict=True)])
    assert recall >= 0.9


def test_without_faiss_a_large_coder_is_searched_exactly_with_a_warning(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kw):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    monkeypatch.setattr(nb, "EXACT_MAX_LATENTS", 100)
    with caplog.at_level(logging.WARNING, logger="autointerp.neighbours"):
        got, method = nb.decoder_neighbours(torch.randn(300, 16), 5)
    assert method == "exact" and got.shape == (300, 5)
    assert "pip install faiss-cpu" in caplog.text and " h on two cores" in caplog.text


# --- caches ------------------------------------------------------------------------------------
def write_cache(root, shards: list[list[tuple[np.ndarray, np.ndarray]]], coders=None, seqs=4):
    """A complete cache of coder "c" in the layout build_cache writes: one list per shard of
    (positions inside the shard, values) per latent; `seqs` sequences per shard."""
    n = len(shards[0])
    for i, latents in enumerate(shards):
        folder = root / "shards" / f"{i:06d}"
        (folder / "c").mkdir(parents=True)
        np.save(folder / "tokens.npy", np.full((seqs, CTX), 7, dtype=np.uint16))
        (folder / "meta.json").write_text(json.dumps({"first_seq": i * seqs, "n_seqs": seqs}))
        counts = [len(p) for p, _ in latents]
        np.save(
            folder / "c" / "offsets.npy", np.concatenate([[0], np.cumsum(counts)]).astype(np.uint32)
        )
        pos = [np.sort(np.asarray(p, dtype=np.uint16)) for p, _ in latents]
        np.save(folder / "c" / "pos.npy", np.concatenate(pos).astype(np.uint16))
        vals = np.concatenate([np.asarray(v, dtype=np.float32) for _, v in latents])
        np.save(folder / "c" / "values.npy", vals.astype(np.float16))
    (root / "stats").mkdir()
    count = np.array([sum(len(s[j][0]) for s in shards) for j in range(n)], dtype=np.int64)
    np.savez(root / "stats" / "c.npz", count=count, max=np.ones(n, np.float32), sum=count * 1.0)
    manifest = {
        "version": 1,
        "ctx_len": CTX,
        "shard_seqs": seqs,
        "coders": {"c": {"n_latents": n, "d_in": D_MODEL, "hookpoint": "h"}},
        "config": {"coders": coders or []},
        "fingerprints": {"coders": {"c": "fp-1"}},
        "complete": True,
        "n_seqs": seqs * len(shards),
        "n_tokens": seqs * len(shards) * CTX,
        "bos_id": None,
    }
    (root / "cache.json").write_text(json.dumps(manifest))
    return ActivationCache(root)


def _random_shards(rng, n_latents=40, n_shards=3, seqs=4):
    """Each latent fires on a few random tokens of a few random sequences of each shard."""
    shards = []
    for _ in range(n_shards):
        latents = []
        for j in range(n_latents):
            rate = 0.3 if j % 5 else 0.02  # some rare latents: Jaccard 0 with most, ties by index
            pos = np.flatnonzero(rng.random(seqs * CTX) < rate / CTX * 2)
            latents.append((pos, np.ones(len(pos))))
        shards.append(latents)
    return shards


def test_cooccurrence_is_the_jaccard_of_the_sequence_sets_over_every_shard(tmp_path):
    rng = np.random.default_rng(1)
    shards = _random_shards(rng)
    cache = write_cache(tmp_path / "cache", shards)
    n, seqs = 40, 4
    fires = np.zeros((3 * seqs, n), dtype=bool)  # by hand: which sequences each latent fires in
    for s, latents in enumerate(shards):
        for j, (pos, _) in enumerate(latents):
            fires[s * seqs + pos // CTX, j] = True
    inter = fires.T.astype(int) @ fires.astype(int)
    count = fires.sum(0)
    jaccard = inter / np.maximum(count[:, None] + count[None, :] - inter, 1)
    np.fill_diagonal(jaccard, -1)
    # largest first, equal values by latent index
    expected = np.array([np.lexsort((np.arange(n), -row))[:7] for row in jaccard])
    got = neighbours(cache, "c", 7, by="cooccurrence", progress=False)
    assert got.dtype == np.int32 and (got == expected).all()
    # blocks of latents smaller than the coder give the same answer
    assert (cooccurrence_neighbours(cache, "c", 7) == expected).all()
    old = nb.COOC_BLOCK_ENTRIES
    try:
        nb.COOC_BLOCK_ENTRIES = 3 * n
        assert (cooccurrence_neighbours(cache, "c", 7) == expected).all()
    finally:
        nb.COOC_BLOCK_ENTRIES = old


@pytest.fixture
def decoder_cache(tmp_path):
    """A cache whose coder is a real sparsify SAE folder on disk (64 latents)."""
    sae = write_sparsify(tmp_path / "sae", n=64, k=4)
    coders = [{"hookpoint": "h", "path": str(sae), "name": "c"}]
    shards = _random_shards(np.random.default_rng(2), n_latents=64, n_shards=2)
    return write_cache(tmp_path / "cache", shards, coders=coders)


def _decoder_answer(cache, k):
    from safetensors.torch import load_file

    W = load_file(str(cache.manifest["config"]["coders"][0]["path"] + "/sae.safetensors"))["W_dec"]
    return _brute(W.numpy(), k)[1]


def test_decoder_neighbours_are_stored_reused_sliced_and_recomputed_for_a_new_coder(
    decoder_cache, monkeypatch
):
    first = neighbours(decoder_cache, "c", 5, progress=False)
    assert (first == _decoder_answer(decoder_cache, 5)).all()
    stored = decoder_cache.root / "neighbours" / "c.decoder.k5.npy"
    record = json.loads(stored.with_suffix(".json").read_text())
    assert record["fingerprint"] == "fp-1" and record["n_latents"] == 64
    assert record["method"] == "exact" and record["by"] == "decoder"

    def refuse(*a, **kw):
        raise AssertionError("computed again")

    monkeypatch.setattr(nb, "compute", refuse)
    assert (neighbours(decoder_cache, "c", 5, progress=False) == first).all()
    assert (neighbours(decoder_cache, "c", 3, progress=False) == first[:, :3]).all()  # a smaller k
    with pytest.raises(AssertionError, match="computed again"):
        neighbours(decoder_cache, "c", 6, progress=False)  # a larger k is not stored

    # the coder's fingerprint changes (another SAE in the same place): computed anew
    manifest = json.loads((decoder_cache.root / "cache.json").read_text())
    manifest["fingerprints"]["coders"]["c"] = "fp-2"
    (decoder_cache.root / "cache.json").write_text(json.dumps(manifest))
    with pytest.raises(AssertionError, match="computed again"):
        neighbours(ActivationCache(decoder_cache.root), "c", 3, progress=False)
    monkeypatch.undo()
    again = neighbours(ActivationCache(decoder_cache.root), "c", 5, progress=False)
    assert (again == first).all()
    assert json.loads(stored.with_suffix(".json").read_text())["fingerprint"] == "fp-2"


def test_a_coder_without_config_falls_back_to_cooccurrence_stored_with_the_tokens(tmp_path):
    shards = _random_shards(np.random.default_rng(3), n_latents=20, n_shards=2)
    cache = write_cache(tmp_path / "cache", shards)
    got = neighbours(cache, "c", 4, progress=False)
    assert (got == cooccurrence_neighbours(cache, "c", 4)).all()
    record = json.loads((tmp_path / "cache" / "neighbours" / "c.decoder.k4.json").read_text())
    assert record["by"] == "cooccurrence" and record["n_tokens"] == 2 * 4 * CTX


def test_an_unwritable_cache_folder_is_served_from_memory_with_one_warning(
    decoder_cache, monkeypatch, caplog
):
    (decoder_cache.root / "neighbours").write_text("not a folder")  # mkdir fails: an OSError
    with caplog.at_level(logging.WARNING, logger="autointerp.neighbours"):
        first = neighbours(decoder_cache, "c", 4, progress=False)
        monkeypatch.setattr(nb, "compute", lambda *a, **kw: 1 / 0)
        assert (neighbours(decoder_cache, "c", 4, progress=False) == first).all()
    assert caplog.text.count("cannot store neighbours") == 1


def test_sampling_shows_the_neighbour_bar_before_the_sample_bar(decoder_cache, tmp_path, capsys):
    cfg = SampleConfig(min_examples=1, min_train=1, n_test=0, n_neighbours=3)
    sample_coder(decoder_cache, "c", cfg, tmp_path / "sample", latents=[0, 1], bos_id=None)
    err = capsys.readouterr().err
    assert "neighbours c" in err and "/64" in err  # unit latent, all latents of the coder
    assert err.index("neighbours c") < err.index("sample c")
    assert (decoder_cache.root / "neighbours" / "c.decoder.k3.npy").exists()
    # without similar negatives no neighbours are searched
    (decoder_cache.root / "neighbours" / "c.decoder.k3.npy").unlink()
    cfg = cfg.model_copy(update={"n_similar_negatives": 0, "n_explain_negatives": 0})
    sample_coder(decoder_cache, "c", cfg, tmp_path / "other", latents=[0], bos_id=None)
    assert "neighbours c" not in capsys.readouterr().err
