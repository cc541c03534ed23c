"""Reports on finished runs: score tables, a comparison of coders, plots and a static HTML report.

Usage: `autointerp report RUN [RUN ...] --out REPORT [--coder NAME ...]`. From Python:

    from autointerp.report import build_report, summary_text
    index = build_report([Path("runs/a")], Path("report"))   # REPORT/index.html, *.csv, *.png, cards/
    print(summary_text([Path("runs/a")]))                     # the short summary for a terminal

Public API (RUN may be the run folder or its `cache/` folder):
- `build_report(runs: list[Path], out: Path, coders: list[str] | None = None, *,
  cards_per_page: int = 100, examples_per_card: int = 6, n_boot: int = 1000, seed: int = 0,
  progress: bool = True) -> Path` writes the report and returns `out/index.html`. It also writes
  `out/summary.txt`, the text of `summary_text`, so a caller can print it without loading twice.
- `summary_text(runs: list[Path], coders: list[str] | None = None, *, n_boot: int = 1000,
  seed: int = 0) -> str`.
- `analyse(runs, coders, n_boot, seed) -> Analysis` (everything above is built from it);
  `load_scores(runs: list[RunFolder], coders=None) -> DataFrame` (columns run, model, hookpoint,
  coder, label, kind, scorer, latent, status, error, metric, value: one row per run, coder, scorer,
  latent and metric); `load_quantiles(...)` (run, hookpoint, coder, label, scorer, latent, quantile
  0..9, metric, value); `load(...)` (both in one pass); `tables(scores, quantiles) ->
  dict[str, DataFrame]` (`metrics`, `failures`, `quantiles`); `compare(scores, n_boot, seed) ->
  dict[str, DataFrame]` (`coders`, `pairs`).

Score files are streamed and their per-example predictions are not kept, so a report reads runs of
many latents in bounded memory; the HTML cards are `cards_per_page` to a page (`autointerp.report_html`
writes the pages and plots).

`coders` names coders to keep (`name`, or `run/name` when several runs have a coder of that name);
coders of several runs whose names collide are labelled `run/name`. Coders of a baseline run
(`baseline: random-model` or `random-coder`) are labelled `name [random-model]`, and a pair of a
trained and a baseline coder says so in the `contrast` column (`trained vs random-model`).

What the numbers mean: a failed score (the explanation failed, no example got an answer) never counts
as a zero; it is counted in the `failed` columns only. `undefined` counts scored latents whose metric
could not be computed (e.g. AUROC without both classes). The comparison of coders uses each scorer's
main metric (`autointerp.score.MAIN_METRIC`): the mean per coder with a 95% bootstrap interval (BCa,
`mean_interval`), and for each pair of coders the difference of means (a - b) with its bootstrap
interval and the two-sided Mann-Whitney U p-value. Per-decile curves show the main metric per activation decile:
AUROC of the decile's examples against all negatives (continuous scorers), balanced accuracy of the
decile against all negatives, i.e. (decile accuracy + specificity) / 2 (classifiers).
"""

from __future__ import annotations

import itertools
import logging
import re
import warnings
import zlib
from array import array
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from autointerp.errors import RunError
from autointerp.jsonl import ScoreHead, latest
from autointerp.runfolder import RunFolder
from autointerp.score.names import is_main, main_metric, main_values

log = logging.getLogger(__name__)

SCORE_COLUMNS = [
    "run",
    "model",
    "hookpoint",
    "coder",
    "label",
    "kind",
    "scorer",
    "latent",
    "status",
    "error",
    "metric",
    "value",
]
QUANTILE_COLUMNS = ["run", "hookpoint", "coder", "label", "scorer", "latent", "quantile"]
QUANTILE_COLUMNS += ["metric", "value"]
PERCENTILES = {"q10": 10, "q25": 25, "q75": 75, "q90": 90}


