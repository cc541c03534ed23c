"""The scorers' names, their main metrics, and which of them call an LLM, read no explanation or
steer the subject model.
Kept apart from the scoring driver (`autointerp.score.stage`) so that readers of score files (report,
export, run folders) need no scorer code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

ScorerName = Literal[
    "detection",
    "fuzzing",
    "surprisal",
    "embedding",
    "intervention",
    "intervention-kl",
    "simulation",
    "intruder",
    "example-embedding",
]
MAIN_METRIC = {
    "detection": "balanced_accuracy",
    "fuzzing": "balanced_accuracy",
    "surprisal": "auroc",
    "embedding": "auroc",
    "intervention": "score",
    "intervention-kl": "kl_score",
    "simulation": "correlation",
    "intruder": "accuracy",
    "example-embedding": "auroc",
}
LLM_SCORERS = {"detection", "fuzzing", "simulation", "intruder"}
EXPLANATION_FREE = {"intruder", "example-embedding"}
"""Scorers that read no explanation: they score latents whose explanation failed too."""
STEERING = {"intervention", "intervention-kl"}
"""Scorers that steer the subject model on cached prompts: they read no test examples."""


def main_metric(scorer: str) -> str:
    """The metric a scorer is compared by (`auroc` for a scorer this version does not know)."""
    return MAIN_METRIC.get(scorer, "auroc")


def is_main(frame: pd.DataFrame) -> pd.Series:
    """Rows of a long score table (`scorer`, `metric` columns) whose metric is their scorer's main
    metric."""
    import pandas as pd

    mask = pd.Series(False, index=frame.index)
    for scorer in frame.scorer.unique():
        mask |= (frame.scorer == scorer) & (frame.metric == main_metric(str(scorer)))
    return mask


def main_values(scores: pd.DataFrame) -> pd.DataFrame:
    """The successful scores' main metric values (one row per run, coder, scorer and latent)."""
    return scores[is_main(scores) & (scores.status == "ok") & scores.value.notna()]
