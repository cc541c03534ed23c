"""Intervention scorers: does the explanation predict what the latent does to the model's output?

The subject model continues `n_prompts` prompts (the first `prompt_len` tokens of sequences of the
cache) twice, greedily: clean, and with the latent steered: its decoder direction, times a strength
times the latent's largest cached activation, added at its hookpoint at every position. A local LM
then reads each continuation followed by the explanation; the prompt's value is the explanation's
surprisal after the clean continuation minus after the steered one (positive: steering made the
explanation more predictable). The latent's `score` is the mean over prompts; `auroc` separates
steered from clean continuations by the explanation's log-likelihood. This scores output-side
latents, which activation-based scorers miss (Paulo et al., 2024, after Gur-Arieh et al.).

- `intervention`: the strength is `scale` (the same for every latent).
- `intervention-kl`: the strength is searched per latent (bisection in log space, at most
  `kl_steps` strengths up to `max_strength`) so that the mean over prompts of KL(clean || steered)
  next-token distribution at the prompt's last position comes within `kl_tolerance` of
  `target_kl`. Every latent then moves the model by the same amount, whatever its decoder norm or
  activation scale, and its main metric `kl_score` (= `score` / `kl`) is the explanation's gain per
  nat of steering, comparable across latents and coders. Its metrics add `kl` (the KL reached) and
  `strength` (in units of the latent's max activation).

A strength that drives the model to non-finite values, or a KL target that no strength up to
`max_strength` reaches, fails the latent with that reason (never a score of 0).

`Steerer` (the steering hook, continuations and next-token log-probabilities) and `prompt_rows` (which
cache rows are the prompts) are public for other users of steering, such as an explainer shown
steered continuations (its prompts held out with `prompt_rows(..., exclude=...)`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pydantic import Field

from autointerp.coders.base import SparseCoder
from autointerp.config import _Strict
from autointerp.locks import model_lock
from autointerp.score import metrics
from autointerp.score.base import LatentItem, LatentScore, Prediction, continuous_score, failed
from autointerp.score.surprisal import LossModel
from autointerp.subject import Subject

SEARCH_SPAN = 1e4
"""`intervention-kl` searches strengths from `max_strength / SEARCH_SPAN` to `max_strength`."""


class InterventionConfig(_Strict):
    n_prompts: int = Field(16, ge=2)
    """Prompts continued per latent (the paper: 40)."""
    prompt_len: int = Field(16, ge=1)
    """Tokens of each prompt, taken from the start of cached sequences."""
    new_tokens: int = Field(16, ge=1)
    """Tokens generated per continuation."""
    scale: float = Field(4.0, gt=0)
    """`intervention`: steering strength in units of the latent's largest cached activation."""
    prefix: str = "{text}\n\nThe text above is about"
    """What the scoring LM reads before the explanation."""
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    target_kl: float = Field(1.0, gt=0)
    """`intervention-kl`: the mean over prompts of KL(clean || steered) next-token distribution
    (nats, at each prompt's last position) that sets each latent's steering strength."""
    kl_tolerance: float = Field(0.05, gt=0, lt=1)
    """`intervention-kl`: the search stops when the KL is within this fraction of `target_kl`."""
    max_strength: float = Field(100.0, gt=0)
    """`intervention-kl`: the largest strength tried, in units of the latent's largest cached
    activation (the search spans max_strength / 10^4 to max_strength); a latent whose KL stays
    below the target there fails."""
    kl_steps: int = Field(12, ge=1)
    """`intervention-kl`: strengths tried at most per latent (bisection in log space)."""


