"""Report and coder similarity on the shared no-LLM run folder (`small_run`): tables against the score
files, failures kept out of every mean, the comparison of the two coders, the HTML pages (their text,
links and structure, escaping, and as headless Chromium draws them), the errors a user can hit, and
explanation matching with the packaged MiniLM."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pytest

from autointerp import report_html
from autointerp.errors import RunError
from autointerp.explain import read_explanations
from autointerp.report import (
    CoderRef,
    analyse,
    build_report,
    compare,
    load_quantiles,
    load_scores,
    main_metric,
    summary_text,
    tables,
)
from autointerp.report_html import HIGHLIGHT
from autointerp.runfolder import RunFolder
from autointerp.score.base import failed
from autointerp.similarity import coder_similarity
from autointerp.types import LatentId

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAILURE = 'the explanation failed: <timeout> & "retry"'


def copy_run(small_run: Path, dest: Path, **kw) -> Path:
    return Path(shutil.copytree(small_run, dest, **kw))


def score_lines(run: Path, coder: str) -> list[dict]:
    text = (run / "scores" / "embedding" / f"{coder}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def main_row(run: Path, coder: str):
    folder = RunFolder(run)
    t = tables(load_scores([folder]), load_quantiles([folder]))["metrics"]
    return t[(t.label == coder) & (t.metric == "auroc")].iloc[0]


@pytest.fixture(scope="module")
def edited_run(small_run, tmp_path_factory) -> Path:
    """A copy whose latent 0 of layers.15 has a failed explanation and a failed score (appended
    lines: the last line of a latent wins), both with text that needs escaping."""
    run = copy_run(small_run, tmp_path_factory.mktemp("edited") / "run")
    lid = LatentId(coder="layers.15", latent=0)
    e = read_explanations(run / "explanations" / "layers.15.jsonl")[0]
    bad = e.model_copy(update={"text": None, "error": FAILURE})
    with open(run / "explanations" / "layers.15.jsonl", "a") as f:
        f.write(bad.model_dump_json() + "\n")
    with open(run / "scores" / "embedding" / "layers.15.jsonl", "a") as f:
        f.write(failed(lid, "embedding", FAILURE).model_dump_json() + "\n")
    return run


@pytest.fixture(scope="module")
def report(edited_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return build_report([edited_run], out, cards_per_page=5, progress=False)


# ---------------------------------------------------------------- tables and comparison


def test_tables_count_every_score_line(small_run):
    folder = RunFolder(small_run)
    scores, quantiles = load_scores([folder]), load_quantiles([folder])
    for coder in ("layers.15", "neurons.15"):
        lines = score_lines(small_run, coder)
        ok = [r for r in lines if r["status"] == "ok"]
        values = [r["metrics"]["auroc"] for r in ok if r["metrics"].get("auroc") is not None]
        row = main_row(small_run, coder)
        assert row.scored + row.undefined == len(ok)
        assert row.failed == len(lines) - len(ok)
        assert row.scored == len(values)
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["median"] == pytest.approx(np.median(values))
        main = scores[(scores.coder == coder) & (scores.metric == "auroc")]
        assert len(main) == len(lines)  # one row per latent, failed or not
    assert set(scores.columns) >= {"run", "model", "hookpoint", "kind", "status", "error", "value"}
    assert set(quantiles["quantile"]) == set(range(10))
    curves = tables(scores, quantiles)["quantiles"]
    assert set(curves.label) == {"layers.15", "neurons.15"}
    assert (curves.metric == "auroc").all()
    assert set(curves[curves.label == "layers.15"]["quantile"]) == set(range(10))


def test_failed_scores_count_only_as_failures(small_run, edited_run):
    before, after = main_row(small_run, "layers.15"), main_row(edited_run, "layers.15")
    lines = {r["latent"]["latent"]: r for r in score_lines(small_run, "layers.15")}
    assert lines[0]["metrics"]["auroc"] is not None  # latent 0 had a value before
    others = [r["metrics"]["auroc"] for i, r in lines.items() if i != 0]
    others = [v for v in others if v is not None]
    assert after.failed == before.failed + 1
    assert after.scored == before.scored - 1
    assert after["mean"] == pytest.approx(np.mean(others))  # not pulled towards zero
    a = analyse([edited_run])
    failures = a.tables["failures"]
    row = failures[failures.label == "layers.15"].iloc[0]
    assert row.failed == 1 and FAILURE in row.reasons
    coders = a.comparison["coders"]
    assert coders[coders.label == "layers.15"].iloc[0].n == len(others)


def test_score_tables_are_compact_and_keep_the_last_line(edited_run):
    """One row per latent and metric, text as categories (one code per row, not an object), the
    last line of a latent winning in the place of its first; errors None where there is none."""
    scores = load_scores([RunFolder(edited_run)])
    lines = score_lines(edited_run, "layers.15")
    firsts = list(dict.fromkeys(r["latent"]["latent"] for r in lines))
    mine = scores[scores.coder == "layers.15"]
    assert list(dict.fromkeys(mine.latent)) == firsts  # first-seen order
    zero = mine[mine.latent == 0]
    assert list(zero.status) == ["failed"] and list(zero.error) == [FAILURE]
    ok = mine[mine.status == "ok"]
    assert len(ok) and all(e is None for e in ok.error)  # not NaN, not "nan" in a page
    for column in ("run", "model", "hookpoint", "coder", "label", "kind", "scorer", "status"):
        assert isinstance(scores[column].dtype, pd.CategoricalDtype), column
    assert scores.latent.dtype == np.int64 and scores.value.dtype == np.float64
    per_row = scores.memory_usage(deep=True).sum() / len(scores)
    assert per_row < 60, per_row  # tuples of Python objects took ~150 bytes a row


def test_a_coder_without_scores_beside_one_with_scores(small_run, tmp_path):
    """A run scored with `only_coders` has coders without score files: their empty tables join the
    others' (an empty table's text categories have no dtype of their own to clash with)."""
    run = copy_run(small_run, tmp_path / "run", ignore=shutil.ignore_patterns("shards"))
    for scorer in (run / "scores").iterdir():
        (scorer / "neurons.15.jsonl").unlink()
    scores = load_scores([RunFolder(run)])
    assert set(scores.coder) == {"layers.15"} and len(scores)
    assert list(scores.coder.cat.categories) == ["layers.15"]  # only those used
    a = analyse([run])
    assert set(a.comparison["coders"].label) == {"layers.15"}
    (run / "scores" / "embedding" / "layers.15.jsonl").write_text("")  # an empty file too
    assert len(load_scores([RunFolder(run)])) == 0


def test_comparison_of_the_two_coders(small_run):
    a = analyse([small_run])
    coders, pairs = a.comparison["coders"], a.comparison["pairs"]
    assert set(coders.label) == {"layers.15", "neurons.15"}
    assert ((coders.ci_low <= coders["mean"]) & (coders["mean"] <= coders.ci_high)).all()
    assert len(pairs) == 1
    p = pairs.iloc[0]
    assert {p.coder_a, p.coder_b} == {"layers.15", "neurons.15"}
    assert p["diff"] == pytest.approx(p.mean_a - p.mean_b)
    assert p.ci_low <= p["diff"] <= p.ci_high and p.ci_low < p.ci_high
    assert 0 <= p.p_mannwhitney <= 1
    again = compare(a.scores, seed=0)["pairs"]  # fixed seed: the same interval
    assert again.iloc[0].ci_low == p.ci_low
    text = summary_text([small_run / "cache"])  # the stages' RUN/cache form works too
    assert "layers.15 - neurons.15" in text and "Mann-Whitney p" in text
    assert "neurons.15" not in summary_text([small_run], coders=["layers.15"])


def test_coders_of_several_runs_are_told_apart(small_run, tmp_path):
    other = copy_run(small_run, tmp_path / "b" / "run", ignore=shutil.ignore_patterns("shards"))
    a = analyse([small_run, other], coders=["layers.15"])
    assert set(a.comparison["coders"].label) == {"run/layers.15", "run-2/layers.15"}
    p = a.comparison["pairs"].iloc[0]
    assert p["diff"] == pytest.approx(0.0) and p.p_mannwhitney == pytest.approx(1.0)
    assert p.ci_low < 0 < p.ci_high  # the two copies are resampled independently


# ---------------------------------------------------------------- HTML report


def screenshot(page: Path, tmp_path: Path) -> np.ndarray:
    from PIL import Image

    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    png = tmp_path / f"{page.parent.name}-{page.stem}.png"
    flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    flags += "--disable-background-networking --disable-component-update --disable-sync"
    cmd = [CHROMIUM, *flags.split(), f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--window-size=1200,1600", "--virtual-time-budget=3000"]  # let the page settle
    cmd += [f"--screenshot={png}", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), done.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def count_near(img: np.ndarray, rgb: tuple[int, int, int], tol: int) -> int:
    return int((np.abs(img - np.array(rgb)).max(axis=-1) <= tol).sum())


def count_highlight(img: np.ndarray, min_alpha: float) -> int:
    """Pixels of HIGHLIGHT laid over white with an opacity of at least `min_alpha`."""
    white = np.array([255, 255, 255])
    step = white - np.array(HIGHLIGHT)  # what full opacity takes away from white
    alpha = (white - img)[..., 2] / step[2]
    expected = white - alpha[..., None] * step
    on_line = np.abs(img - expected).max(axis=-1) <= 12
    return int((on_line & (alpha >= min_alpha)).sum())


def test_report_pages_in_chromium(report, tmp_path):
    index = screenshot(report, tmp_path)
    assert (index.min(axis=-1) < 200).mean() > 0.03  # text, tables and plots, not a blank page
    assert count_near(index, (31, 119, 180), 25) > 150  # the plots' first colour: PNGs loaded
    cards = screenshot(report.parent / "cards" / "layers.15" / "page-00001.html", tmp_path)
    assert (cards.min(axis=-1) < 200).mean() > 0.03
    assert count_highlight(cards, 0.5) > 100  # tokens at over half their latent's maximum
    assert count_near(cards, (176, 0, 32), 40) > 20  # a failure, marked in red


def test_report_files_and_cards(report):
    out = report.parent
    for name in ("metrics", "failures", "quantiles", "compare_coders", "compare_pairs"):
        assert (out / f"{name}.csv").stat().st_size > 0
    index = report.read_text()
    assert 'src="dist_embedding.png"' in index and (out / "dist_embedding.png").exists()
    assert (out / "deciles_embedding.png").exists()
    assert "<script" not in index
    pages = sorted((out / "cards" / "layers.15").glob("page-*.html"))
    assert len(pages) == 3  # 12 latents, 5 a page
    first, last = pages[0].read_text(), pages[-1].read_text()
    assert f"explanation failed: {FAILURE}" in Page(first).text  # shown as written
    assert "<timeout>" not in first and "&lt;timeout&gt; &amp; &#34;retry&#34;" in first
    assert "embedding failed:" in first
    assert first.count('class="card"') == 5 and "next →" in first and "next →" not in last
    assert 'title="' in first and "background:rgba(255,120,0,0." in first
    assert (out / "summary.txt").read_text().startswith("subject model")


class Page(HTMLParser):
    """What a browser shows of a page: its text (whitespace folded), headings (h1..h3, in order),
    links (target, text), the targets of its links and images, and each table's cells by row."""

    VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.headings: list[tuple[str, str]] = []
        self.targets: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self._open: list[str] = []
        self._heading: list[str] = []
        self.feed(source)
        self.close()
        self.text = fold("".join(self.parts))

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("href", "src") and v]
        if tag in self.VOID:
            return
        self._open.append(tag)
        if tag == "a":
            self.links.append((dict(attrs).get("href", ""), ""))
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")

    def handle_endtag(self, tag):
        assert self._open.pop() == tag, f"</{tag}> closes no open <{tag}>"
        if tag in ("h1", "h2", "h3"):
            self.headings.append((tag, fold("".join(self._heading))))

    def handle_data(self, data):
        if {"style", "title"} & set(self._open):
            return
        self.parts.append(data)
        self._heading.append(data)
        if {"td", "th"} & set(self._open):
            self.tables[-1][-1][-1] += data
        if "a" in self._open:
            self.links[-1] = (self.links[-1][0], self.links[-1][1] + data)


