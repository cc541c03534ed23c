"""Bounded memory: what-is-done reads parse heads, not records; a no-op resume builds no full record
and a partial one only its chunk's; export streams row groups and writes the files the whole-table
export wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autointerp import export
from autointerp.cli import app
from autointerp.export import (
    _base_row,
    _explanation_fields,
    _neuronpedia_record,
    _score_fields,
    _sources,
    _top_examples,
    slug,
)
from autointerp.jsonl import LineIndex, SampleHead, ScoreHead, cut_torn_line, latest, scan
from autointerp.runfolder import RunFolder
from autointerp.score.base import LatentScore
from autointerp.types import Explanation, SampledLatent
from tests.test_pipeline import NO_LLM

N_EXAMPLES = 3


# ---- heads ---------------------------------------------------------------------------------------


def test_score_head_reads_up_to_the_predictions_whatever_the_explanation_says(tmp_path):
    tricky = 'says ,"predictions": and \\",\\"predictions\\":[ in its text'
    score = LatentScore.model_validate(
        {
            "latent": {"coder": "c", "latent": 3},
            "scorer": "embedding",
            "status": "ok",
            "explanation": tricky,
            "metrics": {"auroc": 0.75, "n": 4},
            "intervals": {"auroc": (0.5, 0.9)},
            "predictions": [],
        }
    )
    line = score.model_dump_json() + "\n"
    head = ScoreHead.parse(line.encode())
    assert head.explanation == tricky and head.metrics == {"auroc": 0.75, "n": 4}
    assert head.intervals == {"auroc": (0.5, 0.9)} and type(head.metrics["n"]) is int
    path = tmp_path / "s.jsonl"
    path.write_text(line + line.replace('"latent":3', '"latent":4')[:-40])  # a torn last line
    assert [h.latent.latent for _, h in scan(path, ScoreHead)] == [3]


def test_line_index_reads_a_latents_last_line(small_run, tmp_path):
    src = small_run / "sample" / "layers.15.jsonl"
    lines = src.read_text().splitlines(keepends=True)
    path = tmp_path / "x.jsonl"
    path.write_text("".join(reversed(lines)) + lines[0])  # latent order reversed, one repeated
    found = latest(path, SampleHead, lambda h: h.id.latent, lambda h: h.status)
    index = LineIndex(path, {i: at for i, (at, _) in found.items()})
    first = SampledLatent.model_validate_json(lines[0])
    assert list(index) == sorted(found) and len(index) == len(lines)
    assert index.read([first.id.latent], SampledLatent)[first.id.latent] == first
    assert [r.id.latent for r in index.records(SampledLatent)] == sorted(found)
    assert index.read([10_000], SampledLatent) == {}


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"", b""),
        (b"a\n", b"a\n"),
        (b"a\nbc", b"a\n"),
        (b"abc", b""),
        (b"a\n" + b"x" * 200_000, b"a\n"),  # a torn line longer than a block read from the end
        (b"q\n" * 70_000 + b"zz", b"q\n" * 70_000),
    ],
)
def test_cut_torn_line_keeps_every_whole_line(tmp_path, data, kept):
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    cut_torn_line(path)
    assert path.read_bytes() == kept


# ---- resume --------------------------------------------------------------------------------------


def _count_parses(monkeypatch) -> dict[str, int]:
    """Count full-record parses of sample, explanation and score lines."""
    counts = {}
    for model in (SampledLatent, Explanation, LatentScore):
        counts[model.__name__] = 0
        original = model.model_validate_json

        def counting(cls, data, *a, _orig=original, **kw):
            counts[cls.__name__] += 1
            return _orig(data, *a, **kw)

        monkeypatch.setattr(model, "model_validate_json", classmethod(counting))
    return counts


@pytest.fixture(scope="module")
def finished(small_run, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("streaming")
    out = root / "run"
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = root / "run.yaml"
    cfg.write_text(NO_LLM)  # 6 latents of each of 2 coders, chunks of 2
    done = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert done.exit_code == 0, (done.output, done.exception)
    return cfg, out


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    for k in ("wall_s", "llm_calls", "llm_tokens", "chunks_by_worker"):
        s.pop(k)
    return s


def test_noop_resume_parses_no_full_record(finished, tmp_path, monkeypatch):
    cfg, src = finished
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = {p: p.read_bytes() for p in out.glob("*/**/*.jsonl")}
    counts = _count_parses(monkeypatch)
    done = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert done.exit_code == 0, (done.output, done.exception)
    assert counts == {"SampledLatent": 0, "Explanation": 0, "LatentScore": 0}
    assert {p: p.read_bytes() for p in out.glob("*/**/*.jsonl")} == before
    assert _summary(out) == _summary(src)


def test_resume_reads_only_the_records_of_its_chunk(finished, tmp_path, monkeypatch):
    cfg, src = finished
    out = tmp_path / "run"
    shutil.copytree(src, out)
    path = out / "scores" / "embedding" / "layers.15.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    gone = {json.loads(x)["latent"]["latent"] for x in lines[2:4]}  # one chunk of 2
    path.write_text("".join(lines[:2] + lines[4:]))
    counts = _count_parses(monkeypatch)
    done = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert done.exit_code == 0, (done.output, done.exception)
    assert counts["SampledLatent"] == len(gone) == 2
    scores = {json.loads(x)["latent"]["latent"] for x in path.read_text().splitlines()}
    assert gone <= scores and len(scores) == len(lines)
    assert _summary(out) == _summary(src)


# ---- export --------------------------------------------------------------------------------------


def _whole_table_export(run: RunFolder, model_id: str) -> tuple[pa.Table, list[dict], list[dict]]:
    """The export as it was made before it streamed: every row in memory, the schema inferred from
    all of them, the JSONL from the table (parquet, jsonl rows, neuronpedia records)."""
    scorers = run.scorers()
    rows = []
    for coder, meta in run.coders.items():
        expl = run.explanations(coder)
        scores = {s: run.scores(s, coder) for s in scorers}
        for latent, record in sorted(run.samples(coder).items()):
            row = _base_row(run.subject_model, coder, meta, record)
            row |= _explanation_fields(record, expl.get(latent))
            for s in scorers:
                row |= _score_fields(s, scores[s].get(latent))
            row["top_examples"] = _top_examples(run, record, N_EXAMPLES)
            rows.append(row)
    fields = list(export.BASE_SCHEMA)
    for s in scorers:
        fields += [(s, pa.float64()), (f"{s}_ci_low", pa.float64())]
        fields += [(f"{s}_ci_high", pa.float64()), (f"{s}.status", pa.string())]
        fields.append((f"{s}.error", pa.string()))
        values: dict[str, list] = {}
        for row in rows:
            for k, v in row.items():
                if (
                    k.startswith(f"{s}.")
                    and k not in (f"{s}.status", f"{s}.error")
                    and v is not None
                ):
                    values.setdefault(k, []).append(v)
        main = f"{s}.{export.MAIN_METRIC[s]}"
        for k in sorted(values, key=lambda k: (k != main, k)):
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values[k])
            fields.append((k, pa.int64() if ints else pa.float64()))
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([*fields, ("top_examples", pa.list_(export.EXAMPLE))])
    )
    sources = _sources(run.coders, {})
    records = [
        _neuronpedia_record(r, scorers, model_id, sources[r["coder"]])
        for r in rows
        if r["status"] == "explained" and (r["explanation"] or "").strip()
    ]
    return table, table.to_pylist(), records


def test_export_streams_batches_and_writes_what_the_whole_table_export_wrote(
    small_run, tmp_path, monkeypatch
):
    monkeypatch.setattr(export, "ROW_BATCH", 5)
    monkeypatch.setattr(export, "ROW_GROUP_BYTES", 1)  # every converted batch is a row group
    written: list[int] = []
    original = pq.ParquetWriter.write_table

    def spy(self, table, *a, **kw):
        written.append(table.num_rows)
        return original(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", spy)
    paths = export.export_run(small_run, tmp_path / "out", n_examples=N_EXAMPLES)
    run = RunFolder(small_run)
    table, rows, records = _whole_table_export(run, slug(run.subject_model))
    assert max(written) <= 5 and sum(written) == table.num_rows > 5
    assert pq.ParquetFile(paths["parquet"]).metadata.num_row_groups == len(written)
    got = pq.read_table(paths["parquet"])
    assert got.schema.equals(table.schema) and got.equals(table)
    assert [json.loads(x) for x in paths["jsonl"].read_text().splitlines()] == rows
    expected = json.dumps(records, indent=1) + "\n"
    assert paths["neuronpedia"].read_text() == expected
    assert not list(paths["parquet"].parent.glob(".*partial"))


def test_export_gathers_small_batches_into_large_row_groups(small_run, tmp_path, monkeypatch):
    """Rows are converted a few at a time, but written as row groups of ROW_GROUP_BYTES: a million
    latents do not make thousands of row groups (and a footer that large)."""
    monkeypatch.setattr(export, "ROW_BATCH", 2)
    paths = export.export_run(small_run, tmp_path / "big", n_examples=N_EXAMPLES)
    meta = pq.ParquetFile(paths["parquet"]).metadata
    assert meta.num_rows > 2 and meta.num_row_groups == 1
    run = RunFolder(small_run)
    table, rows, _ = _whole_table_export(run, slug(run.subject_model))
    assert pq.read_table(paths["parquet"]).equals(table)
    assert [json.loads(x) for x in paths["jsonl"].read_text().splitlines()] == rows
