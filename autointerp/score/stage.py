"""The score stage: explanations + held-out examples -> per-latent scores in
`SCORES/<scorer>/<coder>.jsonl`, resumable (`score_coder`); the scorers' shared context
(`ScoreContext`, what they load once) and their builders (`SCORERS`). The package docstring
(`autointerp.score`) describes the scorers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from autointerp.aio import run_sync
from autointerp.cache import ActivationCache
from autointerp.config import CacheConfig, ClientConfig, _Strict
from autointerp.errors import ConfigError
from autointerp.jsonl import (
    LineIndex,
    ScoreHead,
    cut_torn_line,
    latest,
    ok_sample_lines,
    read_jsonl,
    scan,
)
from autointerp.sample import TokenDecoder, render
from autointerp.score.base import LatentItem, LatentScore, Scorer, failed
from autointerp.score.classifier import AdaptiveConfig, ClassifierConfig, ClassifierScorer
from autointerp.score.embedding import EmbeddingConfig
from autointerp.score.intervention import InterventionConfig
from autointerp.score.intruder import IntruderConfig
from autointerp.score.judge_check import JudgeCheckConfig
from autointerp.score.names import EXPLANATION_FREE, MAIN_METRIC, STEERING, ScorerName
from autointerp.score.simulation import SimulationConfig
from autointerp.score.surprisal import SurprisalConfig
from autointerp.types import Explanation, SampledLatent

log = logging.getLogger(__name__)


class ScoreConfig(_Strict):
    scorers: list[ScorerName] = ["detection", "fuzzing", "embedding"]
    """Scorers to run."""
    detection: ClassifierConfig = ClassifierConfig()
    fuzzing: ClassifierConfig = ClassifierConfig()
    surprisal: SurprisalConfig = SurprisalConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    intervention: InterventionConfig = InterventionConfig()
    """The `intervention` and `intervention-kl` scorers' options."""
    simulation: SimulationConfig = SimulationConfig()
    intruder: IntruderConfig = IntruderConfig()
    example_embedding: EmbeddingConfig = EmbeddingConfig()
    """The `example-embedding` scorer's model."""
    adaptive: AdaptiveConfig = AdaptiveConfig()
    """Detection and fuzzing: judge a latent's examples in rounds and stop when its score is
    certain enough (`true`, or the options of `AdaptiveConfig`). Off by default."""
    latents_per_call: int = Field(8, ge=1)
    """Latents whose prompts go to the client together (all in flight at once)."""
    judge_check: JudgeCheckConfig = JudgeCheckConfig()
    """Score a seeded subset of latents again with another latent's explanation and report
    whether the LLM judge tells them apart (`autointerp.score.judge_check`)."""


class ScoreStageConfig(_Strict):
    """The YAML of `autointerp score --config`: scorer options and the scoring client."""

    score: ScoreConfig = ScoreConfig()
    client: ClientConfig = ClientConfig()


class ScoreContext:
    """What scorers need, loaded once and only when a scorer asks for it."""

    def __init__(
        self,
        cache: ActivationCache | None,
        cfg: ScoreStageConfig,
        example_len: int,
        client_factory: Callable[[], object] | None = None,
    ):
        """Without a `cache` (the Python API on examples in memory), the scorers that need the
        subject model or the cache's tokens (intervention) cannot be built."""
        self._cache, self.cfg, self.example_len = cache, cfg, example_len
        self._client_factory = client_factory
        self._cache_cfg = (
            None if cache is None else CacheConfig.model_validate(cache.manifest["config"])
        )
        self._loss_models: dict[str, object] = {}
        self._coders: dict[str, object] = {}
        self.usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "failed": 0}

    @property
    def cache(self) -> ActivationCache:
        if self._cache is None:
            raise ConfigError(
                "this scorer needs an activation cache (the subject model, its coders and "
                "tokens); it cannot score examples given in memory"
            )
        return self._cache

    @property
    def cache_cfg(self) -> CacheConfig:
        self.cache  # noqa: B018 (the error above when there is none)
        assert self._cache_cfg is not None
        return self._cache_cfg

    @cached_property
    def tokens(self) -> np.ndarray:
        return self.cache.tokens()

    @cached_property
    def decode(self) -> TokenDecoder:
        from autointerp.subject import load_tokenizer

        tok = load_tokenizer(self.cache_cfg.subject)
        return TokenDecoder(tok)  # the renderer of prompts, reports and exports

    @cached_property
    def client(self):
        if self._client_factory is None:
            from autointerp.clients import make_client

            return make_client(self.cfg.client)
        return self._client_factory()

    @cached_property
    def classifier_client(self):
        """The client of detection and fuzzing: their requests made at the same moment go out as
        one call (`CoalescingClient`), so prompts that share a prefix reach the backend together."""
        from autointerp.clients.coalesce import CoalescingClient

        return CoalescingClient(self.client)

    @cached_property
    def subject(self):
        from autointerp.subject import load_subject

        # under `baseline: random-model`, the re-initialised model the cache was made with
        return load_subject(self.cache_cfg.subject, self.cache_cfg.random_model_seed)

    def loss_model(self, model: str, batch_size: int):
        from autointerp.score.surprisal import LossModel

        if model not in self._loss_models:
            # share the subject's weights, unless they are a random-model baseline's: the
            # loss model reads explanations, a judge's job, which a random model cannot do
            c = self._cache_cfg
            if c is not None and model == c.subject.model and c.random_model_seed is None:
                self._loss_models[model] = LossModel.wrap(self.subject, batch_size)
            else:
                self._loss_models[model] = LossModel(model, batch_size)
        return self._loss_models[model]

    def coder(self, name: str):
        from autointerp.cache import _load_coders

        if name not in self._coders:
            chosen = [c for c in self.cache_cfg.coders if (c.name or c.hookpoint) == name]
            cfg = self.cache_cfg.model_copy(update={"coders": chosen})
            self._coders[name] = _load_coders(cfg, self.subject)[0]
        return self._coders[name]

    def item(
        self, record: SampledLatent, explanation: Explanation, train: bool = False
    ) -> LatentItem:
        """The latent rendered for a scorer; `train`: its train examples too."""

        def r(refs):
            return [render(x, self.tokens, self.decode, self.example_len) for x in refs]

        shown = r(record.train) if train else []
        return LatentItem(record, explanation, r(record.test), r(record.negatives), shown)


