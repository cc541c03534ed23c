"""Explanation datasets: a finished run folder -> a Hugging Face dataset and a Neuronpedia upload.

Usage: `autointerp export RUN [--out RUN/export] [--neuronpedia]`; Python: `export_run(RUN, out,
neuronpedia=False)`, which returns the paths it wrote:
    OUT/explanations.parquet   one row per sampled latent of every coder (columns below)
    OUT/explanations.jsonl     the same rows and columns, one JSON object a line
    OUT/neuronpedia.json       the explanations with the field names of Neuronpedia's Explanation table
    OUT/judge_check.json       per LLM scorer and coder, the run's judge check (verdict, AUROC, text)
    OUT/README.md              a dataset card: `datasets.load_dataset("OUT")` loads the parquet file
    OUT/neuronpedia/           with --neuronpedia: the folder Neuronpedia's import routes read (below)

Columns: model, hookpoint, coder, coder_kind, latent; status (`explained`, `explanation_failed`,
`skipped` by the sample stage, or `not_explained` when the explain stage never reached the latent);
explanation (null unless explained), explanation_error, skip_reason, explainer_model,
explainer_prompt; density, max_activation, n_activating_windows; per scorer found in RUN/scores:
`<scorer>` (its main metric, `autointerp.score.MAIN_METRIC`; null when the score failed or was not
run), `<scorer>.status` (ok | failed | not_scored), `<scorer>.error` and `<scorer>.<metric>` for every
metric it reported; top_examples, the `n_examples` strongest train examples (strongest first) as
{text, tokens, activations}.

Scores are flat scalar columns rather than one struct column per scorer: every loader (`datasets`'
parquet and json builders, pandas, the Hub viewer) types them the same way, they filter and sort
directly (`ds.filter(lambda r: r["detection"] > 0.8)`), and the name `<scorer>.<metric>` is what
`Dataset.flatten()` would give a struct anyway. Each metric column has one type (int64 when every value
is an integer, else float64); NaN and infinite values become null, since JSON has no NaN.

Neuronpedia (hijohnnylin/neuronpedia at ebb8426f: apps/webapp/prisma/schema.prisma and its migrations,
apps/webapp/app/api/admin/import/route.ts, import-file/route.ts, apps/webapp/lib/db/import.ts,
apps/webapp/lib/utils/s3.ts). `neuronpedia.json` is a JSON array of explained latents with field names
of the `Explanation` table (modelId, layer = the source/SAE id, index as a string, description,
typeName, explanationModelName, notes with the prompt id and every main score), for reading: it has no
`id` nor `authorId`, which the import requires (the migration has `"id" TEXT NOT NULL`: Prisma's
@default(cuid()) is filled in by the Prisma client, and the import inserts with raw SQL), so no
Neuronpedia route takes it as it is (`GET /api/explanation/export`, whose shape it had, is removed).

`--neuronpedia` writes OUT/neuronpedia/, the keys of the datasets bucket the import routes read
(DATASET_BASE_PATH `v1/`), which `NeuronpediaImport` fills as the rows stream past:
    v1/config/explanation_type.jsonl, explanation_model_type.jsonl, explanation_score_type.jsonl,
      explanation_score_model.jsonl, eval_type.jsonl (empty)   upserted by name (importConfigFromS3)
    v1/<model>/<source>/explanations/batch-<n>.jsonl.gz         Explanation rows
    v1/<model>/<source>/explanation_scores/batch-<n>.jsonl.gz   ExplanationScore rows
`GET /api/admin/import?modelId=&sourceId=&explanations=only` syncs v1/config and inserts every
`explanations/*.jsonl.gz` of the source; `POST /api/admin/import-file {path, tableName:
"ExplanationScore"}` inserts one scores file. Both insert with `jsonb_to_recordset` and `ON CONFLICT DO
NOTHING`, taking the columns from a file's first line, so every line of a file has the same keys.
Explanation lines: id, modelId, layer, index, description, authorId, typeName, explanationModelName,
notes. ExplanationScore lines: id, explanationId, value (a Float: the scorer's main metric),
explanationScoreTypeName (`autointerp-<scorer>-<metric>`), explanationScoreModelName, initiatedByUserId,
jsonDetails (a JSON string: metric, interval, every metric; Neuronpedia's page parses it). One score per
explained latent and scorer whose main metric is a finite number; a failed or missing score, one of an
older explanation text, and the explanation-free scorers' (they score latents, not explanations) have
no row, never a zero; the log and the card count them. Type rows (`autointerp-` names, so that no
Neuronpedia row is replaced; `featured` false, so that the site offers none of them for new runs) say
the method and, for scores, what the metric means; the scoring model is read from RUN/run_config.yaml
(`autointerp run`) and is `autointerp-unrecorded` otherwise. authorId, creatorId and initiatedByUserId
are the bot user every instance is seeded with. Ids are cuid-shaped SHA-256 hashes of the row's
content, so an export of the same run gives the same ids (a re-import adds nothing) and a changed
explanation a new one. The import also needs what the folder does not hold: the model, the source and
its features (Neuron rows) on the instance, as the README's upload steps say.

The source id cannot be known from the run: pass `neuronpedia_sources` (coder -> id); the default is
`<layer>-<site>-<kind>` from the hookpoint and coder kind (`layers.15`, sparsify -> `15-res-sparsify`;
site is res, mlp or att), with the coder name instead of the kind when two coders would share an id.
modelId defaults to the subject model's name, lowercased and slugged. Failed explanations are left out
of both (counted in the log and the card).

Each file is written to a hidden temporary name and renamed (OUT/neuronpedia as a whole folder), so an
interrupted export never leaves a half file under a final name; the card is removed first and written
last, so a folder with a card holds one complete export. An OUT that holds another export is simply
overwritten (other files in it are left alone; an older neuronpedia/ folder is removed by an export
without --neuronpedia); OUT may not be the run folder itself nor lie inside its cache, sample,
explanations or scores folders.

Method: Paulo et al. 2024, "Automatically Interpreting Millions of Features in Large Language Models"
(arXiv:2410.13928).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from autointerp.errors import RunError
from autointerp.jsonl import ExplanationHead, ScoreHead, scan
from autointerp.runfolder import RunFolder
from autointerp.score import EXPLANATION_FREE, LLM_SCORERS, MAIN_METRIC, STEERING
from autointerp.score.base import LatentScore
from autointerp.types import Explanation, SampledLatent

log = logging.getLogger(__name__)

STAGE_FOLDERS = ("cache", "sample", "explanations", "scores")
STATUSES = ("explained", "explanation_failed", "skipped", "not_explained")
EXAMPLE = pa.struct(
    [
        ("text", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("activations", pa.list_(pa.float64())),
    ]
)
BASE_SCHEMA = [
    ("model", pa.string()),
    ("hookpoint", pa.string()),
    ("coder", pa.string()),
    ("coder_kind", pa.string()),
    ("latent", pa.int64()),
    ("status", pa.string()),
    ("explanation", pa.string()),
    ("explanation_error", pa.string()),
    ("skip_reason", pa.string()),
    ("explainer_model", pa.string()),
    ("explainer_prompt", pa.string()),
    ("density", pa.float64()),
    ("max_activation", pa.float64()),
    ("n_activating_windows", pa.int64()),
]
COLUMN_DOCS = {
    "model": "subject model (as named in the run config)",
    "hookpoint": "module of the subject model whose activations the coder reads",
    "coder": "sparse coder name",
    "coder_kind": "coder format (sparsify, saelens, neurons, ...)",
    "latent": "latent index within the coder",
    "status": "explained, explanation_failed, skipped (by the sample stage) or not_explained",
    "explanation": "the explanation; null unless status is explained",
    "explanation_error": "why the explanation failed (null otherwise)",
    "skip_reason": "why the sample stage skipped the latent (null otherwise)",
    "explainer_model": "LLM (or `token-stats`) that wrote the explanation",
    "explainer_prompt": "explainer name, options and a hash of its prompt templates",
    "density": "fraction of cached tokens on which the latent is active (the BOS that starts "
    "each window left out when sample.filter_bos is on)",
    "max_activation": "largest activation in the cache (the BOS that starts each window left out "
    "when sample.filter_bos is on)",
    "n_activating_windows": "number of example windows in which the latent is active",
    "top_examples": "strongest train examples, strongest first: {text, tokens, activations}",
}
# density and max_activation as the run's sample.filter_bos made them
BOS_DOCS: dict[bool | None, dict[str, str]] = {
    True: {
        "density": "fraction of cached tokens on which the latent is active, the BOS that starts "
        "each window left out (sample.filter_bos)",
        "max_activation": "largest activation in the cache, the BOS that starts each window left "
        "out (sample.filter_bos)",
    },
    False: {
        "density": "fraction of cached tokens on which the latent is active, BOS positions "
        "included (sample.filter_bos is off)",
        "max_activation": "largest activation in the cache, BOS positions included "
        "(sample.filter_bos is off)",
    },
}
CITATION = """@article{paulo2024automatically,
  title={Automatically Interpreting Millions of Features in Large Language Models},
  author={Paulo, Gon{\\c{c}}alo and Mallen, Alex and Juang, Caden and Belrose, Nora},
  journal={arXiv preprint arXiv:2410.13928},
  year={2024}
}"""


def export_run(
    run: str | Path,
    out: str | Path | None = None,
    n_examples: int = 10,
    neuronpedia_model_id: str | None = None,
    neuronpedia_sources: Mapping[str, str] | None = None,
    license: str = "other",
    neuronpedia: bool = False,
) -> dict[str, Path]:
    """Export a run folder's explanations, scores and top examples into `out` (default RUN/export);
    with `neuronpedia`, also the folder Neuronpedia's import routes read (OUT/neuronpedia).

    Returns {"parquet", "jsonl", "neuronpedia", "judge_check", "card"} -> path, and
    "neuronpedia_import" -> OUT/neuronpedia with `neuronpedia`. Raises RunError when `run` is not a
    run folder, has no samples or no explanations, or `out` would land inside the run's stage folders.
    """
    if n_examples < 0:
        raise RunError(f"n_examples must be >= 0, got {n_examples}")
    folder = RunFolder(run)
    target = _out_folder(folder.root, out)
    _check_inputs(folder)
    scorers = folder.scorers()
    model_id = neuronpedia_model_id or slug(folder.subject_model)
    sources = _sources(folder.coders, neuronpedia_sources or {})
    judged = judge_checks(folder, scorers)
    paths = _paths(target)
    target.mkdir(parents=True, exist_ok=True)
    paths["card"].unlink(missing_ok=True)
    np_dir = target / NEURONPEDIA_DIR
    if not neuronpedia and np_dir.is_dir():  # an older export's: it would not match this one
        shutil.rmtree(np_dir)
    text = json.dumps(judged, indent=1) + "\n"
    _atomic(paths["judge_check"], lambda p: p.write_text(text))
    tally = Tally(scorers)
    rows_tmp = target / ".explanations.rows.partial"
    with _atomic_dir(np_dir) if neuronpedia else nullcontext() as np_tmp:
        imports = None
        if np_tmp is not None:
            imports = NeuronpediaImport(np_tmp, model_id, _score_models(folder))
        try:
            _atomic(
                paths["neuronpedia"],
                lambda p: _write_rows(
                    folder, n_examples, tally, rows_tmp, p, model_id, sources, imports
                ),
            )
            log.info(
                "neuronpedia.json: %d explanations, %d failed ones left out",
                tally.n_neuronpedia,
                tally.left_out,
            )
            schema = tally.schema()
            _atomic2(
                paths["parquet"], paths["jsonl"], lambda p, j: _convert(rows_tmp, schema, p, j)
            )
        finally:
            rows_tmp.unlink(missing_ok=True)
            if imports is not None:
                imports.close()
        if imports is not None:
            imports.write_config()
            log.info("neuronpedia/: %s", imports.summary())
            paths["neuronpedia_import"] = np_dir
    card = dataset_card(folder, tally, scorers, model_id, sources, license, imports)
    card += _judge_section(judged)
    _atomic(paths["card"], lambda p: p.write_text(card))
    return paths


def judge_checks(run: RunFolder, scorers: list[str]) -> dict[str, dict[str, dict]]:
    """Per LLM scorer and coder, the run's judge check (`autointerp.score.judge_check`), with the
    sentence every place shows (`text`)."""
    from autointerp.score.judge_check import describe, folder_verdicts

    found = folder_verdicts(
        run.root / "scores", run.root / "judge_check", scorers, list(run.coders)
    )
    return {s: {c: {**v, "text": describe(s, v)} for c, v in by.items()} for s, by in found.items()}


def _judge_section(judged: dict[str, dict[str, dict]]) -> str:
    if not judged:
        return ""
    lines = [
        "\n## Judge check\n",
        "A subset of latents was scored again with another latent's explanation: a judge that "
        "cannot tell the two apart gives scores that are not evidence (`judge_check.json`).\n",
    ]
    lines += [f"- {s}, {c}: {v['text']}" for s, by in judged.items() for c, v in by.items()]
    return "\n".join(lines) + "\n"


def _paths(target: Path) -> dict[str, Path]:
    return {
        "parquet": target / "explanations.parquet",
        "jsonl": target / "explanations.jsonl",
        "neuronpedia": target / "neuronpedia.json",
        "judge_check": target / "judge_check.json",
        "card": target / "README.md",
    }


def _out_folder(root: Path, out: str | Path | None) -> Path:
    target = (Path(out) if out is not None else root / "export").resolve()
    base = root.resolve()
    if target == base:
        raise RunError(f"refusing to export into the run folder itself ({base}); use RUN/export")
    for name in STAGE_FOLDERS:
        if target.is_relative_to((base / name).resolve()):
            raise RunError(
                f"refusing to export into {target}: it is inside the run's {name}/ folder"
            )
    return target


# ---- rows ----------------------------------------------------------------------------------------


ROW_BATCH = 64
"""Rows converted from JSON to Arrow (and written to the JSONL file) together: the Python objects
export holds at a time (~150 KiB a row with 10 top examples, so a few MiB)."""

ROW_GROUP_BYTES = 64 << 20
"""Arrow bytes gathered before they are written as one parquet row group: few, large row groups
(a million latents make ~200 of them), and a bound on what export holds however many rows."""


def _check_inputs(run: RunFolder) -> None:
    if not any(run.sample_path(c).exists() for c in run.coders):
        raise RunError(f"{run.root} has no samples (no sample/<coder>.jsonl); run the sample stage")
    if not any(next(scan(run.explanation_path(c), ExplanationHead), None) for c in run.coders):
        raise RunError(f"{run.root} has no explanations (explanations/ is empty or missing)")


def iter_rows(run: RunFolder, n_examples: int = 10, tally: Tally | None = None) -> Iterator[dict]:
    """One row per sampled latent of every coder (the columns of the module docstring), built one
    at a time from the files: a latent's last line of each, found through line indexes. `tally`
    counts the sample records' examples."""
    for row, _ in _iter_latents(run, n_examples, tally):
        yield row


