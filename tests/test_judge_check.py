"""The judge check (a subset scored again with another latent's explanation) and per-latent
intervals: known values, scripted judges that must be flagged or trusted, edge cases, resume."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import numpy as np
import pytest

from autointerp.clients.base import Completion, GenParams, TokenLogprob
from autointerp.score import metrics, read_scores
from autointerp.score.base import LatentItem
from autointerp.score.classifier import ClassifierConfig, ClassifierScorer
from autointerp.score.judge_check import (
    ControlScore,
    JudgeCheckConfig,
    describe,
    folder_verdicts,
    paired_auroc,
    plan,
    read_controls,
    run_checks,
)
from autointerp.types import Example, Explanation, LatentId, SampledLatent

# ---------------------------------------------------------------- intervals


def test_wilson_matches_the_textbook_value():
    # Newcombe (1998), Statistics in Medicine 17:857, example 81/263: 0.2553 to 0.3662.
    lo, hi = metrics.wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert metrics.wilson(0, 10)[0] == 0.0 and metrics.wilson(0, 0) is None


def test_balanced_accuracy_interval_combines_the_two_wilson_intervals():
    tp, fn, tn, fp = 8, 2, 5, 5
    ba = (0.8 + 0.5) / 2
    lo, hi = metrics.balanced_accuracy_interval(tp, fn, tn, fp)
    a, b = metrics.wilson(tp, tp + fn), metrics.wilson(tn, tn + fp)
    assert lo < ba < hi
    # MOVER: the distances to the bounds add in quadrature (narrower than averaging the bounds)
    assert lo == pytest.approx(ba - math.hypot(0.8 - a[0], 0.5 - b[0]) / 2)
    assert hi == pytest.approx(ba + math.hypot(a[1] - 0.8, b[1] - 0.5) / 2)
    assert (a[0] + b[0]) / 2 <= lo and hi <= (a[1] + b[1]) / 2
    lo, hi = metrics.balanced_accuracy_interval(10, 0, 10, 0)  # perfect: not a point
    assert hi == 1.0 and 0.8 < lo < 1.0
    assert metrics.balanced_accuracy_interval(3, 0, 0, 0) is None  # no negatives


def test_delong_variance_agrees_with_a_bootstrap():
    rng = np.random.default_rng(0)
    y = np.array([True] * 40 + [False] * 60)
    s = np.where(y, rng.normal(1.0, 1.0, 100), rng.normal(0.0, 1.0, 100)).round(1)  # with ties
    auc, var = metrics.delong_variance(y, s)
    assert auc == pytest.approx(metrics.auroc(y, s))
    boots = []
    for _ in range(3000):  # stratified bootstrap: resample each class
        p = rng.choice(np.flatnonzero(y), 40)
        n = rng.choice(np.flatnonzero(~y), 60)
        boots.append(metrics.auroc(y[np.r_[p, n]], s[np.r_[p, n]]))
    assert math.sqrt(var) == pytest.approx(np.std(boots), rel=0.1)
    lo, hi = metrics.auroc_interval(y, s)
    assert lo < auc < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(var), rel=1e-3)
    assert metrics.auroc_interval([1, 1, 0], [0.9, 0.8, 0.95])[0] == 0.0  # clipped
    assert metrics.auroc_interval([1, 1], [0.1, 0.2]) is None


def test_correlation_and_mean_intervals():
    lo, hi = metrics.correlation_interval(0.5, 28)  # z = 0.5493 +- 1.96 / 5
    assert (lo, hi) == pytest.approx((math.tanh(0.5493 - 0.392), math.tanh(0.5493 + 0.392)), 1e-3)
    assert metrics.correlation_interval(0.5, 3) is None
    lo, hi = metrics.mean_interval([1, 2, 3, 4])  # 2.5 +- t(0.975, 3) * 1.291 / 2
    assert (lo, hi) == pytest.approx((2.5 - 3.182 * 0.6455, 2.5 + 3.182 * 0.6455), 1e-3)


def test_classifier_scores_carry_intervals_and_old_files_still_load(tmp_path):
    items = _items(2)
    [s, _] = asyncio.run(_detection(Judge("keyword")).score(items[:2]))
    ba, auc = s.metrics["balanced_accuracy"], s.metrics["auroc"]
    assert s.intervals["balanced_accuracy"][0] <= ba <= s.intervals["balanced_accuracy"][1]
    assert s.intervals["auroc"][0] <= auc <= s.intervals["auroc"][1]
    old = s.model_dump(mode="json")
    del old["intervals"]
    path = tmp_path / "old.jsonl"
    import json

    path.write_text(json.dumps(old) + "\n")
    assert read_scores(path)[0].intervals == {}


# ---------------------------------------------------------------- scripted judges

WORDS = ["apple", "river", "violin", "copper", "tiger", "pencil", "rocket", "garden", "silver"]
WORDS += ["winter", "marble", "falcon", "candle", "harbor", "meadow", "lantern", "pepper", "saddle"]
WORDS += ["thunder", "walnut", "cobalt", "ferry", "glacier", "hammer"]
FILLER = ["The old man walked slowly", "A quiet evening fell on town", "They spoke of many things"]


def _ex(text: str, seq: int, label: bool) -> Example:
    tokens = re.findall(r"\s*\S+", text)
    acts = [1.0 if label and t.strip() in WORDS else 0.0 for t in tokens]
    return Example(
        tokens=tokens,
        activations=acts,
        seq=seq,
        start=0,
        quantile=0 if label else None,
        kind="activating" if label else "random",
    )


def _items(n: int, same_text: bool = False) -> list[LatentItem]:
    """Latent i fires on the word WORDS[i]; its explanation names it."""
    out = []
    for i in range(n):
        lid = LatentId(coder="c", latent=i)
        rec = SampledLatent(
            id=lid, status="ok", density=0.1, max_activation=1.0, n_activating_windows=3
        )
        text = "the word apple" if same_text else f"the word {WORDS[i]}"
        expl = Explanation(latent=lid, text=text, raw=text, model="m", prompt="p")
        test = [_ex(f"{f} with a {WORDS[i]} here", 10 * i + k, True) for k, f in enumerate(FILLER)]
        neg = [_ex(f"{f} and nothing else", 10 * i + 5 + k, False) for k, f in enumerate(FILLER)]
        out.append(LatentItem(rec, expl, test, neg))
    return out


class Judge:
    """A scripted detection judge: `yes` answers yes to everything (as the packaged 135M model
    does); `keyword` says yes when the explanation's last word is in the example. A request fails
    when its explanation names `fail_word`, or names `fail_control` and no example holds it (a
    control prompt)."""

    model = "scripted"

    def __init__(self, mode: str, fail_word: str | None = None, fail_control: str | None = None):
        self.mode, self.fail_word, self.fail_control, self.calls = mode, fail_word, fail_control, 0

    async def complete(self, chats, params: GenParams):
        out = []
        for chat in chats:
            self.calls += 1
            user = chat[1]["content"]
            word = re.search(r"^Explanation: .* (\w+)$", user, re.M).group(1)
            texts = re.findall(r"^Example \d+: (.*)$", user, re.M)
            control = not any(word in t.split() for t in texts)
            if word == self.fail_word or (word == self.fail_control and control):
                out.append(Completion(text=None, error="HTTP 500 after 3 retries"))
                continue
            yes = [self.mode == "yes" or word in t.split() for t in texts]
            digits = ["1" if a else "0" for a in yes]
            lp = [
                TokenLogprob(token=d, logprob=math.log(0.9), top=[(d, math.log(0.9))])
                for d in digits
            ]
            if self.mode == "shy":  # always answers 0, but less surely where the word is
                digits = ["0"] * len(texts)
                lp = [
                    TokenLogprob(
                        token="0",
                        logprob=math.log(1 - q),
                        top=[("0", math.log(1 - q)), ("1", math.log(q))],
                    )
                    for q in (0.4 if a else 0.1 for a in yes)
                ]
            text = "[" + ",".join(digits) + "]"
            out.append(Completion(text=text, logprobs=lp, prompt_tokens=50, completion_tokens=5))
        return out


def _detection(judge: Judge) -> ClassifierScorer:
    return ClassifierScorer("detection", judge, ClassifierConfig(examples_per_prompt=6))


def _true_scores(tmp_path: Path, judge: Judge, items: list[LatentItem]) -> Path:
    path = tmp_path / "scores" / "detection" / "c.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for s in asyncio.run(_detection(judge).score(items)):
            f.write(s.model_dump_json() + "\n")
    return path


def _check(
    tmp_path: Path,
    judge: Judge,
    items: list[LatentItem],
    cfg: JudgeCheckConfig,
    retry_failed: bool = False,
    drop: frozenset[int] = frozenset(),
    loaded: list[set[int]] | None = None,
):
    """The true scores and the judge check of `items` (coder `c`); the loader serves every item
    but those in `drop` and notes in `loaded` the latents asked for."""
    true_path = _true_scores(tmp_path, judge, items)
    by_id = {it.record.id.latent: it for it in items}

    def load(coder: str, latents: set[int]):
        assert coder == "c"
        if loaded is not None:
            loaded.append(set(latents))
        keep = [i for i in latents if i in by_id and i not in drop]
        return {i: by_id[i].record for i in keep}, {i: by_id[i].explanation for i in keep}

    usage = run_checks(
        tmp_path / "scores",
        tmp_path / "judge_check",
        cfg,
        ["detection", "embedding"],
        ["c"],
        load,
        lambda scorer, coder: _detection(judge),
        lambda rec, expl: LatentItem(
            rec, expl, by_id[rec.id.latent].test, by_id[rec.id.latent].negatives
        ),
        step=3,
        retry_failed=retry_failed,
    )
    v = folder_verdicts(
        tmp_path / "scores", tmp_path / "judge_check", ["detection", "embedding"], ["c"]
    )
    assert set(v) == {"detection"}  # embedding is not an LLM judge: not checked
    return usage, v["detection"]["c"], read_scores(true_path)


def test_a_judge_that_says_yes_to_everything_is_at_chance(tmp_path):
    usage, v, _ = _check(tmp_path, Judge("yes"), _items(10), JudgeCheckConfig())
    assert v["verdict"] == "at chance" and v["n"] == 8 and v["checked"] == 8
    assert (v["auroc"], v["ci_low"], v["ci_high"]) == (0.5, 0.5, 0.5)
    assert usage["detection"]["calls"] == 8 == v["calls"]  # one prompt of 6 examples per latent
    text = describe("detection", v)
    assert text == (
        "this judge cannot tell explanations apart in this run (judge check AUROC 0.50 "
        "[0.50, 0.50], 8 latents; at chance): its detection scores are not evidence"
    )


def test_a_judge_that_reads_the_explanation_discriminates(tmp_path):
    judge = Judge("keyword")
    usage, v, true = _check(tmp_path, judge, _items(12), JudgeCheckConfig(fraction=0.5))
    assert v["verdict"] == "discriminates" and v["n"] == 8  # max(8, ceil(0.5 * 12)) = 8
    assert v["auroc"] == 1.0 and v["ci_low"] > 0.5
    controls = read_controls(tmp_path / "judge_check" / "detection" / "c.jsonl")
    for i, c in controls.items():
        assert c.control_of != i and c.explanation == true[c.control_of].explanation
        assert [p.seq for p in c.predictions] == [
            p.seq for p in true[i].predictions
        ]  # same examples
        assert c.metrics["balanced_accuracy"] == 0.5 and true[i].metrics["balanced_accuracy"] == 1.0
    assert describe("detection", v).startswith("the judge discriminates (judge check AUROC 1.00")
    # resume: a second pass makes no new control call
    before = judge.calls
    _, again, _ = _check(tmp_path, judge, _items(12), JudgeCheckConfig(fraction=0.5))
    assert judge.calls - before == 12  # the true scores of `_check` only
    assert again == v


def test_a_judge_leaning_to_no_is_judged_by_how_it_ranks_not_by_its_answers(tmp_path):
    """Its answers are all no (balanced accuracy 0.5 for every explanation), but its P(yes) ranks
    the examples holding the explanation's word first: the check compares per-latent AUROCs, and
    the judge discriminates (a 1.5B judge behaved like this on planted latents)."""
    usage, v, true = _check(tmp_path, Judge("shy"), _items(12), JudgeCheckConfig(fraction=0.5))
    assert {s.metrics["balanced_accuracy"] for s in true.values()} == {0.5}
    assert v["metric"] == "auroc" and v["verdict"] == "discriminates" and v["auroc"] == 1.0


def test_the_subset_is_seeded_and_stable_as_a_run_grows():
    texts = {i: f"the word {WORDS[i]}" for i in range(12)}
    cfg = JudgeCheckConfig(fraction=0.25, min_latents=2)
    small = plan({i: texts[i] for i in range(8)}, "c", cfg)
    big = plan(texts, "c", cfg)
    assert len(small) == 2 and len(big) == 3  # ceil(0.25 * 12)
    assert (
        plan(texts, "c", cfg) == big and plan(texts, "c", cfg.model_copy(update={"seed": 1})) != big
    )
    assert all(j != i and j in texts for i, j in big.items())
    # with the same subset size, latents added to the run only displace, never reshuffle
    cfg = JudgeCheckConfig(fraction=0.1, min_latents=2)
    small = plan({i: texts[i] for i in range(8)}, "c", cfg)
    big = plan(texts, "c", cfg)
    assert len(small) == len(big) == 2 and set(big) & set(range(8)) <= set(small)


def test_few_latents_identical_texts_and_one_latent(tmp_path):
    usage, v, _ = _check(tmp_path, Judge("keyword"), _items(3), JudgeCheckConfig())
    # all 3 would be checked, but 3 pairs can give no verdict: no LLM call is spent on them
    assert v["checked"] == 3 and v["n"] == 0 and v["verdict"] == "too few latents"
    assert usage["detection"]["calls"] == 0
    assert "too few latents (0 usable pairs, 4 needed)" in describe("detection", v)
    usage, v, _ = _check(tmp_path / "four", Judge("keyword"), _items(4), JudgeCheckConfig())
    assert v["n"] == 4 and v["verdict"] == "discriminates" and usage["detection"]["calls"] == 4
    one = tmp_path / "one"
    usage, v, _ = _check(one, Judge("keyword"), _items(1), JudgeCheckConfig())
    assert v["verdict"] == "too few latents" and v["n"] == 0 and usage["detection"]["calls"] == 0
    same = tmp_path / "same"
    usage, v, _ = _check(same, Judge("keyword"), _items(6, same_text=True), JudgeCheckConfig())
    assert v["verdict"] == "too few latents" and v["n"] == 0 and usage["detection"]["calls"] == 0


def test_failed_controls_and_failed_true_scores_are_left_out(tmp_path):
    # latent 3's own score fails; every control with latent 1's explanation fails
    judge = Judge("keyword", fail_word=WORDS[3], fail_control=WORDS[1])
    usage, v, true = _check(tmp_path, judge, _items(12), JudgeCheckConfig(min_latents=11))
    assert true[3].status == "failed" and v["checked"] == 11
    controls = read_controls(tmp_path / "judge_check" / "detection" / "c.jsonl")
    assert 3 not in controls and all(c.control_of != 3 for c in controls.values())
    failed = [c for c in controls.values() if c.status == "failed"]
    assert failed and all(c.control_of == 1 for c in failed)
    assert v["failed"] == len(failed) and usage["detection"]["failed"] == len(failed)
    assert v["n"] == v["checked"] - len(failed)


def test_a_disabled_check_and_a_folder_without_one_say_so(tmp_path):
    _true_scores(tmp_path, Judge("yes"), _items(4))
    v = folder_verdicts(tmp_path / "scores", tmp_path / "judge_check", ["detection"], ["c"])
    assert v["detection"]["c"]["verdict"] == "not made"
    assert describe("detection", v["detection"]["c"]).startswith("no judge check in this run")
    run_checks(
        tmp_path / "scores",
        tmp_path / "judge_check",
        JudgeCheckConfig(enabled=False),
        ["detection"],
        ["c"],
        None,
        None,
        None,  # fmt: skip
    )
    v = folder_verdicts(tmp_path / "scores", tmp_path / "judge_check", ["detection"], ["c"])
    assert v["detection"]["c"]["verdict"] == "disabled"
    assert "judge_check.enabled is false" in describe("detection", v["detection"]["c"])


def test_the_plan_of_100k_latents_takes_seconds_and_every_control_differs():
    """Item: the plan was O(checked x latents) in hashing and normalising (~35 min for 100k)."""
    texts = {i: f"Latent {i % 997}" if i % 2 else f"  latent   {i % 997} " for i in range(100_000)}
    cfg = JudgeCheckConfig(seed=3)
    p = plan(texts, "c", cfg)
    assert len(p) == 10_000 and plan(texts, "c", cfg) == p
    norm = {i: " ".join(t.lower().split()) for i, t in texts.items()}
    assert all(j is not None and j != i and norm[j] != norm[i] for i, j in p.items())
    assert len(set(p.values())) > 5_000  # controls spread over the run, not one popular latent
    # all the same text but one: that one is every control, and its own control is another
    same = {i: "the same" for i in range(20)} | {7: "other"}
    p = plan(same, "c", JudgeCheckConfig(min_latents=20))
    assert p[7] not in (None, 7) and all(j == 7 for i, j in p.items() if i != 7)


def test_only_the_checked_latents_are_loaded_and_nothing_when_nothing_is_to_do(tmp_path):
    loaded: list[set[int]] = []
    judge = Judge("keyword")
    _check(tmp_path, judge, _items(24), JudgeCheckConfig(), loaded=loaded)
    controls = read_controls(tmp_path / "judge_check" / "detection" / "c.jsonl")
    assert loaded == [set(controls)] and len(controls) == 8  # the 8 checked of 24, once
    loaded.clear()
    usage, v, _ = _check(tmp_path, judge, _items(24), JudgeCheckConfig(), loaded=loaded)
    assert loaded == [] and usage["detection"]["calls"] == 0 and v["n"] == 8


def test_load_from_reads_only_the_latents_asked_for(tmp_path):
    from autointerp.score.judge_check import load_from

    items = _items(6)
    (tmp_path / "sample").mkdir()
    (tmp_path / "explanations").mkdir()
    (tmp_path / "sample" / "c.jsonl").write_text(
        "".join(it.record.model_dump_json() + "\n" for it in items)
    )
    (tmp_path / "explanations" / "c.jsonl").write_text(
        "".join(it.explanation.model_dump_json() + "\n" for it in items) + '{"torn'
    )
    records, explanations = load_from(tmp_path / "sample", tmp_path / "explanations")("c", {1, 4})
    assert set(records) == set(explanations) == {1, 4}
    assert records[4] == items[4].record and explanations[1] == items[1].explanation


def test_a_grown_run_keeps_its_controls_and_counts_only_the_controls_it_uses(tmp_path):
    """12 latents, then 24: the checked latents already controlled are not scored again (their
    control is kept), and the verdict's calls count only the controls it uses."""
    judge = Judge("keyword")
    path = tmp_path / "judge_check" / "detection" / "c.jsonl"
    _check(tmp_path, judge, _items(12), JudgeCheckConfig())
    first = read_controls(path)
    n_lines = len(path.read_text().splitlines())
    usage, v, _ = _check(tmp_path, judge, _items(24), JudgeCheckConfig())
    lines = path.read_text().splitlines()
    new = {ControlScore.model_validate_json(x).latent.latent for x in lines[n_lines:]}
    now = read_controls(path)
    checked = set(plan({i: f"the word {WORDS[i]}" for i in range(24)}, "c", JudgeCheckConfig()))
    kept = checked & set(first)
    assert kept and not new & kept  # not re-scored
    assert all(now[i].control_of == first[i].control_of for i in kept)
    assert new == checked - kept and usage["detection"]["calls"] == len(new)
    assert v["n"] == v["checked"] == 8 and v["calls"] == 8  # one call per used control
    assert set(now) - checked  # the file still holds controls of latents no longer checked