@dataclass(frozen=True)
class CoderRef:
    """One coder of one run, and the label it has in tables (`name`, or `run/name` on collision)."""

    run: RunFolder
    run_label: str
    coder: str
    label: str

    @property
    def meta(self) -> dict:
        return self.run.coders[self.coder]

    @property
    def hookpoint(self) -> str:
        return str(self.meta.get("hookpoint", ""))

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", ""))


# ---------------------------------------------------------------- runs and coders


def open_runs(paths: list[Path]) -> list[RunFolder]:
    """Run folders (a path may also be a run's `cache/` folder); several must be comparable."""
    if not paths:
        raise RunError("no run folder given")
    runs = [open_run(Path(p)) for p in paths]
    if len(runs) > 1:
        check_comparable(runs)
    return runs


def open_run(path: Path) -> RunFolder:
    """A run folder from its path or its `cache/` folder (RunError when it is neither)."""
    if not path.exists():
        raise RunError(f"{path} does not exist")
    if (path / "cache.json").exists() and not (path / "cache" / "cache.json").exists():
        path = path.parent  # RUN/cache was given, as to the other stages
    return RunFolder(path)


def check_comparable(runs: list[RunFolder]) -> None:
    """Several runs must share the subject model, and each must share a coder name or hookpoint with
    another run; otherwise there is nothing to compare. A baseline run (`baseline: random-model`
    or `random-coder`) of the same subject compares with the trained one: that is its purpose."""
    names = run_labels(runs)
    if len({r.subject_model for r in runs}) > 1:
        uses = ", ".join(f"{n} uses {r.subject_model}" for n, r in zip(names, runs, strict=True))
        raise RunError(f"the runs share no subject model: {uses}")
    keys = [set(r.coders) | {f"@{m.get('hookpoint')}" for m in r.coders.values()} for r in runs]
    for i, name in enumerate(names):
        if not any(keys[i] & k for j, k in enumerate(keys) if j != i):
            has = "; ".join(f"{n} has {_describe(r)}" for n, r in zip(names, runs, strict=True))
            raise RunError(
                f"nothing to compare: run {name} shares no coder name and no hookpoint with the "
                f"other runs ({has})"
            )


def _describe(run: RunFolder) -> str:
    return ", ".join(f"{c} at {m.get('hookpoint')}" for c, m in run.coders.items())


def run_labels(runs: list[RunFolder]) -> list[str]:
    """Each run's folder name, with `-2`, `-3`... added when two runs have the same name."""
    out: list[str] = []
    for r in runs:
        name, k = r.name, 2
        while name in out:
            name, k = f"{r.name}-{k}", k + 1
        out.append(name)
    return out


def run_baseline(run: RunFolder) -> str | None:
    """The run's baseline (`random-model`, `random-coder`), None for a run of the trained model."""
    return (run.manifest.get("config") or {}).get("baseline")


def baseline_of(label: str) -> str | None:
    """The baseline a coder label names (`layers.15 [random-model]`), None for a trained coder."""
    m = _BASELINE_LABEL.search(label)
    return m.group(1) if m else None


_BASELINE_LABEL = re.compile(r" \[(random-model|random-coder)\]$")


def explainer_of(label: str) -> str | None:
    """The explainer a coder label names (`layers.15 [explainer: mixed]`), None when it names none."""
    m = _EXPLAINER_LABEL.search(label)
    return m.group(1) if m else None


_EXPLAINER_LABEL = re.compile(r" \[explainer: ([^\]]+)\]")


def contrast(label_a: str, label_b: str) -> str:
    """What a pair of coders compares: `trained vs random-model` where one is a baseline's,
    `explainer default vs mixed` where their explainers differ (both when both do)."""
    parts = []
    a, b = baseline_of(label_a), baseline_of(label_b)
    if a != b:
        parts.append(f"{a or 'trained'} vs {b or 'trained'}")
    ea, eb = explainer_of(label_a), explainer_of(label_b)
    if ea != eb:
        parts.append(f"explainer {ea or '-'} vs {eb or '-'}")
    return "; ".join(parts)


