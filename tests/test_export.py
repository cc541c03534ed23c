"""export_run on the finished `small_run` folder: the files load with `datasets`, rows match the run's
files, the card and the Neuronpedia JSON say what they should, the Neuronpedia import folder holds the
fields and types of Neuronpedia's schema, and bad inputs fail with RunError."""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from autointerp import export
from autointerp.errors import RunError
from autointerp.export import default_sources, export_run, slug
from autointerp.runfolder import RunFolder
from autointerp.score import MAIN_METRIC

N_EXAMPLES = 3
NEURONPEDIA_FIELDS = {
    "modelId",
    "layer",
    "index",
    "description",
    "typeName",
    "explanationModelName",
    "notes",
}


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory) -> dict[str, Path]:
    datasets.disable_progress_bars()
    return export_run(small_run, tmp_path_factory.mktemp("export"), n_examples=N_EXAMPLES)


@pytest.fixture(scope="module")
def ds(exported):
    return datasets.load_dataset(
        "parquet",
        data_files=str(exported["parquet"]),
        split="train",
        cache_dir=str(exported["parquet"].parent / ".hf"),
    )


def _copy_run(small_run: Path, root: Path, explanations: bool = True) -> Path:
    """A run that shares small_run's cache (a symlink) and copies the small stage folders."""
    run = root / "run"
    run.mkdir()
    (run / "cache").symlink_to(small_run / "cache")
    for name in ["sample", "scores"] + (["explanations"] if explanations else []):
        shutil.copytree(small_run / name, run / name)
    return run


def test_parquet_jsonl_and_folder_load_the_same_rows(small_run, exported, ds, tmp_path):
    # a cache of this test's own: `datasets` may reuse an older build of a folder of the same name
    run = RunFolder(small_run)
    rows = datasets.load_dataset(
        "json", data_files=str(exported["jsonl"]), split="train", cache_dir=str(tmp_path)
    )
    folder = datasets.load_dataset(
        str(exported["card"].parent), split="train", cache_dir=str(tmp_path)
    )
    assert len(ds) == len(rows) == len(folder) == sum(len(run.samples(c)) for c in run.coders)
    for coder in run.coders:
        assert ds["coder"].count(coder) == len(run.samples(coder))
    assert folder.features == ds.features
    typed = [c for c in ds.column_names if any(v is not None for v in ds[c])]
    assert {c: rows.features[c] for c in typed} == {c: ds.features[c] for c in typed}
    assert rows.to_list() == ds.to_list() == folder.to_list()
    assert not list(exported["card"].parent.glob(".*partial"))


def test_rows_match_the_run_files(small_run, ds):
    run = RunFolder(small_run)
    by_key = {(r["coder"], r["latent"]): r for r in ds}
    metric = MAIN_METRIC["embedding"]
    for coder in run.coders:
        explanations, scores = run.explanations(coder), run.scores("embedding", coder)
        for latent in sorted(explanations)[:3]:
            row = by_key[(coder, latent)]
            assert row["status"] == "explained"
            assert row["explanation"] == explanations[latent].text
            assert row["explainer_model"] == explanations[latent].model
            assert row["explainer_prompt"] == explanations[latent].prompt
            score = scores[latent]
            assert row["embedding.status"] == score.status
            if score.status == "ok":
                assert row["embedding"] == pytest.approx(score.metrics[metric])
                assert row[f"embedding.{metric}"] == pytest.approx(score.metrics[metric])
            sample = run.samples(coder)[latent]
            assert row["density"] == pytest.approx(sample.density)
            assert row["n_activating_windows"] == sample.n_activating_windows


def test_skipped_latents_have_no_explanation_or_score(small_run, ds):
    skipped = [r for r in ds if r["status"] == "skipped"]
    if not skipped:
        pytest.skip("small_run skipped no latent")
    for row in skipped:
        assert row["explanation"] is None and row["skip_reason"]
        assert row["embedding"] is None and row["embedding.status"] == "not_scored"
        expected = RunFolder(small_run).samples(row["coder"])[row["latent"]]
        assert expected.status == "skipped" and row["skip_reason"] == expected.reason


