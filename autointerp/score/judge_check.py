"""The judge check: can this run's LLM judge tell a right explanation from a wrong one?

Every scored run (`autointerp run`, `autointerp score`) also scores a seeded subset of each coder's
scored latents with a control explanation: another latent's explanation, on exactly the same
examples. The judge's discrimination is the AUROC of the subset's true-explanation metric values
against their control values (`check_metric`: detection's and fuzzing's AUROC from P(yes) where
logprobs gave one, else the scorer's main metric; ties count half), with a paired percentile
bootstrap interval over latents. Verdicts: `discriminates` (interval above 0.5), `at chance`
(interval holds 0.5), `worse than chance` (interval below 0.5), `too few latents` (fewer than 4
usable pairs); and, for a run folder,
`disabled` (`judge_check.enabled: false`) or `not made` (a folder scored before the check existed).
A judge that answers the same to everything has every value tied: AUROC 0.5, interval [0.5, 0.5].

Subset: the latents of a coder whose true score is ok, ranked by a seeded hash of (seed, coder,
latent); the n lowest, n = min(n_ok, max(min_latents, ceil(fraction * n_ok))), so the subset is
stable as a run grows. The control of latent i: with all latents ranked by that hash, the first one,
walking forward (and round) from position hash(seed, coder, i) mod n_ok, whose explanation differs
from i's (case and whitespace ignored); O(n log n) in the latents, also for 100k of them.

Files: RUN/judge_check/config.json (the settings last used), RUN/judge_check/<scorer>/<coder>.jsonl
(ControlScore lines: a LatentScore of latent i scored with latent `control_of`'s explanation; the
last line of a latent wins). A recorded control is kept while its control latent is still ok with a
different explanation, so a resumed or grown run scores only the checked latents without one (and,
with `--retry-failed`, those whose control failed); records and explanations are read for those
latents only. The verdict is computed from these files (`folder_verdicts`), by the run, the report
and the export alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from autointerp.aio import run_sync
from autointerp.config import _Strict
from autointerp.jsonl import ScoreHead, cut_torn_line, read_jsonl, scan
from autointerp.score import metrics
from autointerp.score.base import LatentItem, LatentScore, Scorer
from autointerp.types import Explanation, LatentId, SampledLatent

R = TypeVar("R", bound=BaseModel)

CHECKED = frozenset({"detection", "fuzzing", "simulation"})
"""The scorers whose score depends on the explanation through an LLM judge."""
MIN_PAIRS = 4
N_BOOT = 2000
FOLDER = "judge_check"
TRUSTED = "discriminates"


class JudgeCheckConfig(_Strict):
    enabled: bool = True
    """Score a subset of latents with another latent's explanation to check the judge."""
    fraction: float = Field(0.1, gt=0, le=1)
    """Share of each coder's scored latents checked."""
    min_latents: int = Field(8, ge=1)
    """At least this many latents checked (all of them when fewer are scored)."""
    seed: int = 0


class ControlScore(LatentScore):
    """A latent scored with another latent's explanation (`explanation` holds that text)."""

    control_of: int
    """The latent whose explanation was used."""


