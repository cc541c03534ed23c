"""The latent-major index of a cache (autointerp.index): the same nonzeros as the shards, the same
sample records with and without it and whatever the shard count, built for older caches on first use,
rebuilt after a killed build; and sampling on Ray equal to sampling here."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from autointerp import index as index_module
from autointerp import sample as sample_mod
from autointerp.cache import ActivationCache, build_cache
from autointerp.config import CacheConfig, CorpusConfig
from autointerp.index import build_index, open_index
from autointerp.sample import SampleConfig, Sampler, read_records, sample_coder
from tests.test_sample import write_cache

CODER = "layers.15"
N_TOKENS = 24_576
LATENTS = list(range(0, 4608, 151))
SMALL = SampleConfig(n_train=10, n_test=20, n_random_negatives=10, n_similar_negatives=10)


def _cache(folder, shard_tokens):
    cfg = CacheConfig(corpus=CorpusConfig(n_tokens=N_TOKENS), shard_tokens=shard_tokens)
    return ActivationCache(build_cache(cfg, folder, progress=False))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """The real model and coder over 24,576 tokens in 24 shards."""
    return _cache(tmp_path_factory.mktemp("many") / "cache", 1024)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The same tokens in 2 shards."""
    return _cache(tmp_path_factory.mktemp("two") / "cache", 12_288)


def _shard_loop(cache, monkeypatch):
    """Make every ActivationCache read its shards one by one, as before the index existed."""
    monkeypatch.setattr(ActivationCache, "index", lambda self, coder: None)
    monkeypatch.setattr(ActivationCache, "ensure_index", lambda self, coder, progress=True: False)
    return ActivationCache(cache.root)


def _sample(cache, folder, cfg=SMALL, latents=LATENTS, **kw):
    path = sample_coder(cache, CODER, cfg, folder, latents, progress=False, **kw)
    return path.read_text()


def test_the_cache_writes_an_index_equal_to_the_shards_for_every_latent(many, monkeypatch):
    assert len(many.shard_names) == 24
    off, tok, val = open_index(many, CODER)
    meta = json.loads((many.root / "index" / f"{CODER}.json").read_text())
    assert meta["n_tokens"] == N_TOKENS and meta["n_shards"] == 24
    assert meta["nonzeros"] == many.manifest["summary"][CODER]["nonzeros"] == len(tok) == off[-1]
    assert (off.dtype, tok.dtype, val.dtype) == (np.int64, np.uint32, np.float16)
    indexed = [many.latent(CODER, i) for i in range(4608)]
    loop = _shard_loop(many, monkeypatch)
    fired = 0
    for i, (t, v) in enumerate(indexed):
        t0, v0 = loop.latent(CODER, i)
        assert t.dtype == t0.dtype == np.int64 and v.dtype == v0.dtype == np.float32
        assert np.array_equal(t, t0) and np.array_equal(v, v0), i
        fired += len(t) > 0
    assert fired > 1000