def test_top_examples_are_the_strongest_first(small_run, ds):
    run = RunFolder(small_run)
    for row in ds.filter(lambda r: r["status"] == "explained").select(range(4)):
        examples = row["top_examples"]
        train = run.samples(row["coder"])[row["latent"]].train
        assert 0 < len(examples) == min(N_EXAMPLES, len(train))
        for ex in examples:
            assert len(ex["tokens"]) == len(ex["activations"]) > 0
            assert ex["text"] == "".join(ex["tokens"])
        peaks = [max(ex["activations"]) for ex in examples]
        assert peaks == sorted(peaks, reverse=True)
        assert peaks[0] == pytest.approx(max(v for ref in train for _, v in ref.acts))


def test_dataset_card(exported):
    text = exported["card"].read_text()
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["configs"][0]["data_files"][0]["path"] == "explanations.parquet"
    assert meta["license"] and meta["pretty_name"] and "interpretability" in meta["tags"]
    for needle in ["smollm2", "embedding", "auroc", "layers.15", "neurons.15", "n_train"]:
        assert needle in body
    assert "Automatically Interpreting Millions of Features in Large Language Models" in body


def _column_doc(card: str, column: str) -> str:
    return next(line for line in card.splitlines() if line.startswith(f"| `{column}` |"))


def test_card_says_whether_bos_counts_in_density_and_max(small_run, exported, tmp_path):
    card = exported["card"].read_text()  # small_run samples with filter_bos on (the default)
    assert "filter_bos True" in card
    for column in ["density", "max_activation"]:
        assert "BOS that starts each window left out" in _column_doc(card, column)
    run = _copy_run(small_run, tmp_path)
    config = run / "sample" / "sample_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"filter_bos": False}))
    card = export_run(run, tmp_path / "out", n_examples=0)["card"].read_text()
    assert "filter_bos False" in card
    for column in ["density", "max_activation"]:
        assert "BOS positions included" in _column_doc(card, column)


def test_neuronpedia_json(exported, ds):
    records = json.loads(exported["neuronpedia"].read_text())
    explained = ds.filter(lambda r: r["status"] == "explained")
    assert len(records) == len(explained)
    sources = {"layers.15": "15-res-sparsify", "neurons.15": "15-res-neurons"}
    for rec, row in zip(records, explained, strict=True):
        assert set(rec) == NEURONPEDIA_FIELDS
        assert rec["modelId"] == "smollm2" and rec["layer"] == sources[row["coder"]]
        assert rec["index"] == str(row["latent"]) and rec["description"] == row["explanation"]


def test_failed_and_missing_explanations(small_run, tmp_path):
    run = _copy_run(small_run, tmp_path)
    path = run / "explanations" / "layers.15.jsonl"
    lines = path.read_text().splitlines()
    failed = json.loads(lines[0]) | {"text": None, "error": "no [EXPLANATION] line"}
    path.write_text("\n".join([json.dumps(failed), *lines[2:]]) + "\n")
    paths = export_run(
        run, tmp_path / "out", n_examples=0, neuronpedia_sources={"layers.15": "15-res-test"}
    )
    rows = [json.loads(line) for line in paths["jsonl"].read_text().splitlines()]
    rows = {r["latent"]: r for r in rows if r["coder"] == "layers.15"}
    first, second = failed["latent"]["latent"], json.loads(lines[1])["latent"]["latent"]
    assert rows[first]["status"] == "explanation_failed" and rows[first]["explanation"] is None
    assert rows[first]["explanation_error"] == "no [EXPLANATION] line"
    assert rows[second]["status"] == "not_explained"
    assert all(r["top_examples"] == [] for r in rows.values())
    records = json.loads(paths["neuronpedia"].read_text())
    assert {r["layer"] for r in records} == {"15-res-test", "15-res-neurons"}
    assert str(first) not in {r["index"] for r in records if r["layer"] == "15-res-test"}
    assert "1 failed explanation(s) were left out" in paths["card"].read_text()