def _iter_latents(
    run: RunFolder, n_examples: int, tally: Tally | None
) -> Iterator[tuple[dict, dict[str, ScoreHead | None]]]:
    """`iter_rows`' rows, each with the score lines it was built from (scorer -> line or None)."""
    scorers = run.scorers()
    for coder, meta in run.coders.items():
        explanations = run.explanation_index(coder)
        scores = {s: run.score_index(s, coder) for s in scorers}
        for record in run.iter_samples(coder):
            latent = record.id.latent
            row = _base_row(run.subject_model, coder, meta, record)
            e = explanations.read([latent], ExplanationHead).get(latent)
            row |= _explanation_fields(record, e)
            heads = {s: index.read([latent], ScoreHead).get(latent) for s, index in scores.items()}
            for scorer, head in heads.items():
                row |= _score_fields(scorer, head)
            row["top_examples"] = _top_examples(run, record, n_examples)
            if tally is not None:
                tally.add_sample(record)
            yield row, heads


def _write_rows(
    run: RunFolder,
    n_examples: int,
    tally: Tally,
    rows_path: Path,
    neuronpedia: Path,
    model_id: str,
    sources: Mapping[str, str],
    imports: NeuronpediaImport | None = None,
) -> None:
    """Every row into `rows_path` (plain JSON lines, typed later by `_convert` once the schema is
    known) and the explained ones into `neuronpedia` (a JSON array, as `json.dumps(.., indent=1)`
    writes it) and `imports`, counting what the card needs into `tally`."""
    with (
        open(rows_path, "w", encoding="utf-8") as rows,
        open(neuronpedia, "w", encoding="utf-8") as np_file,
    ):
        for row, heads in _iter_latents(run, n_examples, tally):
            rows.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            tally.add(row)
            if _left_out(row):
                tally.left_out += 1
            elif row["status"] == "explained":
                rec = _neuronpedia_record(row, tally.scorers, model_id, sources[row["coder"]])
                item = textwrap.indent(json.dumps(rec, indent=1), " ")
                np_file.write(("[\n" if not tally.n_neuronpedia else ",\n") + item)
                tally.n_neuronpedia += 1
                if imports is not None:
                    imports.add(row, heads, sources[row["coder"]])
        np_file.write("\n]\n" if tally.n_neuronpedia else "[]\n")


