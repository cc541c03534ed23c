"""Sampling on a real cache of the embedded model and coder."""

import numpy as np
import pytest

from autointerp.cache import ActivationCache, build_cache
from autointerp.config import CacheConfig, CorpusConfig
from autointerp.errors import ConfigError
from autointerp.sample import (
    SampleConfig,
    Sampler,
    parse_latents,
    read_records,
    render,
    sample_coder,
)

LATENTS = list(range(0, 4608, 97))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cfg = CacheConfig(corpus=CorpusConfig(n_tokens=24_576))
    return ActivationCache(build_cache(cfg, tmp_path_factory.mktemp("c") / "cache", progress=False))


@pytest.fixture(scope="module")
def records(cache, tmp_path_factory):
    path = sample_coder(
        cache, "layers.15", SampleConfig(), tmp_path_factory.mktemp("s"), LATENTS, progress=False
    )
    return list(read_records(path))


def _spans(refs, length=32):
    return [(r.seq, r.start, r.start + length) for r in refs]


def test_every_latent_has_a_record(records):
    assert [r.id.latent for r in records] == LATENTS
    ok = [r for r in records if r.status == "ok"]
    assert len(ok) > len(LATENTS) // 2
    for r in records:
        if r.status == "skipped":
            assert r.reason and "activating windows" in r.reason and not r.train and not r.test


def test_train_test_and_negatives_never_share_a_token(records):
    for r in records:
        spans = _spans(r.train) + _spans(r.test) + _spans(r.negatives) + _spans(r.explain_negatives)
        for i, (s1, a1, b1) in enumerate(spans):
            for s2, a2, b2 in spans[i + 1 :]:
                assert s1 != s2 or b1 <= a2 or b2 <= a1, f"{r.id}: windows overlap"


def test_examples_hold_the_true_activations(records, cache):
    for r in records[:12]:
        if r.status != "ok":
            continue
        tok, val = cache.latent("layers.15", r.id.latent)
        dense = dict(zip(tok.tolist(), val.tolist(), strict=True))
        for ex in r.train + r.test:
            assert ex.acts, "an activating example without activation"
            for offset, value in ex.acts:
                assert value == pytest.approx(dense[ex.seq * 256 + ex.start + offset], abs=1e-3)
        for ex in r.negatives + r.explain_negatives:
            lo = ex.seq * 256 + ex.start
            assert not any(lo <= t < lo + 32 for t in dense), "a non-activating example activates"
        kinds = {ex.kind for ex in r.negatives}
        assert kinds <= {"random", "similar"} and "random" in kinds


def test_test_set_is_stratified_by_quantile(records, cache):
    full = [r for r in records if r.status == "ok" and len(r.test) == 100]
    assert full, "no latent with a full test set"
    for r in full:
        assert [sum(e.quantile == q for e in r.test) for q in range(10)] == [10] * 10
        assert len(r.train) == 40
        peak = {
            q: [max(v for _, v in e.acts) for e in r.test + r.train if e.quantile == q]
            for q in range(10)
        }
        for q in range(9):  # quantile bins are ordered by peak activation
            assert max(peak[q]) <= min(peak[q + 1]) + 1e-3


def test_strategies_and_determinism(cache, tmp_path):
    a = Sampler(cache, "layers.15", SampleConfig()).sample(97)
    b = Sampler(cache, "layers.15", SampleConfig()).sample(97)
    c = Sampler(cache, "layers.15", SampleConfig(seed=1)).sample(97)
    assert a == b and a != c
    top = Sampler(cache, "layers.15", SampleConfig(train_strategy="top")).sample(97)
    strongest = sorted((max(v for _, v in e.acts) for e in top.train + top.test), reverse=True)
    train_peaks = sorted((max(v for _, v in e.acts) for e in top.train), reverse=True)
    assert train_peaks[0] == strongest[0] and np.mean(train_peaks) > np.mean(strongest)


def test_skips_rare_latents_with_a_reason(cache):
    r = Sampler(cache, "layers.15", SampleConfig(min_examples=10_000)).sample(0)
    assert r.status == "skipped" and "min_examples is 10000" in r.reason


def test_resume_after_a_torn_write(cache, records, tmp_path):
    path = sample_coder(cache, "layers.15", SampleConfig(), tmp_path, LATENTS[:5], progress=False)
    path.write_bytes(path.read_bytes()[:-40])  # the last record is torn
    sample_coder(cache, "layers.15", SampleConfig(), tmp_path, LATENTS, progress=False)
    assert list(read_records(path)) == records


def test_render_decodes_the_window(cache, records, tokenizer):
    r = next(r for r in records if r.status == "ok")
    tokens = cache.tokens()
    ex = render(r.test[0], tokens, lambda t: tokenizer.decode([t]), 32)
    assert len(ex.tokens) == 32 == len(ex.activations)
    assert "".join(ex.tokens) == tokenizer.decode(tokens[ex.seq, ex.start : ex.start + 32].tolist())
    assert max(ex.activations) > 0


def test_latent_ranges():
    assert parse_latents("0-3,7", 10) == [0, 1, 2, 3, 7]
    assert parse_latents(None, 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="out of range"):
        parse_latents("5-12", 10)
    with pytest.raises(ConfigError, match="bad latent range"):
        parse_latents("a-b", 10)


def test_similar_negatives_by_sentence_embedding(cache, tokenizer, tmp_path):
    from autointerp.embed import block_embeddings

    emb = block_embeddings(cache, tokenizer.batch_decode, 32, tmp_path, progress=False)
    assert emb.shape == (cache.n_tokens // 32, 384)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=1e-2)
    assert (
        block_embeddings(cache, None, 32, tmp_path) is not None
    )  # second call: read back, no decoding
    r = Sampler(cache, "layers.15", SampleConfig(similar_by="embedding"), emb).sample(97)
    similar = [e for e in r.negatives if e.kind == "similar"]
    random_ = [e for e in r.negatives if e.kind == "random"]
    assert len(similar) == 50 and r.explain_negatives
    tok, _ = cache.latent("layers.15", 97)
    active = set((tok // 32).tolist())
    centroid = emb[sorted(active)].astype(np.float32).mean(0)
    centroid /= np.linalg.norm(centroid)

    def sim(refs):
        return np.mean(
            [emb[(e.seq * 256 + e.start) // 32].astype(np.float32) @ centroid for e in refs]
        )

    assert sim(similar) > sim(random_) + 0.05  # closer to the activating windows than random text
    for e in similar:
        assert (e.seq * 256 + e.start) // 32 not in active
