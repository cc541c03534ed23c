"""Metrics of the scorers, from per-example predictions.

Classifier scorers (detection, fuzzing) give a yes/no answer per example and, with logprobs, P(yes);
continuous scorers (surprisal, embedding) give one number per example that should be higher on
activating examples. Examples whose answer failed are left out of every metric and counted apart:
a failed call is a failure, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[np.floating]
"""Numbers per example, as a sequence or an array (read with `np.asarray`)."""


def auroc(labels: Sequence[bool], scores: Values) -> float | None:
    """Area under the ROC curve (ties count half: average ranks); None without both classes."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # Mann-Whitney U from rank sums
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
    for g in sorted(set(groups), key=group_key):
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


def group_key(g: str) -> tuple[int, int | str]:
    return (0, int(g[1:])) if g[:1] == "q" and g[1:].isdigit() else (1, g)


def pearson(x: Values, y: Values) -> float | None:
    """Pearson correlation; None when either side is constant or there are fewer than 2 points."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------- intervals (95% unless `z` says)

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n (Wilson 1927); None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def balanced_accuracy_interval(
    tp: int, fn: int, tn: int, fp: int, z: float = Z95
) -> tuple[float, float] | None:
    """Interval of (TPR + TNR) / 2 from the Wilson intervals of TPR and TNR, combined by the
    MOVER method (Newcombe 1998; Zou & Donner 2008) for a sum of independent proportions: each
    side's distance to its Wilson bound is added in quadrature, so the interval is never wider than
    the average of the two Wilson intervals and, unlike a normal interval, not empty at 0 or 1.
    None without both classes."""
    a, b = wilson(tp, tp + fn, z), wilson(tn, tn + fp, z)
    if a is None or b is None:
        return None
    r, s = tp / (tp + fn), tn / (tn + fp)
    low = (r + s - np.hypot(r - a[0], s - b[0])) / 2
    high = (r + s + np.hypot(a[1] - r, b[1] - s)) / 2
    return float(max(0.0, low)), float(min(1.0, high))


def delong_variance(labels: Sequence[bool], scores: Sequence[float]) -> tuple[float, float] | None:
    """(AUROC, its variance) by DeLong et al. (1988): the variances of the positives' and the
    negatives' structural components (ties count half), each over its class size. None without
    both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return None
    v10 = np.empty(m)
    v01 = np.zeros(n)
    for k in range(0, m, 1024):  # bounded memory: psi for a block of positives at a time
        block = pos[k : k + 1024, None]
        psi = (block > neg[None, :]) + 0.5 * (block == neg[None, :])
        v10[k : k + 1024] = psi.mean(axis=1)
        v01 += psi.sum(axis=0)
    v01 /= m
    auc = float(v10.mean())
    var10 = v10.var(ddof=1) if m > 1 else 0.0
    var01 = v01.var(ddof=1) if n > 1 else 0.0
    return auc, float(var10 / m + var01 / n)


def auroc_interval(
    labels: Sequence[bool], scores: Sequence[float], z: float = Z95
) -> tuple[float, float] | None:
    """Normal interval of the AUROC with DeLong's variance, clipped to [0, 1]; None without both
    classes. (With perfectly separated classes the variance is 0 and the interval a point.)"""
    d = delong_variance(labels, scores)
    if d is None:
        return None
    auc, var = d
    half = z * np.sqrt(var)
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def correlation_interval(r: float | None, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Fisher z interval of a Pearson correlation over n points (tanh(atanh r +- z / sqrt(n - 3)));
    None for n < 4 or no r. Treats the points as independent, which tokens of one example are not:
    read it as a lower bound on the uncertainty."""
    if r is None or n < 4:
        return None
    c = np.arctanh(np.clip(r, -0.999999, 0.999999))
    half = z / np.sqrt(n - 3)
    return float(np.tanh(c - half)), float(np.tanh(c + half))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student t interval of a mean; None for fewer than 2 values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    half = t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def classification_intervals(
    labels: Sequence[bool], predictions: Sequence[bool], probabilities: Sequence[float | None]
) -> dict[str, tuple[float, float]]:
    """95% intervals of a classifier's balanced accuracy (Wilson + MOVER) and AUROC (DeLong), for
    those that are defined."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    out = {}
    ba = balanced_accuracy_interval(
        int((y & p).sum()), int((y & ~p).sum()), int((~y & ~p).sum()), int((~y & p).sum())
    )
    if ba is not None:
        out["balanced_accuracy"] = ba
    probs = list(probabilities)
    if probs and all(q is not None for q in probs):
        a = auroc_interval(y, probs)  # type: ignore[arg-type]
        if a is not None:
            out["auroc"] = a
    return out