def _convert(rows_path: Path, schema: pa.Schema, parquet: Path, jsonl: Path) -> None:
    """The rows, typed by `schema`, into the parquet file (row groups of about ROW_GROUP_BYTES)
    and the JSONL file (each row as the parquet file gives it back: every column, in schema
    order). Rows are converted ROW_BATCH at a time; only their Arrow form waits for its group."""
    group: list[pa.Table] = []
    with (
        open(rows_path, encoding="utf-8") as f,
        pq.ParquetWriter(parquet, schema) as writer,
        open(jsonl, "w", encoding="utf-8") as out,
    ):
        for batch in _batches((json.loads(line) for line in f), ROW_BATCH):
            table = pa.Table.from_pylist(batch, schema=schema)
            del batch
            _write_jsonl(table.to_pylist(), out)
            group.append(table)
            if sum(t.nbytes for t in group) >= ROW_GROUP_BYTES:
                writer.write_table(pa.concat_tables(group))
                group = []
        if group:
            writer.write_table(pa.concat_tables(group))


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _base_row(model: str, coder: str, meta: dict, record: SampledLatent) -> dict:
    return {
        "model": model,
        "hookpoint": meta.get("hookpoint"),
        "coder": coder,
        "coder_kind": meta.get("kind"),
        "latent": record.id.latent,
        "density": _finite(record.density),
        "max_activation": _finite(record.max_activation),
        "n_activating_windows": record.n_activating_windows,
    }


