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

Layouts (`layout`):
- `separate`: each scorer has its own instructions; fuzzing shows the marks inside the text
  (`<<like this>>`).
- `shared`: both scorers use the same instructions and show the same examples, in the same order and
  prompts, as plain text; the question comes after the examples, and fuzzing lists each example's
  marked tokens there (`"Paris"`, or `"the" (occurrence 2 of 3)` when the text holds it more than
  once). So detection's and fuzzing's prompts of the same examples share everything up to the
  question, and a prefix-caching server (vLLM, llama.cpp) computes each example's text once for both
  scorers. Fuzzing's `wrong` examples come last (in their own prompts). The stage sends both
  scorers' prompts to the client in one call (`CoalescingClient`), so that llama.cpp, which keeps
  one KV cache and runs a call's prompts in sorted order, sees them side by side.

Adaptive scoring (`AdaptiveConfig`, `score.adaptive`): a latent's examples are judged in rounds, each
balanced between the activating quantiles (taken in turn) and the kinds of negatives, and a latent
stops when the 95% interval of its metric is narrower than `width`, or lies wholly above or below
`threshold`. Its score records the examples it used (`n`) out of those it had (`n_available`).

An answer that cannot be parsed, or has the wrong number of values, fails the examples of that prompt
(recorded with the raw answer); the latent's metrics use the examples that got an answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from autointerp.clients import is_local
from autointerp.clients.base import Chat, Completion, GenParams, LLMClient
from autointerp.config import _Strict
from autointerp.explain import mark, shown_tokens, template, template_id
from autointerp.score import metrics
from autointerp.score.base import (
    LatentItem,
    LatentScore,
    Prediction,
    classifier_score,
    group,
    new_usage,
    prediction,
    tally,
)
from autointerp.types import Example

_LIST = re.compile(r"\[([^\[\]]*)\]?")
NO_LOGPROBS = "logprobs were asked for but missing from the answer (the server returned none)"
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


class AdaptiveConfig(_Strict):
    """Adaptive scoring of detection and fuzzing (`score.adaptive`; `true` turns it on with these
    defaults)."""

    enabled: bool = False
    round: int = Field(20, ge=2)
    """Examples judged per round: activating and non-activating in the proportion the latent has
    them (half each by default), quantiles and kinds of negatives taken in turn. Fuzzing's wrong
    examples are spread over the rounds in proportion."""
    min_examples: int = Field(20, ge=2)
    """No latent stops before this many examples have been judged."""
    width: float = Field(0.2, gt=0.0, le=1.0)
    """Stop when the 95% interval of `metric` is at most this wide."""
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    """Stop as well when the interval lies wholly above or wholly below this value (None: off)."""
    metric: Literal["balanced_accuracy", "auroc"] = "balanced_accuracy"
    """Whose interval decides: the answers' balanced accuracy (Wilson + MOVER), or the AUROC of
    P(yes) (DeLong; needs logprobs)."""

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data):
        return {"enabled": data} if isinstance(data, bool) else data


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
    layout: Literal["separate", "shared"] = "separate"
    """`shared`: detection and fuzzing show the same plain examples and differ only after them
    (fuzzing lists the marked tokens), so a prefix-caching server reads each example once for both
    scorers (see the module's docstring). Use it for both scorers."""
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


def marked_spans(example: Example) -> str:
    """The marked (firing) runs of tokens of an example as a list of quoted texts, each with its
    occurrence when the example holds that text more than once: `"Paris", "the" (occurrence 2 of
    3)`; `none` when nothing is marked. Halves of split characters follow `shown_tokens`."""
    toks = [t for t, _ in shown_tokens(example)]
    firing = [a > 0 for _, a in shown_tokens(example)]
    spans, i = [], 0
    while i < len(toks):
        if not firing[i]:
            i += 1
            continue
        j = i
        while j < len(toks) and firing[j]:
            j += 1
        spans.append((i, j))
        i = j
    out = []
    for a, b in spans:
        text = "".join(toks[a:b])
        key = text.strip() or text
        starts = [
            k for k in range(len(toks) - (b - a) + 1) if _span_key(toks[k : k + b - a]) == key
        ]
        shown = json.dumps(key, ensure_ascii=False)
        if len(starts) > 1 and a in starts:
            shown += f" (occurrence {starts.index(a) + 1} of {len(starts)})"
        out.append(shown)
    return ", ".join(out) or "none"


def _span_key(toks: Sequence[str]) -> str:
    text = "".join(toks)
    return text.strip() or text