def prompt_rows(n_sequences: int, n: int, seed: int, exclude: Sequence[int] = ()) -> np.ndarray:
    """The sorted cache rows whose first tokens are the prompts: `n` of the `n_sequences` rows (all
    of them where fewer), drawn without replacement under `seed`, never one of `exclude`. Without
    `exclude`, the rows the `intervention` scorer has always used."""
    if n < 1:
        raise ValueError(f"prompt_rows needs n >= 1 prompts, got {n}")
    pool = np.setdiff1d(np.arange(n_sequences), np.asarray(exclude, dtype=np.int64))
    if len(pool) == 0:
        raise ValueError(
            f"no cache rows left for prompts: {n_sequences} sequences, {len(exclude)} excluded"
        )
    pick = np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    return np.sort(pool[pick])


class Steerer:
    """Adds a vector at a coder's hookpoint, at every position, while the subject model reads or
    continues fixed `prompts` (n_prompts, prompt_len token ids), `batch_size` prompts a pass. Each
    pass holds the model (`model_lock`), so the hook never meets another user's forward pass."""

    def __init__(
        self,
        subject: Subject,
        coder: SparseCoder,
        prompts: torch.Tensor,
        new_tokens: int,
        batch_size: int,
    ):
        self.subject, self.coder, self.prompts = subject, coder, prompts
        self.new_tokens, self.batch_size = new_tokens, batch_size

    def direction(self, latent: int) -> torch.Tensor:
        """The latent's decoder direction (fp32, on the subject's device)."""
        return self.coder.direction(latent, self.subject.device)

    @contextmanager
    def steering(self, add: torch.Tensor | None) -> Iterator[list[torch.Tensor]]:
        """The model, held, with `add` added at the coder's site (nothing added for None). Yields
        the list to which the hook appends, per pass, whether every steered value stayed finite
        (one flag per pass, read once at the end: no GPU sync per step)."""
        finite: list[torch.Tensor] = []
        with model_lock(self.subject.model):
            handle = None if add is None else self._install(add, finite)
            try:
                yield finite
            finally:
                if handle is not None:
                    handle.remove()

    def _install(self, add: torch.Tensor, finite: list[torch.Tensor]):
        mod = self.subject.module(self.coder.site)
        vec = add.to(self.subject.device, self.subject.dtype)

        def steer(value):
            out = value + vec
            finite.append(torch.isfinite(out).all())
            return out

        if self.coder.site.port == "input" and not self.coder.transcoder:

            def pre(m, args, kwargs):
                if args:
                    return (steer(args[0]), *args[1:]), kwargs
                key = next(iter(kwargs))
                return args, {**kwargs, key: steer(kwargs[key])}

            return mod.register_forward_pre_hook(pre, with_kwargs=True)
        return mod.register_forward_hook(
            lambda m, i, o: (steer(o[0]), *o[1:]) if isinstance(o, tuple) else steer(o)
        )

    def _batches(self) -> Iterator[torch.Tensor]:
        for s in range(0, len(self.prompts), self.batch_size):
            yield self.prompts[s : s + self.batch_size].to(self.subject.device)

    @torch.inference_mode()
    def continue_prompts(self, add: torch.Tensor | None) -> tuple[list[str], bool]:
        """Greedy continuations (`new_tokens` each) with `add` added at the coder's site; and
        whether every value stayed finite."""
        texts: list[str] = []
        with self.steering(add) as finite:
            for ids in self._batches():
                # nn.Module.__getattr__ is typed Tensor | Module; the model is a causal LM
                out = self.subject.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.new_tokens,
                    min_new_tokens=self.new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.subject.tokenizer.eos_token_id,
                )
                texts += self.subject.tokenizer.batch_decode(
                    out[:, ids.shape[1] :], skip_special_tokens=True
                )
        return texts, bool(torch.stack(finite).all()) if finite else True

    @torch.inference_mode()
    def next_token_logprobs(self, add: torch.Tensor | None) -> torch.Tensor:
        """Log-softmax of the next-token logits at each prompt's last position, with `add` added at
        the coder's site: fp32, (n_prompts, vocab), on the subject's device; all NaN where a
        steered value was not finite."""
        rows = []
        with self.steering(add) as finite:
            for ids in self._batches():
                out = self.subject.model(input_ids=ids, attention_mask=torch.ones_like(ids))
                rows.append(out.logits[:, -1].float().log_softmax(-1))
        logp = torch.cat(rows)
        if finite and not bool(torch.stack(finite).all()):
            logp = torch.full_like(logp, math.nan)
        return logp