def fold(text: str) -> str:
    return " ".join(text.split())


def test_report_pages_text_links_and_structure(report, edited_run):
    """Every page's links and images point at files of the report; the summary has its sections in
    order; a card page shows each of its latents with its explanation, and the coder's index lists
    its pages."""
    out = report.parent
    pages = sorted(out.rglob("*.html"))
    assert {p.relative_to(out).as_posix() for p in pages} >= {
        "index.html",
        "cards/layers.15/index.html",
        "cards/neurons.15/index.html",
        "cards/neurons.15/page-00003.html",
    }
    for path in pages:
        page = Page(path.read_text())
        for target in page.targets:
            assert (path.parent / target).resolve().is_file(), (path, target)

    index = Page(report.read_text())
    assert [h for level, h in index.headings if level != "h3"] == [
        "autointerp report",
        "Runs",
        "Comparison of coders",
        "Plots",
        "Main metric per coder and scorer",
        "Failures",
        "Per activation decile",
        "Latent cards",
    ]
    assert ("h3", "embedding: auroc") in index.headings
    assert index.tables[0][0] == ["run", "path", "subject model"]
    assert index.tables[0][1][:2] == ["run", str(edited_run)]
    assert [row[0] for row in index.tables[1]] == ["coder", "layers.15", "neurons.15"]
    assert f"{FAILURE} (1)" in index.text  # the failures table's reasons, as written
    assert "cards/layers.15/index.html" in index.targets
    assert "cards/layers.15/page-00001.html" in index.targets

    explanations = read_explanations(edited_run / "explanations" / "layers.15.jsonl")
    first = Page((out / "cards" / "layers.15" / "page-00001.html").read_text())
    assert first.headings[0] == ("h1", "layers.15: latents 0–4")
    cards = [h.split(" density ")[0] for level, h in first.headings if level == "h3"]
    assert cards == [f"layers.15 · latent {i}" for i in range(5)]
    for i in range(1, 5):
        if explanations[i].text:
            assert fold(explanations[i].text) in first.text
    assert first.links[:3] == [
        ("../../index.html", "summary"),
        ("index.html", "all pages"),
        ("page-00002.html", "next →"),
    ]
    assert "page 1" in first.text and "previous" not in first.text

    coder = Page((out / "cards" / "layers.15" / "index.html").read_text())
    assert coder.tables[0] == [
        ["page", "first latent", "last latent", "cards"],
        ["page-00001.html", "0", "4", "5"],
        ["page-00002.html", "5", "9", "5"],
        ["page-00003.html", "10", "11", "2"],
    ]
    assert "12 latents" in coder.text and "1 explanation failed" in coder.text