def _hash(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def plan(
    texts: dict[int, str],
    coder: str,
    cfg: JudgeCheckConfig,
    recorded: dict[int, int] | None = None,
) -> dict[int, int | None]:
    """The checked latents of a coder (`texts`: latent -> explanation of its ok true scores), each
    with its control latent (None when every other explanation has the same text). A control
    already `recorded` (latent -> control latent) is kept while that latent is still ok with a
    different text, so that a run that grows keeps, and does not score again, its controls.

    O(n log n): the texts are normalised once and the latents ranked once by a seeded hash; the
    control of latent i is the first latent, walking the ranking forward (and round) from position
    hash(seed, coder, i) mod n, whose text differs from i's."""
    norm = {i: _norm(t) for i, t in texts.items()}
    ranked = sorted(texts, key=lambda i: _hash(cfg.seed, coder, i))
    n_all = len(ranked)
    n = min(n_all, max(cfg.min_latents, math.ceil(cfg.fraction * n_all)))
    recorded = recorded or {}
    ids: dict[str, int] = {}
    kind = [ids.setdefault(norm[i], len(ids)) for i in ranked]  # text of each ranked position
    after = _next_other(kind)
    out: dict[int, int | None] = {}
    for i in sorted(ranked[:n]):
        j = recorded.get(i)
        if j is not None and j != i and j in norm and norm[j] != norm[i]:
            out[i] = j
            continue
        p = _hash(cfg.seed, coder, i, "control") % n_all
        q = p if kind[p] != ids[norm[i]] else after[p]
        out[i] = None if q is None else ranked[q]
    return out


def _next_other(kind: list[int]) -> list[int | None]:
    """For each position p of a cyclic sequence, the first position after p (going round) whose
    value differs from the value at p; None everywhere when all values are the same."""
    n = len(kind)
    out: list[int | None] = [None] * n
    nxt = None
    for q in range(2 * n - 1, -1, -1):  # twice round backwards: every position sees a change
        p, r = q % n, (q + 1) % n
        if kind[p] != kind[r]:
            nxt = r
        out[p] = nxt
    return out


def _ok_texts(true: Mapping[int, LatentScore | ScoreHead]) -> dict[int, str]:
    return {
        i: s.explanation
        for i, s in true.items()
        if s.status == "ok" and s.explanation and s.explanation.strip()
    }


def true_scores(path: Path) -> dict[int, ScoreHead]:
    """Latent -> its (last) score of a run's score file, without predictions: what the check
    reads of the true scores (status, explanation, metrics)."""
    return {h.latent.latent: h for _, h in scan(path, ScoreHead)}


def read_controls(path: Path) -> dict[int, ControlScore]:
    return {s.latent.latent: s for s in read_jsonl(path, ControlScore)}


def _recorded(controls: dict[int, ControlScore]) -> dict[int, int]:
    return {i: c.control_of for i, c in controls.items()}


Loader = Callable[[str, set[int]], tuple[dict[int, SampledLatent], dict[int, Explanation]]]
"""(coder, latents) -> the ok sample records and the explanations of those latents only."""

_LATENT = re.compile(r'"latent":\s*(\d+)')


def _read_some(
    path: Path, model: type[R], key: Callable[[R], LatentId], latents: set[int]
) -> Iterator[R]:
    """The records of a results file whose latent is in `latents`; the others are not parsed
    (a record's first `"latent":` is its own id's: its coder name, a JSON string, cannot hold
    one). An unreadable line is skipped, as `read_jsonl` does."""
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            m = _LATENT.search(line, 0, 400)
            if m is not None and int(m.group(1)) not in latents:
                continue
            try:
                rec = model.model_validate_json(line)
            except ValueError:
                continue
            if key(rec).latent in latents:
                yield rec


def load_from(sample_dir: Path, expl_dir: Path) -> Loader:
    """A loader reading, of a coder's sample and explanation files, only the latents asked for."""

    def load(coder: str, latents: set[int]):
        records = {
            r.id.latent: r
            for r in _read_some(
                sample_dir / f"{coder}.jsonl", SampledLatent, lambda r: r.id, latents
            )
            if r.status == "ok"
        }
        explanations = {
            e.latent.latent: e
            for e in _read_some(
                expl_dir / f"{coder}.jsonl", Explanation, lambda e: e.latent, latents
            )
        }
        return records, explanations

    return load


def check_coder(
    get_scorer: Callable[[], Scorer],
    coder: str,
    load: Loader,
    true: Mapping[int, LatentScore | ScoreHead],
    path: Path,
    cfg: JudgeCheckConfig,
    make_item: Callable[[SampledLatent, Explanation], LatentItem],
    step: int = 8,
    progress: bool = False,
    retry_failed: bool = False,
) -> dict[str, int]:
    """Control-score the checked latents of one coder and scorer that have no control in `path`
    yet (and, with `retry_failed`, those whose control failed), appended one group of `step`
    latents at a time; returns the LLM work done now. Only those latents' records and
    explanations are loaded (`load`), and the scorer built (`get_scorer`), when there is work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_torn_line(path)
    done = read_controls(path)
    texts = _ok_texts(true)
    wanted = plan(texts, coder, cfg, _recorded(done))
    kept = {i for i, j in wanted.items() if i in done and done[i].control_of == j}
    n_ok = sum(done[i].status == "ok" for i in kept)
    todo = [
        i
        for i, j in wanted.items()
        if j is not None and (i not in kept or (retry_failed and done[i].status == "failed"))
    ]
    usage = {"calls": 0, "tokens": 0, "failed": 0}
    if not todo or n_ok + len(todo) < MIN_PAIRS:
        return usage  # nothing to do, or too few latents for a verdict: nothing loaded
    records, explanations = load(coder, set(todo))
    todo = [i for i in todo if i in records and i in explanations]
    if not todo or n_ok + len(todo) < MIN_PAIRS:
        return usage  # spend no LLM call on a check that cannot give a verdict
    scorer = get_scorer()
    with (
        open(path, "a") as f,
        tqdm(
            total=len(todo), desc=f"judge check {scorer.name} {coder}", disable=not progress
        ) as bar,
    ):
        for s in range(0, len(todo), step):
            ids = todo[s : s + step]
            items = [
                make_item(
                    records[i],
                    explanations[i].model_copy(update={"text": texts[wanted[i]]}),  # type: ignore[index]
                )
                for i in ids
            ]
            scores = run_sync(scorer.score(items))
            for i, sc in zip(ids, scores, strict=True):
                rec = ControlScore(**sc.model_dump(), control_of=wanted[i])  # type: ignore[arg-type]
                f.write(rec.model_dump_json() + "\n")
                usage["calls"] += sc.calls
                usage["tokens"] += sc.prompt_tokens + sc.completion_tokens
                usage["failed"] += sc.status == "failed"
            f.flush()
            bar.update(len(ids))
    return usage


def run_checks(
    scores_dir: Path,
    check_dir: Path,
    cfg: JudgeCheckConfig,
    scorers: Sequence[str],
    coders: list[str],
    load: Loader,
    get_scorer: Callable[[str, str], Scorer],
    make_item: Callable[[SampledLatent, Explanation], LatentItem],
    step: int = 8,
    progress: bool = False,
    retry_failed: bool = False,
) -> dict[str, dict[str, int]]:
    """The judge check of every checked scorer and coder (`load`: see `Loader`, e.g. `load_from`);
    saves the settings first, so that a disabled check is on record. With `retry_failed`, controls
    that failed are scored again. Returns each scorer's LLM work done now (calls, tokens, failed)."""
    usage: dict[str, dict[str, int]] = {}
    if not CHECKED & set(scorers):
        return usage  # no LLM judge in this run: nothing to check or to record
    write_settings(check_dir, cfg)
    if not cfg.enabled:
        return usage
    for scorer in [s for s in scorers if s in CHECKED]:
        usage[scorer] = {"calls": 0, "tokens": 0, "failed": 0}
        for coder in coders:
            u = check_coder(
                partial(get_scorer, scorer, coder),
                coder,
                load,
                true_scores(scores_dir / scorer / f"{coder}.jsonl"),
                check_dir / scorer / f"{coder}.jsonl",
                cfg,
                make_item,
                step,
                progress,
                retry_failed,
            )
            for k in u:
                usage[scorer][k] += u[k]
    return usage


# ---------------------------------------------------------------- the verdict


def paired_auroc(
    true: list[float], control: list[float], n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """AUROC of true against control values (ties count half) and its 95% percentile interval from
    a paired bootstrap over latents (a resample keeps each latent's two values together)."""
    from scipy.stats import rankdata

    t, c = np.asarray(true, dtype=np.float64), np.asarray(control, dtype=np.float64)
    n = len(t)
    auc = metrics.auroc([True] * n + [False] * n, np.concatenate([t, c]))
    rng = np.random.default_rng([seed, n])
    boots = []
    step = max(1, 2_000_000 // (2 * n))
    for s in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - s), n))
        ranks = rankdata(np.concatenate([t[idx], c[idx]], axis=1), axis=1)
        boots.append((ranks[:, :n].sum(axis=1) - n * (n + 1) / 2) / (n * n))
    lo, hi = np.percentile(np.concatenate(boots), [2.5, 97.5])
    return float(auc), float(lo), float(hi)  # type: ignore[arg-type]