def mean_kl(clean: torch.Tensor, steered: torch.Tensor) -> float:
    """Mean over rows of KL(clean || steered), from log-probabilities (rows, vocab); non-finite
    where `steered` is."""
    p = clean.exp()
    terms = torch.where(p > 0, p * (clean - steered), torch.zeros_like(p))
    return float(terms.sum(-1).mean())


class StrengthNotFound(Exception):
    """No strength within the search's bounds and steps gives the target KL; the message says
    why."""


def find_strength(
    kl: Callable[[float], float],
    target: float,
    tolerance: float,
    max_strength: float,
    steps: int,
) -> tuple[float, float]:
    """The strength s in [max_strength / SEARCH_SPAN, max_strength] at which `kl(s)` (increasing
    in s) comes within `tolerance` x `target` of `target`, and that KL: bisection in log s, `steps`
    evaluations at most, the first at `max_strength`. A non-finite KL counts as too strong. Raises
    `StrengthNotFound` when the KL at `max_strength` is below the target, or the steps run out."""
    lo, hi = math.log(max_strength / SEARCH_SPAN), math.log(max_strength)
    s, value, broke = max_strength, math.nan, False
    for i in range(steps):
        value = kl(s)
        finite = math.isfinite(value)
        if finite and abs(value - target) <= tolerance * target:
            return s, value
        if i == 0 and finite and value < target:
            raise StrengthNotFound(
                f"the KL reaches only {value:.3g} at the largest strength, {s:.3g} x max "
                f"activation (target {target:g}); raise `intervention.max_strength`"
            )
        broke |= not finite
        if finite and value < target:
            lo = math.log(s)
        else:
            hi = math.log(s)
        s = math.exp((lo + hi) / 2)
    why = "; stronger steering made the model produce NaN or inf" if broke else ""
    raise StrengthNotFound(
        f"the KL did not come within {tolerance:.0%} of {target:g} in {steps} steps (last: "
        f"{value:.3g} at {s:.3g} x max activation){why}; raise `intervention.kl_steps` or "
        "`intervention.kl_tolerance`"
    )