def test_stale_controls_do_not_count_in_the_verdicts_llm_work(tmp_path):
    _, v, true = _check(tmp_path, Judge("keyword"), _items(12), JudgeCheckConfig())
    path = tmp_path / "judge_check" / "detection" / "c.jsonl"
    stale = [i for i in range(12) if i not in read_controls(path)][0]  # not a checked latent
    c = ControlScore(**true[stale].model_dump(), control_of=(stale + 1) % 12)
    with open(path, "a") as f:
        f.write(c.model_copy(update={"calls": 100, "prompt_tokens": 1000}).model_dump_json())
        f.write("\n")
    again = folder_verdicts(tmp_path / "scores", tmp_path / "judge_check", ["detection"], ["c"])
    assert again["detection"]["c"] == v and v["calls"] == 8


def test_failed_controls_are_scored_again_only_with_retry_failed(tmp_path):
    cfg = JudgeCheckConfig(min_latents=11)
    path = tmp_path / "judge_check" / "detection" / "c.jsonl"
    _, v, _ = _check(tmp_path, Judge("keyword", fail_control=WORDS[1]), _items(12), cfg)
    failed = {i for i, c in read_controls(path).items() if c.status == "failed"}
    assert failed and v["failed"] == len(failed)
    usage, again, _ = _check(tmp_path, Judge("keyword"), _items(12), cfg)
    assert usage["detection"]["calls"] == 0 and again["failed"] == len(failed)
    usage, again, _ = _check(tmp_path, Judge("keyword"), _items(12), cfg, retry_failed=True)
    assert usage["detection"]["calls"] == len(failed) and usage["detection"]["failed"] == 0
    now = read_controls(path)  # appended: the last line of a latent wins
    assert all(now[i].status == "ok" and now[i].control_of == 1 for i in failed)
    assert len(path.read_text().splitlines()) == 11 + len(failed)
    assert again["failed"] == 0 and again["n"] == 11


