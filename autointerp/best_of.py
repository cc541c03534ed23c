"""Best-of-k explanations: k candidate explanations per latent, each judged on a pilot set held out
from the explainer's own examples; the one the pilot ranks best is kept.

Usage: `explain: {best_of: 4}` in the config of `autointerp run` or `autointerp explain`, or
`autointerp.explain(examples, negatives=..., config={"best_of": 4})`. The options are
`ExplainConfig`'s `best_of`, `candidates`, `temperature`, `subset`, `pilot` and `pilot_scorer`.

For each latent:
1. The pilot: `pilot` of its train examples, spread over their activation range (evenly spaced by
   rank of peak activation; at most half of them), are held out: no candidate sees them. Its
   negatives are the latent's `explain_negatives` (similar windows where it does not fire, drawn
   apart from the scorers' negatives); with the contrastive explainer every other one is held out
   and the rest are shown. The test set and the scorers' negatives are never used, so the final
   scores stay held out from the choice.
2. k candidates from the other train examples. `subsets`: each candidate sees its own random subset
   (a `subset` fraction, one example from each stratum of peak activation), at temperature 0.
   `temperature`: each sees all of them, sampled at `temperature`, in an order of its own (the
   first in the sample's order), so that no two prompts are one request: the response cache, or a
   backend seeded by the prompt (llama.cpp), would otherwise give one answer k times.
3. Each usable candidate is judged on the pilot by the classifier scorer named `pilot_scorer`
   (detection or fuzzing, `autointerp.score.classifier`, its default options) with the scoring
   client: the same judgement as the final score. The kept candidate has the highest balanced
   accuracy, then AUROC (when the judge gives logprobs), then comes first. A candidate that could
   not be parsed, or that the pilot could not rank, is never kept; when none can be, the
   explanation fails (text None, `error` naming each candidate's problem).

The explanation records every candidate (`Explanation.candidates`) with its pilot metrics, and
counts all the work, k answers and k pilot scorings, in its tokens and in the explainer's usage.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from autointerp.clients.base import Chat, Completion, GenParams, LLMClient, Usage
from autointerp.errors import ConfigError
from autointerp.explain import PREFILL, ExplainConfig, Explainer, build_prompt, parse_explanation
from autointerp.score.base import LatentItem, LatentScore
from autointerp.score.classifier import ClassifierConfig, ClassifierScorer
from autointerp.types import Candidate, Example, Explanation, LatentId, SampledLatent

if TYPE_CHECKING:
    from autointerp.cache import ActivationCache
    from autointerp.effects import Effects
    from autointerp.sample import TokenDecoder

log = logging.getLogger(__name__)


def config_problem(
    cfg: ExplainConfig,
    n_train: int,
    n_negatives: int,
    train_name: str = "sample.n_train",
    negatives_name: str = "sample.n_explain_negatives",
) -> str | None:
    """What makes best-of-k impossible with `n_train` train examples and `n_negatives` explain
    negatives per latent (None: nothing, or best_of is 1)."""
    if cfg.best_of == 1:
        return None
    if cfg.pilot >= n_train:
        return (
            f"explain.pilot ({cfg.pilot}) must be less than the train examples per latent "
            f"({train_name}: {n_train}): the candidates need examples too"
        )
    need = 2 if cfg.explainer == "contrastive" else 1
    if n_negatives < need:
        return (
            f"explain.best_of > 1 judges its candidates with non-activating examples, and "
            f"{negatives_name} is {n_negatives}: it needs at least {need}"
            + (" (the contrastive explainer shows half of them)" if need == 2 else "")
        )
    return None


def check_examples(cfg: ExplainConfig, n_train: int, n_negatives: int) -> None:
    """ConfigError when examples given in memory (the Python API) cannot serve best-of-k."""
    bad = config_problem(cfg, n_train, n_negatives, "activating examples given", "negatives given")
    if bad:
        raise ConfigError(bad)


def split_pilot(peaks: Sequence[float], pilot: int) -> tuple[list[int], list[int]]:
    """(pilot, rest): positions of min(pilot, n // 2) examples evenly spaced by rank of their peak
    activation (so the pilot spans the activation quantiles), and of the others, in order."""
    n = len(peaks)
    k = min(pilot, n // 2)
    if k == 0:
        return [], list(range(n))
    order = sorted(range(n), key=lambda i: (peaks[i], i))
    held = sorted(order[int((j + 0.5) * n / k)] for j in range(k))
    chosen = set(held)
    return held, [i for i in range(n) if i not in chosen]


def candidate_views(
    cfg: ExplainConfig, latent: LatentId, rest: list[int], peaks: Sequence[float]
) -> list[list[int]]:
    """The train positions each candidate is shown, seeded by the latent and the candidate; a
    view equal to an earlier one is drawn again (a few times: small sets may have too few)."""
    base = [zlib.crc32(latent.coder.encode()), latent.latent]
    size = max(1, round(cfg.subset * len(rest)))
    strata = np.array_split(np.asarray(sorted(rest, key=lambda j: (peaks[j], j)), dtype=int), size)
    views: list[list[int]] = []
    for i in range(cfg.best_of):
        rng = np.random.default_rng([*base, i])
        for _ in range(_DRAWS):
            if cfg.candidates == "temperature":
                view = list(rest) if i == 0 else [int(x) for x in rng.permutation(rest)]
            else:  # one example from each stratum of peak activation, in the sample's order
                view = sorted(int(rng.choice(s)) for s in strata)
            if view not in views:
                break
        views.append(view)
    return views


_DRAWS = 20


@dataclass
class _Plan:
    """One latent's pilot and candidate views (or why best-of-k cannot run on it)."""

    id: LatentId
    train: list[Example]
    pilot: list[Example] = field(default_factory=list)
    negatives: list[Example] = field(default_factory=list)
    shown_negatives: list[Example] = field(default_factory=list)
    views: list[list[int]] = field(default_factory=list)
    error: str | None = None


def plan(cfg: ExplainConfig, latent: LatentId, train: list[Example], negs: list[Example]) -> _Plan:
    contrastive = cfg.explainer == "contrastive"
    if len(train) < 2:
        why = f"best-of-k needs 2 train examples (one for the pilot); this latent has {len(train)}"
        return _Plan(latent, train, error=why)
    if len(negs) < (2 if contrastive else 1):
        why = f"best-of-k's pilot needs the latent's explain negatives; it has {len(negs)}" + (
            " (the contrastive explainer shows half of them)" if contrastive else ""
        )
        return _Plan(latent, train, error=why)
    peaks = [max(e.activations, default=0.0) for e in train]
    held, rest = split_pilot(peaks, cfg.pilot)
    return _Plan(
        latent,
        train,
        pilot=[train[i] for i in held],
        negatives=negs[1::2] if contrastive else list(negs),
        shown_negatives=negs[0::2] if contrastive else [],
        views=candidate_views(cfg, latent, rest, peaks),
    )


class _Counted:
    """A client whose every answer counts in a usage (the explainer's)."""

    def __init__(self, inner: LLMClient, usage: Usage):
        self.client, self.usage, self.model = inner, usage, inner.model

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        out = await self.client.complete(chats, params)
        for c in out:
            self.usage.add(c)
        return out


def pilot_scorer(explainer: Explainer) -> ClassifierScorer:
    client = explainer.pilot_client or explainer.client
    assert client is not None  # best_of > 1 needs an LLM explainer (ExplainConfig checks)
    scorer = ClassifierScorer(explainer.cfg.pilot_scorer, client, ClassifierConfig())
    # built on the client itself (it sets prefill and examples per prompt by backend); asks
    # through a counter, so that the pilot's work is the explainer's
    scorer.client = _Counted(client, explainer.usage)
    return scorer


def _parse(c: Completion, prefill: bool, shown: list[int]) -> Candidate:
    raw = c.text or ""
    if prefill and c.ok:  # the answer continues the prefilled line; it ends at the first newline
        raw = PREFILL + raw.split("\n")[0]
    text = parse_explanation(raw) if c.ok else None
    error = c.error if not c.ok else (None if text else "no [EXPLANATION]: line in the answer")
    return Candidate(
        text=text,
        raw=c.text or "",
        error=error,
        shown=shown,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
    )


async def _candidates(explainer: Explainer, plans: list[_Plan]) -> list[list[Candidate]]:
    """Every latent's k candidate answers, in one call to the explainer's client."""
    cfg, prefill = explainer.cfg, explainer.prefill
    chats = [
        build_prompt([p.train[i] for i in v], p.shown_negatives, cfg, prefill)
        for p in plans
        for v in p.views
    ]
    temperature = cfg.temperature if cfg.candidates == "temperature" else 0.0
    if prefill:  # the answer is the rest of one line
        params = GenParams(
            max_tokens=min(cfg.max_tokens, 64), stop=("\n",), temperature=temperature
        )
    else:
        params = GenParams(
            max_tokens=cfg.max_tokens * (3 if cfg.cot else 1), temperature=temperature
        )
    assert explainer.client is not None
    answers = iter(await explainer.client.complete(chats, params) if chats else [])
    out = []
    for p in plans:
        row = []
        for v in p.views:
            c = next(answers)
            explainer.usage.add(c)
            row.append(_parse(c, prefill, v))
        out.append(row)
    return out


def _pilot_item(explainer: Explainer, p: _Plan, text: str) -> LatentItem:
    record = SampledLatent(
        id=p.id,
        status="ok",
        density=0.0,
        max_activation=max((max(e.activations, default=0.0) for e in p.pilot), default=0.0),
        n_activating_windows=len(p.pilot),
    )
    model = explainer.client.model if explainer.client is not None else ""
    candidate = Explanation(latent=p.id, text=text, raw=text, model=model, prompt=explainer.prompt)
    return LatentItem(record, candidate, list(p.pilot), list(p.negatives))


def _judged(c: Candidate, s: LatentScore, judge: str) -> Candidate:
    ok = s.status == "ok" and s.metrics.get("balanced_accuracy") is not None
    why = s.error if s.status != "ok" else "the pilot gave no balanced accuracy"
    return c.model_copy(
        update={
            "judge": judge,
            "pilot": dict(s.metrics),
            "pilot_error": None if ok else why,
            "pilot_calls": s.calls,
            "pilot_prompt_tokens": s.prompt_tokens,
            "pilot_completion_tokens": s.completion_tokens,
        }
    )


async def _pilot(
    explainer: Explainer, plans: list[_Plan], candidates: list[list[Candidate]]
) -> list[list[Candidate]]:
    """The candidates with their pilot scores (those with a text), all judged in one batch."""
    where = [(i, j) for i, row in enumerate(candidates) for j, c in enumerate(row) if c.text]
    if not where:
        return candidates
    scorer = pilot_scorer(explainer)
    items = [_pilot_item(explainer, plans[i], candidates[i][j].text or "") for i, j in where]
    scores = await scorer.score(items)
    out = [list(row) for row in candidates]
    for (i, j), s in zip(where, scores, strict=True):
        out[i][j] = _judged(out[i][j], s, scorer.client.model)
    return out


def best(candidates: Sequence[Candidate]) -> int | None:
    """The kept candidate: highest pilot balanced accuracy, then AUROC, then first; None when no
    candidate has a text and a pilot score."""
    ranked = [
        (c.pilot["balanced_accuracy"], _or_low(c.pilot.get("auroc")), -i, i)
        for i, c in enumerate(candidates)
        if c.text is not None
        and c.pilot_error is None
        and c.pilot.get("balanced_accuracy") is not None
    ]
    return max(ranked)[-1] if ranked else None


def _or_low(x: float | int | None) -> float:
    return float("-inf") if x is None else float(x)


def _why_not(c: Candidate) -> str:
    return c.error or c.pilot_error or "not judged"


def _explanation(explainer: Explainer, p: _Plan, candidates: list[Candidate]) -> Explanation:
    model = explainer.client.model if explainer.client is not None else ""
    common = {"latent": p.id, "model": model, "prompt": explainer.prompt}
    if p.error is not None:
        return Explanation(text=None, raw="", error=p.error, **common)
    k = best(candidates)
    kept = [c.model_copy(update={"chosen": i == k}) for i, c in enumerate(candidates)]
    tokens = {
        "prompt_tokens": sum(c.prompt_tokens + c.pilot_prompt_tokens for c in kept),
        "completion_tokens": sum(c.completion_tokens + c.pilot_completion_tokens for c in kept),
    }
    if k is None:
        why = "; ".join(f"{i}: {_why_not(c)}" for i, c in enumerate(kept))
        error = f"none of the {len(kept)} candidates could be kept ({why})"
        raw = kept[0].raw if kept else ""
        return Explanation(text=None, raw=raw, error=error, candidates=kept, **common, **tokens)
    chosen = kept[k]
    return Explanation(text=chosen.text, raw=chosen.raw, candidates=kept, **common, **tokens)


async def explain_best(
    explainer: Explainer,
    ids: Sequence[LatentId],
    rendered: Sequence[tuple[list[Example], list[Example]]],
) -> list[Explanation]:
    """Best-of-k explanations of latents given as rendered (train, explain negatives) examples."""
    plans = [
        plan(explainer.cfg, lid, train, negs)
        for lid, (train, negs) in zip(ids, rendered, strict=True)
    ]
    todo = [p for p in plans if p.error is None]
    for p in plans:
        if p.error is not None:
            log.warning("%s: %s", p.id, p.error)
    judged = await _pilot(explainer, todo, await _candidates(explainer, todo))
    found = dict(zip((id(p) for p in todo), judged, strict=True))
    return [_explanation(explainer, p, found.get(id(p), [])) for p in plans]


class BestOfExplainer(Explainer):
    """An explainer that writes `best_of` candidates per latent and keeps the one its pilot ranks
    best (`explain_best`). Built by `make_explainer`, which picks it when `best_of` > 1."""

    async def explain_examples(self, ids, rendered, effects=None) -> list[Explanation]:
        return await explain_best(self, ids, list(rendered))


def make_explainer(
    cache: ActivationCache | None,
    cfg: ExplainConfig,
    client: LLMClient | None,
    decode: TokenDecoder | None,
    example_len: int,
    *,
    effects: Effects | None = None,
    pilot_client: LLMClient | None = None,
) -> Explainer:
    """The explainer a config asks for: a `BestOfExplainer` with `best_of` > 1, else an
    `Explainer` (the arguments are `Explainer`'s)."""
    kind = BestOfExplainer if cfg.best_of > 1 else Explainer
    return kind(cache, cfg, client, decode, example_len, effects=effects, pilot_client=pilot_client)