class InterventionScorer:
    """`intervention`: steering at `scale` x the latent's max activation."""

    name = "intervention"

    def __init__(
        self,
        cfg: InterventionConfig,
        subject: Subject,
        coder: SparseCoder,
        tokens: np.ndarray,
        loss_model: LossModel,
    ):
        self.cfg, self.subject, self.coder, self.loss = cfg, subject, coder, loss_model
        rows = prompt_rows(len(tokens), cfg.n_prompts, cfg.seed)
        self.prompts = torch.as_tensor(tokens[rows, : cfg.prompt_len].astype(np.int64))
        self.steerer = Steerer(subject, coder, self.prompts, cfg.new_tokens, cfg.batch_size)
        self._clean: list[str] | None = None

    def direction(self, latent: int) -> torch.Tensor:
        """The latent's decoder direction (fp32, on the subject's device)."""
        return self.steerer.direction(latent)

    def continue_prompts(self, add: torch.Tensor | None) -> tuple[list[str], bool]:
        """Greedy continuations with `add` added at the coder's site; and whether every value stayed
        finite."""
        return self.steerer.continue_prompts(add)

    async def score(self, items: Sequence[LatentItem]) -> list[LatentScore]:
        return await asyncio.to_thread(lambda: [self._locked_score(it) for it in items])

    def _locked_score(self, item: LatentItem) -> LatentScore:
        """One latent with the subject model to itself (`model_lock`): no other scorer's pass sees
        the steering hook, and no other hook is on the model while this one continues prompts."""
        with model_lock(self.subject.model):
            return self._score(item)

    def _score(self, item: LatentItem) -> LatentScore:
        strength = self.cfg.scale * item.record.max_activation
        broke = (
            f"steering at scale {self.cfg.scale} x max activation {item.record.max_activation:.3g}"
            " made the model produce NaN or inf; lower `intervention.scale`"
        )
        return self._steered(item, strength * self.direction(item.record.id.latent), broke)

    def _steered(self, item: LatentItem, add: torch.Tensor, broke: str) -> LatentScore:
        """The latent's score with `add` steering the prompts; failed with `broke` when the model
        produced non-finite values."""
        if self._clean is None:
            self._clean, _ = self.continue_prompts(None)
        steered, finite = self.continue_prompts(add)
        if not finite:
            return failed(item.record.id, self.name, broke, explanation=item.text)
        texts = self._clean + steered
        loss = self.loss.losses([(self.cfg.prefix.format(text=t), " " + item.text) for t in texts])
        n = len(self._clean)
        preds = [
            Prediction(
                seq=i % n,
                start=0,
                kind="steered" if i >= n else "clean",
                label=i >= n,
                value=-loss[i] if np.isfinite(loss[i]) else None,
                error=None if np.isfinite(loss[i]) else "loss is not finite",
            )
            for i in range(len(texts))
        ]
        result = continuous_score(item, self.name, preds)
        drops = [loss[i] - loss[i + n] for i in range(n) if np.isfinite(loss[i] - loss[i + n])]
        changed = sum(a != b for a, b in zip(self._clean, steered, strict=True))
        m = dict(result.metrics)
        m["score"] = float(np.mean(drops)) if drops else None
        m["changed"] = changed / n
        intervals = dict(result.intervals)
        if (t := metrics.mean_interval(drops)) is not None:
            intervals["score"] = t  # Student t over prompts
        return result.model_copy(update={"metrics": m, "intervals": intervals})


class InterventionKLScorer(InterventionScorer):
    """`intervention-kl`: steering at the strength whose next-token KL is `target_kl`; main metric
    `kl_score` = `score` / `kl`."""

    name = "intervention-kl"
    _clean_logprobs: torch.Tensor | None = None  # the prompts' clean next-token log-probabilities

    def kl(self, add: torch.Tensor) -> float:
        """Mean over prompts of KL(clean || steered by `add`) next-token distribution."""
        if self._clean_logprobs is None:
            self._clean_logprobs = self.steerer.next_token_logprobs(None)
        return mean_kl(self._clean_logprobs, self.steerer.next_token_logprobs(add))

    def _score(self, item: LatentItem) -> LatentScore:
        c, lid = self.cfg, item.record.id
        unit = item.record.max_activation * self.direction(lid.latent)
        try:
            strength, kl = find_strength(
                lambda s: self.kl(s * unit), c.target_kl, c.kl_tolerance, c.max_strength, c.kl_steps
            )
        except StrengthNotFound as e:
            return failed(lid, self.name, str(e), explanation=item.text)
        broke = (
            f"steering at {strength:.3g} x max activation (KL {kl:.3g}) made the continuations "
            "produce NaN or inf; lower `intervention.target_kl`"
        )
        result = self._steered(item, strength * unit, broke)
        if result.status != "ok":
            return result
        if (score := result.metrics.get("score")) is None:
            reason = "no prompt's change in the explanation's surprisal is finite"
            return failed(lid, self.name, reason, explanation=item.text)
        m = {**result.metrics, "kl": kl, "strength": strength, "kl_score": score / kl}
        intervals = dict(result.intervals)
        if "score" in intervals:
            lo, hi = intervals["score"]
            intervals["kl_score"] = (lo / kl, hi / kl)  # kl is fixed by the search
        return result.model_copy(update={"metrics": m, "intervals": intervals})