def check_metric(scorer: str, scores: Sequence[LatentScore | ScoreHead]) -> str:
    """The metric the check compares: for detection and fuzzing their AUROC from P(yes) when every
    score has one, else the main metric. Balanced accuracy thresholds P(yes) at 0.5, so a judge that
    ranks examples well but leans to one answer (a 1.5B judge answered no to nearly every example of
    planted latents, with per-latent AUROCs of 0.53-0.82) would read as at chance."""
    from autointerp.score.names import MAIN_METRIC

    if scorer in ("detection", "fuzzing") and scores:
        if all(s.metrics.get("auroc") is not None for s in scores):
            return "auroc"
    return MAIN_METRIC[scorer]


def verdict(
    true: Mapping[int, LatentScore | ScoreHead],
    controls: dict[int, ControlScore],
    scorer: str,
    coder: str,
    cfg: JudgeCheckConfig,
) -> dict:
    """The judge check of one scorer and coder from its true and control scores: auroc, ci_low,
    ci_high, n (usable pairs), verdict, calls and tokens (the control scoring's LLM work), failed
    (control scores that failed) and checked (latents in the subset)."""
    wanted = plan(_ok_texts(true), coder, cfg, _recorded(controls))
    mine = [c for i, c in controls.items() if i in wanted and c.control_of == wanted[i]]
    ok = [(true[c.latent.latent], c) for c in mine if c.status == "ok"]
    key = check_metric(scorer, [x for pair in ok for x in pair])
    pairs = [(a.metrics.get(key), b.metrics.get(key)) for a, b in ok]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    out: dict = {
        "metric": key,
        "checked": len(wanted),
        "n": len(pairs),
        "failed": sum(c.status == "failed" for c in mine),
        "calls": sum(c.calls for c in mine),
        "tokens": sum(c.prompt_tokens + c.completion_tokens for c in mine),
        "auroc": None,
        "ci_low": None,
        "ci_high": None,
    }
    if len(pairs) < MIN_PAIRS:
        return out | {"verdict": "too few latents"}
    a, b = zip(*pairs, strict=True)
    auc, lo, hi = paired_auroc(list(a), list(b), seed=cfg.seed)  # type: ignore[arg-type]
    word = TRUSTED if lo > 0.5 else "worse than chance" if hi < 0.5 else "at chance"
    return out | {"auroc": auc, "ci_low": lo, "ci_high": hi, "verdict": word}


