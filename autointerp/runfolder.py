"""A run folder, read-only: what each stage wrote, for reports, exports and comparisons.

Layout (every stage appends one JSON line per latent):
    RUN/run_config.yaml                      the resolved config of `autointerp run` (no secrets)
    RUN/cache/cache.json, shards/, stats/    sparse activations (`autointerp.cache`)
    RUN/sample/<coder>.jsonl                 SampledLatent records; sample_config.json
    RUN/explanations/<coder>.jsonl           Explanation records
    RUN/scores/<scorer>/<coder>.jsonl        LatentScore records
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from autointerp.errors import RunError
from autointerp.jsonl import (
    ExplanationHead,
    LineIndex,
    SampleHead,
    ScoreHead,
    line_index,
    scan,
)
from autointerp.types import Example, ExampleRef, Explanation, SampledLatent

if TYPE_CHECKING:
    from autointerp.sample import TokenDecoder


class RunFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "cache" / "cache.json").exists():
            raise RunError(f"{self.root} is not a run folder (no cache/cache.json)")

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @cached_property
    def cache(self):
        from autointerp.cache import ActivationCache

        # A run folder copied without its shards (the large part) still reports and exports.
        return ActivationCache(self.root / "cache", check_files=False)

    @property
    def manifest(self) -> dict:
        return self.cache.manifest

    @property
    def subject_model(self) -> str:
        return self.manifest["config"]["subject"]["model"]

    @property
    def coders(self) -> dict[str, dict]:
        """Coder name -> its cache metadata (kind, hookpoint, n_latents, ...)."""
        return self.cache.coders

    def coder(self, name: str) -> dict:
        if name not in self.coders:
            raise RunError(f"no coder {name!r} in {self.root} (has: {', '.join(self.coders)})")
        return self.coders[name]

    @cached_property
    def example_len(self) -> int:
        path = self.root / "sample" / "sample_config.json"
        if not path.exists():
            raise RunError(f"{self.root} has no samples (no sample/sample_config.json)")
        return json.loads(path.read_text())["example_len"]

    def sample_path(self, coder: str) -> Path:
        return self.root / "sample" / f"{coder}.jsonl"

    def explanation_path(self, coder: str) -> Path:
        return self.root / "explanations" / f"{coder}.jsonl"

    def score_path(self, scorer: str, coder: str) -> Path:
        return self.root / "scores" / scorer / f"{coder}.jsonl"

    def explainer(self, coder: str) -> str | None:
        """The explainer a coder's explanations were written with, as their prompt ids name it
        (`default`, `mixed`, `default+values`, ...; several joined by `,`); None before any."""
        labels = dict.fromkeys(
            h.prompt.split("@")[0]
            for _, h in scan(self.explanation_path(coder), ExplanationHead)
            if h.prompt
        )
        return ",".join(labels) or None

    def sample_index(self, coder: str) -> LineIndex:
        """Where each sampled latent's (last) line is: for callers that read records one at a time
        (`LineIndex.records`, `.read`) instead of holding every record, as `samples` does."""
        return line_index(self.sample_path(coder), SampleHead, lambda h: h.id.latent)

    def explanation_index(self, coder: str) -> LineIndex:
        return line_index(self.explanation_path(coder), ExplanationHead, _latent)

    def score_index(self, scorer: str, coder: str) -> LineIndex:
        return line_index(self.score_path(scorer, coder), ScoreHead, _latent)

    def iter_samples(self, coder: str) -> Iterator[SampledLatent]:
        """The sample records of a coder in latent order (a latent's last line), one at a time."""
        return self.sample_index(coder).records(SampledLatent)

    def samples(self, coder: str) -> dict[int, SampledLatent]:
        from autointerp.sample import read_records

        return {r.id.latent: r for r in read_records(self.root / "sample" / f"{coder}.jsonl")}

    def explanations(self, coder: str) -> dict[int, Explanation]:
        from autointerp.explain import read_explanations

        return read_explanations(self.root / "explanations" / f"{coder}.jsonl")

    def scorers(self) -> list[str]:
        folder = self.root / "scores"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []

    def scores(self, scorer: str, coder: str) -> dict:
        """Latent -> LatentScore of one scorer and coder (empty when that file does not exist)."""
        from autointerp.score.stage import read_scores

        return read_scores(self.root / "scores" / scorer / f"{coder}.jsonl")

    @cached_property
    def _tokens(self):
        return self.cache.tokens()

    @cached_property
    def tokenizer(self):
        from autointerp.config import SubjectConfig
        from autointerp.subject import load_tokenizer

        return load_tokenizer(SubjectConfig(**self.manifest["config"]["subject"]))

    @cached_property
    def decode(self) -> TokenDecoder:
        from autointerp.sample import TokenDecoder

        return TokenDecoder(self.tokenizer)

    def render(self, ref: ExampleRef) -> Example:
        """An example's token strings and activations, rendered as the LLM saw them (a character
        split across tokens is shown whole on the token that completes it: see TokenDecoder)."""
        from autointerp.sample import render

        return render(ref, self._tokens, self.decode, self.example_len)


def _latent(head: ExplanationHead | ScoreHead) -> int:
    return head.latent.latent
