import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.config import CorpusConfig
from autointerp.corpus import iter_documents, iter_windows
from autointerp.errors import CorpusError

DOCS = [f"Document number {i} talks about topic {i * 7} at some length. " * 6 for i in range(12)]


def _windows(cfg, tokenizer):
    return np.stack(list(iter_windows(cfg, tokenizer)))


@pytest.fixture
def corpus_files(tmp_path):
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, d in enumerate(DOCS):
        (txt / f"{i:02d}.txt").write_text(d)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": DOCS}), parquet)
    return txt, jsonl, parquet


def test_local_sources_give_identical_windows(corpus_files, tokenizer):
    txt, jsonl, parquet = corpus_files
    runs = [
        _windows(
            CorpusConfig(source=str(s), ctx_len=32, n_tokens=None, shuffle_seed=None), tokenizer
        )
        for s in (txt, jsonl, parquet)
    ]
    assert runs[0].shape[1] == 32 and len(runs[0]) > 10
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_hf_datasets_source_on_local_files(corpus_files, tokenizer):
    _, jsonl, _ = corpus_files
    local = _windows(
        CorpusConfig(source=str(jsonl), ctx_len=32, n_tokens=None, shuffle_seed=None), tokenizer
    )
    for streaming in (True, False):
        cfg = CorpusConfig(
            source="hf:json",
            data_files=[str(jsonl)],
            ctx_len=32,
            n_tokens=None,
            shuffle_seed=None,
            streaming=streaming,
        )
        np.testing.assert_array_equal(_windows(cfg, tokenizer), local)


def test_documents_are_separated_by_eos_and_concatenated(corpus_files, tokenizer):
    _, jsonl, _ = corpus_files
    cfg = CorpusConfig(source=str(jsonl), ctx_len=64, n_tokens=None, shuffle_seed=None)
    flat = _windows(cfg, tokenizer).ravel()
    expected = []
    for d in DOCS:
        expected += tokenizer(d, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    n = len(flat)
    assert n == (len(expected) // 64) * 64
    np.testing.assert_array_equal(flat, expected[:n])


def test_bos_always_starts_every_window(corpus_files, tokenizer):
    _, jsonl, _ = corpus_files
    w = _windows(
        CorpusConfig(source=str(jsonl), ctx_len=32, bos="always", n_tokens=None), tokenizer
    )
    assert (w[:, 0] == tokenizer.bos_token_id).all()
    # SmolLM2's tokenizer adds no BOS itself, so `auto` adds none.
    w = _windows(CorpusConfig(source=str(jsonl), ctx_len=32, n_tokens=None), tokenizer)
    assert (w[:, 0] == tokenizer.bos_token_id).sum() < len(w)


def test_n_tokens_limits_whole_windows(tokenizer):
    w = _windows(CorpusConfig(ctx_len=100, n_tokens=1050), tokenizer)
    assert w.shape == (10, 100)


def test_wiki_corpus_is_shuffled_deterministically():
    a = [d for _, d in zip(range(5), iter_documents(CorpusConfig()), strict=False)]
    b = [d for _, d in zip(range(5), iter_documents(CorpusConfig()), strict=False)]
    c = [d for _, d in zip(range(5), iter_documents(CorpusConfig(shuffle_seed=1)), strict=False)]
    assert a == b and a != c and all(len(d) > 20 for d in a)


def test_non_utf8_file_is_named(tmp_path, tokenizer):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt is not UTF-8.*0xe9 at offset 3"):
        list(iter_windows(CorpusConfig(source=str(bad)), tokenizer))


def test_empty_corpus(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(CorpusError, match="not one window"):
        list(iter_windows(CorpusConfig(source=str(tmp_path / "empty.txt")), tokenizer))
    with pytest.raises(CorpusError, match="not found"):
        list(iter_windows(CorpusConfig(source=str(tmp_path / "missing.jsonl")), tokenizer))


def test_jsonl_without_the_text_field(tmp_path, tokenizer):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"body": "hello"}\n')
    with pytest.raises(CorpusError, match=r"rows\.jsonl:1 has no field 'text'"):
        list(iter_windows(CorpusConfig(source=str(f)), tokenizer))
    f.write_text('{"text": "hello"\n')
    with pytest.raises(CorpusError, match="not valid JSON"):
        list(iter_windows(CorpusConfig(source=str(f)), tokenizer))
