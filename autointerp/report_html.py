"""The files of the HTML report that `autointerp.report.build_report` writes.

    OUT/index.html                      summary: runs, comparison of coders, plots, tables
    OUT/dist_<scorer>.png               main metric per coder (box plot and points)
    OUT/deciles_<scorer>.png            per-decile curves of each coder
    OUT/cards/<coder>/index.html        the coder's card pages, with their latents
    OUT/cards/<coder>/page-00001.html   latent cards, `cards_per_page` a page

Static and self-contained: inline CSS, relative links, no JavaScript. A token's background is
HIGHLIGHT with an opacity of its activation over the latent's maximum activation; the value is in
the token's tooltip (`title`).

The markup is in jinja2 templates, `autointerp/data/templates/report/` (base.html the layout,
index.html, coder_index.html, cards.html, macros.html, report.css). They are rendered with
autoescape on, so every text from a run is escaped, and with StrictUndefined, so a template that
names a value this module does not pass fails instead of printing nothing. This module prepares the
values (tables as formatted cells, cards as explanation, scores and examples) and draws the plots.
The one exception is an example's tokens, whose <span>s `token_spans` writes, for speed (its
docstring says by how much), escaping each token's text itself.

`autointerp.report` imports this module (inside `build_report`); this module imports nothing from
it at run time, so the two form no import cycle.
"""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from tqdm.auto import tqdm

from autointerp.jsonl import ExplanationHead, ScoreHead, scan
from autointerp.score.names import is_main, main_metric, main_values
from autointerp.types import ExampleRef, Explanation, SampledLatent

if TYPE_CHECKING:
    from autointerp.report import Analysis, CoderRef

HIGHLIGHT = (255, 120, 0)
"""RGB of a token at the latent's maximum activation."""

CSV_TABLES = ["metrics", "failures", "quantiles", "compare_coders", "compare_pairs"]
"""The tables `build_report` writes as OUT/<name>.csv, linked from the summary page."""


# ---------------------------------------------------------------- templates


@cache
def environment() -> jinja2.Environment:
    """The report's templates, read from the installed package."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autointerp", "data/templates/report"),
        autoescape=True,  # every template is HTML (report.css is included into one)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    return env


def render(template: str, **values: object) -> str:
    return environment().get_template(template).render(**values)


def fmt(v: object) -> str:
    """A table cell's text: floats to 3 decimals (or 3 significant digits when tiny)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float | np.floating):
        x = float(v)
        return f"{x:.2e}" if x and abs(x) < 1e-3 else f"{x:.3f}"
    return str(v)


class Table(NamedTuple):
    """A frame as the `table` macro draws it: its column names, which columns are text (drawn
    left-aligned) and every row's cells as text."""

    columns: list[str]
    text: list[bool]
    rows: list[list[str]]


def table(frame: pd.DataFrame) -> Table:
    text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    rows = [[fmt(v) for v in row] for row in frame.itertuples(index=False)]
    return Table([str(c) for c in frame.columns], text, rows)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "coder"


# ---------------------------------------------------------------- main metric


# ---------------------------------------------------------------- plots


class Plot(NamedTuple):
    caption: str
    file: str


def _figure(height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, height), dpi=100)
    return fig, fig.subplots()


def _horizontal(ax) -> dict:
    """Matplotlib 3.10 renamed `vert=False` to `orientation="horizontal"`."""
    params = inspect.signature(ax.boxplot).parameters
    return {"orientation": "horizontal"} if "orientation" in params else {"vert": False}


