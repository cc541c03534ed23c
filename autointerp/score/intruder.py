"""Intruder detection (Paulo & Belrose, arXiv 2507.08473): an explanation-free score.

The judge sees `examples_per_prompt` (k) activating examples of the latent and one intruder, a window
where the latent is silent, and names the intruder by its number. No explanation is involved: the
score says whether the latent's activating text has something in common that a reader can see.

- Activating examples come from the held-out `test` set. As in delphi, each prompt draws its examples
  from one activation quantile, the prompts cycling through the quantiles (filled from the nearest
  quantiles when one holds fewer than k), so the accuracy per quantile (`per_group` `q0`..) is read off.
- Intruders are the latent's non-activating examples: its `similar` ones first (by default windows
  where its nearest latents by decoder direction fire: another latent's activating text, the paper's
  intruders), then its random ones when the similar ones run out; each prediction's `kind` says
  which. A latent has as many distinct intruders as non-activating examples; prompts beyond that
  reuse them with other activating examples.
- The intruder's place among the examples, the examples and the order of the intruders are drawn
  with a seed of the latent's id, so a latent's prompts do not depend on which latents are scored
  with it.
- `highlight` (delphi's default): each activating example's firing tokens (above `mark_threshold` of
  its peak) are marked `<<like this>>`; the intruder gets as many marks, on random tokens, as the
  prompt's activating examples have on average (as delphi does for an intruder where the latent is
  silent), so the number of marks does not give it away.

The answer is the intruder's number in brackets (`[3]`). For local backends the answer is prefilled
with `[` and read from the logprobs of the one answer token: each number's probability, normalised
over the numbers shown; the prediction is the likeliest number, `probability` P(the right number).
Otherwise the number is parsed from the text (and P read from logprobs when the server gives some).

Metric: `accuracy`, the share of answered prompts whose intruder was found (its Wilson interval in
`intervals`), against `chance` 1/(k+1). Each prompt is one prediction (the intruder's window, `label`
True, `prediction` whether it was found, `value` the number the judge named). A prompt whose answer
cannot be used keeps its error and is left out (`n_failed`); a latent with no answered prompt gets a
failed score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from autointerp.clients import is_local
from autointerp.clients.base import Chat, Completion, GenParams, LLMClient
from autointerp.config import _Strict
from autointerp.explain import mark, template, template_id
from autointerp.score import metrics
from autointerp.score.base import (
    LatentItem,
    LatentScore,
    Prediction,
    failed,
    new_usage,
    prediction,
    tally,
)
from autointerp.score.classifier import NO_LOGPROBS
from autointerp.types import Example

_NUMBER = re.compile(r"\d+")
TEMPLATES = ["score/intruder.system.txt", "score/intruder.user.txt"]


class IntruderConfig(_Strict):
    n_prompts: int = Field(10, ge=1)
    """Prompts per latent (each with its own intruder)."""
    examples_per_prompt: int = Field(4, ge=2, le=8)
    """Activating examples shown beside the one intruder (numbers stay single digits)."""
    highlight: bool = True
    """Mark the activating examples' firing tokens, and as many random tokens of the intruder."""
    mark_threshold: float = Field(0.3, ge=0.0, lt=1.0)
    """With `highlight`: a token is marked when it fires above this fraction of its example's peak."""
    logprobs: bool = True
    """Read P(each number) from the answer token's top logprobs."""
    prefill: bool | None = None
    """Start the answer with `[` (None: on for the local backends)."""
    seed: int = 0


@dataclass(frozen=True)
class Prompt:
    """One intruder prompt: the examples as shown (marks in `activations`), the intruder's place
    among them (0-based) and its empty prediction."""

    shown: list[Example]
    at: int
    intruder: Prediction


