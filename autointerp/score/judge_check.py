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
stable as a run grows. The control of latent i: among the other latents whose explanation differs
(case and whitespace ignored), the one with the lowest seeded hash of (seed, coder, i, j).

Files: RUN/judge_check/config.json (the settings last used), RUN/judge_check/<scorer>/<coder>.jsonl
(ControlScore lines: a LatentScore of latent i scored with latent `control_of`'s explanation). A
latent already control-scored with its current control is not scored again (resume). The verdict
is computed from these files (`folder_verdicts`), by the run, the report and the export alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from autointerp.config import _Strict
from autointerp.jsonl import cut_torn_line, read_jsonl
from autointerp.score import metrics
from autointerp.score.base import LatentItem, LatentScore, Scorer
from autointerp.types import Explanation, SampledLatent

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


def plan(texts: dict[int, str], coder: str, cfg: JudgeCheckConfig) -> dict[int, int | None]:
    """The checked latents of a coder (`texts`: latent -> explanation of its ok true scores), each
    with its control latent (None when every other explanation has the same text)."""
    n_all = len(texts)
    n = min(n_all, max(cfg.min_latents, math.ceil(cfg.fraction * n_all)))
    chosen = sorted(texts, key=lambda i: _hash(cfg.seed, coder, i))[:n]
    out: dict[int, int | None] = {}
    for i in sorted(chosen):
        others = [j for j in texts if j != i and _norm(texts[j]) != _norm(texts[i])]
        out[i] = min(others, key=lambda j: _hash(cfg.seed, coder, i, j)) if others else None
    return out


def _ok_texts(true: dict[int, LatentScore]) -> dict[int, str]:
    return {
        i: s.explanation
        for i, s in true.items()
        if s.status == "ok" and s.explanation and s.explanation.strip()
    }


def read_controls(path: Path) -> dict[int, ControlScore]:
    return {s.latent.latent: s for s in read_jsonl(path, ControlScore)}


def check_coder(
    get_scorer: Callable[[], Scorer],
    coder: str,
    records: dict[int, SampledLatent],
    explanations: dict[int, Explanation],
    true: dict[int, LatentScore],
    path: Path,
    cfg: JudgeCheckConfig,
    make_item: Callable[[SampledLatent, Explanation], LatentItem],
    step: int = 8,
    progress: bool = False,
) -> dict[str, int]:
    """Control-score the checked latents of one coder and scorer that are not yet in `path`
    (appended one group of `step` latents at a time); returns the LLM work done now. The scorer
    is built (`get_scorer`) only when there is work."""
    todo_plan = plan(_ok_texts(true), coder, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_torn_line(path)
    done = read_controls(path)
    texts = _ok_texts(true)
    todo = [
        i
        for i, j in todo_plan.items()
        if j is not None
        and i in records
        and i in explanations
        and (i not in done or done[i].control_of != j)
    ]
    usage = {"calls": 0, "tokens": 0, "failed": 0}
    if not todo or sum(j is not None for j in todo_plan.values()) < MIN_PAIRS:
        return usage  # nothing to do, or too few latents for a verdict: spend no LLM call
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
                    explanations[i].model_copy(update={"text": texts[todo_plan[i]]}),  # type: ignore[index]
                )
                for i in ids
            ]
            scores = asyncio.run(scorer.score(items))
            for i, sc in zip(ids, scores, strict=True):
                rec = ControlScore(**sc.model_dump(), control_of=todo_plan[i])  # type: ignore[arg-type]
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
    scorers: list[str],
    inputs: dict[str, tuple[dict[int, SampledLatent], dict[int, Explanation]]],
    get_scorer: Callable[[str, str], Scorer],
    make_item: Callable[[SampledLatent, Explanation], LatentItem],
    step: int = 8,
    progress: bool = False,
) -> dict[str, dict[str, int]]:
    """The judge check of every checked scorer and coder (`inputs`: coder -> (records,
    explanations)); saves the settings first, so that a disabled check is on record. Returns each
    scorer's LLM work done now (calls, tokens, failed)."""
    from autointerp.score import read_scores

    usage: dict[str, dict[str, int]] = {}
    if not CHECKED & set(scorers):
        return usage  # no LLM judge in this run: nothing to check or to record
    write_settings(check_dir, cfg)
    if not cfg.enabled:
        return usage
    for scorer in [s for s in scorers if s in CHECKED]:
        usage[scorer] = {"calls": 0, "tokens": 0, "failed": 0}
        for coder, (records, explanations) in inputs.items():
            u = check_coder(
                lambda s=scorer, c=coder: get_scorer(s, c),
                coder,
                records,
                explanations,
                read_scores(scores_dir / scorer / f"{coder}.jsonl"),
                check_dir / scorer / f"{coder}.jsonl",
                cfg,
                make_item,
                step,
                progress,
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


def check_metric(scorer: str, scores: list[LatentScore]) -> str:
    """The metric the check compares: for detection and fuzzing their AUROC from P(yes) when every
    score has one, else the main metric. Balanced accuracy thresholds P(yes) at 0.5, so a judge that
    ranks examples well but leans to one answer (a 1.5B judge answered no to nearly every example of
    planted latents, with per-latent AUROCs of 0.53-0.82) would read as at chance."""
    from autointerp.score import MAIN_METRIC

    if scorer in ("detection", "fuzzing") and scores:
        if all(s.metrics.get("auroc") is not None for s in scores):
            return "auroc"
    return MAIN_METRIC[scorer]


def verdict(
    true: dict[int, LatentScore],
    controls: dict[int, ControlScore],
    scorer: str,
    coder: str,
    cfg: JudgeCheckConfig,
) -> dict:
    """The judge check of one scorer and coder from its true and control scores: auroc, ci_low,
    ci_high, n (usable pairs), verdict, calls and tokens (the control scoring's LLM work), failed
    (control scores that failed) and checked (latents in the subset)."""
    wanted = plan(_ok_texts(true), coder, cfg)
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
        "calls": sum(c.calls for c in controls.values()),
        "tokens": sum(c.prompt_tokens + c.completion_tokens for c in controls.values()),
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
    scores_dir: Path, check_dir: Path, scorers: list[str], coders: list[str]
) -> dict[str, dict[str, dict]]:
    """scorer -> coder -> verdict (see `verdict`) for every checked scorer among `scorers`, from
    the files of a run (`scores_dir` RUN/scores, `check_dir` RUN/judge_check). Without
    `check_dir/config.json` the verdict is `not made`; with the check disabled, `disabled`."""
    from autointerp.score import read_scores

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
            out[scorer][coder] = verdict(read_scores(true_path), controls, scorer, coder, cfg)
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