def distribution_plot(d: pd.DataFrame, scorer: str, colors: dict[str, str], path: Path) -> None:
    """Box plot and (up to 2,000) jittered points of the main metric of each coder (first on top)."""
    labels = list(dict.fromkeys(d.label))
    data = [d[d.label == label].value.to_numpy() for label in labels]
    fig, ax = _figure(1.4 + 0.65 * len(labels))
    ax.boxplot(
        data,
        **_horizontal(ax),
        showfliers=False,
        widths=0.5,
        medianprops={"color": "black", "linewidth": 2},
    )
    rng = np.random.default_rng(0)
    for i, v in enumerate(data):
        v = rng.choice(v, 2000, replace=False) if len(v) > 2000 else v
        y = i + 1 + rng.uniform(-0.18, 0.18, len(v))
        ax.scatter(v, y, s=12, alpha=0.6, color=colors[labels[i]], zorder=3)
    metric = main_metric(scorer)
    if metric in ("auroc", "balanced_accuracy", "accuracy"):
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ticks = [f"{label}\n(n={len(v)})" for label, v in zip(labels, data, strict=True)]
    ax.set_yticks(range(1, len(labels) + 1), ticks)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{scorer}: {metric} per latent")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def decile_plot(d: pd.DataFrame, scorer: str, colors: dict[str, str], path: Path) -> None:
    """Mean per-decile metric of each coder against the activation decile."""
    fig, ax = _figure(3.6)
    for label, dl in d.groupby("label", sort=False, observed=True):
        ax.plot(dl["quantile"], dl["mean"], marker="o", color=colors[str(label)], label=label)
    metric = d.metric.iloc[0]
    ax.set_xlabel("activation decile (0 weakest, 9 strongest)")
    ax.set_ylabel(f"mean {metric}")
    ax.set_xticks(range(10))
    ax.set_title(f"{scorer}: {metric} per activation decile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def write_plots(a: Analysis, out: Path) -> list[Plot]:
    """The PNG files of the report."""
    plots = []
    colors = {r.label: f"C{i % 10}" for i, r in enumerate(a.refs)}
    for key, d in main_values(a.scores).groupby("scorer", sort=False, observed=True):
        scorer = str(key)
        name = f"dist_{slug(scorer)}.png"
        distribution_plot(d, scorer, colors, out / name)
        plots.append(Plot(f"{scorer}: distribution of {main_metric(scorer)}", name))
    for key, d in a.tables["quantiles"].groupby("scorer", sort=False, observed=True):
        scorer = str(key)
        name = f"deciles_{slug(scorer)}.png"
        decile_plot(d.dropna(subset=["mean"]), scorer, colors, out / name)
        plots.append(Plot(f"{scorer}: per-decile curves", name))
    return plots


# ---------------------------------------------------------------- cards


class PageInfo(NamedTuple):
    file: str
    first: int
    last: int
    n: int
    """The number of cards on the page."""


@dataclass(frozen=True)
class CoderCards:
    """Where one coder's cards went, and how many latents of each state they show."""

    ref: CoderRef
    folder: str
    pages: list[PageInfo]
    counts: dict[str, int]


@dataclass(frozen=True)
class ScoreCell:
    scorer: str
    metric: str
    """The scorer's main metric, the one shown."""
    ok: bool
    value: float
    error: str | None
    interval: tuple[float, float] | None = None
    """The 95% interval of the main metric, when its score file has one."""


class ExampleView(NamedTuple):
    label: str
    """Decile and maximum activation, `q7 · max 3.2`."""
    tokens: Markup
    """The tokens as HTML (`token_spans`)."""


class ExplanationView(NamedTuple):
    state: Literal["ok", "skipped", "not explained", "failed"]
    text: str
    """The explanation (ok) or why there is none (skipped, failed)."""


class Card(NamedTuple):
    latent: int
    meta: str
    explanation: ExplanationView
    scores: list[ScoreCell]
    examples: list[ExampleView]


def interval_lookup(a: Analysis) -> dict[tuple[str, str, str], dict[int, tuple[float, float]]]:
    """(run, coder, scorer) -> latent -> the interval of its main metric (old files: none)."""
    out: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = {}
    for ref in a.refs:
        for scorer in ref.run.scorers():
            path = ref.run.root / "scores" / scorer / f"{ref.coder}.jsonl"
            main = main_metric(scorer)
            found = out.setdefault((ref.run_label, ref.coder, scorer), {})
            for _, s in scan(path, ScoreHead):
                if main in s.intervals:
                    found[s.latent.latent] = s.intervals[main]
    return out


def score_lookup(a: Analysis) -> dict[tuple[str, str], dict[int, list[ScoreCell]]]:
    """(run, coder) -> latent -> its main-metric cell per scorer."""
    main = a.scores[is_main(a.scores)]
    intervals = interval_lookup(a)
    out: dict[tuple[str, str], dict[int, list[ScoreCell]]] = {}
    rows: Iterable[Any] = main.itertuples(index=False)  # a named tuple of the table's columns
    for r in rows:
        ci = intervals.get((r.run, r.coder, r.scorer), {}).get(r.latent)
        cell = ScoreCell(r.scorer, r.metric, r.status == "ok", r.value, r.error, ci)
        out.setdefault((r.run, r.coder), {}).setdefault(r.latent, []).append(cell)
    return out


def pick_examples(train: list[ExampleRef], n: int) -> list[ExampleRef]:
    """The strongest two thirds of `n` train examples, then one from each of a few lower deciles
    (the lowest, and evenly spaced up to the strongest shown)."""

    def peak(r: ExampleRef) -> float:
        return max((v for _, v in r.acts), default=0.0)

    ranked = sorted(train, key=peak, reverse=True)
    n_top = max(1, n - n // 3)
    top, rest = ranked[:n_top], ranked[n_top:]
    deciles = sorted({r.quantile for r in rest if r.quantile is not None})
    n_low = min(n - n_top, len(deciles))
    if n_low == 0:
        return ranked[:n]
    chosen = {deciles[int(i)] for i in np.linspace(0, len(deciles) - 1, n_low + 1)[:-1]}
    lower = [next(r for r in rest if r.quantile == q) for q in sorted(chosen, reverse=True)]
    return top + lower


def token_spans(token_texts: list[str], activations: list[float], vmax: float) -> Markup:
    """An example's tokens, a <span> each with its text escaped (a newline shown as ⏎), its
    activation in the tooltip and a background of HIGHLIGHT with an opacity of the activation over
    `vmax` (none below 0.01).

    The one piece of markup built in Python rather than in cards.html, for speed: a report of 100k
    latents shows ~20M tokens (6 examples of 32 a card), and a loop over them in the template took
    ~1.3 µs more a token than this one, ~25 s more for such a report (a page of 12 cards, 2,304
    tokens: 7.1 ms with the loop in the template, 4.2 ms with this, 3.8 ms with the f-strings of
    before). `html.escape` rather than markupsafe's `escape` (autoescape's, which writes &#34; for
    &quot;): ~0.35 µs less a token."""
    r, g, b = HIGHLIGHT
    spans = []
    for tok, act in zip(token_texts, activations, strict=True):
        alpha = min(max(act / vmax, 0.0), 1.0) if vmax > 0 else 0.0
        style = f' style="background:rgba({r},{g},{b},{alpha:.2f})"' if alpha >= 0.01 else ""
        text = html.escape(tok.replace("\n", "⏎"))
        spans.append(f'<span title="{act:.4g}"{style}>{text}</span>')
    return Markup("".join(spans))


def explanation_view(
    record: SampledLatent, e: Explanation | ExplanationHead | None
) -> ExplanationView:
    if record.status != "ok":
        return ExplanationView("skipped", record.reason or "no reason given")
    if e is None:
        return ExplanationView("not explained", "")
    if e.text is None or not e.text.strip():
        reason = e.error or ("empty explanation" if e.text is not None else "no text")
        return ExplanationView("failed", reason)
    return ExplanationView("ok", e.text)


def card(
    ref: CoderRef,
    record: SampledLatent,
    e: Explanation | ExplanationHead | None,
    cells: list[ScoreCell],
    n_examples: int,
) -> Card:
    examples = []
    for x in pick_examples(record.train, n_examples) if record.status == "ok" else []:
        ex = ref.run.render(x)
        vmax = record.max_activation if record.max_activation > 0 else max(ex.activations)
        decile = "" if ex.quantile is None else f"q{ex.quantile} · "
        label = f"{decile}max {max(ex.activations):.3g}"
        examples.append(ExampleView(label, token_spans(ex.tokens, ex.activations, vmax)))
    meta = f"density {record.density:.3g} · max activation {record.max_activation:.3g}"
    return Card(record.id.latent, meta, explanation_view(record, e), cells, examples)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def page_name(index: int) -> str:
    return f"page-{index:05d}.html"


def _lookahead(chunks: Iterator[list]) -> Iterator[tuple[list, bool]]:
    current = next(chunks, None)
    while current is not None:
        following = next(chunks, None)
        yield current, following is not None
        current = following


def cards_page(ref: CoderRef, cards: list[Card], index: int, has_next: bool) -> str:
    """One page of cards (page `index`, counted from 1)."""
    return render(
        "cards.html",
        title=f"{ref.label}: latents {cards[0].latent}–{cards[-1].latent}",
        label=ref.label,
        index=index,
        previous=page_name(index - 1) if index > 1 else None,
        next=page_name(index + 1) if has_next else None,
        cards=cards,
    )


def write_coder_cards(
    ref: CoderRef, out: Path, folder: str, cells: dict, per_page: int, n_examples: int, bar
) -> CoderCards:
    """Card pages of one coder (streamed from its sample file) and the page index."""
    from autointerp.sample import read_records

    explanations = ref.run.explanation_index(ref.coder)  # read a page's worth at a time
    (out / folder).mkdir(parents=True, exist_ok=True)
    for stale in (out / folder).glob("page-*.html"):  # from an earlier, longer report
        stale.unlink()
    records = read_records(ref.run.root / "sample" / f"{ref.coder}.jsonl")
    counts = {"latents": 0, "skipped": 0, "explained": 0, "explanation failed": 0}
    pages = []
    for i, (chunk, more) in enumerate(_lookahead(_chunks(records, per_page)), start=1):
        cards = []
        page_explanations = explanations.read([r.id.latent for r in chunk], ExplanationHead)
        for r in chunk:
            e = page_explanations.get(r.id.latent)
            cards.append(card(ref, r, e, cells.get(r.id.latent, []), n_examples))
            _count(counts, r, e)
            bar.update(1)
        (out / folder / page_name(i)).write_text(cards_page(ref, cards, i, more))
        pages.append(PageInfo(page_name(i), chunk[0].id.latent, chunk[-1].id.latent, len(chunk)))
    done = CoderCards(ref, folder, pages, counts)
    (out / folder / "index.html").write_text(coder_index(done))
    return done


def _count(
    counts: dict[str, int], r: SampledLatent, e: Explanation | ExplanationHead | None
) -> None:
    counts["latents"] += 1
    counts["skipped"] += r.status != "ok"
    counts["explained"] += e is not None and bool(e.text and e.text.strip())
    counts["explanation failed"] += e is not None and not (e.text and e.text.strip())


def coder_index(c: CoderCards) -> str:
    return render(
        "coder_index.html",
        title=f"{c.ref.label}: latent cards",
        counts=_counts_text(c.counts),
        pages=c.pages,
    )


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def write_cards(
    a: Analysis, out: Path, per_page: int, n_examples: int, progress: bool
) -> list[CoderCards]:
    cells = score_lookup(a)
    total = sum(_n_lines(r.run.root / "sample" / f"{r.coder}.jsonl") for r in a.refs)
    folders: list[str] = []
    done = []
    with tqdm(total=total, desc="report cards", unit="card", disable=not progress) as bar:
        for ref in a.refs:
            name = slug(ref.label)
            while f"cards/{name}" in folders:
                name += "_"
            folders.append(f"cards/{name}")
            c = cells.get((ref.run_label, ref.coder), {})
            done.append(write_coder_cards(ref, out, folders[-1], c, per_page, n_examples, bar))
    return done


def _n_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# ---------------------------------------------------------------- summary page


def runs_tables(a: Analysis) -> tuple[Table, Table]:
    """The runs (label, path, subject model), and their coders."""
    rows = [
        {"run": label, "path": str(run.root), "subject model": run.subject_model}
        for run, label in zip(a.runs, a.run_labels, strict=True)
    ]
    coders = [
        {"coder": r.label, "run": r.run_label, "kind": r.kind, "hookpoint": r.hookpoint}
        | {"latents": r.meta.get("n_latents")}
        for r in a.refs
    ]
    return table(pd.DataFrame(rows)), table(pd.DataFrame(coders))


class JudgeBox(NamedTuple):
    trusted: bool
    """The judge check shows that the judge discriminates (a note; otherwise a warning box)."""
    text: str


class ScorerComparison(NamedTuple):
    scorer: str
    metric: str
    judge: list[JudgeBox]
    coders: Table
    pairs: Table | None
    """None when there is no pair of coders."""


def _verdict(p) -> str:
    if p.ci_low > 0:
        return f"{p.coder_a} higher"
    if p.ci_high < 0:
        return f"{p.coder_b} higher"
    return "CI includes 0"


def comparison(a: Analysis) -> list[ScorerComparison]:
    """Per scorer: the judge check of each coder, the mean main metric of each coder and the
    difference of each pair."""
    coders, pairs = a.comparison["coders"], a.comparison["pairs"]
    out = []
    for scorer in dict.fromkeys(coders.scorer):
        c = coders[coders.scorer == scorer]
        shown = c[["label", "hookpoint", "n", "mean", "ci_low", "ci_high"]].copy()
        judged = {label: by[scorer] for label, by in a.judge.items() if scorer in by}
        if judged:
            shown["judge check"] = [judged.get(x, {}).get("verdict", "–") for x in shown.label]
        p = pairs[pairs.scorer == scorer].copy()
        pair_table = None
        if len(p):
            p["verdict"] = [_verdict(x) for x in p.itertuples(index=False)]
            cols = ["coder_a", "coder_b", "n_a", "n_b", "diff", "ci_low", "ci_high"]
            cols += ["contrast"] if p.contrast.astype(bool).any() else []  # trained vs random
            pair_table = table(p[[*cols, "p_mannwhitney", "verdict"]])
        boxes = judge_boxes(scorer, judged)
        out.append(ScorerComparison(scorer, main_metric(scorer), boxes, table(shown), pair_table))
    return out


def judge_boxes(scorer: str, judged: dict[str, dict]) -> list[JudgeBox]:
    """A warning box per coder whose judge check does not show that the judge discriminates; a
    plain note where it does."""
    from autointerp.score.judge_check import describe, trusted

    return [JudgeBox(trusted(v), f"{label}: {describe(scorer, v)}") for label, v in judged.items()]


def score_tables(a: Analysis) -> dict[str, Table]:
    """`main` (the main metric per coder and scorer), `failures`, `deciles` (one column a decile)
    and `metrics` (every metric)."""
    t = a.tables
    metrics = t["metrics"]
    deciles = t["quantiles"].pivot_table(
        index=["hookpoint", "label", "scorer", "metric"],
        columns="quantile",
        values="mean",
        sort=False,
    )
    deciles = deciles[sorted(deciles.columns)]
    deciles.columns = [f"q{q}" for q in deciles.columns]
    return {
        "main": table(metrics[is_main(metrics)]),
        "failures": table(t["failures"]),
        "deciles": table(deciles.reset_index()),
        "metrics": table(metrics),
    }


class CardLinks(NamedTuple):
    label: str
    folder: str
    counts: str
    pages: list[PageInfo]


def summary_page(a: Analysis, plots: list[Plot], cards: list[CoderCards]) -> str:
    runs, coders = runs_tables(a)
    links = [CardLinks(c.ref.label, c.folder, _counts_text(c.counts), c.pages) for c in cards]
    return render(
        "index.html",
        title="autointerp report",
        runs=runs,
        coders=coders,
        n_boot=a.n_boot,
        seed=a.seed,
        comparison=comparison(a),
        plots=plots,
        **score_tables(a),
        cards=links,
        csv_tables=CSV_TABLES,
    )


def write_report(
    a: Analysis, out: Path, cards_per_page: int, examples_per_card: int, progress: bool
) -> Path:
    plots = write_plots(a, out)
    cards = write_cards(a, out, cards_per_page, examples_per_card, progress)
    index = out / "index.html"
    index.write_text(summary_page(a, plots, cards))
    return index