class IntruderScorer:
    name = "intruder"

    def __init__(self, client: LLMClient, cfg: IntruderConfig):
        self.client, self.cfg = client, cfg
        self.system = template(TEMPLATES[0]).strip()
        self.user = template(TEMPLATES[1]).strip()
        self.prefill = cfg.prefill if cfg.prefill is not None else is_local(client)
        options = {**cfg.model_dump(mode="json"), "prefill": self.prefill}
        self.prompt_id = template_id("intruder", TEMPLATES, options)

    # ------------------------------------------------------------------ building prompts

    def prompts(self, item: LatentItem) -> list[Prompt]:
        """The latent's prompts, seeded by its id. Raises ValueError when it has too few examples."""
        k = self.cfg.examples_per_prompt
        if len(item.test) < 2:
            raise ValueError(
                f"the latent has {len(item.test)} test examples; an intruder needs at least 2 "
                "activating examples beside it"
            )
        k = min(k, len(item.test))
        intruders = self._intruders(item)
        if not intruders:
            raise ValueError("the latent has no non-activating examples to use as intruders")
        rng = np.random.default_rng([self.cfg.seed, item.record.id.latent])
        by_q: dict[int, list[Example]] = {}
        for e in item.test:
            by_q.setdefault(-1 if e.quantile is None else e.quantile, []).append(e)
        quantiles = sorted(by_q)
        out = []
        for p in range(self.cfg.n_prompts):
            q = quantiles[p % len(quantiles)]
            chosen = self._draw(by_q, q, k, rng)
            intruder = intruders[p % len(intruders)]
            at = int(rng.integers(0, k + 1))
            shown = [self._show_activating(e) for e in chosen]
            shown.insert(at, self._show_intruder(intruder, shown, rng))
            pred = prediction(intruder, True).model_copy(update={"quantile": None if q < 0 else q})
            out.append(Prompt(shown, at, pred))
        return out

    def _intruders(self, item: LatentItem) -> list[Example]:
        """Similar negatives first, then random ones, each kind in a seeded order."""
        rng = np.random.default_rng([self.cfg.seed, item.record.id.latent, 1])
        out = []
        for kind in ("similar", "random"):
            pool = [e for e in item.negatives if e.kind == kind]
            out += [pool[i] for i in rng.permutation(len(pool))]
        out += [e for e in item.negatives if e.kind not in ("similar", "random")]
        return out

    @staticmethod
    def _draw(by_q: dict[int, list[Example]], q: int, k: int, rng) -> list[Example]:
        """k examples of quantile q, filled from the nearest quantiles when q holds fewer."""
        out: list[Example] = []
        for near in sorted(by_q, key=lambda x: (abs(x - q), x)):
            pool = by_q[near]
            take = min(k - len(out), len(pool))
            out += [pool[i] for i in rng.choice(len(pool), size=take, replace=False)]
            if len(out) == k:
                break
        return out

    def _marked(self, e: Example) -> int:
        peak = max(e.activations, default=0.0)
        return sum(a > 0 and a > self.cfg.mark_threshold * peak for a in e.activations)

    def _show_activating(self, e: Example) -> Example:
        if not self.cfg.highlight:
            return e
        peak = max(e.activations, default=0.0)
        keep = [a if a > self.cfg.mark_threshold * peak else 0.0 for a in e.activations]
        return e.model_copy(update={"activations": keep})

    def _show_intruder(self, e: Example, shown: list[Example], rng) -> Example:
        """The intruder with its activations replaced by the marks it will show (none without
        `highlight`): as many random tokens as the activating examples have marks on average."""
        acts = [0.0] * len(e.tokens)
        if self.cfg.highlight:
            n = max(1, round(float(np.mean([self._marked(x) for x in shown]))))
            words = [i for i, t in enumerate(e.tokens) if t.strip()]
            for i in rng.choice(words, size=min(n, len(words)), replace=False) if words else []:
                acts[int(i)] = 1.0
        return e.model_copy(update={"activations": acts})

    def _text(self, e: Example) -> str:
        shown = mark(e) if self.cfg.highlight else "".join(e.tokens)
        return shown.replace("\n", "\\n")

    def chat(self, shown: Sequence[Example]) -> Chat:
        body = "\n".join(f"Example {i}: {self._text(e)}" for i, e in enumerate(shown, 1))
        chat = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(examples=body)},
        ]
        if self.prefill:
            chat.append({"role": "assistant", "content": "["})
        return chat

    # ------------------------------------------------------------------ asking and reading

    def single(self) -> bool:
        """The answer is read from the logprobs of one generated token."""
        return self.cfg.logprobs and self.prefill

    def params(self, n_shown: int) -> GenParams:
        return GenParams(
            max_tokens=1 if self.single() else 8,
            logprobs=self.cfg.logprobs,
            top_logprobs=min(20, n_shown + 5) if self.cfg.logprobs else 0,
            stop=("]",),
        )

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        built: list[list[Prompt] | str] = []
        for item in items:
            try:
                built.append(self.prompts(item))
            except ValueError as e:
                built.append(str(e))
        jobs = [(i, p) for i, b in enumerate(built) if not isinstance(b, str) for p in b]
        answers: list[Completion | None] = [None] * len(jobs)
        for n in sorted({len(p.shown) for _, p in jobs}):  # one call per number of examples
            idx = [j for j, (_, p) in enumerate(jobs) if len(p.shown) == n]
            chats = [self.chat(jobs[j][1].shown) for j in idx]
            for j, answer in zip(
                idx, await self.client.complete(chats, self.params(n)), strict=True
            ):
                answers[j] = answer
        preds: list[list[Prediction]] = [[] for _ in items]
        notes: list[list[str]] = [[] for _ in items]
        usage = [new_usage() for _ in items]
        for (i, p), c in zip(jobs, answers, strict=True):
            assert c is not None
            tally(usage[i], c)
            preds[i].append(self.read(c, p, notes[i]))
        out = []
        for item, b, pr, nt, u in zip(items, built, preds, notes, usage, strict=True):
            if isinstance(b, str):
                out.append(failed(item.record.id, self.name, b, prompt=self.prompt_id))
            else:
                k = len(b[0].shown) - 1
                out.append(intruder_score(item, self.name, pr, nt, k, self.prompt_id, **u))
        return out

    def read(self, c: Completion, p: Prompt, notes: list[str]) -> Prediction:
        """The prompt's prediction from its answer; `error` set when the answer cannot be used."""
        n = len(p.shown)
        if not c.ok:
            return p.intruder.model_copy(update={"error": f"request failed: {c.error}"})
        probs = number_probabilities(c, n, first=self.single()) if self.cfg.logprobs else None
        if self.cfg.logprobs and probs is None and not c.logprobs:
            note = f"{NO_LOGPROBS}: P(intruder) not computed"
            if note not in notes:
                notes.append(note)
        if probs is not None and self.single():
            named = max(probs, key=probs.__getitem__)
        else:
            try:
                named = parse_number(("[" if self.prefill else "") + (c.text or ""), n)
            except ValueError as e:
                return p.intruder.model_copy(update={"error": str(e)})
        return p.intruder.model_copy(
            update={
                "prediction": named == p.at + 1,
                "probability": None if probs is None else probs[p.at + 1],
                "value": float(named),
            }
        )