def test_interrupted_export_leaves_no_file_that_looks_complete(small_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_run(small_run, out, n_examples=0)

    def boom(rows, f):  # the JSONL file is written a batch of rows at a time
        f.write("{half a line")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(export, "_write_jsonl", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        export_run(small_run, out, n_examples=1)
    assert not (out / "README.md").exists()
    assert json.loads((out / "explanations.jsonl").read_text().splitlines()[0])
    assert not list(out.glob(".*partial"))


def test_errors(small_run, tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        export_run(tmp_path)
    with pytest.raises(RunError, match="sample/"):
        export_run(small_run, small_run / "sample" / "export")
    bare = _copy_run(small_run, tmp_path, explanations=False)
    with pytest.raises(RunError, match="no explanations"):
        export_run(bare)
    with pytest.raises(RunError, match="cache/"):  # also through the symlinked cache
        export_run(bare, bare / "cache" / "export")
    assert not (small_run / "cache" / "export").exists()
    with pytest.raises(RunError, match="unknown coder"):
        export_run(small_run, tmp_path / "out", neuronpedia_sources={"nope": "1-res-x"})
    with pytest.raises(RunError, match="n_examples"):
        export_run(small_run, tmp_path / "out", n_examples=-1)


def test_ids():
    assert slug("HuggingFaceTB/SmolLM2-135M") == "smollm2-135m"
    assert slug("/models/gemma-2-2b.Q8_0.gguf") == "gemma-2-2b-q8_0"
    coders = {
        "a": {"hookpoint": "layers.6.mlp", "kind": "saelens"},
        "b": {"hookpoint": "layers.15", "kind": "sparsify"},
        "c": {"hookpoint": "layers.15", "kind": "sparsify"},
    }
    assert default_sources(coders) == {"a": "6-mlp-saelens", "b": "15-res-b", "c": "15-res-c"}


# ---- Neuronpedia import folder -------------------------------------------------------------------

# The scalar columns of Neuronpedia's tables, transcribed from apps/webapp/prisma/schema.prisma of
# hijohnnylin/neuronpedia at commit ebb8426fc550ad5d1f76d52c271a624af3c08a57: field -> (Prisma type,
# required). "Required" means the row cannot be inserted without it: a non-optional field with no
# default in the database. Prisma's @default(cuid()) is filled in by the Prisma client, not by the
# database (the migration has `"id" TEXT NOT NULL`), and the import route inserts with raw SQL
# (apps/webapp/lib/db/import.ts, importJsonlString), so `id` is required; fields with @default(...)
# other than cuid(), like createdAt, are left to the database.
PRISMA = {
    "Explanation": {
        "id": ("String", True),
        "modelId": ("String", True),
        "layer": ("String", True),
        "index": ("String", True),
        "embedding": ("Unsupported", False),
        "description": ("String", True),
        "authorId": ("String", True),
        "triggeredByUserId": ("String", False),
        "notes": ("String", False),
        "scoreV1": ("Float", False),
        "scoreV2": ("Float", False),
        "umap_x": ("Float", False),
        "umap_y": ("Float", False),
        "umap_cluster": ("Int", False),
        "umap_log_feature_sparsity": ("Float", False),
        "typeName": ("String", False),
        "explanationModelName": ("String", False),
        "createdAt": ("DateTime", False),
        "updatedAt": ("DateTime", False),
    },
    "ExplanationScore": {
        "id": ("String", True),
        "initiatedByUserId": ("String", True),
        "value": ("Float", True),
        "explanationId": ("String", True),
        "explanationScoreTypeName": ("String", True),
        "explanationScoreModelName": ("String", True),
        "jsonDetails": ("String", False),
        "createdAt": ("DateTime", False),
    },
    "ExplanationType": {
        "name": ("String", True),
        "displayName": ("String", True),
        "description": ("String", True),
        "featured": ("Boolean", False),
        "isAttention": ("Boolean", False),
        "explainerModelSettingsId": ("String", False),
        "settings": ("String", False),
        "url": ("String", False),
        "creatorName": ("String", True),
        "creatorId": ("String", True),
        "createdAt": ("DateTime", False),
        "updatedAt": ("DateTime", False),
    },
    "ExplanationModelType": {
        "name": ("String", True),
        "displayName": ("String", True),
        "description": ("String", True),
        "featured": ("Boolean", False),
        "openRouterModelId": ("String", False),
        "url": ("String", False),
        "creatorName": ("String", True),
        "createdAt": ("DateTime", False),
        "updatedAt": ("DateTime", False),
    },
    "ExplanationScoreType": {
        "name": ("String", True),
        "displayName": ("String", True),
        "description": ("String", True),
        "featured": ("Boolean", False),
        "isAttention": ("Boolean", False),
        "scoreDescription": ("String", False),
        "scorerModel": ("String", False),
        "settings": ("String", False),
        "url": ("String", False),
        "creatorName": ("String", True),
        "creatorId": ("String", True),
        "createdAt": ("DateTime", False),
        "updatedAt": ("DateTime", False),
    },
    "ExplanationScoreModel": {
        "name": ("String", True),
        "displayName": ("String", True),
        "description": ("String", True),
        "featured": ("Boolean", False),
        "openRouterModelId": ("String", False),
        "url": ("String", False),
        "creatorName": ("String", True),
        "createdAt": ("DateTime", False),
        "updatedAt": ("DateTime", False),
    },
    "EvalType": {"name": ("String", True)},  # written empty: only its name is transcribed
}
# The JSON type each Prisma type is written as; the others (DateTime, Unsupported vector) are left
# to the database and must not be written.
JSON_TYPES = {
    "String": lambda v: isinstance(v, str),
    "Float": lambda v: isinstance(v, float) and math.isfinite(v),
    "Int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "Boolean": lambda v: isinstance(v, bool),
}
# The files of v1/config/ that importConfigFromS3 (apps/webapp/lib/db/import.ts) upserts, and tables.
CONFIG_TABLES = {
    "explanation_model_type": "ExplanationModelType",
    "explanation_type": "ExplanationType",
    "explanation_score_model": "ExplanationScoreModel",
    "explanation_score_type": "ExplanationScoreType",
    "eval_type": "EvalType",
}
# The seeded bot user (apps/webapp/prisma/seed.ts): the only User row every instance has.
BOT_USER = "clkht01d40000jv08hvalcvly"
# The import route keeps files named like this (apps/webapp/app/api/admin/import/route.ts).
BATCH_FILE = re.compile(r"^batch-(\d+)\.jsonl\.gz$")
CUID = re.compile(r"^c[0-9a-z]{24}$")


def _schema_errors(table: str, records: list[dict]) -> list[str]:
    """Every way `records` differ from what PRISMA says `table` takes, as readable lines."""
    fields, errors = PRISMA[table], []
    keys = {tuple(r) for r in records}
    if len(keys) > 1:  # the importer reads the columns from a file's first line only
        errors.append(f"{table}: lines with different keys {keys}")
    for r in records:
        for name in set(r) - set(fields):
            errors.append(f"{table}: {name} is no field of the table")
        for name, (kind, required) in fields.items():
            value = r.get(name)
            if value is None:
                if required:
                    errors.append(f"{table}: required {name} missing or null in {r}")
            elif kind not in JSON_TYPES:
                errors.append(f"{table}: {name} ({kind}) is written; it is the database's")
            elif not JSON_TYPES[kind](value):
                errors.append(f"{table}: {name} should be {kind}, is {value!r}")
    return errors


def _read_import(root: Path) -> dict:
    """The folder as the import reads it: config records by file name, and per (model, source) the
    explanation and score records of its batch files in batch order."""
    top = sorted(p.name for p in (root / "v1").iterdir())
    config = {
        p.stem: [json.loads(x) for x in p.read_text().splitlines()]
        for p in sorted((root / "v1" / "config").iterdir())
    }
    data: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for model in (root / "v1").iterdir():
        if model.name == "config":
            continue
        for source in model.iterdir():
            kinds = data.setdefault((model.name, source.name), {})
            assert sorted(p.name for p in source.iterdir()) <= [
                "explanation_scores",
                "explanations",
            ]
            for kind in source.iterdir():
                files = sorted(kind.iterdir(), key=lambda p: int(BATCH_FILE.match(p.name)[1]))
                kinds[kind.name] = [
                    json.loads(line)
                    for f in files
                    for line in gzip.decompress(f.read_bytes()).decode("utf-8").splitlines()
                ]
    return {"top": top, "config": config, "data": data}


@pytest.fixture(scope="module")
def np_export(small_run, tmp_path_factory) -> Path:
    return export_run(small_run, tmp_path_factory.mktemp("np"), n_examples=0, neuronpedia=True)[
        "neuronpedia_import"
    ]


def test_neuronpedia_import_folder_has_the_schemas_fields_and_types(np_export):
    found = _read_import(np_export)
    assert found["top"] == ["config", "smollm2"]
    assert sorted(found["config"]) == sorted(CONFIG_TABLES)
    errors = []
    for name, records in found["config"].items():
        errors += _schema_errors(CONFIG_TABLES[name], records)
    explanations = [r for d in found["data"].values() for r in d.get("explanations", [])]
    scores = [r for d in found["data"].values() for r in d.get("explanation_scores", [])]
    for kinds in found["data"].values():  # the importer's columns come from each file's first line
        errors += _schema_errors("Explanation", kinds.get("explanations", []))
        errors += _schema_errors("ExplanationScore", kinds.get("explanation_scores", []))
    assert errors == []
    assert explanations and scores
    # the same checks catch what they should
    bad = dict(explanations[0], index=0, umap_x="1", createdAt="2026-01-01", extra=1)
    del bad["authorId"]
    assert len(_schema_errors("Explanation", [bad])) == 5
    assert _schema_errors("ExplanationScore", [dict(scores[0], value=1)])  # an int, not a Float


def test_neuronpedia_import_folder_references_rows_that_exist(np_export):
    found = _read_import(np_export)
    config = {CONFIG_TABLES[k]: {r["name"] for r in v} for k, v in found["config"].items()}
    ids = set()
    for (model, source), kinds in found["data"].items():
        assert {"explanations", "explanation_scores"} == set(kinds)
        for r in kinds["explanations"]:
            assert (r["modelId"], r["layer"]) == (model, source)
            assert r["typeName"] in config["ExplanationType"]
            assert r["explanationModelName"] in config["ExplanationModelType"]
            assert r["authorId"] == BOT_USER and CUID.match(r["id"])
            ids.add(r["id"])
        for r in kinds["explanation_scores"]:
            assert r["explanationId"] in ids
            assert r["explanationScoreTypeName"] in config["ExplanationScoreType"]
            assert r["explanationScoreModelName"] in config["ExplanationScoreModel"]
            assert r["initiatedByUserId"] == BOT_USER and CUID.match(r["id"])
            assert isinstance(json.loads(r["jsonDetails"]), dict)  # Neuronpedia's UI parses it
    n = sum(len(k["explanations"]) + len(k["explanation_scores"]) for k in found["data"].values())
    assert len(ids) + sum(len(k["explanation_scores"]) for k in found["data"].values()) == n
    for name in ["ExplanationType", "ExplanationScoreType"]:
        assert {r["creatorId"] for r in found["config"][_file(name)]} == {BOT_USER}
    for records in found["config"].values():  # never offered for new runs, never Neuronpedia's rows
        assert all(r["featured"] is False and r["name"].startswith("autointerp-") for r in records)
    assert found["config"]["eval_type"] == []
    score_type = found["config"]["explanation_score_type"][0]
    assert "auroc" in score_type["description"].lower() and "embedding" in score_type["description"]


def _file(table: str) -> str:
    return next(k for k, v in CONFIG_TABLES.items() if v == table)


def test_neuronpedia_import_folder_holds_the_runs_explanations_and_scores(small_run, np_export):
    run, found = RunFolder(small_run), _read_import(np_export)
    sources = {"layers.15": "15-res-sparsify", "neurons.15": "15-res-neurons"}
    metric = MAIN_METRIC["embedding"]
    n_scores = 0
    for coder, source in sources.items():
        kinds = found["data"][("smollm2", source)]
        explained = {i: e for i, e in run.explanations(coder).items() if (e.text or "").strip()}
        by_index = {r["index"]: r for r in kinds["explanations"]}
        assert sorted(by_index, key=int) == [str(i) for i in sorted(explained)]
        for i, e in explained.items():
            assert by_index[str(i)]["description"] == e.text.strip()
            assert by_index[str(i)]["notes"] == f"autointerp prompt {e.prompt}"
        scores = {r["explanationId"]: r for r in kinds["explanation_scores"]}
        assert len(scores) == len(kinds["explanation_scores"])  # one per explanation and scorer
        for i, s in run.scores("embedding", coder).items():
            rec = scores.get(by_index[str(i)]["id"]) if str(i) in by_index else None
            value = s.metrics.get(metric) if s.status == "ok" else None
            if value is None or not math.isfinite(value):
                assert rec is None  # a failed score has no row, and never a zero
            else:
                assert rec["value"] == pytest.approx(value) and rec["value"] == float(value)
                assert json.loads(rec["jsonDetails"])["metrics"][metric] == pytest.approx(value)
                n_scores += 1
    assert n_scores == sum(len(k["explanation_scores"]) for k in found["data"].values())


def test_neuronpedia_leaves_out_failed_and_foreign_scores_and_explanation_free_ones(
    small_run, tmp_path
):
    run = _copy_run(small_run, tmp_path)
    expl = run / "explanations" / "layers.15.jsonl"
    lines = expl.read_text().splitlines()
    failed = json.loads(lines[0]) | {"text": None, "error": "no [EXPLANATION] line"}
    expl.write_text("\n".join([json.dumps(failed), *lines[1:]]) + "\n")
    path = run / "scores" / "embedding" / "layers.15.jsonl"
    scores = [json.loads(x) for x in path.read_text().splitlines()]
    first = failed["latent"]["latent"]
    ok = [
        s
        for s in scores
        if s["status"] == "ok"
        and s["metrics"].get("auroc") is not None
        and s["latent"]["latent"] != first
    ]
    broken, foreign = ok[0], ok[1]
    broken |= {"status": "failed", "error": "the judge said nothing", "metrics": {"auroc": 0.0}}
    foreign["explanation"] = "an explanation written before the one exported"
    path.write_text("".join(json.dumps(s) + "\n" for s in scores))
    intruder = run / "scores" / "intruder"  # explanation-free: it scores latents, not explanations
    intruder.mkdir()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    free = [
        s | {"scorer": "intruder", "explanation": None, "metrics": {"accuracy": 0.5}} for s in lines
    ]
    (intruder / "layers.15.jsonl").write_text("".join(json.dumps(s) + "\n" for s in free))

    paths = export_run(run, tmp_path / "out", n_examples=0, neuronpedia=True)
    found = _read_import(paths["neuronpedia_import"])
    kinds = found["data"][("smollm2", "15-res-sparsify")]
    by_index = {r["index"]: r["id"] for r in kinds["explanations"]}
    scored = {r["explanationId"] for r in kinds["explanation_scores"]}
    assert str(first) not in by_index
    assert by_index[str(broken["latent"]["latent"])] not in scored
    assert by_index[str(foreign["latent"]["latent"])] not in scored
    assert len(scored) == len(ok) - 2
    assert all(r["value"] != 0.0 for r in kinds["explanation_scores"])
    types = {r["name"] for r in found["config"]["explanation_score_type"]}
    assert types == {"autointerp-embedding-auroc"}
    exported = {int(i) for i in by_index}
    n_failed = sum(s["status"] == "failed" and s["latent"]["latent"] in exported for s in scores)
    card = paths["card"].read_text()
    assert n_failed >= 1 and f"embedding {n_failed} (failed)" in card
    assert "embedding 1 (scored another explanation)" in card
    assert "intruder" in card and "explanation-free" in card


def test_neuronpedia_reexport_gives_the_same_ids_and_bytes(
    small_run, np_export, tmp_path, monkeypatch
):
    again = export_run(small_run, tmp_path / "again", n_examples=2, neuronpedia=True)
    files = sorted(p.relative_to(np_export) for p in np_export.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(again["neuronpedia_import"])
        for p in again["neuronpedia_import"].rglob("*")
        if p.is_file()
    )
    for f in files:
        assert (np_export / f).read_bytes() == (again["neuronpedia_import"] / f).read_bytes()
    # into the same folder with small batches, then large ones: no batch file of the first stays
    out = tmp_path / "same"
    monkeypatch.setattr(export, "NEURONPEDIA_BATCH", 4)
    first = _read_import(
        export_run(small_run, out, n_examples=0, neuronpedia=True)["neuronpedia_import"]
    )
    folder = out / "neuronpedia" / "v1" / "smollm2" / "15-res-sparsify" / "explanations"
    assert len(list(folder.iterdir())) > 1
    monkeypatch.setattr(export, "NEURONPEDIA_BATCH", 1024)
    second = _read_import(
        export_run(small_run, out, n_examples=0, neuronpedia=True)["neuronpedia_import"]
    )
    assert [p.name for p in folder.iterdir()] == ["batch-0.jsonl.gz"]
    assert first == second == _read_import(np_export)
    assert not list(out.glob(".*partial"))


def test_neuronpedia_flag_of_the_cli(small_run, tmp_path):
    from autointerp.cli import app

    out = tmp_path / "out"
    runner = CliRunner()
    args = ["export", str(small_run), "--out", str(out), "--examples", "0"]
    done = runner.invoke(app, [*args, "--neuronpedia", "--neuronpedia-source", "layers.15=9-res-x"])
    assert done.exit_code == 0, done.output
    assert f"neuronpedia_import: {out / 'neuronpedia'}" in done.output
    assert (out / "neuronpedia" / "v1" / "smollm2" / "9-res-x" / "explanations").is_dir()
    assert (
        "`neuronpedia/` is laid out as Neuronpedia's import routes read it"
        in (out / "README.md").read_text()
    )
    done = runner.invoke(app, args)  # without the flag: no folder of an older export is left
    assert done.exit_code == 0, done.output
    assert not (out / "neuronpedia").exists() and "neuronpedia_import" not in done.output
