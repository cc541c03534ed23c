"""Sampling on a real cache of the embedded model and coder, and on small synthetic caches written
in the cache's on-disk layout (for exact counts: rare, dense and BOS-heavy latents)."""

import asyncio
import json

import numpy as np
import pytest

from autointerp.cache import ActivationCache, build_cache
from autointerp.clients.base import Completion
from autointerp.config import CacheConfig, CorpusConfig, SubjectConfig
from autointerp.corpus import TokenWindows
from autointerp.errors import ConfigError, SubjectError
from autointerp.explain import ExplainConfig, Explainer
from autointerp.sample import (
    REPLACEMENT,
    SampleConfig,
    Sampler,
    TokenDecoder,
    parse_latents,
    read_records,
    render,
    sample_coder,
    write_config,
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
        counts = [sum(e.quantile == q for e in r.test) for q in range(10)]
        train = [sum(e.quantile == q for e in r.train) for q in range(10)]
        # 10 per bin; a bin with fewer non-overlapping windows (which depends on the activations,
        # so on the CPU's dtype) is used up, the explainer gets none of it, and its share goes to
        # the strongest bins with room
        short = [q for q in range(10) if counts[q] < 10]
        assert all(train[q] == 0 for q in short), (counts, train)
        assert sum(c - 10 for c in counts if c > 10) == sum(10 - counts[q] for q in short)
        assert not short or max(counts) > 10
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
    ex = render(r.test[0], tokens, TokenDecoder(tokenizer), 32)
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


# --- synthetic caches -------------------------------------------------------------------------
CTX, E = 256, 32


def write_cache(root, tokens, latents, config=None, **recorded):
    """A complete one-shard cache of coder "c": `latents` is a list of (global token indices,
    values) per latent. Written in the layout build_cache writes, so ActivationCache reads it;
    `recorded`: further manifest fields (e.g. bos_id; without it, a cache from before the field)."""
    n_seqs = len(tokens)
    shard = root / "shards" / "000000"
    (shard / "c").mkdir(parents=True)
    np.save(shard / "tokens.npy", np.asarray(tokens, dtype=np.uint16))
    (shard / "meta.json").write_text(json.dumps({"first_seq": 0, "n_seqs": n_seqs}))
    pos, vals, offsets = [], [], [0]
    for tok, val in latents:
        order = np.argsort(tok)
        pos.append(np.asarray(tok, dtype=np.uint16)[order])
        vals.append(np.asarray(val, dtype=np.float32)[order])
        offsets.append(offsets[-1] + len(tok))
    np.save(shard / "c" / "offsets.npy", np.asarray(offsets, dtype=np.uint32))
    np.save(shard / "c" / "pos.npy", np.concatenate(pos))
    np.save(shard / "c" / "values.npy", np.concatenate(vals).astype(np.float16))
    (root / "stats").mkdir()
    np.savez(
        root / "stats" / "c.npz",
        count=np.array([len(v) for _, v in latents], dtype=np.int64),
        max=np.array([np.float16(max(v, default=0)) for _, v in latents], dtype=np.float32),
        sum=np.array([float(np.sum(v)) for _, v in latents]),
    )
    manifest = {
        "version": 1,
        "ctx_len": CTX,
        "shard_seqs": n_seqs,
        "coders": {"c": {"n_latents": len(latents), "d_in": 8, "hookpoint": "h"}},
        "config": config or {"coders": []},
        "complete": True,
        "n_seqs": n_seqs,
        "n_tokens": n_seqs * CTX,
        **recorded,
    }
    (root / "cache.json").write_text(json.dumps(manifest))
    return ActivationCache(root)


def one_per_block(blocks, values, offset=24):
    """Activations at `offset` inside each block: windows (24 tokens of left context) align with
    the blocks, so no two candidates overlap."""
    return np.asarray(blocks) * E + offset, np.asarray(values, dtype=np.float32)


N_SEQS = 64  # 512 blocks
WINDOW_COUNTS = range(SampleConfig().min_examples, 151)


@pytest.fixture(scope="module")
def counts_cache(tmp_path_factory):
    """Latent i fires once in each of i blocks (i >= 20), with distinct values."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, 200, size=(N_SEQS, CTX))
    latents = [(np.zeros(0, dtype=np.int64), np.zeros(0))] * WINDOW_COUNTS.start
    for n in WINDOW_COUNTS:
        blocks = np.sort(rng.choice(N_SEQS * CTX // E, size=n, replace=False))
        latents.append(one_per_block(blocks, rng.permutation(n) / 10 + 1))
    return write_cache(tmp_path_factory.mktemp("counts"), tokens, latents)


def _peak(ref):
    return max(v for _, v in ref.acts)


def _disjoint(refs):
    spans = sorted((r.seq * CTX + r.start) for r in refs)
    return all(b - a >= E for a, b in zip(spans, spans[1:], strict=False))


def test_every_window_count_gets_exact_test_quotas_and_the_rest_for_the_explainer(counts_cache):
    cfg = SampleConfig(n_similar_negatives=0, n_explain_negatives=0)
    sampler = Sampler(counts_cache, "c", cfg, bos_id=None)
    for n in WINDOW_COUNTS:
        r = sampler.sample(n)
        assert r.status == "ok", (n, r.reason)
        assert r.train, f"{n} windows: explained with no examples"
        assert _disjoint(r.train + r.test + r.negatives), f"{n} windows: examples overlap"
        # the scarce split keeps the configured proportion, the explainer at least min_train
        n_test = 100 if n >= 140 else n - max(round(n * 40 / 140), cfg.min_train)
        assert len(r.test) == n_test, n
        assert len(r.train) == min(40, n - n_test), n  # everything else, up to n_train
        per_bin = [sum(e.quantile == q for e in r.test) for q in range(10)]
        quota = [n_test // 10 + (q >= 10 - n_test % 10) for q in range(10)]
        assert per_bin == quota, (n, per_bin)
        assert per_bin[9] > 0, f"{n} windows: no test example from the top bin"
        ranks = np.argsort(np.argsort([_peak(e) for e in r.train + r.test]))
        if n < 140:  # all windows used: quantile bins follow the peak's rank
            bins = np.array_split(np.arange(n), 10)
            want = {int(i): q for q, b in enumerate(bins) for i in b}
            assert [e.quantile for e in r.train + r.test] == [want[int(k)] for k in ranks]
        if n >= 140:
            assert not r.shortfall.get("test") and not r.shortfall.get("train")
        else:
            assert r.shortfall["test"] == 100 - n_test


def test_a_latent_whose_windows_overlap_too_much_is_skipped_for_too_few_explainer_examples(
    tmp_path,
):
    """20 candidate windows in overlapping pairs: 10 usable, too few for min_train 10 + a test."""
    tokens = np.full((N_SEQS, CTX), 150)
    tok = []
    for b in range(0, 40, 2):  # block b peaks at its end, block b + 1 at its start
        tok += [b * E + 31, (b + 1) * E]
    tok = np.array(tok[:20])  # 10 overlapping pairs of blocks, 20 candidates
    val = np.linspace(1, 3, len(tok))
    cache = write_cache(tmp_path, tokens, [(tok, val)])
    r = Sampler(cache, "c", SampleConfig(), bos_id=None).sample(0)
    assert r.status == "skipped" and not r.train
    assert "explainer examples" in r.reason and "min_train is 10" in r.reason
    ok = Sampler(cache, "c", SampleConfig(min_train=5), bos_id=None).sample(0)
    assert ok.status == "ok" and len(ok.train) >= 5 and ok.test


def test_random_negatives_of_a_dense_latent_come_from_its_silent_blocks(tmp_path):
    n_blocks = N_SEQS * CTX // E
    silent = np.arange(0, n_blocks, 20)  # 26 of 512 blocks: the latent fires in 95%
    firing = np.setdiff1d(np.arange(n_blocks), silent)
    tok, val = one_per_block(firing, np.linspace(1, 5, len(firing)))
    cache = write_cache(tmp_path, np.full((N_SEQS, CTX), 150), [(tok, val)])
    cfg = SampleConfig(n_similar_negatives=0, n_explain_negatives=0, n_random_negatives=20)
    r = Sampler(cache, "c", cfg, bos_id=None).sample(0)
    assert len(r.negatives) == 20 and "random" not in r.shortfall
    assert {(e.seq * CTX + e.start) // E for e in r.negatives} <= set(silent.tolist())
    short = Sampler(cache, "c", cfg.model_copy(update={"n_random_negatives": 50}), bos_id=None)
    r = short.sample(0)
    assert len(r.negatives) == len(silent) and r.shortfall["random"] == 50 - len(silent)


BOS = 1


@pytest.fixture(scope="module")
def bos_cache(tmp_path_factory):
    """Every window starts with BOS; the latent fires at 100 on every BOS, and 0.5-2 on text."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(100, 200, size=(N_SEQS, CTX))
    tokens[:, 0] = BOS
    text = np.sort(rng.choice(N_SEQS * CTX // E, size=150, replace=False))
    tok = np.concatenate([np.arange(N_SEQS) * CTX, text * E + 24])
    val = np.concatenate([np.full(N_SEQS, 100.0), rng.uniform(0.5, 2, size=len(text))])
    config = CacheConfig(corpus=CorpusConfig(bos="always")).model_dump(mode="json")
    cache = write_cache(tmp_path_factory.mktemp("bos"), tokens, [(tok, val)], config)
    return cache, text


def test_bos_is_left_out_of_sampling_and_statistics(bos_cache):
    """The BOS id comes from the cache's subject (SmolLM2's tokenizer) when filter_bos is on."""
    cache, text = bos_cache
    assert (text % 8 == 0).any()  # some windows hold a BOS and text the latent fires on
    r = Sampler(cache, "c", SampleConfig()).sample(0)
    assert r.max_activation <= 2 and r.n_activating_windows == 150
    assert r.density == pytest.approx(150 / (N_SEQS * (CTX - 1)))
    top = [e for e in r.test if e.quantile == 9]
    assert top and max(_peak(e) for e in r.test + r.train) <= 2
    for e in r.train + r.test:
        assert all(e.start + offset != 0 for offset, _ in e.acts), "an activation at BOS"


def test_without_filter_bos_the_bos_activations_dominate_as_before(bos_cache):
    cache, text = bos_cache
    r = Sampler(cache, "c", SampleConfig(filter_bos=False)).sample(0)
    assert r.max_activation == 100
    assert r.n_activating_windows == len(np.union1d(text, np.arange(N_SEQS) * CTX // E))
    assert r.density == pytest.approx((N_SEQS + 150) / (N_SEQS * CTX))
    assert all(_peak(e) == 100 for e in r.test if e.quantile == 9)


def test_the_cache_records_the_bos_its_windows_start_with(cache, tokenizer):
    assert cache.manifest["bos_id"] is None  # SmolLM2's tokenizer adds no BOS: none placed
    for bos, want in [("auto", None), ("never", None), ("always", tokenizer.bos_token_id)]:
        windows = TokenWindows(CorpusConfig(bos=bos, ctx_len=64, n_tokens=640), tokenizer)
        assert windows.bos_id == want, bos
        assert all((w[0] == want) == (want is not None) for w in windows), bos


def _separator_cache(root, n_seqs, bos_at_start, config=None, **recorded):
    """Documents separated by BOS's id (as GPT-2-style tokenizers do, BOS = EOS): the latent fires
    at 3 on every separator, at 1 on other text, and at 100 on position 0 of every window."""
    rng = np.random.default_rng(2)
    tokens = rng.integers(100, 200, size=(n_seqs, CTX))
    seps = np.arange(40, CTX, 64)  # 4 per window, in 4 of its 8 blocks
    tokens[:, seps] = BOS
    if bos_at_start:
        tokens[:, 0] = BOS
    text = np.arange(n_seqs)[:, None] * CTX + np.array([12, 72, 140, 200])  # the other 4 blocks
    tok = np.concatenate(
        [np.arange(n_seqs) * CTX, (np.arange(n_seqs)[:, None] * CTX + seps).ravel()]
    )
    val = np.concatenate([np.full(n_seqs, 100.0), np.full(n_seqs * len(seps), 3.0)])
    tok, val = np.concatenate([tok, text.ravel()]), np.concatenate([val, np.ones(text.size)])
    return write_cache(root, tokens, [(tok, val)], config, **recorded)


SUBJECT = CacheConfig(corpus=CorpusConfig(bos="always")).model_dump(mode="json")  # SmolLM2: BOS 1


@pytest.mark.parametrize("recorded", [{"bos_id": BOS}, {}], ids=["recorded", "older-cache"])
def test_bos_as_document_separator_is_kept(tmp_path, recorded):
    """Only the BOS at the start of each window is left out; the same id separating documents is
    text (from the cache's record, or for an older cache from the subject's tokenizer)."""
    cache = _separator_cache(tmp_path, N_SEQS, True, SUBJECT, **recorded)
    r = Sampler(cache, "c", SampleConfig()).sample(0)
    assert r.max_activation == 3  # the separators, not BOS at 100
    assert r.n_activating_windows == N_SEQS * 8
    assert r.density == pytest.approx(8 / (CTX - 1))
    peaks = [_peak(e) for e in r.train + r.test]
    assert 3 in peaks and max(peaks) == 3


def test_an_older_one_sequence_cache_without_bos_keeps_every_token(tmp_path):
    """A cache from before the BOS record whose windows do not start with BOS: nothing is left
    out, though its single first token is trivially the same in every window."""
    cache = _separator_cache(tmp_path, 1, False, SUBJECT)
    r = Sampler(cache, "c", SampleConfig(min_examples=1, min_train=1)).sample(0)
    assert r.max_activation == 100 and r.density == pytest.approx(9 / CTX)


def test_a_recorded_bos_needs_no_tokenizer(tmp_path):
    """The subject is gone (a folder without a model): the recorded BOS is used, and a cache from
    before the record fails with a clear error instead of a transformers traceback."""
    gone = CacheConfig(subject=SubjectConfig(model=str(tmp_path / "gone"))).model_dump(mode="json")
    cache = _separator_cache(tmp_path / "new", N_SEQS, True, gone, bos_id=BOS)
    assert Sampler(cache, "c", SampleConfig()).sample(0).max_activation == 3
    old = _separator_cache(tmp_path / "old", N_SEQS, True, gone)
    with pytest.raises(SubjectError, match="tokenizer .*gone.* cannot be loaded.*filter_bos"):
        Sampler(old, "c", SampleConfig())
    assert Sampler(old, "c", SampleConfig(filter_bos=False)).sample(0).max_activation == 100


def test_an_empty_latent_range_is_refused():
    with pytest.raises(ConfigError, match="'5-2'"):
        parse_latents("5-2", 10)


def test_samples_made_by_an_older_config_are_refused_with_the_missing_keys(tmp_path):
    old = SampleConfig().model_dump(mode="json")
    del old["filter_bos"], old["min_train"]
    (tmp_path / "sample_config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="filter_bos: not recorded .* older autointerp"):
        write_config(tmp_path, SampleConfig())


# --- characters split across tokens -----------------------------------------------------------
CJK = (
    "東京は日本の首都で、人口は約千四百万人です。🙂 北京是中国的首都，有三千年的历史。🎉👍 "
    "서울은 한국의 수도입니다. Nguyễn met 🙂 in Đà Nẵng. 富士山は日本一高い山です。🗻🌸 "
)


@pytest.fixture(scope="module")
def cjk_cache(tokenizer, tmp_path_factory):
    """Sequences of CJK and emoji text (SmolLM2 splits most of these characters across tokens),
    and a latent firing in 40 of the 64 blocks."""
    ids = tokenizer(CJK * 200, add_special_tokens=False)["input_ids"]
    tokens = np.array(ids[: 8 * CTX]).reshape(8, CTX)
    blocks = np.arange(0, 64)[np.arange(64) % 8 != 3][:40]
    config = CacheConfig().model_dump(mode="json")
    cache = write_cache(
        tmp_path_factory.mktemp("cjk"),
        tokens,
        [one_per_block(blocks, np.linspace(1, 4, 40), offset=10)],
        config,
    )
    return cache, tokens


def test_examples_show_split_characters_whole(tokenizer, cjk_cache):
    _, tokens = cjk_cache
    decoder = TokenDecoder(tokenizer)
    one_by_one = [tokenizer.decode([int(t)]) for t in tokens[0]]
    assert sum(REPLACEMENT in t for t in one_by_one) > 50  # the problem exists for this text
    from autointerp.types import ExampleRef

    for seq, row in enumerate(tokens):
        text = tokenizer.decode(row.tolist())
        shown = ""
        for start in range(0, CTX, E):  # windows that tile the sequence
            ex = render(ExampleRef(seq=seq, start=start), tokens, decoder, E)
            assert len(ex.tokens) == E and not any(REPLACEMENT in t for t in ex.tokens)
            shown += "".join(ex.tokens)
        # each character shown once, on the token that completes it; a character cut by the
        # sequence's ends (the corpus cut the text there) is left out
        assert shown == text.strip(REPLACEMENT), seq
        for start in range(3, CTX - E, 7):  # any window: only whole characters of the text
            ex = render(ExampleRef(seq=seq, start=start), tokens, decoder, E)
            assert not any(REPLACEMENT in t for t in ex.tokens)
            assert "".join(ex.tokens) in text


class Recording:
    model = "recording"

    def __init__(self):
        self.chats = []

    async def complete(self, chats, params):
        self.chats += chats
        return [Completion(text="[EXPLANATION]: Japanese text", prompt_tokens=1) for _ in chats]


def test_prompts_show_split_characters_whole(tokenizer, cjk_cache, tmp_path):
    from autointerp.score import ScoreContext, ScoreStageConfig
    from autointerp.types import Explanation

    cache, _ = cjk_cache
    cfg = SampleConfig(n_similar_negatives=0, n_explain_negatives=0)
    path = sample_coder(cache, "c", cfg, tmp_path, [0], progress=False, bos_id=None)
    (record,) = read_records(path)
    assert record.status == "ok" and record.train
    client = Recording()
    ctx = ScoreContext(cache, ScoreStageConfig(), E)
    explainer = Explainer(cache, ExplainConfig(), client, ctx.decode, E)  # as `run` makes it
    (explanation,) = asyncio.run(explainer.explain([record]))
    prompt = "\n".join(m["content"] for m in client.chats[0])
    assert "東京" in prompt or "北京" in prompt or "서울" in prompt
    assert REPLACEMENT not in prompt
    assert "<<>>" not in prompt  # a firing part of a character marks the whole character
    item = ctx.item(record, Explanation(latent=record.id, text="x", raw="", model="m", prompt="p"))
    shown = [t for e in item.test + item.negatives for t in e.tokens]
    assert shown and not any(REPLACEMENT in t for t in shown)


def test_a_run_folder_saved_before_the_new_sample_options_is_refused_naming_them(tmp_path):
    import yaml

    from autointerp.errors import RunError
    from autointerp.pipeline import CONFIG_FILE, RunConfig, config_dict, prepare_folder

    cfg = RunConfig()
    old = config_dict(cfg)
    del old["sample"]["filter_bos"], old["sample"]["min_train"]
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(old))
    with pytest.raises(RunError) as e:
        prepare_folder(cfg, tmp_path)
    assert "sample.filter_bos: folder has no value (saved by an older autointerp)" in str(e.value)
    assert "--force" in str(e.value)


def test_one_two_and_three_windows(tmp_path):
    """The smallest latents: one window cannot feed both the explainer and the scorers, so it is
    skipped with the reason; two or three give the explainer one and the scorers the rest."""
    tokens = np.full((N_SEQS, CTX), 150)
    for n, want in ((1, None), (2, (1, 1)), (3, (1, 2))):
        tok = np.array([b * 2 * E + 5 for b in range(n)])
        cache = write_cache(tmp_path / str(n), tokens, [(tok, np.linspace(1, 2, n))])
        cfg = SampleConfig(
            min_examples=1, min_train=1, n_similar_negatives=0, n_explain_negatives=0
        )
        r = Sampler(cache, "c", cfg, bos_id=None).sample(0)
        if want is None:
            assert r.status == "skipped" and not r.train and "explainer examples" in r.reason
        else:
            assert r.status == "ok" and (len(r.train), len(r.test)) == want, (n, r)
            assert _disjoint(r.train + r.test + r.negatives)
            assert r.shortfall["train"] == 40 - want[0] and r.shortfall["test"] == 100 - want[1]
        # with the default min_train (10) none of them is explained from too few examples
        assert Sampler(cache, "c", SampleConfig(min_examples=1), bos_id=None).sample(0).status == (
            "skipped"
        )