def parse_number(text: str, n: int) -> int:
    """The example number an answer names (the first number in it); ValueError naming the problem
    when there is none or it is not one of 1..n."""
    m = _NUMBER.search(text)
    if m is None:
        raise ValueError(f"no example number in the answer {text[:80]!r}")
    value = int(m.group())
    if not 1 <= value <= n:
        raise ValueError(f"the answer names example {value}, not one of 1..{n}: {text[:80]!r}")
    return value


def number_probabilities(c: Completion, n: int, first: bool = False) -> dict[int, float] | None:
    """P(each example number 1..n) at the first answer token that is a number (`first`: at the
    first answer token, whatever was chosen there, as in single-token mode, where a judge that
    picked "Example" still ranks the digits among its top alternatives), from its top logprobs,
    normalised over the numbers; None without logprobs or without such a token."""
    for t in (c.logprobs or [])[:1] if first else c.logprobs or []:
        if not first and not t.token.strip(" [],").isdigit():
            continue
        top = t.top or [(t.token, t.logprob)]
        mass = {i: 0.0 for i in range(1, n + 1)}
        for tok, lp in top:
            s = tok.strip(" [],")
            if s.isdigit() and int(s) in mass:
                mass[int(s)] += math.exp(lp)
        total = sum(mass.values())
        return {i: v / total for i, v in mass.items()} if total > 0 else None
    return None


def intruder_score(
    item: LatentItem,
    scorer: str,
    preds: list[Prediction],
    notes: list[str],
    k: int,
    prompt: str | None = None,
    **usage,
) -> LatentScore:
    """The latent's intruder score: accuracy over answered prompts, chance 1/(k+1), per quantile
    and per kind of intruder; failed when no prompt was answered."""
    common = {"explanation": None, "predictions": preds, "notes": notes, "prompt": prompt, **usage}
    answered = [p for p in preds if p.error is None]
    if not answered:
        errors = sorted({p.error for p in preds if p.error})
        return failed(
            item.record.id, scorer, "no answer could be used: " + "; ".join(errors), **common
        )
    probs = [p.probability for p in answered]
    found = sum(bool(p.prediction) for p in answered)
    m: dict[str, float | int | None] = {
        "n": len(answered),
        "n_failed": len(preds) - len(answered),
        "accuracy": found / len(answered),
        "chance": 1 / (k + 1),
        "mean_probability": (
            float(np.mean(probs)) if all(q is not None for q in probs) else None  # type: ignore[arg-type]
        ),
    }
    quantiles = sorted({p.quantile for p in answered if p.quantile is not None})
    groups = [(f"q{q}", lambda p, q=q: p.quantile == q) for q in quantiles]
    groups += [(k, lambda p, k=k: p.kind == k) for k in sorted({p.kind for p in answered})]
    per: dict[str, dict[str, float | int | None]] = {}
    for name, member in groups:
        rows = [bool(p.prediction) for p in answered if member(p)]
        per[name] = {"n": len(rows), "accuracy": float(np.mean(rows))}
    interval = metrics.wilson(found, len(answered))
    return LatentScore(
        latent=item.record.id,
        scorer=scorer,
        status="ok",
        metrics=m,
        per_group=per,
        intervals={} if interval is None else {"accuracy": interval},
        **common,
    )