def _classifier(ctx: ScoreContext, name: Literal["detection", "fuzzing"]) -> Scorer:
    c = ctx.cfg.score
    return ClassifierScorer(name, ctx.classifier_client, getattr(c, name), c.adaptive)


def _detection(ctx: ScoreContext, coder: str) -> Scorer:
    return _classifier(ctx, "detection")


def _fuzzing(ctx: ScoreContext, coder: str) -> Scorer:
    return _classifier(ctx, "fuzzing")


def _surprisal(ctx: ScoreContext, coder: str) -> Scorer:
    from autointerp.score.surprisal import SurprisalScorer

    c = ctx.cfg.score.surprisal
    return SurprisalScorer(c, ctx.loss_model(c.model, c.batch_size))


def _embedding(ctx: ScoreContext, coder: str) -> Scorer:
    from autointerp.score.embedding import EmbeddingScorer

    return EmbeddingScorer(ctx.cfg.score.embedding)


def _intervention(ctx: ScoreContext, coder: str, kl: bool = False) -> Scorer:
    from autointerp.score.intervention import InterventionKLScorer, InterventionScorer

    c = ctx.cfg.score.intervention
    loss = ctx.loss_model(ctx.cfg.score.surprisal.model, c.batch_size)
    kind = InterventionKLScorer if kl else InterventionScorer
    return kind(c, ctx.subject, ctx.coder(coder), ctx.tokens, loss)


def _intervention_kl(ctx: ScoreContext, coder: str) -> Scorer:
    return _intervention(ctx, coder, kl=True)


def _simulation(ctx: ScoreContext, coder: str) -> Scorer:
    from autointerp.score.simulation import SimulationScorer

    return SimulationScorer(ctx.client, ctx.cfg.score.simulation)


def _intruder(ctx: ScoreContext, coder: str) -> Scorer:
    from autointerp.score.intruder import IntruderScorer

    return IntruderScorer(ctx.client, ctx.cfg.score.intruder)


def _example_embedding(ctx: ScoreContext, coder: str) -> Scorer:
    from autointerp.score.example_embedding import ExampleEmbeddingScorer

    return ExampleEmbeddingScorer(ctx.cfg.score.example_embedding)


SCORERS: dict[str, Callable[[ScoreContext, str], Scorer]] = {
    "detection": _detection,
    "fuzzing": _fuzzing,
    "surprisal": _surprisal,
    "embedding": _embedding,
    "intervention": _intervention,
    "intervention-kl": _intervention_kl,
    "simulation": _simulation,
    "intruder": _intruder,
    "example-embedding": _example_embedding,
}


def read_scores(path: Path) -> dict[int, LatentScore]:
    return {s.latent.latent: s for s in read_jsonl(path, LatentScore)}


def _latent(s: ScoreHead) -> int:
    return s.latent.latent


def _same(s: ScoreHead) -> ScoreHead:
    return s