def _explanation_fields(record: SampledLatent, e: Explanation | ExplanationHead | None) -> dict:
    if record.status == "skipped":
        status = "skipped"
    elif e is None:
        status = "not_explained"
    else:
        status = "explained" if e.text is not None else "explanation_failed"
    failed = status == "explanation_failed"
    return {
        "status": status,
        "explanation": e.text if e is not None and status == "explained" else None,
        "explanation_error": (e.error or "no explanation") if failed and e else None,
        "skip_reason": record.reason if status == "skipped" else None,
        "explainer_model": e.model if e is not None else None,
        "explainer_prompt": e.prompt if e is not None else None,
    }


def _score_fields(scorer: str, s: LatentScore | ScoreHead | None) -> dict:
    if s is None:
        return {
            scorer: None,
            f"{scorer}_ci_low": None,
            f"{scorer}_ci_high": None,
            f"{scorer}.status": "not_scored",
            f"{scorer}.error": None,
        }
    main = s.metrics.get(MAIN_METRIC.get(scorer, "")) if s.status == "ok" else None
    ci = s.intervals.get(MAIN_METRIC.get(scorer, "")) if s.status == "ok" else None
    fields = {scorer: _finite(main), f"{scorer}.status": s.status, f"{scorer}.error": s.error}
    fields[f"{scorer}_ci_low"] = None if ci is None else _finite(ci[0])
    fields[f"{scorer}_ci_high"] = None if ci is None else _finite(ci[1])
    fields |= {f"{scorer}.{k}": _finite(v) for k, v in s.metrics.items()}
    return fields


def _top_examples(run: RunFolder, record: SampledLatent, n: int) -> list[dict]:
    refs = sorted(record.train, key=lambda r: (-max((v for _, v in r.acts), default=0.0), r.seq))
    out = []
    for ref in refs[:n]:
        ex = run.render(ref)
        acts = [_finite(a) or 0.0 for a in ex.activations]
        out.append({"text": "".join(ex.tokens), "tokens": ex.tokens, "activations": acts})
    return out


def _finite(v):
    """None for NaN and infinities (JSON has no NaN); other values unchanged."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Tally:
    """What the schema and the dataset card need of the rows, counted as they stream past: counts
    by status and coder, explainers, each scorer's sum of main values in row order, which metric
    columns occur and whether each holds only integers, the sampled latents' example counts."""

    def __init__(self, scorers: list[str]):
        self.scorers = scorers
        self.n = 0
        self.status: Counter[str] = Counter()
        self.by_coder: dict[str, Counter[str]] = {}
        self.explainers: Counter[tuple[str, str]] = Counter()
        self.means: dict[tuple[str, str | None], list] = {}
        """(scorer, coder or None for all) -> [sum of main values, count, failed]."""
        self.metric_ints: dict[str, dict[str, bool]] = {s: {} for s in scorers}
        self.n_neuronpedia = 0
        self.left_out = 0
        self.n_ok = self.n_train = self.n_test = 0

    def add(self, row: dict) -> None:
        self.n += 1
        self.status[row["status"]] += 1
        self.by_coder.setdefault(row["coder"], Counter())[row["status"]] += 1
        if row["explainer_model"]:
            self.explainers[row["explainer_model"], row["explainer_prompt"]] += 1
        for s in self.scorers:
            for key in (s, row["coder"]), (s, None):
                cell = self.means.setdefault(key, [0, 0, 0])
                if row[s] is not None:
                    cell[0] += row[s]
                    cell[1] += 1
                cell[2] += row[f"{s}.status"] == "failed"
            prefix, fixed = f"{s}.", {f"{s}.status", f"{s}.error"}
            ints = self.metric_ints[s]
            for k, v in row.items():
                if k.startswith(prefix) and k not in fixed and v is not None:
                    ints[k] = ints.get(k, True) and _is_int(v)

    def add_sample(self, record: SampledLatent) -> None:
        if record.status == "ok":
            self.n_ok += 1
            self.n_train += len(record.train)
            self.n_test += len(record.test)

    def schema(self) -> pa.Schema:
        fields = list(BASE_SCHEMA)
        for scorer in self.scorers:
            fields += [(scorer, pa.float64()), (f"{scorer}_ci_low", pa.float64())]
            fields += [(f"{scorer}_ci_high", pa.float64()), (f"{scorer}.status", pa.string())]
            fields.append((f"{scorer}.error", pa.string()))
            fields += self._metric_fields(scorer)
        return pa.schema([*fields, ("top_examples", pa.list_(EXAMPLE))])

    def _metric_fields(self, scorer: str) -> list[tuple[str, pa.DataType]]:
        """`<scorer>.<metric>` columns, the main metric first: int64 if every value is an int."""
        ints = self.metric_ints[scorer]
        main = f"{scorer}." + MAIN_METRIC.get(scorer, "")
        names = sorted(ints, key=lambda k: (k != main, k))
        return [(k, pa.int64() if ints[k] else pa.float64()) for k in names]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---- files ---------------------------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a hidden temporary file in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic2(a: Path, b: Path, write: Callable[[Path, Path], object]) -> None:
    """`_atomic` for two files written together: both renamed into place once both are whole."""
    tmp_a, tmp_b = (p.with_name(f".{p.name}.partial") for p in (a, b))
    try:
        write(tmp_a, tmp_b)
        os.replace(tmp_a, a)
        os.replace(tmp_b, b)
    finally:
        tmp_a.unlink(missing_ok=True)
        tmp_b.unlink(missing_ok=True)


@contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """`_atomic` for a folder: yields a hidden temporary folder beside `path` to fill; once the block
    ends without error, it replaces `path` (an older folder of that name is removed whole, so no file
    of an older export stays in it)."""
    tmp = path.with_name(f".{path.name}.partial")
    old = path.with_name(f".{path.name}.old.partial")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _write_jsonl(rows: list[dict], f) -> None:
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")


# ---- Neuronpedia ---------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A Neuronpedia-style id: the last path part, lowercased, runs of other characters -> '-'."""
    base = re.sub(r"\.gguf$", "", name.rstrip("/").split("/")[-1], flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9_]+", "-", base.lower()).strip("-") or "model"


def default_sources(coders: Mapping[str, dict]) -> dict[str, str]:
    """Coder -> `<layer>-<site>-<kind>` (the coder name instead of the kind where two would clash)."""
    ids = {c: _source_id(m.get("hookpoint") or c, m.get("kind") or c) for c, m in coders.items()}
    counts = Counter(ids.values())
    return {
        c: (sid if counts[sid] == 1 else _source_id(coders[c].get("hookpoint") or c, c))
        for c, sid in ids.items()
    }


def _sources(coders: Mapping[str, dict], given: Mapping[str, str]) -> dict[str, str]:
    unknown = set(given) - set(coders)
    if unknown:
        raise RunError(f"neuronpedia_sources names unknown coder(s) {sorted(unknown)}")
    return {**default_sources(coders), **given}


def _source_id(hookpoint: str, tag: str) -> str:
    module = hookpoint.partition(":")[0]
    layer = re.search(r"\d+", module)
    site = "mlp" if "mlp" in module else "att" if "attn" in module else "res"
    return f"{layer.group() if layer else slug(module)}-{site}-{slug(tag)}"


def _left_out(row: dict) -> bool:
    """A failed or empty explanation: left out of neuronpedia.json (and counted)."""
    return row["status"] == "explanation_failed" or (
        row["status"] == "explained" and not (row["explanation"] or "").strip()
    )


def _neuronpedia_record(row: dict, scorers: list[str], model_id: str, source: str) -> dict:
    scored = [f"{s} {MAIN_METRIC.get(s, '?')}={row[s]:.3f}" for s in scorers if row[s] is not None]
    notes = f"autointerp prompt {row['explainer_prompt']}"
    return {
        "modelId": model_id,
        "layer": source,
        "index": str(row["latent"]),
        "description": row["explanation"].strip(),
        "typeName": f"autointerp-{row['explainer_prompt'].split('@')[0]}",
        "explanationModelName": row["explainer_model"],
        "notes": notes + (f"; scores: {', '.join(scored)}" if scored else ""),
    }


# ---- Neuronpedia import folder -------------------------------------------------------------------

NEURONPEDIA_DIR = "neuronpedia"
NEURONPEDIA_USER = "clkht01d40000jv08hvalcvly"
"""The bot user every Neuronpedia database is seeded with (apps/webapp/prisma/seed.ts), which its own
exports name as author and creator (DEFAULT_CREATOR_USER_ID, apps/webapp/lib/env.ts): the required
authorId, initiatedByUserId and creatorId, references to User rows."""
NEURONPEDIA_BATCH = 1024
"""Lines per `batch-<n>.jsonl.gz`, as in Neuronpedia's own exports (utils/neuronpedia-utils
export-data.py). The import route lists a folder's files once, without paging (S3 lists at most
1,000 keys), so a source holds up to ~1M explanations."""
NEURONPEDIA_CONFIG = (
    "explanation_model_type",
    "explanation_type",
    "explanation_score_model",
    "explanation_score_type",
    "eval_type",
)
"""The files of v1/config/ the import route upserts by name (apps/webapp/lib/db/import.ts,
importConfigFromS3) before it imports anything; it reads all five, so eval_type.jsonl is written
empty."""
CREATOR = "autointerp"
METHOD_URL = "https://arxiv.org/abs/2410.13928"
SCORER_METHODS = {
    "detection": "an LLM reads the explanation and says, for each held-out example (activating "
    "examples from every activation quantile, and non-activating ones), whether the latent fires "
    "in it",
    "fuzzing": "an LLM reads the explanation and says, for each held-out example with some tokens "
    "marked, whether the marked tokens are the ones the explanation describes (activating examples "
    "marked right or wrong, non-activating ones marked at random)",
    "surprisal": "a local language model's loss on each held-out example after a prefix holding "
    "the explanation, against after an uninformative one",
    "embedding": "the cosine similarity of each held-out example's sentence embedding to the "
    "explanation's",
    "intervention": "the latent is steered in the subject model; a local language model's "
    "surprisal of the explanation after clean continuations minus after steered ones",
    "intervention-kl": "as intervention, with each latent steered at the strength whose next-token "
    "KL divergence from the clean model is the same target for every latent",
    "simulation": "an LLM predicts each token's activation (0-10) from the explanation alone",
}
METRIC_MEANINGS = {
    "balanced_accuracy": "balanced accuracy of the answers (the mean of the rates right on "
    "activating and on non-activating examples; 0.5 is chance, 1 perfect)",
    "auroc": "AUROC separating activating from non-activating examples (0.5 is chance, 1 perfect)",
    "score": "mean over prompts of the drop in the explanation's surprisal (0: no effect, higher "
    "is better)",
    "kl_score": "mean over prompts of the drop in the explanation's surprisal per nat of "
    "next-token KL divergence the steering caused (0: no effect, higher is better)",
    "correlation": "correlation of the predicted with the true activations over every token (0 is "
    "chance, 1 perfect)",
}