def _turns(groups: dict[str, list[int]]) -> list[int]:
    """The indices of each group taken in turn: the first of each group, then the second of each,
    and so on; within a pass the groups go in a spread order (quantiles 0, 5, 2, 7, 4, 9, 1, ...
    of 10), so that any run of consecutive picks covers the range of activations."""
    ordered = sorted(groups, key=metrics.group_key)
    spread = sorted(range(len(ordered)), key=lambda k: (k * 0.6180339887498949) % 1.0)
    out = []
    for k in range(max((len(g) for g in groups.values()), default=0)):
        out += [groups[ordered[g]][k] for g in spread if k < len(groups[ordered[g]])]
    return out


def _slices(order: list[int], n_rounds: int) -> list[list[int]]:
    """`order` cut into n_rounds consecutive parts of near-equal size."""
    cuts = [round(r * len(order) / n_rounds) for r in range(n_rounds + 1)]
    return [order[cuts[r] : cuts[r + 1]] for r in range(n_rounds)]


Sample = tuple[Example, Prediction]


class ClassifierScorer:
    """Detection (`fuzz=False`) or fuzzing (`fuzz=True`) with one client."""

    name: str  # as the Scorer protocol declares it (a Literal here would not conform)

    def __init__(
        self,
        name: Literal["detection", "fuzzing"],
        client: LLMClient,
        cfg: ClassifierConfig,
        adaptive: AdaptiveConfig | None = None,
    ):
        self.name, self.client, self.cfg = name, client, cfg
        self.adaptive = adaptive if adaptive is not None and adaptive.enabled else None
        if self.adaptive is not None and self.adaptive.metric == "auroc" and not cfg.logprobs:
            raise ValueError("adaptive scoring on the AUROC reads P(yes): it needs logprobs: true")
        self.fuzz = name == "fuzzing"
        self.shared = cfg.layout == "shared"
        if self.shared:
            files = ["score/shared.system.txt", "score/shared.user.txt", f"score/shared.{name}.txt"]
            self.question = template(files[2]).strip()
        else:
            files = [f"score/{name}.system.txt", f"score/{name}.user.txt"]
        self.system = template(files[0]).strip()
        self.user = template(files[1]).strip()
        self.prefill = cfg.prefill if cfg.prefill is not None else is_local(client)
        self.per_prompt = cfg.examples_per_prompt or (1 if is_local(client) else 5)
        # options count only when not at their old defaults (ids of older scores stay as they were)
        dropped = {"calibrate", "uninformative"} if not cfg.calibrate else set()
        if not self.shared:
            dropped.add("layout")
        options = {**cfg.model_dump(mode="json", exclude=dropped), "prefill": self.prefill}
        options["examples_per_prompt"] = self.per_prompt
        self.prompt_id = template_id(f"{name}+cal" if cfg.calibrate else name, files, options)

    def samples(self, item: LatentItem) -> list[Sample]:
        """The examples to judge, shown as the scorer sees them, with their (empty) predictions,
        shuffled with a seed of the latent. In the shared layout, detection and fuzzing put the
        same examples in the same order, fuzzing's wrong examples last."""
        if self.shared:
            base_rng = np.random.default_rng([self.cfg.seed, item.record.id.latent])
            mark_rng = np.random.default_rng([self.cfg.seed, item.record.id.latent, 1])
            base = self._labelled(item, mark_rng)
            wrong = self._wrong(item, mark_rng) if self.fuzz else []
            return [base[i] for i in base_rng.permutation(len(base))] + wrong
        rng = np.random.default_rng([self.cfg.seed, item.record.id.latent, self.fuzz])
        out = self._labelled(item, rng) + (self._wrong(item, rng) if self.fuzz else [])
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def _labelled(self, item: LatentItem, rng: np.random.Generator) -> list[Sample]:
        """Test examples (positives) and negatives; fuzzing marks the firing tokens of the first,
        and as many random tokens of the second as an activating example fires on, on average."""
        if not self.fuzz:
            return [(e, prediction(e, label)) for e, label in item.labelled()]
        firing = [sum(a > 0 for a in e.activations) for e in item.test]
        n_mark = max(1, math.ceil(float(np.mean(firing)))) if firing else 1
        out = [(e, prediction(e, True)) for e in item.test]
        for e in item.negatives:
            pos = rng.choice(len(e.tokens), size=min(n_mark, len(e.tokens)), replace=False)
            out.append((_mark_positions(e, pos), prediction(e, False)))
        return out

    def _wrong(self, item: LatentItem, rng: np.random.Generator) -> list[Sample]:
        """Fuzzing: `n_wrong` activating examples with as many non-firing tokens marked."""
        out = []
        wrong_src = item.test[:: max(1, len(item.test) // max(self.cfg.n_wrong, 1))]
        for e in wrong_src[: self.cfg.n_wrong]:
            quiet = [i for i, a in enumerate(e.activations) if a <= 0]
            k = min(sum(a > 0 for a in e.activations), len(quiet))
            if k == 0:
                continue
            pos = rng.choice(quiet, size=k, replace=False)
            out.append((_mark_positions(e, pos), prediction(e, False, kind="wrong")))
        return out

    def rounds(self, item: LatentItem) -> list[list[Sample]]:
        """`samples` in rounds of the adaptive round size (one round when not adaptive): each
        round takes activating examples (quantiles in turn) and negatives (kinds in turn) in the
        latent's proportion, and its share of fuzzing's wrong examples, in the order of `samples`
        (shared layout: wrong examples last)."""
        ordered = self.samples(item)
        pos: dict[str, list[int]] = {}
        neg: dict[str, list[int]] = {}
        wrong = []
        for k, (_, p) in enumerate(ordered):
            if p.kind == "wrong":
                wrong.append(k)
            else:
                (pos if p.label else neg).setdefault(group(p), []).append(k)
        n_base = len(ordered) - len(wrong)
        size = self.adaptive.round if self.adaptive is not None else max(n_base, 1)
        n = max(1, math.ceil(n_base / size))
        out = []
        for a, b, w in zip(
            _slices(_turns(pos), n), _slices(_turns(neg), n), _slices(wrong, n), strict=True
        ):
            picked = sorted(a + b) + w if self.shared else sorted(a + b + w)
            out.append([ordered[k] for k in picked])
        return out

    def _show(self, e: Example) -> str:
        if self.fuzz and not self.shared:
            return mark(e).replace("\n", "\\n")
        return "".join(e.tokens).replace("\n", "\\n")

    def prompt(self, explanation: str, examples: Sequence[Example]) -> Chat:
        body = "\n".join(f"Example {i}: {self._show(e)}" for i, e in enumerate(examples, 1))
        if self.shared:
            question = self.question
            if self.fuzz:
                marks = "\n".join(f"{i}: {marked_spans(e)}" for i, e in enumerate(examples, 1))
                question = question.format(marks=marks)
            content = self.user.format(explanation=explanation, examples=body, question=question)
        else:
            content = self.user.format(explanation=explanation, examples=body)
        chat = [{"role": "system", "content": self.system}, {"role": "user", "content": content}]
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
        plans = [self.rounds(item) if self.adaptive else [self.samples(item)] for item in items]
        preds: list[list[Prediction]] = [[] for _ in items]
        notes: list[list[str]] = [[] for _ in items]
        usage = [new_usage() for _ in items]
        active, r = list(range(len(items))), 0
        while active:
            jobs = [(i, s) for i in active for s in self._chunks(plans[i][r])]
            await self._judge(items, jobs, preds, notes, usage)
            r += 1
            still = []
            for i in active:
                if r >= len(plans[i]):
                    continue
                why = self._stop(items[i], preds[i], notes[i])
                if why is None:
                    still.append(i)
                else:
                    notes[i].append(why)
            active = still
        out = []
        for item, p, n, u, plan in zip(items, preds, notes, usage, plans, strict=True):
            s = classifier_score(item, self.name, p, n, self.prompt_id, self.cfg.calibrate, **u)
            if self.adaptive is not None:
                s.metrics["n_available"] = sum(len(x) for x in plan)
            out.append(s)
        return out

    def _chunks(self, samples: list[Sample]) -> list[list[Sample]]:
        """Prompts of `per_prompt` examples; in the shared layout fuzzing's wrong examples never
        share a prompt with the others (so the others' prompts match detection's)."""
        k = self.per_prompt
        parts = [samples]
        if self.shared and self.fuzz:
            parts = [[s for s in samples if s[1].kind != "wrong"]]
            parts.append([s for s in samples if s[1].kind == "wrong"])
        return [p[j : j + k] for p in parts for j in range(0, len(p), k)]

    def _stop(self, item: LatentItem, preds: list[Prediction], notes: list[str]) -> str | None:
        """Why a latent stops after this round (adaptive scoring), or None to go on."""
        a = self.adaptive
        if a is None:
            return None
        answered = sum(p.error is None for p in preds)
        if len(preds) < a.min_examples or not answered:
            return None
        s = classifier_score(item, self.name, preds, list(notes), None, self.cfg.calibrate)
        interval = s.intervals.get(a.metric)
        if interval is None:
            return None
        lo, hi = interval
        head = f"adaptive: stopped after {len(preds)} examples, the 95% interval of {a.metric}"
        if hi - lo <= a.width:
            return f"{head} [{lo:.3f}, {hi:.3f}] is at most {a.width} wide"
        if a.threshold is not None and (lo > a.threshold or hi < a.threshold):
            side = "above" if lo > a.threshold else "below"
            return f"{head} [{lo:.3f}, {hi:.3f}] lies {side} {a.threshold}"
        return None

    async def _judge(self, items, jobs, preds, notes, usage) -> None:
        """Ask the client about every chunk of `jobs` ((item index, samples)) and add the answers
        to each item's predictions, notes and usage."""
        if not jobs:
            return
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