def precheck(record: SampledLatent, explanation: Explanation, scorer: str) -> LatentScore | None:
    """A failed score when the latent cannot be scored at all; None when it can. The
    explanation-free scorers need only test examples; the steering ones (`STEERING`) none."""
    reason = None
    free = scorer in EXPLANATION_FREE
    if not free and explanation.text is None:
        reason = f"the explanation failed: {explanation.error or 'no text'}"
    elif not free and not (explanation.text or "").strip():
        reason = "the explanation is empty"
    elif not record.test and scorer not in STEERING:
        reason = "the latent has no test examples"
    if reason is None:
        return None
    return failed(record.id, scorer, reason, explanation=None if free else explanation.text)


def score_coder(
    ctx: ScoreContext,
    scorers: Sequence[str],
    sample_path: Path,
    explanations: dict[int, Explanation],
    out: Path,
    latents: set[int] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Score the explained latents of one coder with each scorer into `out/<scorer>/<coder>.jsonl`,
    skipping latents already scored there (resume)."""
    coder = sample_path.stem
    records = LineIndex(  # read a group of latents at a time (`_score_all`)
        sample_path,
        {
            i: at
            for i, at in ok_sample_lines(sample_path).items()
            if i in explanations and (latents is None or i in latents)
        },
    )
    paths, todo = {}, {}
    for name in scorers:
        path = out / name / f"{coder}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = {h.latent.latent for _, h in scan(path, ScoreHead)}
        cut_torn_line(path)
        paths[name] = path
        todo[name] = [i for i in records if i not in done]
    run_sync(_score_all(ctx, coder, records, explanations, paths, todo, progress))
    return paths


async def _score_all(ctx, coder, records, explanations, paths, todo, progress) -> None:
    union = sorted(set().union(*todo.values())) if todo else []
    if not union:
        return
    built = {name: SCORERS[name](ctx, coder) for name, ids in todo.items() if ids}
    wanted = {name: set(ids) for name, ids in todo.items()}
    files = {name: open(paths[name], "a") for name in built}  # noqa: SIM115
    step = ctx.cfg.score.latents_per_call
    stats = ctx.usage
    try:
        with tqdm(
            total=sum(len(v) for v in todo.values()),
            desc=f"score {coder}",
            unit="score",
            disable=not progress,
        ) as bar:
            for s in range(0, len(union), step):
                ids = union[s : s + step]
                group = records.read(ids, SampledLatent)
                results = await score_latents(ctx, built, ids, group, explanations, wanted)
                for name, scores in results.items():
                    write_scores(files[name], scores, stats)
                    bar.update(len(scores))
                bar.set_postfix(
                    failed=stats["failed"],
                    tokens=stats["prompt_tokens"] + stats["completion_tokens"],
                )
    finally:
        for f in files.values():
            f.close()


async def score_latents(
    ctx: ScoreContext,
    scorers: dict[str, Scorer],
    ids: Sequence[int],
    records: dict[int, SampledLatent],
    explanations: dict[int, Explanation],
    wanted: dict[str, set[int]] | None = None,
) -> dict[str, list[LatentScore]]:
    """Score a group of latents with every scorer at once (`wanted`: the latents each scorer still
    needs; default all). Returns each scorer's scores in the order of `ids`."""
    jobs = [
        _score_chunk(ctx, name, scorer, todo, records, explanations)
        for name, scorer in scorers.items()
        if (todo := [i for i in ids if wanted is None or i in wanted.get(name, ())])
    ]
    return dict(await asyncio.gather(*jobs))


def write_scores(f, scores: Sequence[LatentScore], stats: dict[str, int] | None = None) -> None:
    """Append scores to an open results file (one flush); add their LLM work to `stats` if given."""
    for r in scores:
        f.write(r.model_dump_json() + "\n")
        if stats is not None:
            stats["failed"] += r.status == "failed"
            for k in ("calls", "prompt_tokens", "completion_tokens"):
                stats[k] += getattr(r, k)
    f.flush()


async def _score_chunk(ctx, name, scorer, ids, records, explanations):
    ready, out = [], {}
    for i in ids:
        bad = precheck(records[i], explanations[i], name)
        if bad is not None:
            out[i] = bad
        else:
            train = getattr(scorer, "needs_train", False)
            ready.append(ctx.item(records[i], explanations[i], train=train))
    if ready:
        for item, result in zip(ready, await scorer.score(ready), strict=True):
            out[item.record.id.latent] = result
    return name, [out[i] for i in ids]


def summarize(paths: dict[str, Path]) -> dict[str, dict]:
    """Per scorer: latents scored and failed, and the mean of its main metric over scored latents."""
    out = {}
    for name, path in paths.items():
        scores = [h for _, (_, h) in latest(path, ScoreHead, _latent, _same).items()]
        ok = [s for s in scores if s.status == "ok"]
        key = MAIN_METRIC[name]
        values = [v for v in (s.metrics.get(key) for s in ok) if v is not None]
        out[name] = {
            "scored": len(ok),
            "failed": len(scores) - len(ok),
            "metric": key,
            "mean": float(np.mean(values)) if values else None,
        }
    return out
