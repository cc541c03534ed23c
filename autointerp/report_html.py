"""The files of the HTML report that `autointerp.report.build_report` writes.

    OUT/index.html                      summary: runs, comparison of coders, plots, tables
    OUT/dist_<scorer>.png               main metric per coder (box plot and points)
    OUT/deciles_<scorer>.png            per-decile curves of each coder
    OUT/cards/<coder>/index.html        the coder's card pages, with their latents
    OUT/cards/<coder>/page-00001.html   latent cards, `cards_per_page` a page

Static and self-contained: inline CSS, relative links, no JavaScript; every text from a run is
escaped. A token's background is HIGHLIGHT with an opacity of its activation over the latent's
maximum activation; the value is in the token's tooltip (`title`).
"""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from autointerp.jsonl import ExplanationHead, ScoreHead, scan
from autointerp.report import Analysis, CoderRef, is_main, main_metric, main_values
from autointerp.types import Example, ExampleRef, Explanation, SampledLatent

HIGHLIGHT = (255, 120, 0)
"""RGB of a token at the latent's maximum activation."""

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto;
       max-width: 1150px; padding: 0 16px; color: #222; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 28px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px 8px 8px 0; }
.note { color: #555; font-size: 13px; }
.failed { color: #b00020; font-weight: 600; }
.warn { border: 2px solid #b00020; background: #fff3f3; color: #7a0016; padding: 6px 12px;
        border-radius: 6px; font-size: 14px; margin: 6px 0; }
.muted { color: #888; }
nav { margin: 10px 0; font-size: 14px; } nav a, nav span { margin-right: 14px; }
.card { border: 1px solid #bbb; border-radius: 6px; padding: 8px 14px 10px; margin: 14px 0; }
.card h3 { margin: 2px 0 4px; } .card .meta { font-weight: normal; color: #666; font-size: 13px; }
.expl { font-size: 15px; margin: 4px 0 6px; }
.scores { font-size: 13px; margin: 4px 0 8px; } .scores span { margin-right: 16px; }
.ex { white-space: pre-wrap; word-break: break-word; font-size: 13px; line-height: 1.75;
      border-top: 1px solid #eee; padding: 3px 0; }
.ex .q { display: inline-block; min-width: 82px; color: #777; font-size: 11px; }
"""


# ---------------------------------------------------------------- html helpers


def esc(x: object) -> str:
    return html.escape(str(x))


def page(title: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def fmt(v: object) -> str:
    """A table cell's text: floats to 3 decimals (or 3 significant digits when tiny)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float | np.floating):
        return f"{v:.2e}" if v and abs(v) < 1e-3 else f"{v:.3f}"
    return str(v)


def table(frame: pd.DataFrame) -> str:
    """An HTML table of a frame; text columns left-aligned."""
    text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]

    def cls(i: int) -> str:
        return ' class="l"' if text[i] else ""

    head = "".join(f"<th{cls(i)}>{esc(c)}</th>" for i, c in enumerate(frame.columns))
    rows = [
        "<tr>" + "".join(f"<td{cls(i)}>{esc(fmt(v))}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in frame.itertuples(index=False)
    ]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "coder"


# ---------------------------------------------------------------- plots


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
        ax.plot(dl["quantile"], dl["mean"], marker="o", color=colors[label], label=label)
    metric = d.metric.iloc[0]
    ax.set_xlabel("activation decile (0 weakest, 9 strongest)")
    ax.set_ylabel(f"mean {metric}")
    ax.set_xticks(range(10))
    ax.set_title(f"{scorer}: {metric} per activation decile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def write_plots(a: Analysis, out: Path) -> list[tuple[str, str]]:
    """The PNG files of the report, as (caption, file name)."""
    plots = []
    colors = {r.label: f"C{i % 10}" for i, r in enumerate(a.refs)}
    for scorer, d in main_values(a.scores).groupby("scorer", sort=False, observed=True):
        name = f"dist_{slug(scorer)}.png"
        distribution_plot(d, scorer, colors, out / name)
        plots.append((f"{scorer}: distribution of {main_metric(scorer)}", name))
    for scorer, d in a.tables["quantiles"].groupby("scorer", sort=False, observed=True):
        name = f"deciles_{slug(scorer)}.png"
        decile_plot(d.dropna(subset=["mean"]), scorer, colors, out / name)
        plots.append((f"{scorer}: per-decile curves", name))
    return plots


# ---------------------------------------------------------------- cards


@dataclass
class CoderCards:
    """Where one coder's cards went, and how many latents of each state they show."""

    ref: CoderRef
    folder: str
    pages: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(file name, first latent, last latent, number of cards)"""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreCell:
    scorer: str
    ok: bool
    value: float
    error: str | None
    interval: tuple[float, float] | None = None
    """The 95% interval of the main metric, when its score file has one."""


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
    for r in main.itertuples(index=False):
        ci = intervals.get((r.run, r.coder, r.scorer), {}).get(r.latent)
        cell = ScoreCell(r.scorer, r.status == "ok", r.value, r.error, ci)
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


def tokens_html(ex: Example, vmax: float) -> str:
    r, g, b = HIGHLIGHT
    spans = []
    for tok, act in zip(ex.tokens, ex.activations, strict=True):
        text = esc(tok.replace("\n", "⏎"))
        alpha = min(max(act / vmax, 0.0), 1.0) if vmax > 0 else 0.0
        style = f' style="background:rgba({r},{g},{b},{alpha:.2f})"' if alpha >= 0.01 else ""
        spans.append(f'<span title="{act:.4g}"{style}>{text}</span>')
    return "".join(spans)


def _explanation_html(record: SampledLatent, e: Explanation | ExplanationHead | None) -> str:
    if record.status != "ok":
        return f'<p class="expl failed">skipped: {esc(record.reason or "no reason given")}</p>'
    if e is None:
        return '<p class="expl muted">not explained</p>'
    if e.text is None or not e.text.strip():
        reason = e.error or ("empty explanation" if e.text is not None else "no text")
        return f'<p class="expl failed">explanation failed: {esc(reason)}</p>'
    return f'<p class="expl">{esc(e.text)}</p>'


def _scores_html(cells: list[ScoreCell]) -> str:
    if not cells:
        return ""
    spans = [
        f"<span>{esc(c.scorer)} {esc(main_metric(c.scorer))} <b>{esc(fmt(c.value))}</b>"
        + ("" if c.interval is None else f" [{c.interval[0]:.2f}, {c.interval[1]:.2f}]")
        + "</span>"
        if c.ok
        else f'<span class="failed">{esc(c.scorer)} failed: {esc(c.error or "no reason")}</span>'
        for c in cells
    ]
    return f'<p class="scores">{"".join(spans)}</p>'


def card_html(
    ref: CoderRef,
    record: SampledLatent,
    e: Explanation | None,
    cells: list[ScoreCell],
    n_examples: int,
) -> str:
    latent = record.id.latent
    meta = f"density {record.density:.3g} · max activation {record.max_activation:.3g}"
    parts = [
        f'<div class="card" id="latent-{latent}">',
        f'<h3>{esc(ref.label)} · latent {latent} <span class="meta">{esc(meta)}</span></h3>',
        _explanation_html(record, e),
        _scores_html(cells),
    ]
    for x in pick_examples(record.train, n_examples) if record.status == "ok" else []:
        ex = ref.run.render(x)
        vmax = record.max_activation if record.max_activation > 0 else max(ex.activations)
        decile = "" if ex.quantile is None else f"q{ex.quantile} · "
        label = f"{decile}max {max(ex.activations):.3g}"
        parts.append(
            f'<div class="ex"><span class="q">{esc(label)}</span>{tokens_html(ex, vmax)}</div>'
        )
    return "\n".join(parts) + "\n</div>"


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _nav(index: int, has_next: bool) -> str:
    links = ['<a href="../../index.html">summary</a>', '<a href="index.html">all pages</a>']
    if index > 1:
        links.append(f'<a href="{page_name(index - 1)}">← previous</a>')
    links.append(f"<span>page {index}</span>")
    if has_next:
        links.append(f'<a href="{page_name(index + 1)}">next →</a>')
    return f"<nav>{''.join(links)}</nav>"


def page_name(index: int) -> str:
    return f"page-{index:05d}.html"


LEGEND = (
    "<p class=\"note\">Each token's background is as strong as its activation over the latent's "
    "maximum activation (hover over a token for its value); q0..q9 is the example's activation "
    "decile (q9 strongest).</p>"
)


def _lookahead(chunks: Iterator[list]) -> Iterator[tuple[list, bool]]:
    current = next(chunks, None)
    while current is not None:
        following = next(chunks, None)
        yield current, following is not None
        current = following


def write_coder_cards(
    ref: CoderRef, out: Path, folder: str, cells: dict, per_page: int, n_examples: int, bar
) -> CoderCards:
    """Card pages of one coder (streamed from its sample file) and the page index."""
    from autointerp.sample import read_records

    done = CoderCards(ref, folder)
    explanations = ref.run.explanation_index(ref.coder)  # read a page's worth at a time
    (out / folder).mkdir(parents=True, exist_ok=True)
    for stale in (out / folder).glob("page-*.html"):  # from an earlier, longer report
        stale.unlink()
    records = read_records(ref.run.root / "sample" / f"{ref.coder}.jsonl")
    counts = {"latents": 0, "skipped": 0, "explained": 0, "explanation failed": 0}
    for i, (chunk, more) in enumerate(_lookahead(_chunks(records, per_page)), start=1):
        cards = []
        page_explanations = explanations.read([r.id.latent for r in chunk], ExplanationHead)
        for r in chunk:
            e = page_explanations.get(r.id.latent)
            cards.append(card_html(ref, r, e, cells.get(r.id.latent, []), n_examples))
            _count(counts, r, e)
            bar.update(1)
        title = f"{ref.label}: latents {chunk[0].id.latent}–{chunk[-1].id.latent}"
        nav = _nav(i, more)
        body = [nav, f"<h1>{esc(title)}</h1>", LEGEND, *cards, nav]
        (out / folder / page_name(i)).write_text(page(title, body))
        done.pages.append((page_name(i), chunk[0].id.latent, chunk[-1].id.latent, len(chunk)))
    done.counts = counts
    (out / folder / "index.html").write_text(coder_index(done))
    return done


def _count(counts: dict[str, int], r: SampledLatent, e: Explanation | None) -> None:
    counts["latents"] += 1
    counts["skipped"] += r.status != "ok"
    counts["explained"] += e is not None and bool(e.text and e.text.strip())
    counts["explanation failed"] += e is not None and not (e.text and e.text.strip())


def coder_index(c: CoderCards) -> str:
    title = f"{c.ref.label}: latent cards"
    rows = "".join(
        f'<tr><td class="l"><a href="{name}">{esc(name)}</a></td><td>{first}</td><td>{last}</td>'
        f"<td>{n}</td></tr>"
        for name, first, last, n in c.pages
    )
    body = [
        '<nav><a href="../../index.html">summary</a></nav>',
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">{esc(_counts_text(c.counts))}</p>',
        f'<table><tr><th class="l">page</th><th>first latent</th><th>last latent</th>'
        f"<th>cards</th></tr>{rows}</table>",
    ]
    return page(title, body)


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


def runs_section(a: Analysis) -> list[str]:
    rows = [
        {"run": label, "path": str(run.root), "subject model": run.subject_model}
        for run, label in zip(a.runs, a.run_labels, strict=True)
    ]
    coders = [
        {"coder": r.label, "run": r.run_label, "kind": r.kind, "hookpoint": r.hookpoint}
        | {"latents": r.meta.get("n_latents")}
        for r in a.refs
    ]
    return ["<h2>Runs</h2>", table(pd.DataFrame(rows)), table(pd.DataFrame(coders))]


def _verdict(p) -> str:
    if p.ci_low > 0:
        return f"{p.coder_a} higher"
    if p.ci_high < 0:
        return f"{p.coder_b} higher"
    return "CI includes 0"


def comparison_section(a: Analysis) -> list[str]:
    coders, pairs = a.comparison["coders"], a.comparison["pairs"]
    parts = [
        "<h2>Comparison of coders</h2>",
        '<p class="note">Per scorer, the mean of its main metric over the latents scored '
        f"successfully, with a 95% bootstrap interval ({a.n_boot} resamples, seed {a.seed}); for "
        "each pair of coders the difference of means (a − b) with its bootstrap interval and the "
        "two-sided Mann-Whitney U p-value. Failed scores are left out (counted under Failures).</p>",
    ]
    for scorer in dict.fromkeys(coders.scorer):
        c = coders[coders.scorer == scorer]
        shown = c[["label", "hookpoint", "n", "mean", "ci_low", "ci_high"]].copy()
        judged = {label: by[scorer] for label, by in a.judge.items() if scorer in by}
        if judged:
            shown["judge check"] = [judged.get(x, {}).get("verdict", "–") for x in shown.label]
        parts.append(f"<h3>{esc(scorer)}: {esc(main_metric(scorer))}</h3>")
        parts += judge_boxes(scorer, judged)
        parts.append(table(shown))
        p = pairs[pairs.scorer == scorer].copy()
        if len(p):
            p["verdict"] = [_verdict(x) for x in p.itertuples(index=False)]
            cols = ["coder_a", "coder_b", "n_a", "n_b", "diff", "ci_low", "ci_high"]
            cols += ["contrast"] if p.contrast.astype(bool).any() else []  # trained vs random
            parts.append(table(p[[*cols, "p_mannwhitney", "verdict"]]))
    return parts


def judge_boxes(scorer: str, judged: dict[str, dict]) -> list[str]:
    """A warning box per coder whose judge check does not show that the judge discriminates; a
    plain note where it does."""
    from autointerp.score.judge_check import describe, trusted

    return [
        f'<p class="{"note" if trusted(v) else "warn"}">{esc(label)}: '
        f"{esc(describe(scorer, v))}</p>"
        for label, v in judged.items()
    ]


def tables_section(a: Analysis) -> list[str]:
    t = a.tables
    metrics = t["metrics"]
    main = metrics[is_main(metrics)]
    deciles = t["quantiles"].pivot_table(
        index=["hookpoint", "label", "scorer", "metric"],
        columns="quantile",
        values="mean",
        sort=False,
    )
    deciles = deciles[sorted(deciles.columns)]
    deciles.columns = [f"q{q}" for q in deciles.columns]
    return [
        "<h2>Main metric per coder and scorer</h2>",
        table(main),
        "<h2>Failures</h2>",
        '<p class="note">Latents whose score failed (with the most common reasons); they are '
        "not in any mean.</p>",
        table(t["failures"]),
        "<h2>Per activation decile</h2>",
        table(deciles.reset_index()),
        "<details><summary>Every metric</summary>",
        table(metrics),
        "</details>",
    ]


def cards_section(cards: list[CoderCards]) -> list[str]:
    items = [
        f'<li><a href="{c.folder}/index.html">{esc(c.ref.label)}</a>: '
        f"{esc(_counts_text(c.counts))}; {len(c.pages)} page(s)"
        + (f', <a href="{c.folder}/{c.pages[0][0]}">first page</a>' if c.pages else "")
        + "</li>"
        for c in cards
    ]
    return ["<h2>Latent cards</h2>", f"<ul>{''.join(items)}</ul>"]


def summary_page(a: Analysis, plots: list[tuple[str, str]], cards: list[CoderCards]) -> str:
    figures = [f'<img src="{esc(name)}" alt="{esc(caption)}">' for caption, name in plots]
    files = ["metrics", "failures", "quantiles", "compare_coders", "compare_pairs"]
    links = " · ".join(f'<a href="{f}.csv">{f}.csv</a>' for f in files)
    body = [
        "<h1>autointerp report</h1>",
        *runs_section(a),
        *comparison_section(a),
        "<h2>Plots</h2>",
        *figures,
        *tables_section(a),
        *cards_section(cards),
        f'<p class="note">Tables as CSV: {links} · <a href="summary.txt">summary.txt</a></p>',
    ]
    return page("autointerp report", body)


def write_report(
    a: Analysis, out: Path, cards_per_page: int, examples_per_card: int, progress: bool
) -> Path:
    plots = write_plots(a, out)
    cards = write_cards(a, out, cards_per_page, examples_per_card, progress)
    index = out / "index.html"
    index.write_text(summary_page(a, plots, cards))
    return index
