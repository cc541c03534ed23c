"""What every scorer shares: its input (a latent's explanation and rendered examples), its output
records, and the turn from per-example predictions into a latent's score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from autointerp.score import metrics
from autointerp.types import Example, Explanation, LatentId, SampledLatent, _Record


@dataclass(frozen=True)
class LatentItem:
    """One latent ready to score: its sample record, explanation and rendered examples."""

    record: SampledLatent
    explanation: Explanation
    test: list[Example]
    negatives: list[Example]
    train: list[Example] = field(default_factory=list)
    """The explainer's examples, rendered only for scorers that ask for them (`needs_train`)."""

    @property
    def text(self) -> str:
        return self.explanation.text or ""

    def labelled(self) -> list[tuple[Example, bool]]:
        return [(e, True) for e in self.test] + [(e, False) for e in self.negatives]


class Prediction(_Record):
    """A scorer's verdict on one example. `error` set means no verdict (the call or parse failed)."""

    seq: int
    start: int
    quantile: int | None = None
    kind: str
    """activating | random | similar | wrong (fuzzing: activating text, wrong tokens marked) |
    clean | steered (intervention)."""
    label: bool
    """True when the example should count as matching the explanation."""
    prediction: bool | None = None
    probability: float | None = None
    """P(yes) read from logprobs (classifiers)."""
    value: float | None = None
    """The continuous score (surprisal drop, similarity)."""
    simulated: list[float] | None = None
    """Simulation: the predicted activation (0-10) of each token."""
    error: str | None = None


class LatentScore(_Record):
    """One scorer's result for one latent (one JSON line of `scores/<scorer>/<coder>.jsonl`)."""

    latent: LatentId
    scorer: str
    status: Literal["ok", "failed"]
    error: str | None = None
    explanation: str | None = None
    metrics: dict[str, float | int | None] = {}
    per_group: dict[str, dict[str, float | int | None]] = {}
    """Per activation quantile (`q0` weakest .. `q9` strongest) and per kind of negative."""
    intervals: dict[str, tuple[float, float]] = {}
    """95% intervals of the main metric (and AUROC where present), by metric name: balanced
    accuracy Wilson + MOVER, AUROC DeLong, correlation Fisher z, a mean of drops Student t
    (`autointerp.score.metrics`). Empty in score files written before intervals existed."""
    notes: list[str] = []
    prompt: str | None = None
    """The scorer's prompt, `name@hash` of its templates and options (LLM scorers; None for the
    others), as an explanation's `prompt`."""
    predictions: list[Prediction] = []
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Scorer(Protocol):
    name: str

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]: ...


def new_usage() -> dict[str, int]:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}


def tally(usage: dict[str, int], c) -> None:
    """Add one completion's LLM work to a latent's usage (answers from the response cache cost no
    call)."""
    usage["calls"] += 0 if c.from_cache else 1
    usage["prompt_tokens"] += c.prompt_tokens
    usage["completion_tokens"] += c.completion_tokens


def group(p: Prediction) -> str:
    return f"q{p.quantile}" if p.label and p.quantile is not None else p.kind


def failed(latent: LatentId, scorer: str, error: str, **kw) -> LatentScore:
    return LatentScore(latent=latent, scorer=scorer, status="failed", error=error, **kw)


def classifier_score(
    item: LatentItem,
    scorer: str,
    preds: list[Prediction],
    notes: list[str],
    prompt: str | None = None,
    calibrated: bool = False,
    **usage,
) -> LatentScore:
    """A classifier's latent score; failed when no example got an answer. Answers, balanced
    accuracy and the per-group `mean` come from the explanation's answers (P(yes)); a `calibrated`
    judge ranks examples by `value` (change in log-odds of yes) instead, for the AUROC and the
    per-group `auroc` and `mean_delta_logodds`, over the examples that have one."""
    answered = [p for p in preds if p.error is None]
    common = {
        "explanation": item.text,
        "predictions": preds,
        "notes": notes,
        "prompt": prompt,
        **usage,
    }
    if not answered:
        errors = sorted({p.error for p in preds if p.error})
        return failed(
            item.record.id, scorer, "no answer could be used: " + "; ".join(errors), **common
        )
    labels = [p.label for p in answered]
    said = [bool(p.prediction) for p in answered]
    probs = [p.probability for p in answered]
    ranked = [p.value for p in answered] if calibrated else probs
    m = metrics.classification(labels, said, probs)
    m["n_failed"] = len(preds) - len(answered)
    intervals = metrics.classification_intervals(labels, said, probs)
    if calibrated:  # the AUROC over the answers that have a calibrated value
        y = [a for a, q in zip(labels, ranked, strict=True) if q is not None]
        v = [q for q in ranked if q is not None]
        m["auroc"] = metrics.auroc(y, v) if v else None
        intervals.pop("auroc", None)
        auc = metrics.auroc_interval(y, v) if m["auroc"] is not None else None
        if auc is not None:
            intervals["auroc"] = auc
    per = metrics.by_group(
        labels,
        [np.nan if q is None else q for q in ranked],
        [group(p) for p in answered],
        [p.prediction == p.label for p in answered],
    )
    if calibrated:  # the mean change in log-odds under its own key; `mean` stays P(yes)
        plain = metrics.by_group(
            labels, [np.nan if q is None else q for q in probs], [group(p) for p in answered]
        )
        for g, row in per.items():
            if "mean" in row:
                row["mean_delta_logodds"] = row.pop("mean")
            if "mean" in plain[g]:
                row["mean"] = plain[g]["mean"]
    return LatentScore(
        latent=item.record.id,
        scorer=scorer,
        status="ok",
        metrics=m,
        per_group=per,
        intervals=intervals,
        **common,
    )


def continuous_score(
    item: LatentItem, scorer: str, preds: list[Prediction], notes: list[str] | None = None, **usage
) -> LatentScore:
    """A continuous scorer's latent score: AUROC of `value` (activating vs not), overall and per
    quantile, and the mean value of each side."""
    answered = [p for p in preds if p.error is None and p.value is not None]
    common = {"explanation": item.text, "predictions": preds, "notes": notes or [], **usage}
    if not answered:
        errors = sorted({p.error for p in preds if p.error}) or ["no values"]
        return failed(item.record.id, scorer, "; ".join(errors), **common)
    y = [p.label for p in answered]
    v = [float(p.value) for p in answered]  # type: ignore[arg-type]
    pos = [x for x, lab in zip(v, y, strict=True) if lab]
    neg = [x for x, lab in zip(v, y, strict=True) if not lab]
    m: dict[str, float | int | None] = {
        "n": len(answered),
        "n_failed": len(preds) - len(answered),
        "auroc": metrics.auroc(y, v),
        "mean_activating": float(np.mean(pos)) if pos else None,
        "mean_non_activating": float(np.mean(neg)) if neg else None,
    }
    per = metrics.by_group(y, v, [group(p) for p in answered])
    auc = metrics.auroc_interval(y, v)
    return LatentScore(
        latent=item.record.id,
        scorer=scorer,
        status="ok",
        metrics=m,
        per_group=per,
        intervals={} if auc is None else {"auroc": auc},
        **common,
    )


def prediction(example: Example, label: bool, kind: str | None = None, **kw) -> Prediction:
    return Prediction(
        seq=example.seq,
        start=example.start,
        quantile=example.quantile if label else None,
        kind=kind or example.kind,
        label=label,
        **kw,
    )


def text_of(example: Example) -> str:
    """An example's text on one line (newlines shown as \\n)."""
    return "".join(example.tokens).replace("\n", "\\n")