def test_no_call_when_fewer_than_a_verdicts_latents_have_records(tmp_path):
    # 4 checked latents with a control, but one has no sample record: 3 pairs, no verdict
    usage, v, _ = _check(
        tmp_path, Judge("keyword"), _items(4), JudgeCheckConfig(), drop=frozenset({2})
    )
    assert usage["detection"]["calls"] == 0 and v["verdict"] == "too few latents"
    assert read_controls(tmp_path / "judge_check" / "detection" / "c.jsonl") == {}


def test_paired_bootstrap_interval():
    auc, lo, hi = paired_auroc([0.9, 0.8, 0.7, 0.6, 0.55, 0.4], [0.5, 0.6, 0.5, 0.7, 0.5, 0.5])
    assert auc == pytest.approx(
        metrics.auroc(
            [1] * 6 + [0] * 6, [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.5, 0.6, 0.5, 0.7, 0.5, 0.5]
        )
    )
    assert lo <= auc <= hi and hi - lo > 0.1
    assert paired_auroc([0.5] * 5, [0.5] * 5) == (0.5, 0.5, 0.5)
    assert paired_auroc([1.0] * 5, [0.5] * 5) == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- a real run


@pytest.mark.slow
def test_a_real_run_reports_its_judge_check(tmp_path, small_run):
    """`autointerp run` with the packaged 135M model as explainer and detection judge, 4 latents:
    the verdict is in summary.json, the printed output, the report and the export; a second run
    makes no new control call."""
    import json
    import shutil

    from typer.testing import CliRunner

    from autointerp.cli import app

    out = tmp_path / "run"
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "corpus: {n_tokens: 16384}\n"
        "coders:\n  - {hookpoint: layers.15}\n"
        "  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}\n"
        "only_coders: [layers.15]\nmax_latents: 4\nchunk_latents: 4\n"
        "client: {dtype: float32}\n"
        "sample: {n_train: 10, n_test: 3, n_random_negatives: 2, n_similar_negatives: 1}\n"
        "score: {scorers: [detection], detection: {examples_per_prompt: 1},"
        " judge_check: {min_latents: 4}}\n"
    )
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    v = summary["judge_check"]["detection"]["layers.15"]
    assert v["verdict"] in {"discriminates", "at chance", "worse than chance", "too few latents"}
    assert v["calls"] > 0 and summary["judge_check_llm"]["detection"]["calls"] == v["calls"]
    assert summary["scorers"]["detection"]["judge_check"] == {"layers.15": v["verdict"]}
    text = describe("detection", v)
    assert f"layers.15 detection: {text}" in r.output
    controls = read_controls(out / "judge_check" / "detection" / "layers.15.jsonl")
    assert controls and all(c.control_of != i for i, c in controls.items())
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert f"layers.15: {text}" in r.output
    page = (out / "report" / "index.html").read_text()
    assert "judge check" in page and (v["verdict"] == "discriminates" or 'class="warn"' in page)
    r = CliRunner().invoke(app, ["export", str(out)])
    assert r.exit_code == 0, r.output
    exported = json.loads((out / "export" / "judge_check.json").read_text())
    assert exported["detection"]["layers.15"]["text"] == text
    assert "## Judge check" in (out / "export" / "README.md").read_text()
    # per-latent intervals: next to the main metric in the export, and on the latent cards
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "export" / "explanations.parquet").to_pylist()
    scored = [x for x in rows if x["detection"] is not None]
    assert scored and all(
        x["detection_ci_low"] <= x["detection"] <= x["detection_ci_high"] for x in scored
    )
    cards = "".join(p.read_text() for p in (out / "report").rglob("page-*.html"))
    assert re.search(r"detection balanced_accuracy <b>[0-9.]+</b> \[[0-9.]+, [0-9.]+\]", cards)
    # resume: nothing new to score, no new control call
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (
        json.loads((out / "summary.json").read_text())["judge_check_llm"]["detection"]["calls"] == 0
    )