def select(runs: list[RunFolder], coders: list[str] | None = None) -> list[CoderRef]:
    """The coders to report, labelled; `coders` keeps only those named (`name` or `run/name`).
    A baseline run's coders are named with the baseline, `layers.15 [random-model]`, so that its
    coders and the trained run's stand side by side; where the runs' coders were explained by
    different explainers (runs that differ in `explain:`), each is named with its explainer,
    `layers.15 [explainer: mixed]`, and the comparison of coders compares explainers."""
    labels = run_labels(runs)
    explainers = {(id(r), c): r.explainer(c) for r in runs for c in r.coders}
    differ = len(set(explainers.values()) - {None}) > 1

    def tag(r: RunFolder, c: str) -> str:
        baseline, kind = run_baseline(r), explainers[id(r), c]
        label = f"{c} [explainer: {kind}]" if differ and kind else c
        return f"{label} [{baseline}]" if baseline else label

    count: dict[str, int] = {}
    for r in runs:
        for c in r.coders:
            count[tag(r, c)] = count.get(tag(r, c), 0) + 1
    refs = [
        CoderRef(r, rl, c, tag(r, c) if count[tag(r, c)] == 1 else f"{rl}/{tag(r, c)}")
        for r, rl in zip(runs, labels, strict=True)
        for c in r.coders
    ]
    if coders is None:
        return refs
    unknown = [c for c in coders if not any(c in (x.coder, x.label) for x in refs)]
    if unknown:
        available = ", ".join(dict.fromkeys(x.label for x in refs))
        raise RunError(f"no coder {', '.join(unknown)} in the runs (available: {available})")
    return [x for x in refs if x.coder in coders or x.label in coders]


# ---------------------------------------------------------------- frames


def _is_decile(group: str) -> bool:
    return group[:1] == "q" and group[1:].isdigit()


def _latent_rows(s: ScoreHead, main: str, decile_metrics: set[str] | None):
    """A score's rows (latent, status, error, metric, value) and decile rows (latent, quantile,
    metric, value); `decile_metrics` None keeps every per-decile metric."""
    nan = np.nan
    latent = s.latent.latent
    if s.status != "ok":
        return [(latent, s.status, s.error, main, nan)], []
    metrics = {main: None} | dict(s.metrics)
    rows = [(latent, s.status, s.error, k, nan if v is None else v) for k, v in metrics.items()]
    deciles = [
        (latent, int(g[1:]), k, nan if v is None else v)
        for g, values in s.per_group.items()
        if _is_decile(g)
        for k, v in _with_balanced_accuracy(values, s.metrics, main).items()
        if decile_metrics is None or k in decile_metrics
    ]
    return rows, deciles


def _with_balanced_accuracy(group: dict, metrics: dict, main: str) -> dict:
    """A classifier's decile with its balanced accuracy against all negatives: the mean of the
    decile's accuracy (its recall) and the latent's specificity."""
    recall, specificity = group.get("accuracy"), metrics.get("specificity")
    if main != "balanced_accuracy" or main in group or recall is None or specificity is None:
        return group
    return group | {main: (recall + specificity) / 2}