class NeuronpediaImport:
    """The folder Neuronpedia's import routes read, written as the rows stream past: under `root`,
        v1/config/<NEURONPEDIA_CONFIG>.jsonl                     type rows, one JSON object a line
        v1/<model>/<source>/explanations/batch-<n>.jsonl.gz      Explanation rows
        v1/<model>/<source>/explanation_scores/batch-<n>.jsonl.gz  ExplanationScore rows
    Only the open batch file of each folder and the (few) type rows are held. Ids are content
    hashes, so an export of the same run gives the same ids (and the same bytes)."""

    def __init__(self, root: Path, model_id: str, score_models: Mapping[str, str]):
        self.root, self.model_id, self.score_models = root, model_id, score_models
        self._files: dict[tuple[str, str], _Batches] = {}
        self._explanation_types: dict[str, set[str]] = {}
        """typeName -> the explainer prompt ids (`name@hash`) of its explanations"""
        self._model_types: dict[str, str] = {}
        """ExplanationModelType name -> the explainer model as the run names it"""
        self._score_types: dict[str, tuple[str, str, str | None]] = {}
        """ExplanationScoreType name -> (scorer, metric, model or None when not recorded)"""
        self._score_models: dict[str, str | None] = {}
        """ExplanationScoreModel name -> the model as the run names it (None: not recorded)"""
        self.n_explanations = 0
        self.n_scores: Counter[str] = Counter()
        self.left_out: Counter[tuple[str, str]] = Counter()
        """(scorer, reason) -> scores not written"""

    def add(self, row: dict, heads: Mapping[str, ScoreHead | None], source: str) -> None:
        """An explained row's Explanation, and an ExplanationScore per scorer that scored it."""
        explanation = self._explanation(row, source)
        self._batches(source, "explanations").write(explanation)
        self.n_explanations += 1
        for scorer, head in heads.items():
            score, reason = self._score(explanation["id"], row["explanation"], scorer, head)
            if score is None:
                self.left_out[scorer, reason] += 1
            else:
                self._batches(source, "explanation_scores").write(score)
                self.n_scores[scorer] += 1

    def close(self) -> None:
        for batches in self._files.values():
            batches.close()

    def write_config(self) -> None:
        folder = self.root / "v1" / "config"
        folder.mkdir(parents=True, exist_ok=True)
        records = {
            "explanation_model_type": [_model_type(n, m) for n, m in self._model_types.items()],
            "explanation_type": [
                _explanation_type(n, p) for n, p in self._explanation_types.items()
            ],
            "explanation_score_model": [_score_model(n, m) for n, m in self._score_models.items()],
            "explanation_score_type": [_score_type(n, *v) for n, v in self._score_types.items()],
            "eval_type": [],
        }
        for name in NEURONPEDIA_CONFIG:
            lines = sorted(json.dumps(r, ensure_ascii=False) + "\n" for r in records[name])
            (folder / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")

    def summary(self) -> str:
        scores = ", ".join(f"{s} {n}" for s, n in sorted(self.n_scores.items())) or "none"
        out = ", ".join(f"{s} {n} ({why})" for (s, why), n in sorted(self.left_out.items()))
        return f"{self.n_explanations} explanations; scores: {scores}" + (
            f"; scores left out: {out}" if out else ""
        )

    def _batches(self, source: str, kind: str) -> _Batches:
        key = (source, kind)
        if key not in self._files:
            self._files[key] = _Batches(self.root / "v1" / self.model_id / source / kind)
        return self._files[key]

    def _explanation(self, row: dict, source: str) -> dict:
        prompt = row["explainer_prompt"] or ""
        type_name = f"autointerp-{prompt.split('@')[0] or 'explainer'}"
        model_name = _np_name(row["explainer_model"])
        self._explanation_types.setdefault(type_name, set()).add(prompt)
        self._model_types[model_name] = row["explainer_model"] or ""
        index, text = str(row["latent"]), row["explanation"].strip()
        key = ("Explanation", self.model_id, source, index, type_name, model_name, text)
        return {
            "id": _np_id(*key),
            "modelId": self.model_id,
            "layer": source,
            "index": index,
            "description": text,
            "authorId": NEURONPEDIA_USER,
            "typeName": type_name,
            "explanationModelName": model_name,
            "notes": f"autointerp prompt {prompt}",
        }

    def _score(
        self, explanation_id: str, text: str, scorer: str, head: ScoreHead | None
    ) -> tuple[dict | None, str]:
        """An ExplanationScore, or None and why not: its `value` is a required Float, so a failed
        score has no row (never a zero)."""
        metric = MAIN_METRIC.get(scorer)
        if scorer in EXPLANATION_FREE:
            return None, "explanation-free: it scores the latent, not an explanation"
        if metric is None:
            return None, "no main metric known"
        if head is None:
            return None, "not scored"
        if head.status != "ok":
            return None, "failed"
        if head.explanation is not None and head.explanation != text:
            return None, "scored another explanation"
        value = head.metrics.get(metric)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return None, f"no {metric}"
        model = self.score_models.get(scorer)
        type_name = f"autointerp-{scorer}-{metric.replace('_', '-')}"
        model_name = _np_name(model)
        self._score_types[type_name] = (scorer, metric, model)
        self._score_models[model_name] = model
        interval = head.intervals.get(metric)
        details = {
            "scorer": scorer,
            "metric": metric,
            "interval": None if interval is None else [_finite(v) for v in interval],
            "metrics": {k: _finite(v) for k, v in sorted(head.metrics.items())},
        }
        return {
            "id": _np_id("ExplanationScore", explanation_id, type_name, model_name),
            "explanationId": explanation_id,
            "value": float(value),
            "explanationScoreTypeName": type_name,
            "explanationScoreModelName": model_name,
            "initiatedByUserId": NEURONPEDIA_USER,
            "jsonDetails": json.dumps(details, sort_keys=True, allow_nan=False),
        }, ""


class _Batches:
    """`batch-<n>.jsonl.gz` files of NEURONPEDIA_BATCH lines in one folder, filled in order with one
    open at a time; gzip headers hold no time or name, so the same lines give the same bytes."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None

    def write(self, record: dict) -> None:
        if self._gz is None or self.n % NEURONPEDIA_BATCH == 0:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._raw = open(self.folder / f"batch-{self.n // NEURONPEDIA_BATCH}.jsonl.gz", "wb")
            self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        self._gz.write(line.encode("utf-8"))
        self.n += 1

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        if self._raw is not None:
            self._raw.close()
        self._gz = self._raw = None


def _np_id(*parts: str) -> str:
    """A deterministic id shaped like the cuids Neuronpedia's ids are ('c' and 24 base-36 digits):
    the parts' SHA-256, so the same record always gets the same id and a changed one a new id."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:16], "big")
    digits = []
    for _ in range(24):
        n, d = divmod(n, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[d])
    return "c" + "".join(digits)


def _np_name(model: str | None) -> str:
    """A model type's name: `autointerp-` and the model's last path part, so that no row of ours
    replaces one of Neuronpedia's own (the config upsert overwrites a row of the same name)."""
    base = (model or "").rstrip("/").split("/")[-1]
    return f"autointerp-{base or 'unrecorded'}"


def _model_type(name: str, model: str) -> dict:
    return {
        "name": name,
        "displayName": model or "not recorded",
        "description": f"{model or 'A model not recorded in the run'}, as autointerp's explainer "
        "(the model that wrote the explanations)",
        "featured": False,
        "creatorName": CREATOR,
    }


def _explanation_type(name: str, prompts: set[str]) -> dict:
    explainer = name.removeprefix("autointerp-")
    return {
        "name": name,
        "displayName": f"autointerp {explainer}",
        "description": f"autointerp's {explainer} explainer: an explanation written from the "
        "latent's activating examples (Paulo et al. 2024, arXiv:2410.13928); prompt versions "
        + ", ".join(sorted(prompts)),
        "featured": False,
        "isAttention": False,
        "settings": json.dumps({"prompts": sorted(prompts)}),
        "url": METHOD_URL,
        "creatorName": CREATOR,
        "creatorId": NEURONPEDIA_USER,
    }


def _score_model(name: str, model: str | None) -> dict:
    return {
        "name": name,
        "displayName": model or "not recorded",
        "description": f"{model}, the model autointerp's scorer used"
        if model
        else "The run folder does not record the model its scorer used (RUN/run_config.yaml, "
        "written by `autointerp run`, does)",
        "featured": False,
        "creatorName": CREATOR,
    }


def _score_type(name: str, scorer: str, metric: str, model: str | None) -> dict:
    meaning = METRIC_MEANINGS.get(metric, metric)
    method = SCORER_METHODS.get(scorer, f"autointerp's {scorer} scorer")
    return {
        "name": name,
        "displayName": f"autointerp {scorer} ({metric.replace('_', ' ')})",
        "description": f"autointerp's {scorer} scorer (Paulo et al. 2024, arXiv:2410.13928): "
        f"{method}. The value is the {meaning}.",
        "featured": False,
        "isAttention": False,
        "scoreDescription": meaning,
        "scorerModel": model,
        "settings": json.dumps({"scorer": scorer, "metric": metric}),
        "url": METHOD_URL,
        "creatorName": CREATOR,
        "creatorId": NEURONPEDIA_USER,
    }


def _score_models(run: RunFolder) -> dict[str, str]:
    """Scorer -> the model it scored with, where RUN/run_config.yaml (`autointerp run`) says; a run
    scored with `autointerp score` records none."""
    path = run.root / "run_config.yaml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    score = cfg.get("score") or {}
    judge = (cfg.get("score_client") or cfg.get("client") or {}).get("model")
    reader = (score.get("surprisal") or {}).get("model")
    models = {s: judge for s in LLM_SCORERS} | {"surprisal": reader}
    models |= {s: reader for s in STEERING}
    models["embedding"] = (score.get("embedding") or {}).get("model")
    return {s: m for s, m in models.items() if isinstance(m, str) and m}


# ---- dataset card --------------------------------------------------------------------------------


def dataset_card(
    run: RunFolder,
    tally: Tally,
    scorers: list[str],
    model_id: str,
    sources: Mapping[str, str],
    license: str = "other",
    imports: NeuronpediaImport | None = None,
) -> str:
    """README.md with YAML front matter (configs, license, pretty_name, tags) and a description."""
    coders = ", ".join(run.coders)
    meta = {
        "license": license,
        "pretty_name": f"autointerp explanations: {run.subject_model} ({coders})",
        "tags": ["interpretability", "sparse-autoencoder", "autointerp", "explanations"],
        "size_categories": [_size_category(tally.n)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "explanations.parquet"}],
            }
        ],
    }
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n",
        f"# {meta['pretty_name']}\n",
        _intro(run, tally),
        _run_section(run, tally),
        _scores_section(tally, scorers),
        _loading_section(),
        _columns_section(scorers, _sample_config(run).get("filter_bos")),
        _neuronpedia_section(model_id, sources, tally.n_neuronpedia, tally.left_out, imports),
        "## Citation\n\nThe method follows Paulo et al. 2024, *Automatically Interpreting Millions of "
        f"Features in Large Language Models*:\n\n```bibtex\n{CITATION}\n```\n",
    ]
    return "\n".join(parts)