def test_auroc_is_the_mann_whitney_u_with_ties_counted_half():
    from scipy.stats import mannwhitneyu

    from autointerp.score.metrics import auroc

    rng = np.random.default_rng(3)
    for n_pos, n_neg in ((1, 1), (3, 50), (400, 20_000)):
        scores = rng.integers(0, 5, n_pos + n_neg).astype(float)  # many ties
        labels = [True] * n_pos + [False] * n_neg
        u = mannwhitneyu(scores[:n_pos], scores[n_pos:]).statistic
        assert auroc(labels, scores) == pytest.approx(u / (n_pos * n_neg))
    assert auroc([True, False], [0.3, 0.3]) == 0.5
    assert auroc([True, True], [0.1, 0.2]) is None  # one class only: undefined, not 0


def test_coder_intervals_are_bca_and_percentile_above_its_limit(monkeypatch):
    """The report's intervals are scipy's BCa intervals (wider than percentile ones on a dozen
    skewed values), percentile ones above `BCA_MAX`; data without spread give the point."""
    import zlib

    from scipy.stats import bootstrap

    from autointerp import report

    x = np.random.default_rng(5).exponential(size=12)
    rng = np.random.default_rng([0, zlib.crc32(b"k")])
    bca = bootstrap((x,), np.mean, n_resamples=1000, method="BCa", rng=rng).confidence_interval
    assert report.mean_interval((x,), 1000, 0, "k") == pytest.approx((bca.low, bca.high))
    rng = np.random.default_rng([0, zlib.crc32(b"k")])
    pct = bootstrap((x,), np.mean, n_resamples=1000, method="percentile", rng=rng)
    assert bca.high - bca.low != pytest.approx(
        pct.confidence_interval.high - pct.confidence_interval.low
    )
    monkeypatch.setattr(report, "BCA_MAX", 10)
    ci = pct.confidence_interval
    assert report.mean_interval((x,), 1000, 0, "k") == pytest.approx((ci.low, ci.high))
    assert report.mean_interval((np.full(4, 0.7),), 1000, 0) == pytest.approx((0.7, 0.7))
    lo, hi = report.mean_interval((x, x + 1), 1000, 0, "pair")
    assert lo < -1 < hi  # a difference of means, resampled independently
