"""Records that cross stage boundaries. Frozen: stages return new records and never mutate inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_serializer


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


class Candidate(_Record):
    """One of best-of-k's candidate explanations (`autointerp.best_of`) and its pilot score."""

    text: str | None
    """None when the answer could not be used (see `error`)."""
    raw: str
    error: str | None = None
    chosen: bool = False
    """The candidate kept as the explanation."""
    shown: list[int] = []
    """Positions (in the latent's train examples) of the examples this candidate was shown."""
    judge: str | None = None
    """The model that judged the pilot."""
    pilot: dict[str, float | int | None] = {}
    """The pilot scorer's metrics (balanced_accuracy, auroc, n, ...); empty when not judged."""
    pilot_error: str | None = None
    """Why the pilot gave no ranking (a failed or unparsed candidate is not judged)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """The candidate's own answer."""
    pilot_calls: int = 0
    pilot_prompt_tokens: int = 0
    pilot_completion_tokens: int = 0


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
    """The LLM work of the explanation: with best-of-k, every candidate's and pilot's."""
    candidates: list[Candidate] = []
    """Best-of-k's candidates (`explain.best_of` > 1), the kept one `chosen`; empty (and left out
    of the JSON, as in files written before best-of-k) otherwise."""

    @model_serializer(mode="wrap")
    def _without_empty_candidates(self, handler):
        data = handler(self)
        if not self.candidates and isinstance(data, dict):
            data.pop("candidates", None)
        return data