def test_an_index_built_in_many_small_passes_is_the_same(many, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(many.root, copy, ignore=shutil.ignore_patterns("index"))
    cache = ActivationCache(copy)
    build_index(cache, CODER, progress=False, budget=5_000)
    for name in ("offsets", "tokens", "values"):
        a = np.load(copy / "index" / CODER / f"{name}.npy")
        b = np.load(many.root / "index" / CODER / f"{name}.npy")
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_records_are_the_same_with_and_without_the_index_and_for_2_or_24_shards(
    many, two, tmp_path, monkeypatch
):
    with_index = _sample(many, tmp_path / "many")
    two_shards = _sample(two, tmp_path / "two")
    assert with_index == two_shards
    ok = [r for r in read_records(tmp_path / "many" / f"{CODER}.jsonl") if r.status == "ok"]
    assert len(ok) > 10 and all(r.negatives for r in ok)
    without = _sample(_shard_loop(many, monkeypatch), tmp_path / "loop")
    assert without == with_index


def test_an_older_cache_gets_its_index_on_first_sample(many, tmp_path, caplog):
    copy = tmp_path / "cache"
    shutil.copytree(many.root, copy, ignore=shutil.ignore_patterns("index"))
    cache = ActivationCache(copy)
    assert cache.index(CODER) is None
    with caplog.at_level("INFO", logger="autointerp.index"):
        old = _sample(cache, tmp_path / "s")
    assert "made before indexes existed" in caplog.text
    assert open_index(cache, CODER) is not None and cache.index(CODER) is not None
    assert old == _sample(many, tmp_path / "ref")


def test_a_killed_index_build_is_cleaned_and_rebuilt(many, tmp_path, monkeypatch):
    copy = tmp_path / "cache"
    shutil.copytree(many.root, copy, ignore=shutil.ignore_patterns("index"))
    cache = ActivationCache(copy)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill mid-write: the files are half written

    monkeypatch.setattr(index_module, "_write", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(cache, CODER, progress=False)
    monkeypatch.undo()
    # what a SIGKILL leaves: a half-written temporary folder, and no JSON file
    tmp = copy / "index" / f"{CODER}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "tokens.npy").write_bytes(b"\x93NUMPY half")
    assert ActivationCache(copy).index(CODER) is None
    rebuilt = ActivationCache(copy)
    assert rebuilt.ensure_index(CODER, progress=False)
    assert not tmp.exists()
    a, b = rebuilt.latent(CODER, 7), many.latent(CODER, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_an_index_of_another_cache_state_is_not_used(many, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(many.root, copy)
    meta_path = copy / "index" / f"{CODER}.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "n_shards": 23}))  # built before the last shard
    assert ActivationCache(copy).index(CODER) is None


def test_a_read_only_cache_without_index_samples_from_the_shards(
    many, tmp_path, monkeypatch, caplog
):
    copy = tmp_path / "cache"
    shutil.copytree(many.root, copy, ignore=shutil.ignore_patterns("index"))
    # the tests may run as root, for whom no folder is read-only: the check is what is replaced
    monkeypatch.setattr(index_module.os, "access", lambda path, mode: False)
    with caplog.at_level("WARNING", logger="autointerp.index"):
        records = _sample(ActivationCache(copy), tmp_path / "s", latents=LATENTS[:5])
    assert "read-only" in caplog.text and not (copy / "index").exists()
    assert records == _sample(many, tmp_path / "ref", latents=LATENTS[:5])


# --- the vectorised sampler draws exactly what the Python loops drew ------------------------
CTX = 256


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory):
    """Rare, ordinary and dense latents of coder "c" on 48 sequences (384 blocks)."""
    rng = np.random.default_rng(3)
    n_seqs = 48
    tokens = rng.integers(100, 200, size=(n_seqs, CTX))
    latents = []
    for i in range(40):
        n = [5, 60, 300, 3000][i % 4]
        tok = np.sort(rng.choice(n_seqs * CTX, size=n, replace=False))
        latents.append((tok, rng.random(n).astype(np.float32) * 5 + 0.1))
    return write_cache(tmp_path_factory.mktemp("mixed"), tokens, latents, bos_id=None)


NEIGHBOURS = np.random.default_rng(9).integers(0, 40, size=(40, 10))
# sha256 of the sample file the sampler wrote before it was vectorised (commit fcd9357), with the
# neighbours fixed as above
BEFORE = "16e4f1d80fe70cef9b856a69c9ea26094849f297d9361574b38972094bb4a89f"


def test_the_vectorised_sampler_writes_the_records_of_the_python_loops(
    mixed_cache, tmp_path, monkeypatch
):
    monkeypatch.setattr(Sampler, "neighbours", lambda self, progress=False: NEIGHBOURS)
    # every neighbour's firings read, as then (the default draws a few hundred of a dense one's)
    monkeypatch.setattr(sample_mod, "SIMILAR_DRAWS", 10**9)
    cfg = SampleConfig(n_train=10, n_test=20, n_random_negatives=30, n_similar_negatives=20)
    path = sample_coder(mixed_cache, "c", cfg, tmp_path, None, progress=False)
    records = list(read_records(path))
    assert sum(r.status == "ok" for r in records) >= 20
    assert any(r.shortfall.get("random") for r in records)  # dense: random negatives run short
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BEFORE


def test_similar_negatives_from_drawn_firings_of_dense_neighbours(
    mixed_cache, tmp_path, monkeypatch
):
    """With few draws per neighbour (8 here, of up to 3,000 firings), similar negatives still lie
    where a neighbour fires and the latent does not; a latent whose neighbours all fire at most 8
    times gets the record the full read gives."""
    monkeypatch.setattr(Sampler, "neighbours", lambda self, progress=False: NEIGHBOURS)
    cfg = SampleConfig(n_train=10, n_test=20, n_random_negatives=30, n_similar_negatives=2)
    full = {
        r.id.latent: r for r in _records(mixed_cache, cfg, tmp_path / "full", 10**9, monkeypatch)
    }
    drawn = _records(mixed_cache, cfg, tmp_path / "drawn", 8, monkeypatch)
    E, counts, changed = cfg.example_len, mixed_cache.stats("c")["count"], 0
    for r in drawn:
        if r.status != "ok":
            continue
        own = set((mixed_cache.latent("c", r.id.latent)[0] // E).tolist())
        near = set()
        for o in NEIGHBOURS[r.id.latent]:
            near |= set((mixed_cache.latent("c", int(o))[0] // E).tolist())
        similar = [x for x in r.negatives if x.kind == "similar"]
        was = [x for x in full[r.id.latent].negatives if x.kind == "similar"]
        assert len(similar) >= min(len(was), 1), r.id  # (a dense latent has no silent block near)
        for x in similar:
            block = (x.seq * CTX + x.start) // E
            assert block in near and block not in own, (r.id, block)
        if all(counts[o] <= 8 for o in NEIGHBOURS[r.id.latent]):
            assert r == full[r.id.latent]
        changed += r != full[r.id.latent]
    assert changed  # the dense neighbours were drawn from, not read whole


def _records(cache, cfg, out, draws, monkeypatch):
    monkeypatch.setattr(sample_mod, "SIMILAR_DRAWS", draws)
    monkeypatch.setattr(sample_mod, "_SIMILAR_DRAWS_PER_NEGATIVE", 0)
    return list(read_records(sample_coder(cache, "c", cfg, out, None, progress=False)))


# --- sampling on Ray ------------------------------------------------------------------------
def test_sampling_on_local_ray_writes_the_records_of_a_local_run(many, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    local = _sample(many, tmp_path / "local")

    def not_here(self, latent):
        raise AssertionError("the driver sampled a latent itself")

    monkeypatch.setattr(Sampler, "sample", not_here)  # the workers are other processes
    distributed = _sample(many, tmp_path / "ray", ray="local", workers=2)
    assert distributed == local and len(local.splitlines()) == len(LATENTS)