HOSTILE = "<script>alert(\"x\")</script> & 'q' {{ title }} {% raw %}"


def test_text_is_shown_as_written_and_never_run(tmp_path):
    """Text from a run (a coder's label, an explanation, a failure, a token) that looks like HTML
    or like a template shows literally; none of it becomes markup."""
    ref = CoderRef(run=None, run_label="r", coder="c", label=HOSTILE)  # type: ignore[arg-type]
    pages = [report_html.PageInfo("page-00001.html", 0, 1, 2)]
    index = report_html.coder_index(report_html.CoderCards(ref, "cards/c", pages, {"latents": 2}))
    cell = report_html.ScoreCell("embedding", "auroc", False, float("nan"), HOSTILE)
    spans = report_html.token_spans([HOSTILE, "\n"], [1.0, 0.0], 2.0)
    cards = [
        report_html.Card(
            latent=0,
            meta="density 0.1",
            explanation=report_html.ExplanationView("ok", HOSTILE),
            scores=[cell],
            examples=[report_html.ExampleView(HOSTILE, spans)],
        )
    ]
    page = report_html.cards_page(ref, cards, 1, False)
    for source in (index, page):
        assert "<script" not in source and "{{" not in Page(source).text.replace(HOSTILE, "")
        assert HOSTILE in Page(source).text
    shown = Page(page).text
    assert f"{HOSTILE} · latent 0" in shown and f"embedding failed: {HOSTILE}" in shown
    assert f"{HOSTILE}{HOSTILE}⏎" in shown  # the example's label, then its tokens