def write_settings(folder: Path, cfg: JudgeCheckConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2) + "\n")


def folder_verdicts(
    scores_dir: Path, check_dir: Path, scorers: Sequence[str], coders: list[str]
) -> dict[str, dict[str, dict]]:
    """scorer -> coder -> verdict (see `verdict`) for every checked scorer among `scorers`, from
    the files of a run (`scores_dir` RUN/scores, `check_dir` RUN/judge_check). Without
    `check_dir/config.json` the verdict is `not made`; with the check disabled, `disabled`."""
    settings = check_dir / "config.json"
    cfg = JudgeCheckConfig.model_validate_json(settings.read_text()) if settings.exists() else None
    out: dict[str, dict[str, dict]] = {}
    for scorer in [s for s in scorers if s in CHECKED]:
        out[scorer] = {}
        for coder in coders:
            true_path = scores_dir / scorer / f"{coder}.jsonl"
            if not true_path.exists():
                continue
            if cfg is None or not cfg.enabled:
                out[scorer][coder] = {"verdict": "not made" if cfg is None else "disabled"}
                continue
            controls = read_controls(check_dir / scorer / f"{coder}.jsonl")
            out[scorer][coder] = verdict(true_scores(true_path), controls, scorer, coder, cfg)
    return out


def describe(scorer: str, v: dict | None) -> str:
    """One line saying what the judge check of a scorer (and coder) found."""
    word = (v or {}).get("verdict", "not made")
    if word == "not made":
        return f"no judge check in this run: its {scorer} scores are unchecked"
    if word == "disabled":
        return (
            f"no judge check was made (judge_check.enabled is false): its {scorer} scores are "
            "unchecked"
        )
    assert v is not None
    if word == "too few latents":
        return (
            f"judge check: too few latents ({v['n']} usable pairs, {MIN_PAIRS} needed): its "
            f"{scorer} scores are unchecked"
        )
    stats = f"judge check AUROC {v['auroc']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}], {v['n']} latents"
    if word == TRUSTED:
        return f"the judge discriminates ({stats})"
    how = "worse than chance" if word == "worse than chance" else "at chance"
    return (
        f"this judge cannot tell explanations apart in this run ({stats}; {how}): its {scorer} "
        "scores are not evidence"
    )


def trusted(v: dict | None) -> bool:
    return (v or {}).get("verdict") == TRUSTED
