"""The scorers' names, their main metrics, and which of them call an LLM or read no explanation.
Kept apart from the scoring driver (`autointerp.score.stage`) so that readers of score files (report,
export, run folders) need no scorer code."""

from __future__ import annotations

from typing import Literal

ScorerName = Literal[
    "detection",
    "fuzzing",
    "surprisal",
    "embedding",
    "intervention",
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
    "simulation": "correlation",
    "intruder": "accuracy",
    "example-embedding": "auroc",
}
LLM_SCORERS = {"detection", "fuzzing", "simulation", "intruder"}
EXPLANATION_FREE = {"intruder", "example-embedding"}
"""Scorers that read no explanation: they score latents whose explanation failed too."""