def test_templates_fail_on_a_missing_value():
    with pytest.raises(jinja2.UndefinedError, match="pages"):
        report_html.render("coder_index.html", title="x", counts="1 latents")


def test_report_html_imports_nothing_from_report():
    """report imports report_html, never the reverse (but for type hints): no import cycle."""
    import ast

    tree = ast.parse(Path(report_html.__file__).read_text())
    hints = [
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    ]
    hinted = {id(n) for h in hints for n in ast.walk(h)}
    imported = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import) and id(n) not in hinted:
            imported += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and id(n) not in hinted:
            imported += [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names]
    found = [name for name in imported if name == "autointerp.report"]
    assert found == []


def test_main_metric_rules_are_defined_once():
    """report and report_html use the one definition of the main-metric rules (score.names)."""
    from autointerp.score import names

    for name in ("main_metric", "is_main", "main_values"):
        assert getattr(report_html, name) is getattr(names, name)
    assert main_metric("no such") == "auroc" and main_metric("simulation") == "correlation"


# ---------------------------------------------------------------- errors


def test_errors_name_the_problem(small_run, tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        build_report([tmp_path], tmp_path / "out")
    with pytest.raises(RunError, match="does not exist"):
        summary_text([tmp_path / "missing"])
    with pytest.raises(RunError, match=r"no coder nope .*available: layers\.15, neurons\.15"):
        summary_text([small_run], coders=["nope"])
    bare = copy_run(small_run, tmp_path / "bare", ignore=shutil.ignore_patterns("scores", "shards"))
    with pytest.raises(RunError, match="has no scores"):
        summary_text([bare])


def edit_manifest(run: Path, edit) -> None:
    path = run / "cache" / "cache.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_runs_that_cannot_be_compared(small_run, tmp_path):
    other = copy_run(small_run, tmp_path / "other", ignore=shutil.ignore_patterns("shards"))
    model = RunFolder(small_run).subject_model
    edit_manifest(other, lambda m: m["config"]["subject"].update(model="other/model-1B"))
    with pytest.raises(RunError, match="share no subject model") as err:
        build_report([small_run, other], tmp_path / "out")
    assert f"uses {model}" in str(err.value) and "other uses other/model-1B" in str(err.value)

    far = copy_run(small_run, tmp_path / "far", ignore=shutil.ignore_patterns("shards"))
    edit_manifest(far, lambda m: m.update(coders={"mlp.3": {"hookpoint": "layers.3.mlp"}}))
    with pytest.raises(RunError, match="nothing to compare"):
        summary_text([small_run, far])


# ---------------------------------------------------------------- similarity


def test_a_coder_matches_itself(small_run, tmp_path):
    result = coder_similarity(small_run, "layers.15", small_run, "layers.15", tmp_path / "self")
    n = sum(1 for e in RunFolder(small_run).explanations("layers.15").values() if e.text)
    assert result["matched"]["n"] == n == result["random"]["n"]
    assert result["matched"]["q10"] == pytest.approx(1.0, abs=1e-4)
    assert result["matched"]["mean"] > result["random"]["mean"]
    for p in result["top_pairs"]:
        assert p["explanation_a"] == p["explanation_b"]
    saved = json.loads((tmp_path / "self" / "similarity.json").read_text())
    assert saved["matched"] == result["matched"]
    assert (tmp_path / "self" / "similarity.png").stat().st_size > 1000


def test_sae_against_neurons(small_run, tmp_path):
    out = tmp_path / "sim.json"
    result = coder_similarity(small_run, "layers.15", small_run, "neurons.15", out, top=5)
    m = result["matched"]
    assert m["n"] == min(result["a"]["explained"], result["b"]["explained"]) > 0
    assert -1 <= m["q10"] <= m["q25"] <= m["median"] <= m["q75"] <= m["q90"] <= 1
    sims = [p["similarity"] for p in result["top_pairs"]]
    assert len(sims) == 5 and sims == sorted(sims, reverse=True)
    assert out.exists() and out.with_suffix(".png").exists()


def test_similarity_needs_explanations(small_run, tmp_path):
    run = copy_run(small_run, tmp_path / "run", ignore=shutil.ignore_patterns("shards"))
    (run / "explanations" / "neurons.15.jsonl").unlink()
    with pytest.raises(RunError, match="'neurons.15' .* has no successful explanations"):
        coder_similarity(run, "layers.15", run, "neurons.15", None)
    with pytest.raises(RunError, match="no coder 'nope'"):
        coder_similarity(run, "layers.15", run, "nope", None)


def test_runs_of_different_explainers_are_compared_as_explainers(small_run, tmp_path):
    """Two runs of the same cache whose explanations come from different explainer types: each
    coder is labelled with its explainer, and the comparison of coders says it compares them."""
    other = copy_run(small_run, tmp_path / "b" / "run", ignore=shutil.ignore_patterns("shards"))
    before = RunFolder(small_run).explainer("layers.15")
    assert before is not None and "mixed" not in before
    path = other / "explanations" / "layers.15.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for x in lines:
        x["prompt"] = "mixed@" + x["prompt"].split("@")[1]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert RunFolder(other).explainer("layers.15") == "mixed"

    a = analyse([small_run, other], coders=["layers.15"])
    labels = set(a.comparison["coders"].label)
    assert labels == {f"layers.15 [explainer: {before}]", "layers.15 [explainer: mixed]"}
    pair = a.comparison["pairs"].iloc[0]
    assert pair.contrast == f"explainer {before} vs mixed" or pair.contrast == (
        f"explainer mixed vs {before}"
    )
    # the same explainer in both runs: labels as before (run/name), nothing about explainers
    same = copy_run(small_run, tmp_path / "c" / "run", ignore=shutil.ignore_patterns("shards"))
    b = analyse([small_run, same], coders=["layers.15"])
    assert set(b.comparison["coders"].label) == {"run/layers.15", "run-2/layers.15"}