def _read_file(ref: CoderRef, scorer: str, decile_metrics: set[str] | None):
    """One coder's scores of one scorer as (scores, deciles) frames, streamed from its file (the
    last line of a latent wins, as in `read_scores`; latents in the order they first appear). The
    rows are gathered as compact columns (numbers in typed arrays, text as category codes), not as
    Python tuples: ~25 bytes a row instead of ~150 (a latent has tens of rows)."""
    path = ref.run.root / "scores" / scorer / f"{ref.coder}.jsonl"
    main = main_metric(scorer)
    last = latest(path, ScoreHead, _score_latent, _nothing)  # a line is read up to its predictions
    scores = _Columns({"latent": "int", "status": "text", "error": "object", "metric": "text"})
    deciles = _Columns({"latent": "int", "quantile": "int", "metric": "text"})
    if last:
        with open(path, "rb") as f:
            for at, _ in last.values():
                f.seek(at)
                rows, quantile_rows = _latent_rows(
                    ScoreHead.parse(f.readline()), main, decile_metrics
                )
                scores.extend(rows)
                deciles.extend(quantile_rows)
    constants = {"run": ref.run_label, "model": ref.run.subject_model, "hookpoint": ref.hookpoint}
    constants |= {"coder": ref.coder, "label": ref.label, "kind": ref.kind, "scorer": scorer}
    return scores.frame(constants), deciles.frame(constants)


def _score_latent(s: ScoreHead) -> int:
    return s.latent.latent


def _nothing(_) -> None:
    return None


class _Columns:
    """Rows of a long table kept as columns: the `kinds` named ("int", "text" as codes into its
    own categories, "object"), then a float value."""

    def __init__(self, kinds: dict[str, str]):
        self.kinds = kinds
        self.data: dict[str, array | list] = {
            name: array("q") if kind == "int" else array("i") if kind == "text" else []
            for name, kind in kinds.items()
        }
        self.codes: dict[str, dict] = {n: {} for n, k in kinds.items() if k == "text"}
        self.value = array("d")

    def extend(self, rows) -> None:
        columns = [(self.data[n], self.codes.get(n)) for n in self.kinds]  # codes: text columns
        for row in rows:
            for (col, codes), v in zip(columns, row, strict=False):
                col.append(codes.setdefault(v, len(codes)) if codes is not None else v)
            self.value.append(row[-1])

    def frame(self, constants: dict) -> pd.DataFrame:
        n = len(self.value)
        out: dict = {}
        for name, kind in self.kinds.items():
            col = self.data[name]
            if isinstance(col, list):  # kind "object"
                out[name] = pd.Series(col, dtype=object)  # not inferred as str (pandas 3)
            elif kind == "int":
                out[name] = np.frombuffer(col, dtype=np.int64) if n else np.zeros(0, np.int64)
            else:  # kind "text"
                codes = np.frombuffer(col, dtype=np.int32) if n else np.zeros(0, np.int32)
                # pandas-stubs take only an Index of categories; pandas takes any list-like
                out[name] = pd.Categorical.from_codes(codes, list(self.codes[name]))  # type: ignore[call-overload]
        out["value"] = np.frombuffer(self.value, dtype=np.float64) if n else np.zeros(0)
        for name, v in constants.items():  # one category each, not an object per row
            codes = np.zeros(n, np.int8) if v is not None else np.full(n, -1, np.int8)
            out[name] = pd.Categorical.from_codes(codes, [] if v is None else [v])  # type: ignore[call-overload]
        return pd.DataFrame(out)


def _concat(frames: list[pd.DataFrame], columns: list[str], ints: list[str]) -> pd.DataFrame:
    """The frames as one, columns in order: `ints` int64, value float64, error as it is, the rest
    categorical (categories sorted, only those used: as `astype("category")` makes them)."""
    if not frames:
        frame = pd.DataFrame().reindex(columns=columns)
        text = [c for c in columns if c not in ints and c not in ("value", "error")]
        return frame.astype(
            {c: "int64" for c in ints} | {"value": "float64"} | dict.fromkeys(text, "category")
        )
    out: dict = {}
    for c in columns:
        parts = [f[c] for f in frames]
        if c in ints:
            out[c] = np.concatenate([p.to_numpy(np.int64) for p in parts])
        elif c == "value":
            out[c] = np.concatenate([p.to_numpy(np.float64) for p in parts])
        elif c == "error":
            out[c] = pd.Series(np.concatenate([p.to_numpy(object) for p in parts]), dtype=object)
        else:
            # An empty table's categories (and a None constant's) are an empty object index and
            # others' are str: the union needs one dtype, so it is taken over object categories
            # and the used ones are then typed as `astype("category")` would type them.
            same = [p.array.set_categories(p.array.categories.astype(object)) for p in parts]
            both = union_categoricals(same, sort_categories=True).remove_unused_categories()
            out[c] = both.rename_categories(pd.Index(list(both.categories)))
    return pd.DataFrame(out)