def _size_category(n: int) -> str:
    for limit, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]:
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _intro(run: RunFolder, tally: Tally) -> str:
    counts = tally.status
    return (
        f"Natural-language explanations of {tally.n} latents of {len(run.coders)} sparse coder(s) "
        f"of `{run.subject_model}`, written by an explainer from each latent's activating examples "
        "and scored by how well they predict held-out activations, with the `autointerp` pipeline "
        f"(cache -> sample -> explain -> score). {counts['explained']} explained, "
        f"{counts['explanation_failed']} failed, {counts['skipped']} skipped by the sample stage"
        + (f", {counts['not_explained']} not explained" if counts["not_explained"] else "")
        + ".\n"
    )


def _run_section(run: RunFolder, tally: Tally) -> str:
    cfg = run.manifest.get("config", {})
    corpus = cfg.get("corpus", {})
    lines = [
        "## The run\n",
        f"- Subject model: `{run.subject_model}`",
        f"- Corpus: `{corpus.get('source')}` (split `{corpus.get('split')}`), "
        f"{run.manifest.get('n_tokens', corpus.get('n_tokens'))} tokens in windows of "
        f"{run.manifest.get('ctx_len', corpus.get('ctx_len'))}",
        f"- Sampling: {_sampling(run)}; {_sample_sizes(tally)}",
        f"- Explainers: {_explainers(tally)}",
        "",
        "| coder | kind | hookpoint | latents in coder | sampled | "
        + " | ".join(STATUSES).replace("_", " ")
        + " |",
        "|---|---|---|---|---|" + "---|" * len(STATUSES),
    ]
    for coder, meta in run.coders.items():
        mine = tally.by_coder.get(coder, Counter())
        cells = [coder, meta.get("kind"), meta.get("hookpoint"), meta.get("n_latents")]
        cells += [sum(mine.values()), *(mine[s] for s in STATUSES)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _sample_config(run: RunFolder) -> dict:
    path = run.root / "sample" / "sample_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _sampling(run: RunFolder) -> str:
    c = _sample_config(run)
    if not c:
        return "no sample/sample_config.json"
    keys = ["n_train", "train_strategy", "n_quantiles", "n_test", "n_random_negatives"]
    keys += ["n_similar_negatives", "example_len", "min_examples", "filter_bos"]
    return ", ".join(f"{k} {c[k]}" for k in keys if k in c)


def _sample_sizes(tally: Tally) -> str:
    if not tally.n_ok:
        return "no latent was sampled"
    train = tally.n_train / tally.n_ok
    test = tally.n_test / tally.n_ok
    return f"on average {train:.1f} train and {test:.1f} test examples per sampled latent"


def _explainers(tally: Tally) -> str:
    used = tally.explainers
    return (
        "; ".join(f"`{m}` with prompt `{p}` ({n} latents)" for (m, p), n in used.items()) or "none"
    )


def _scores_section(tally: Tally, scorers: list[str]) -> str:
    if not scorers:
        return "## Scores\n\nNo scorer was run.\n"
    coders = list(tally.by_coder)
    lines = [
        "## Scores\n",
        "Mean of each scorer's main metric over the latents it scored (latents scored / failed in parentheses).\n",
        "| scorer | main metric | " + " | ".join(coders) + " | all |",
        "|---|---|" + "---|" * (len(coders) + 1),
    ]
    for s in scorers:
        cells = [_mean_cell(tally, s, c) for c in coders] + [_mean_cell(tally, s, None)]
        lines.append(f"| {s} | {MAIN_METRIC.get(s, '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_cell(tally: Tally, scorer: str, coder: str | None) -> str:
    total, n, failed = tally.means.get((scorer, coder), (0, 0, 0))
    mean = f"{total / n:.3f}" if n else "-"
    return f"{mean} ({n} / {failed})"


def _loading_section() -> str:
    return """## Loading

```python
from datasets import load_dataset

ds = load_dataset("path/to/this/folder", split="train")  # or its Hub repo id
ds = load_dataset("parquet", data_files="explanations.parquet", split="train")
ds = load_dataset("json", data_files="explanations.jsonl", split="train")  # the same rows
explained = ds.filter(lambda r: r["status"] == "explained")
```

In the JSON file a column that is null in every row (say `explanation_error` when nothing failed)
loads with type `null`; the parquet file keeps every column's type.
"""


def _columns_section(scorers: list[str], filter_bos: bool | None = None) -> str:
    lines = ["## Columns\n", "| column | meaning |", "|---|---|"]
    docs = list({**COLUMN_DOCS, **BOS_DOCS.get(filter_bos, {})}.items())
    for s in scorers:
        docs += [
            (
                s,
                f"main metric of the {s} scorer ({MAIN_METRIC.get(s, '?')}); null if failed or not run",
            ),
            (f"{s}_ci_low`, `{s}_ci_high", f"95% interval of `{s}` (null in old score files)"),
            (f"{s}.status", "ok, failed or not_scored"),
            (f"{s}.error", "why the score failed"),
            (f"{s}.<metric>", f"every metric the {s} scorer reported"),
        ]
    lines += [f"| `{k}` | {v} |" for k, v in docs]
    return "\n".join(lines) + "\n"


def _neuronpedia_section(
    model_id: str,
    sources: Mapping[str, str],
    n: int,
    left_out: int,
    imports: NeuronpediaImport | None = None,
) -> str:
    mapping = ", ".join(f"`{c}` -> `{s}`" for c, s in sources.items())
    text = (
        "## Neuronpedia\n\n"
        f"`neuronpedia.json` holds {n} explanations as Neuronpedia Explanation records (modelId "
        f"`{model_id}`; sources {mapping}); {left_out} failed explanation(s) were left out. Check "
        "that the model and source ids match the ones on Neuronpedia before uploading.\n"
    )
    if imports is not None:
        text += (
            "\n`neuronpedia/` is laid out as Neuronpedia's import routes read it (`v1/config/`, "
            "`v1/<model>/<source>/explanations/` and `explanation_scores/`): "
            f"{imports.summary()}. A failed score has no row (its value would be a required "
            "number), never a zero.\n"
        )
    return text


from autointerp._callable import make_callable  # noqa: E402 (see autointerp._callable)

make_callable(__name__)
