"""Detection and fuzzing: an LLM reads the explanation and says, for each example, yes or no.

- detection: plain examples; yes = the latent fires somewhere in the example.
- fuzzing: tokens are marked `<<like this>>`; yes = the marked tokens are the ones the explanation
  describes. Positives are activating examples with their firing tokens marked; negatives are
  non-activating examples with random tokens marked (as many as an activating example fires on, on
  average), plus `n_wrong` activating examples with the wrong (non-firing) tokens marked.

Each prompt holds `examples_per_prompt` examples (positives and negatives shuffled together), and the
answer is a list such as `[1,0,0,1,0]`. The prompt starts with the fixed instructions, then the
explanation, then the examples, so a server with prefix caching computes the instructions once for the
whole run and the explanation once per latent. Every prompt of a batch of latents goes to the client
in one call (all in flight at once). With logprobs, P(1) at each answer position gives AUROC too.

An answer that cannot be parsed, or has the wrong number of values, fails the examples of that prompt
(recorded with the raw answer); the latent's metrics use the examples that got an answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from autointerp.clients import is_local
from autointerp.clients.base import Chat, Completion, GenParams, LLMClient
from autointerp.config import _Strict
from autointerp.explain import mark, template, template_id
from autointerp.score.base import (
    LatentItem,
    LatentScore,
    Prediction,
    classifier_score,
    new_usage,
    prediction,
    tally,
)
from autointerp.types import Example

_LIST = re.compile(r"\[([^\[\]]*)\]?")
NO_LOGPROBS = "logprobs were asked for but missing from the answer (the server returned none)"
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


class ClassifierConfig(_Strict):
    examples_per_prompt: int | None = Field(None, ge=1, le=50)
    """Examples judged in one prompt. None: 5, but 1 for the local `transformers` backend (small
    models do not keep a list of answers in order). With one example per prompt and logprobs, the
    answer is read from the logprobs of the first answer token (P(1) vs P(0)) without generating more."""
    logprobs: bool = True
    """Ask for token logprobs and read P(yes) from them (AUROC). A server that returns none still
    scores: the answers count (balanced accuracy), AUROC is None and the score's notes say why."""
    prefill: bool | None = None
    """Start the answer with `[` (small models follow the format only then). None: on for the local
    `transformers` backend."""
    n_wrong: int = Field(10, ge=0)
    """Fuzzing: activating examples shown again with wrong tokens marked, as extra negatives."""
    seed: int = 0
    calibrate: bool = False
    """Judge each example a second time, with an uninformative explanation (`uninformative`) in
    place of the latent's, and rank it by the change in log-odds of yes: logit P(1 | explanation) -
    logit P(1 | uninformative) (the surprisal scorer's idea applied to the judge: what the judge
    says of an example whatever the explanation cancels out). AUROC uses that change (each
    prediction's `value`); the yes/no answers, and so balanced accuracy, stay the explanation's.
    Needs logprobs. A latent's uninformative prompts share their prefix (cheap with prefix caching);
    their LLM work counts in the latent's usage. The prompt id reads `detection+cal@...`."""
    uninformative: str = "text"
    """Calibration: the explanation that says nothing (the surprisal scorer's, by default)."""

    @model_validator(mode="after")
    def _calibration_needs_logprobs(self) -> ClassifierConfig:
        if self.calibrate and not self.logprobs:
            raise ValueError("calibrate reads P(yes) from logprobs: it needs logprobs: true")
        return self


def log_odds(p: float, eps: float = 1e-6) -> float:
    """logit(p), with p clipped to [eps, 1 - eps] (a judge sure of its answer has P(1) of 0 or 1)."""
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def parse_answer(text: str, n: int) -> list[bool]:
    """The 0/1 list of an answer; ValueError (naming the problem) when it is not a list of n."""
    m = _LIST.search(text)
    if m is None:
        raise ValueError(f"no [..] list in the answer {text[:80]!r}")
    parts = [p.strip().strip("'\"").lower() for p in re.split(r"[,\s]+", m.group(1)) if p.strip()]
    bad = [p for p in parts if p not in _TRUE | _FALSE]
    if bad:
        raise ValueError(f"answer list holds {bad[0]!r}, not 0 or 1: {text[:80]!r}")
    if len(parts) != n:
        raise ValueError(f"answer has {len(parts)} values for {n} examples: {text[:80]!r}")
    return [p in _TRUE for p in parts]