def load(
    runs: list[RunFolder], coders: list[str] | None = None, decile_metrics: set[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`load_scores`, `load_quantiles`) in one pass over the score files."""
    pairs = [
        _read_file(ref, scorer, decile_metrics)
        for ref in select(runs, coders)
        for scorer in ref.run.scorers()
    ]
    scores = _concat([p[0] for p in pairs], SCORE_COLUMNS, ["latent"])
    quantiles = _concat([p[1] for p in pairs], QUANTILE_COLUMNS, ["latent", "quantile"])
    return scores, quantiles


def load_scores(runs: list[RunFolder], coders: list[str] | None = None) -> pd.DataFrame:
    """Every score of the runs in long format: one row per (run, coder, scorer, latent, metric).
    A failed score is one row with the main metric and no value (status `failed`, `error` set)."""
    return load(runs, coders)[0]


def load_quantiles(runs: list[RunFolder], coders: list[str] | None = None) -> pd.DataFrame:
    """Per-decile metrics of successful scores: one row per (run, coder, scorer, latent, quantile
    0..9, metric), from each score's `per_group` (`q0` weakest .. `q9` strongest)."""
    return load(runs, coders)[1]


# ---------------------------------------------------------------- tables


def _describe_values(values: pd.Series) -> dict:
    v = values.dropna().to_numpy()
    stats = {"mean": np.nan, "median": np.nan} | {k: np.nan for k in PERCENTILES}
    if len(v):
        stats = {"mean": float(v.mean()), "median": float(np.median(v))}
        stats |= {k: float(np.percentile(v, p)) for k, p in PERCENTILES.items()}
    return stats


KEYS = ["hookpoint", "label", "kind", "scorer"]


def metric_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per hookpoint, coder, scorer and metric: scored, failed, undefined, mean, median, q10..q90
    (over successful scores only)."""
    failed = scores[scores.status != "ok"].groupby(KEYS, observed=True).latent.nunique()
    rows = []
    for key, d in scores[scores.status == "ok"].groupby(
        [*KEYS, "metric"], sort=False, observed=True
    ):
        row = dict(zip([*KEYS, "metric"], key, strict=True))
        row |= {"scored": int(d.value.notna().sum()), "failed": int(failed.get(key[:4], 0))}
        row |= {"undefined": int(d.value.isna().sum())} | _describe_values(d.value)
        rows.append(row)
    # pandas-stubs type a MultiIndex's labels as Hashable; here they are tuples of KEYS (str)
    for key, n in failed.items():  # type: ignore[assignment]  # coders whose every score failed
        if not any(tuple(r[k] for k in KEYS) == key for r in rows):
            row = dict(zip(KEYS, key, strict=True)) | {"metric": main_metric(key[3])}  # type: ignore[arg-type]
            rows.append(row | {"scored": 0, "failed": int(n), "undefined": 0})
    columns = [*KEYS, "metric", "scored", "failed", "undefined", "mean", "median", *PERCENTILES]
    return pd.DataFrame(rows, columns=columns)


def failure_table(scores: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """Per hookpoint, coder and scorer: latents scored, failed, the failed share and the most common
    failure reasons."""
    per_latent = scores.drop_duplicates(["run", "coder", "scorer", "latent"])
    rows = []
    for key, d in per_latent.groupby(KEYS, sort=False, observed=True):
        bad = d[d.status != "ok"]
        reasons = bad.error.fillna("no reason given").value_counts().head(top)
        rows.append(
            dict(zip(KEYS, key, strict=True))
            | {"latents": len(d), "failed": len(bad), "failed_share": len(bad) / len(d)}
            | {"reasons": "; ".join(f"{r} ({n})" for r, n in reasons.items())}
        )
    columns = [*KEYS, "latents", "failed", "failed_share", "reasons"]
    return pd.DataFrame(rows, columns=columns)


CURVE_FALLBACKS = {"accuracy", "auroc"}


def quantile_metric(scorer: str, available: set[str]) -> str | None:
    """The per-decile metric of a scorer: its main metric when reported per decile, else the share
    judged correctly (classifiers), else AUROC."""
    for m in (main_metric(scorer), "accuracy", "auroc"):
        if m in available:
            return m
    return None


def quantile_table(quantiles: pd.DataFrame) -> pd.DataFrame:
    """Per hookpoint, coder, scorer and activation decile: the mean per-decile metric over latents."""
    rows = []
    for (hook, label, scorer), d in quantiles.groupby(
        ["hookpoint", "label", "scorer"], sort=False, observed=True
    ):
        # pandas-stubs type group keys as Hashable or Scalar; here they are str (and int) values
        metric = quantile_metric(scorer, set(d.metric))  # type: ignore[arg-type]
        for q, dq in d[d.metric == metric].groupby("quantile", observed=True):
            v = dq.value.dropna()
            row = {"hookpoint": hook, "label": label, "scorer": scorer, "metric": metric}
            rows.append(row | {"quantile": int(q), "latents": len(v), "mean": v.mean()})  # type: ignore[arg-type]
    columns = ["hookpoint", "label", "scorer", "metric", "quantile", "latents", "mean"]
    return pd.DataFrame(rows, columns=columns)


def tables(scores: pd.DataFrame, quantiles: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`metrics` (every metric), `failures` (counts and reasons), `quantiles` (per-decile curves)."""
    return {
        "metrics": metric_table(scores),
        "failures": failure_table(scores),
        "quantiles": quantile_table(quantiles),
    }


# ---------------------------------------------------------------- comparison


BCA_MAX = 5_000
"""Samples up to this size get BCa intervals, larger ones percentile intervals (`mean_interval`)."""


def mean_interval(
    samples: tuple[np.ndarray, ...], n_boot: int, seed: int, key: str = ""
) -> tuple[float, float]:
    """95% bootstrap interval of the mean of one sample, or of the difference of the means of two
    (resampled independently), by `scipy.stats.bootstrap`: BCa (bias-corrected and accelerated;
    percentile intervals are too narrow for the dozen latents a coder often has) up to `BCA_MAX`
    values a sample, percentile above (BCa's jackknife costs O(n^2) there, and with that many values
    the two agree). The stream is drawn from `seed` and `key` (a coder's label, or a pair's), so a
    coder gets the same interval whatever it is compared with. A sample without spread (one value,
    or all equal) has the point as its interval."""
    from scipy.stats import bootstrap

    point = float(np.mean(samples[0]) - (np.mean(samples[1]) if len(samples) > 1 else 0.0))
    if min(len(x) for x in samples) < 2 or all(np.ptp(x) == 0 for x in samples):
        return point, point
    largest = max(len(x) for x in samples)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    for method in ("BCa", "percentile") if largest <= BCA_MAX else ("percentile",):
        with warnings.catch_warnings():  # a degenerate BCa is NaN: the percentile one is used
            warnings.simplefilter("ignore")
            ci = bootstrap(
                samples,
                _mean if len(samples) == 1 else _mean_difference,
                n_resamples=n_boot,
                method=method,
                rng=rng,
                vectorized=True,
                batch=max(1, 4_000_000 // largest),  # memory bounded for large samples
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return a.mean(axis=axis) - b.mean(axis=axis)


def compare(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """`coders`: per scorer, each coder's mean main metric with a 95% bootstrap CI; `pairs`: per
    scorer and pair of coders, the difference of means (a - b), its CI and the Mann-Whitney p."""
    from scipy.stats import mannwhitneyu

    coders, pairs = [], []
    for scorer, d in main_values(scores).groupby("scorer", sort=False, observed=True):
        groups = {k: g for k, g in d.groupby(["label", "hookpoint"], sort=False, observed=True)}
        values = {}
        for (label, hook), g in groups.items():
            x = values[label] = g.value.to_numpy()
            lo, hi = mean_interval((x,), n_boot, seed, f"{scorer}/{label}")
            # pandas-stubs type group keys as Hashable or Scalar; here they are str categories
            row = {"scorer": scorer, "metric": main_metric(scorer), "label": label}  # type: ignore[arg-type]
            coders.append(row | {"hookpoint": hook, "n": len(x), "mean": x.mean()})
            coders[-1] |= {"ci_low": lo, "ci_high": hi}
        for (a, ha), (b, hb) in itertools.combinations(groups, 2):
            xa, xb = values[a], values[b]
            lo, hi = mean_interval((xa, xb), n_boot, seed, f"{scorer}/{a}/{b}")
            p = mannwhitneyu(xa, xb, alternative="two-sided").pvalue
            row = {"scorer": scorer, "metric": main_metric(scorer), "coder_a": a, "coder_b": b}  # type: ignore[arg-type]
            row |= {"hookpoint_a": ha, "hookpoint_b": hb, "n_a": len(xa), "n_b": len(xb)}
            row |= {"mean_a": xa.mean(), "mean_b": xb.mean(), "diff": xa.mean() - xb.mean()}
            row |= {"ci_low": lo, "ci_high": hi, "p_mannwhitney": float(p)}
            pairs.append(row | {"contrast": contrast(a, b)})  # type: ignore[arg-type]
    coder_cols = ["scorer", "metric", "label", "hookpoint", "n", "mean", "ci_low", "ci_high"]
    pair_cols = ["scorer", "metric", "coder_a", "coder_b", "hookpoint_a", "hookpoint_b", "n_a"]
    pair_cols += ["n_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_mannwhitney"]
    pair_cols += ["contrast"]
    return {
        "coders": pd.DataFrame(coders, columns=coder_cols),
        "pairs": pd.DataFrame(pairs, columns=pair_cols),
    }


# ---------------------------------------------------------------- analysis and text


@dataclass
class Analysis:
    """Everything a report shows, computed once from the runs."""

    runs: list[RunFolder]
    refs: list[CoderRef]
    scores: pd.DataFrame
    quantiles: pd.DataFrame
    n_boot: int = 1000
    seed: int = 0

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        return tables(self.scores, self.quantiles)

    @cached_property
    def comparison(self) -> dict[str, pd.DataFrame]:
        return compare(self.scores, self.n_boot, self.seed)

    @property
    def run_labels(self) -> list[str]:
        return run_labels(self.runs)

    @cached_property
    def judge(self) -> dict[str, dict[str, dict]]:
        """Coder label -> LLM scorer -> its judge check (`judge_check.folder_verdicts`)."""
        from autointerp.score.judge_check import folder_verdicts

        out: dict[str, dict[str, dict]] = {}
        for ref in self.refs:
            root = ref.run.root
            found = folder_verdicts(
                root / "scores", root / "judge_check", ref.run.scorers(), [ref.coder]
            )
            out[ref.label] = {s: by[ref.coder] for s, by in found.items() if ref.coder in by}
        return out


def analyse(
    runs: list[Path], coders: list[str] | None = None, n_boot: int = 1000, seed: int = 0
) -> Analysis:
    """Open and check the runs, and load their scores (RunError when something is missing)."""
    folders = open_runs(runs)
    refs = select(folders, coders)
    for run in folders:
        if not run.scorers():
            raise RunError(f"{run.root} has no scores (run `autointerp score` on it first)")
    curve_metrics = {main_metric(s) for r in folders for s in r.scorers()} | CURVE_FALLBACKS
    scores, quantiles = load(folders, coders, curve_metrics)
    chosen = {r.run_label for r in refs}
    for run, label in zip(folders, run_labels(folders), strict=True):
        if label in chosen and not (scores.run == label).any():
            which = "" if coders is None else f" for coder {', '.join(coders)}"
            raise RunError(f"{run.root} has no scores{which} (run `autointerp score` on it first)")
    return Analysis(folders, refs, scores, quantiles, n_boot, seed)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def render_summary(a: Analysis) -> str:
    """The terminal summary of an analysis (see `summary_text`)."""
    lines = [f"subject model {a.runs[0].subject_model}; runs:"]
    for run, label in zip(a.runs, a.run_labels, strict=True):
        lines.append(f"  {label}: {run.root}")
    metrics = a.tables["metrics"]
    main = metrics[is_main(metrics)]
    cmp_coders, pairs = a.comparison["coders"], a.comparison["pairs"]
    width = max([len(r.label) for r in a.refs] + [5])
    for scorer in dict.fromkeys(main.scorer):
        lines.append(f"{scorer}: {main_metric(scorer)} (mean over scored latents, 95% CI)")
        for m in main[main.scorer == scorer].itertuples(index=False):
            c = cmp_coders[(cmp_coders.scorer == scorer) & (cmp_coders.label == m.label)]
            stat = "" if c.empty else "  " + _mean_ci(c.iloc[0])
            undefined = f" ({m.undefined} undefined)" if m.undefined else ""
            lines.append(
                f"  {m.label:<{width}}  {m.hookpoint}  scored {m.scored}{undefined},"
                f" failed {m.failed}{stat}"
            )
        lines += judge_lines(a, scorer)
        for p in pairs[pairs.scorer == scorer].itertuples(index=False):
            what = f" ({p.contrast})" if p.contrast else ""
            lines.append(
                f"  {p.coder_a} - {p.coder_b}{what}: {p.diff:+.3f} [{p.ci_low:+.3f},"
                f" {p.ci_high:+.3f}], Mann-Whitney p = {p.p_mannwhitney:.3g}"
            )
    return "\n".join(lines)


def judge_lines(a: Analysis, scorer: str) -> list[str]:
    """What the judge check says of a scorer, per coder (none for a scorer without a judge)."""
    from autointerp.score.judge_check import describe

    return [
        f"  {label}: {describe(scorer, by[scorer])}"
        for label, by in a.judge.items()
        if scorer in by
    ]


def _mean_ci(row) -> str:
    return f"mean {_fmt(row['mean'])} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"


def summary_text(
    runs: list[Path], coders: list[str] | None = None, *, n_boot: int = 1000, seed: int = 0
) -> str:
    """A short plain-text summary: per scorer and coder, latents scored and failed and the mean main
    metric with its CI; then the difference of each pair of coders."""
    return render_summary(analyse(runs, coders, n_boot, seed))


def build_report(
    runs: list[Path],
    out: Path,
    coders: list[str] | None = None,
    *,
    cards_per_page: int = 100,
    examples_per_card: int = 6,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the HTML report (summary page, latent cards, plots, CSV tables and summary.txt) into
    `out` and return the path of its index.html."""
    from autointerp.report_html import write_report

    a = analyse(runs, coders, n_boot, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in {**a.tables, **_prefixed(a.comparison)}.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    (out / "summary.txt").write_text(render_summary(a) + "\n")
    return write_report(a, out, cards_per_page, examples_per_card, progress)


def _prefixed(comparison: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {f"compare_{k}": v for k, v in comparison.items()}


from autointerp._callable import make_callable  # noqa: E402 (see autointerp._callable)

make_callable(__name__)
