"""Records that cross stage boundaries. Frozen: stages return new records and never mutate inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LatentId(_Record):
    coder: str
    latent: int

    def __str__(self) -> str:
        return f"{self.coder}/{self.latent}"


class ExampleRef(_Record):
    """Where an example lives in the cache, and the latent's nonzero activations inside it.

    `acts` holds (offset within the window, value) pairs; every other token of the window is zero.
    `quantile` is 0 for the weakest activation decile up to n_quantiles - 1 for the strongest;
    `kind` says how a non-activating example was found.
    """

    seq: int
    start: int
    quantile: int | None = None
    kind: Literal["activating", "random", "similar"] = "activating"
    acts: list[tuple[int, float]] = []


class SampledLatent(_Record):
    """The sample stage's output for one latent (one JSON line)."""

    id: LatentId
    status: Literal["ok", "skipped"]
    reason: str | None = None
    density: float
    max_activation: float
    n_activating_windows: int
    train: list[ExampleRef] = []
    test: list[ExampleRef] = []
    explain_negatives: list[ExampleRef] = []
    """Hard negatives for a contrastive explainer; disjoint from `negatives`."""
    negatives: list[ExampleRef] = []
    """Non-activating examples for the scorers (random and similar)."""
    shortfall: dict[str, int] = {}
    """How many examples each set (train, test, random, similar, explain_negatives) lacks of what
    the config asked for, because the cache holds too few; a set that is complete is absent."""


class Example(_Record):
    """An example rendered for an LLM: token strings and the latent's activation on each."""

    tokens: list[str]
    activations: list[float]
    seq: int
    start: int
    quantile: int | None = None
    kind: str = "activating"


class Explanation(_Record):
    """One latent's explanation. `text` is None when the answer could not be used (see `error`)."""

    latent: LatentId
    text: str | None
    raw: str
    model: str
    prompt: str
    """Explainer name, options and a hash of its templates."""
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