def answer_probabilities(c: Completion, n: int) -> list[float] | None:
    """P(1) / (P(0) + P(1)) at each of the first n answer positions (tokens `0` or `1`), from the
    top logprobs; None when the completion has no logprobs or fewer than n such positions."""
    if not c.logprobs:
        return None
    probs = []
    for t in c.logprobs:
        if t.token.strip(" ,[]") not in ("0", "1"):
            continue
        p0 = sum(math.exp(lp) for tok, lp in t.top if tok.strip(" ,[]") == "0")
        p1 = sum(math.exp(lp) for tok, lp in t.top if tok.strip(" ,[]") == "1")
        if p0 + p1 == 0:  # top list without 0/1: use the chosen token alone
            p1 = 1.0 if t.token.strip(" ,[]") == "1" else 0.0
            p0 = 1.0 - p1
        probs.append(p1 / (p0 + p1))
        if len(probs) == n:
            return probs
    return None


def _mark_positions(example: Example, positions: Iterable[int]) -> Example:
    acts = [0.0] * len(example.tokens)
    for i in positions:
        acts[i] = 1.0
    return example.model_copy(update={"activations": acts})


class ClassifierScorer:
    """Detection (`fuzz=False`) or fuzzing (`fuzz=True`) with one client."""

    name: str  # as the Scorer protocol declares it (a Literal here would not conform)

    def __init__(
        self, name: Literal["detection", "fuzzing"], client: LLMClient, cfg: ClassifierConfig
    ):
        self.name, self.client, self.cfg = name, client, cfg
        self.fuzz = name == "fuzzing"
        self.system = template(f"score/{name}.system.txt").strip()
        self.user = template(f"score/{name}.user.txt").strip()
        self.prefill = cfg.prefill if cfg.prefill is not None else is_local(client)
        self.per_prompt = cfg.examples_per_prompt or (1 if is_local(client) else 5)
        # calibration's options count only when on (ids of uncalibrated scores stay as they were)
        calibration = {"calibrate", "uninformative"} if not cfg.calibrate else set()
        options = {**cfg.model_dump(mode="json", exclude=calibration), "prefill": self.prefill}
        options["examples_per_prompt"] = self.per_prompt
        self.prompt_id = template_id(
            f"{name}+cal" if cfg.calibrate else name,
            [f"score/{name}.system.txt", f"score/{name}.user.txt"],
            options,
        )

    def samples(self, item: LatentItem) -> list[tuple[Example, Prediction]]:
        """The examples to judge, shown as the scorer sees them, with their (empty) predictions,
        shuffled with a seed of the latent."""
        rng = np.random.default_rng([self.cfg.seed, item.record.id.latent, self.fuzz])
        out = []
        if not self.fuzz:
            out = [(e, prediction(e, label)) for e, label in item.labelled()]
        else:
            firing = [sum(a > 0 for a in e.activations) for e in item.test]
            n_mark = max(1, math.ceil(float(np.mean(firing)))) if firing else 1
            out += [(e, prediction(e, True)) for e in item.test]
            for e in item.negatives:
                pos = rng.choice(len(e.tokens), size=min(n_mark, len(e.tokens)), replace=False)
                out.append((_mark_positions(e, pos), prediction(e, False)))
            wrong_src = item.test[:: max(1, len(item.test) // max(self.cfg.n_wrong, 1))]
            for e in wrong_src[: self.cfg.n_wrong]:
                quiet = [i for i, a in enumerate(e.activations) if a <= 0]
                k = min(sum(a > 0 for a in e.activations), len(quiet))
                if k == 0:
                    continue
                pos = rng.choice(quiet, size=k, replace=False)
                out.append((_mark_positions(e, pos), prediction(e, False, kind="wrong")))
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def _show(self, e: Example) -> str:
        return mark(e).replace("\n", "\\n") if self.fuzz else "".join(e.tokens).replace("\n", "\\n")

    def prompt(self, explanation: str, examples: Sequence[Example]) -> Chat:
        body = "\n".join(f"Example {i}: {self._show(e)}" for i, e in enumerate(examples, 1))
        chat = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(explanation=explanation, examples=body)},
        ]
        if self.prefill:
            chat.append({"role": "assistant", "content": "["})
        return chat

    def single(self, n: int) -> bool:
        """One example read from the logprobs of one generated token."""
        return n == 1 and self.cfg.logprobs and self.prefill

    def params(self, n: int) -> GenParams:
        return GenParams(
            max_tokens=1 if self.single(n) else 3 * n + 4,
            logprobs=self.cfg.logprobs,
            top_logprobs=5 if self.cfg.logprobs else 0,
            stop=("]",),
        )

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        k = self.per_prompt
        jobs = []  # (item index, chunk of (example, prediction))
        for i, item in enumerate(items):
            s = self.samples(item)
            jobs += [(i, s[j : j + k]) for j in range(0, len(s), k)]
        chats = [self.prompt(items[i].text, [e for e, _ in chunk]) for i, chunk in jobs]
        sizes = [len(chunk) for _, chunk in jobs]
        if self.cfg.calibrate:  # the same prompts with the uninformative explanation
            chats += [
                self.prompt(self.cfg.uninformative, [e for e, _ in chunk]) for _, chunk in jobs
            ]
            sizes += sizes
        answers: list[Completion | None] = [None] * len(chats)
        # one call per answer length (a latent's last prompt may be short)
        for n in sorted(set(sizes)):
            idx = [j for j, size in enumerate(sizes) if size == n]
            for j, answer in zip(
                idx,
                await self.client.complete([chats[j] for j in idx], self.params(n)),
                strict=True,
            ):
                answers[j] = answer
        preds: list[list[Prediction]] = [[] for _ in items]
        notes: list[list[str]] = [[] for _ in items]
        usage = [new_usage() for _ in items]
        for j, (i, chunk) in enumerate(jobs):
            c = answers[j]
            assert c is not None
            tally(usage[i], c)
            read = self._read(c, chunk, notes[i])
            if self.cfg.calibrate:
                base = answers[len(jobs) + j]
                assert base is not None
                tally(usage[i], base)
                read = self._calibrated(read, base, notes[i])
            preds[i] += read
        return [
            classifier_score(item, self.name, p, n, self.prompt_id, self.cfg.calibrate, **u)
            for item, p, n, u in zip(items, preds, notes, usage, strict=True)
        ]

    def _read(
        self, c: Completion, chunk: list[tuple[Example, Prediction]], notes: list[str]
    ) -> list[Prediction]:
        n = len(chunk)
        if not c.ok:
            return [p.model_copy(update={"error": f"request failed: {c.error}"}) for _, p in chunk]
        if self.single(n) and c.logprobs:
            return [self._read_single(c, chunk[0][1])]
        text = ("[" if self.prefill else "") + (c.text or "")
        try:
            answer = parse_answer(text, n)
        except ValueError as e:
            return [p.model_copy(update={"error": str(e)}) for _, p in chunk]
        probs = answer_probabilities(c, n) if self.cfg.logprobs else None
        if self.cfg.logprobs and probs is None:
            note = f"{NO_LOGPROBS}: AUROC not computed"
            if note not in notes:
                notes.append(note)
        return [
            p.model_copy(
                update={"prediction": a, "probability": None if probs is None else probs[j]}
            )
            for j, ((_, p), a) in enumerate(zip(chunk, answer, strict=True))
        ]

    def _read_single(self, c: Completion, p: Prediction) -> Prediction:
        prob = _first_p1(c)
        if prob is None:
            first = c.logprobs[0].token  # type: ignore[index]
            return p.model_copy(
                update={"error": f"neither 0 nor 1 among the top answer tokens: {first!r}"}
            )
        return p.model_copy(update={"prediction": prob > 0.5, "probability": prob})

    def _calibrated(
        self, read: list[Prediction], base: Completion, notes: list[str]
    ) -> list[Prediction]:
        """The explanation's predictions with `value` = logit P(1) minus logit P(1) of the same
        example under the uninformative explanation (`base`). An example whose own answer lacks
        P(1) fails, naming why (never a zero); one whose uninformative answer failed or lacks P(1)
        keeps its answer (it counts for balanced accuracy) without a value (it is left out of the
        calibrated AUROC), and `notes` says why."""
        n = len(read)
        if not base.ok:
            base_p: Sequence[float | None] | None = None
            why = f"the uninformative prompt failed: {base.error}"
        else:
            single = self.single(n) and base.logprobs
            base_p = [_first_p1(base)] if single else answer_probabilities(base, n)
            why = f"no P(yes) in the answer to the uninformative prompt: {NO_LOGPROBS}"
        out = []
        for j, p in enumerate(read):
            if p.error is not None:
                out.append(p)
            elif p.probability is None:
                out.append(p.model_copy(update={"error": f"calibration needs {NO_LOGPROBS}"}))
            elif base_p is None or base_p[j] is None:
                note = f"calibration: {why} (those examples are not in the calibrated AUROC)"
                if note not in notes:
                    notes.append(note)
                out.append(p)
            else:
                delta = log_odds(p.probability) - log_odds(base_p[j])  # type: ignore[arg-type]
                out.append(p.model_copy(update={"value": delta}))
        return out


def _first_p1(c: Completion) -> float | None:
    """P(1) / (P(0) + P(1)) from the top logprobs of the first answer token (the chosen token alone
    when the top list is empty); None when neither 0 nor 1 is among them."""
    first = c.logprobs[0]  # type: ignore[index]
    top = [(tok.strip(" ,[]"), math.exp(lp)) for tok, lp in first.top] or [
        (first.token.strip(" ,[]"), 1.0)
    ]
    p0 = sum(q for tok, q in top if tok == "0")
    p1 = sum(q for tok, q in top if tok == "1")
    return None if p0 + p1 == 0 else p1 / (p0 + p1)
