"""Simulation scorer (Bills et al., 2023): from the explanation alone, the LLM predicts each token's
activation (0-10); the score is the correlation of the predictions with the true activations, over
every token of the scored examples ("all at once" scoring).

One prompt per example lists its tokens, numbered; the answer is a list with one number per token.
With logprobs, each prediction is the expected value over the numbers among the top tokens at that
position, as in the original method; otherwise the generated number. An answer of the wrong length
fails that example. Several times the LLM work of detection: keep `n_activating` small.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from autointerp.clients import is_local
from autointerp.clients.base import Chat, Completion, GenParams, LLMClient
from autointerp.config import _Strict
from autointerp.explain import template, template_id
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
from autointerp.types import Example

_LIST = re.compile(r"\[([^\[\]]*)\]?")


class SimulationConfig(_Strict):
    n_activating: int = Field(10, ge=1)
    """Activating test examples simulated (spread over the quantiles)."""
    n_negative: int = Field(5, ge=0)
    """Non-activating examples simulated."""
    logprobs: bool = True
    prefill: bool | None = None
    """Start the answer with `[`; None: on for the local `transformers` backend."""


def parse_values(text: str, n: int) -> list[float]:
    m = _LIST.search(text)
    if m is None:
        raise ValueError(f"no [..] list in the answer {text[:80]!r}")
    parts = [p for p in re.split(r"[,\s]+", m.group(1)) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"answer list holds a non-number: {text[:80]!r}") from None
    if len(values) != n:
        raise ValueError(f"answer has {len(values)} values for {n} tokens: {text[:80]!r}")
    return [min(max(v, 0.0), 10.0) for v in values]


def expected_values(c: Completion, n: int) -> list[float] | None:
    """The expected number at each of the first n answer numbers, from the top logprobs; a number
    written in several tokens (e.g. `1`,`0`) takes its written value."""
    if not c.logprobs:
        return None
    values: list[float] = []
    written: list[str] = []
    prev_digit = False
    for t in c.logprobs:
        tok = t.token.strip()
        if not tok.isdigit():
            prev_digit = False
            continue
        if prev_digit and values:  # continuation of a multi-token number: its written value
            written[-1] += tok
            values[-1] = min(10.0, float(written[-1]))
            continue
        prev_digit = True
        probs = [(int(s.strip()), math.exp(lp)) for s, lp in t.top if s.strip().isdigit()]
        probs = [(v, p) for v, p in probs if v <= 10]
        total = sum(p for _, p in probs)
        written.append(tok)
        values.append(sum(v * p for v, p in probs) / total if total else float(int(tok)))
    return values[:n] if len(values) >= n else None


class SimulationScorer:
    name = "simulation"

    def __init__(self, client: LLMClient, cfg: SimulationConfig):
        self.client, self.cfg = client, cfg
        self.system = template("score/simulation.system.txt").strip()
        self.user = template("score/simulation.user.txt").strip()
        self.prefill = cfg.prefill if cfg.prefill is not None else is_local(client)
        self.prompt_id = template_id(
            self.name,
            ["score/simulation.system.txt", "score/simulation.user.txt"],
            {**cfg.model_dump(mode="json"), "prefill": self.prefill},
        )

    def examples(self, item: LatentItem) -> list[tuple[Example, bool]]:
        step = max(1, len(item.test) // self.cfg.n_activating)
        pos = item.test[::step][: self.cfg.n_activating]
        return [(e, True) for e in pos] + [
            (e, False) for e in item.negatives[: self.cfg.n_negative]
        ]

    def prompt(self, explanation: str, example: Example) -> Chat:
        tokens = "\n".join(f"{i}. {t!r}" for i, t in enumerate(example.tokens, 1))
        chat = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(explanation=explanation, tokens=tokens)},
        ]
        if self.prefill:
            chat.append({"role": "assistant", "content": "["})
        return chat

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        jobs = [(i, e, label) for i, it in enumerate(items) for e, label in self.examples(it)]
        chats = [self.prompt(items[i].text, e) for i, e, _ in jobs]
        n_tok = max((len(e.tokens) for _, e, _ in jobs), default=1)
        params = GenParams(
            max_tokens=4 * n_tok + 4,  # `10, ` is 4 tokens for some tokenizers
            logprobs=self.cfg.logprobs,
            top_logprobs=10 if self.cfg.logprobs else 0,
            stop=("]",),
        )
        answers = await self.client.complete(chats, params) if chats else []
        preds: list[list[Prediction]] = [[] for _ in items]
        usage = [new_usage() for _ in items]
        for (i, e, label), c in zip(jobs, answers, strict=True):
            tally(usage[i], c)
            preds[i].append(self._read(c, e, label))
        return [self._latent(it, p, u) for it, p, u in zip(items, preds, usage, strict=True)]

    def _read(self, c: Completion, e: Example, label: bool) -> Prediction:
        if not c.ok:
            return prediction(e, label, error=f"request failed: {c.error}")
        n = len(e.tokens)
        try:
            values = parse_values(("[" if self.prefill else "") + (c.text or ""), n)
        except ValueError as err:
            return prediction(e, label, error=str(err))
        expected = expected_values(c, n) if self.cfg.logprobs else None
        sim = expected or values
        return prediction(e, label, simulated=sim, value=float(max(sim)))

    def _latent(self, item: LatentItem, preds: list[Prediction], usage: dict) -> LatentScore:
        ok = [
            (p, e) for p, (e, _) in zip(preds, self.examples(item), strict=True) if p.error is None
        ]
        common = {"explanation": item.text, "predictions": preds, "prompt": self.prompt_id, **usage}
        if not ok:
            errors = sorted({p.error for p in preds if p.error})
            return failed(item.record.id, self.name, "; ".join(errors), **common)
        true = np.concatenate([e.activations for _, e in ok])
        sim = np.concatenate([p.simulated for p, _ in ok])  # type: ignore[misc]
        act = [(p, e) for p, e in ok if p.label]
        m = {
            "n": len(ok),
            "n_failed": len(preds) - len(ok),
            "correlation": metrics.pearson(sim, true),
            "correlation_activating": metrics.pearson(
                np.concatenate([p.simulated for p, _ in act]),  # type: ignore[misc]
                np.concatenate([e.activations for _, e in act]),
            )
            if act
            else None,
            "auroc": metrics.auroc([p.label for p, _ in ok], [p.value for p, _ in ok]),  # type: ignore[misc]
        }
        intervals = {"correlation": metrics.correlation_interval(m["correlation"], len(true))}
        if m["auroc"] is not None:
            values = [(p.label, p.value) for p, _ in ok]
            labels, scores = zip(*values, strict=True)
            intervals["auroc"] = metrics.auroc_interval(labels, scores)
        return LatentScore(
            latent=item.record.id,
            scorer=self.name,
            status="ok",
            metrics=m,
            intervals={k: v for k, v in intervals.items() if v is not None},
            **common,
        )
