"""export_run on the finished `small_run` folder: the files load with `datasets`, rows match the run's
files, the card and the Neuronpedia JSON say what they should, and bad inputs fail with RunError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
import yaml

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
