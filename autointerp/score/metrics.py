"""Metrics of the scorers, from per-example predictions.

Classifier scorers (detection, fuzzing) give a yes/no answer per example and, with logprobs, P(yes);
continuous scorers (surprisal, embedding) give one number per example that should be higher on
activating examples. Examples whose answer failed are left out of every metric and counted apart:
a failed call is a failure, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # average ranks of ties
        tied = s == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def classification(
    labels: Sequence[bool], predictions: Sequence[bool], probabilities: Sequence[float | None]
) -> dict[str, float | int | None]:
    """Accuracy, balanced accuracy, precision, recall, F1 and (with probabilities for every answer)
    AUROC of the answered examples."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    tn, fn = int((~y & ~p).sum()), int((y & ~p).sum())
    recall, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    balanced = (
        (recall + specificity) / 2 if recall is not None and specificity is not None else None
    )
    probs = list(probabilities)
    return {
        "n": len(y),
        "accuracy": _ratio(tp + tn, len(y)),
        "balanced_accuracy": balanced,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "auroc": auroc(y, probs) if probs and all(q is not None for q in probs) else None,  # type: ignore[arg-type]
    }


def by_group(
    labels: Sequence[bool],
    values: Sequence[float],
    groups: Sequence[str],
    correct: Sequence[bool] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per group of positives (e.g. `q0`..`q9`, the activation deciles): their number, the share
    answered correctly (classifiers), their mean value and the AUROC of that group against all
    negatives. Negatives are grouped too (by kind), without an AUROC."""
    y = np.asarray(labels, dtype=bool)
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, dict[str, float | int | None]] = {}
    neg = ~y
    for g in sorted(set(groups), key=_group_key):
        m = np.array([x == g for x in groups])
        row: dict[str, float | int | None] = {"n": int(m.sum())}
        if correct is not None:
            row["accuracy"] = float(np.asarray(correct, dtype=bool)[m].mean())
        if not np.isnan(v[m]).all():
            row["mean"] = float(np.nanmean(v[m]))
            if y[m].all() and neg.any():
                keep = (m | neg) & ~np.isnan(v)
                row["auroc"] = auroc(y[keep], v[keep])
        out[g] = row
    return out


def _group_key(g: str) -> tuple[int, int | str]:
    return (0, int(g[1:])) if g[:1] == "q" and g[1:].isdigit() else (1, g)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when either side is constant or there are fewer than 2 points."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
