"""The intervention scorers' steering (`Steerer`, `prompt_rows`) and `intervention-kl`: the strength
search on a synthetic KL curve, and on the packaged model and SAE (the KL reached is the target
whatever the latent's decoder norm; `kl_score` = `score` / `kl`)."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from autointerp.sample import read_records
from autointerp.score import (
    MAIN_METRIC,
    SCORERS,
    STEERING,
    ScoreConfig,
    precheck,
    read_scores,
    score_coder,
    summarize,
)
from autointerp.score.intervention import (
    InterventionConfig,
    InterventionKLScorer,
    StrengthNotFound,
    find_strength,
    mean_kl,
    prompt_rows,
)
from autointerp.types import Explanation, LatentId, SampledLatent
from tests import test_score

run = test_score.run  # the real run folder (packaged model and SAE, 6 sampled latents)
SMALL = {"n_prompts": 3, "prompt_len": 8, "new_tokens": 6}


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize(("n_sequences", "n", "seed"), [(64, 16, 0), (64, 3, 7), (10, 16, 1)])
def test_prompt_rows_are_the_rows_intervention_always_drew(n_sequences, n, seed):
    drawn = np.random.default_rng(seed).choice(n_sequences, size=min(n, n_sequences), replace=False)
    assert np.array_equal(prompt_rows(n_sequences, n, seed), np.sort(drawn))


def test_prompt_rows_never_choose_excluded_rows():
    held = prompt_rows(64, 10, seed=0)
    rows = prompt_rows(64, 40, seed=0, exclude=held)
    assert len(rows) == 40 and not set(rows) & set(held)
    assert np.array_equal(rows, np.sort(rows))
    assert set(prompt_rows(12, 16, seed=3, exclude=[0, 5])) == set(range(12)) - {0, 5}
    with pytest.raises(ValueError, match="no cache rows left for prompts: 3 sequences, 3 excluded"):
        prompt_rows(3, 2, seed=0, exclude=[0, 1, 2])
    with pytest.raises(ValueError, match="n >= 1"):
        prompt_rows(3, 0, seed=0)


# ---------------------------------------------------------------- the strength search


def _curve(kl):
    """`kl` recording the strengths it was asked for."""
    asked: list[float] = []

    def f(s: float) -> float:
        asked.append(s)
        return kl(s)

    return f, asked


def test_find_strength_bisects_a_monotone_kl_in_log_space():
    f, asked = _curve(lambda s: (s / 3) ** 2)
    s, kl = find_strength(f, target=1.0, tolerance=0.05, max_strength=100.0, steps=12)
    assert abs(kl - 1.0) <= 0.05 and kl == pytest.approx((s / 3) ** 2)
    assert asked[0] == 100.0 and len(asked) <= 12  # the largest strength first, then bisection
    assert asked[1] == pytest.approx(1.0)  # the geometric middle of [100 / 1e4, 100]
    # a model that breaks above some strength: too strong, not an error, while the target is below
    f, _ = _curve(lambda s: (s / 3) ** 2 if s < 5 else math.inf)
    s, kl = find_strength(f, target=1.0, tolerance=0.05, max_strength=100.0, steps=12)
    assert abs(kl - 1.0) <= 0.05 and 2.9 < s < 3.1


def test_find_strength_fails_cleanly_when_the_target_is_out_of_reach():
    f, asked = _curve(lambda s: min(s, 0.5))
    with pytest.raises(StrengthNotFound, match="reaches only 0.5 at the largest strength, 100 x"):
        find_strength(f, target=1.0, tolerance=0.05, max_strength=100.0, steps=12)
    assert asked == [100.0]
    f, _ = _curve(lambda s: s**2 / 100 if s < 2 else math.nan)  # needs s = 10; NaN from s = 2
    with pytest.raises(StrengthNotFound, match="in 12 steps .*made the model produce NaN or inf"):
        find_strength(f, target=1.0, tolerance=0.05, max_strength=100.0, steps=12)
    f, asked = _curve(lambda s: (s / 3) ** 2)
    with pytest.raises(StrengthNotFound, match="did not come within 5% of 1 in 2 steps"):
        find_strength(f, target=1.0, tolerance=0.05, max_strength=100.0, steps=2)
    assert len(asked) == 2


def test_mean_kl():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]).log()
    q = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]]).log()
    expected = (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.05)) / 2  # p = 0 adds nothing
    assert mean_kl(p, q) == pytest.approx(expected, rel=1e-5)
    assert mean_kl(p, p) == 0.0
    assert not math.isfinite(mean_kl(p, torch.full_like(q, math.nan)))


# ---------------------------------------------------------------- registration


def test_intervention_kl_is_a_scorer_like_the_others():
    assert MAIN_METRIC["intervention-kl"] == "kl_score" and "intervention-kl" in SCORERS
    assert ScoreConfig(scorers=["intervention", "intervention-kl"]).intervention.target_kl == 1.0
    with pytest.raises(ValidationError, match="target_kl"):
        InterventionConfig(target_kl=0)
    lid = LatentId(coder="c", latent=1)
    rec = SampledLatent(
        id=lid, status="ok", density=0.1, max_activation=3.0, n_activating_windows=0
    )
    expl = Explanation(latent=lid, text="cats", raw="cats", model="m", prompt="p")
    assert STEERING == {"intervention", "intervention-kl"}
    for name in STEERING:  # steering reads cached prompts, not test examples
        assert precheck(rec, expl, name) is None
    assert "no test examples" in precheck(rec, expl, "surprisal").error


# ---------------------------------------------------------------- the real model and SAE


@pytest.fixture(scope="module")
def ctx(run):
    return test_score._ctx(run, intervention=SMALL)


@pytest.fixture(scope="module")
def items(run, ctx):
    expl = test_score._explanations(run)
    recs = [r for r in read_records(run / "sample" / "layers.15.jsonl") if r.status == "ok"]
    return [ctx.item(r, expl[r.id.latent]) for r in recs[:2]]


@pytest.mark.slow
def test_real_intervention_keeps_its_rows_and_scores(ctx, items):
    """The refactored scorer steers the rows `default_rng(seed).choice` draws, and its score is the
    mean over prompts of the explanation's loss after clean minus after steered continuations."""
    scorer = SCORERS["intervention"](ctx, "layers.15")
    rows = np.sort(np.random.default_rng(0).choice(len(ctx.tokens), size=3, replace=False))
    assert torch.equal(scorer.prompts, torch.as_tensor(ctx.tokens[rows, :8].astype(np.int64)))
    it = items[0]
    [s] = asyncio.run(scorer.score([it]))
    add = scorer.cfg.scale * it.record.max_activation * scorer.direction(it.record.id.latent)
    clean, _ = scorer.steerer.continue_prompts(None)
    steered, finite = scorer.steerer.continue_prompts(add)
    pairs = [(scorer.cfg.prefix.format(text=t), " " + it.text) for t in clean + steered]
    loss = np.asarray(scorer.loss.losses(pairs))
    assert finite and s.status == "ok" and s.metrics["n"] == 6
    assert s.metrics["score"] == pytest.approx(float(np.mean(loss[:3] - loss[3:])), abs=1e-6)


@pytest.mark.slow
def test_real_intervention_kl_reaches_the_target_whatever_the_decoder_norm(
    run, ctx, items, tmp_path
):
    """Through the score stage (files, summary) on two latents, then one of them with a longer
    decoder direction, then with a target out of reach."""
    ids = [it.record.id.latent for it in items]
    sample, expl = run / "sample" / "layers.15.jsonl", test_score._explanations(run)
    paths = score_coder(ctx, ["intervention-kl"], sample, expl, tmp_path, set(ids), progress=False)
    got = read_scores(paths["intervention-kl"])
    assert summarize(paths)["intervention-kl"]["metric"] == "kl_score"
    scores = [got[i] for i in ids]
    scorer = SCORERS["intervention-kl"](ctx, "layers.15")
    assert isinstance(scorer, InterventionKLScorer)
    cfg = scorer.cfg
    for s in scores:
        assert s.status == "ok", s.error
        m = s.metrics
        assert abs(m["kl"] - cfg.target_kl) <= cfg.kl_tolerance * cfg.target_kl
        assert m["kl_score"] == m["score"] / m["kl"] and 0 < m["strength"] <= cfg.max_strength
        lo, hi = s.intervals["kl_score"]
        assert lo <= m["kl_score"] <= hi and s.metrics["n"] == 6
    # the first latent with its decoder direction 4x longer: a fixed scale moves the model far
    # more, while intervention-kl reaches the same KL at a quarter of the strength
    it, [base, _] = items[0], scores
    lat = it.record.id.latent
    coder = ctx.coder("layers.15")
    W = coder.W_dec.clone()
    W[lat] *= 4
    long = InterventionKLScorer(
        cfg, ctx.subject, dataclasses.replace(coder, W_dec=W), ctx.tokens, scorer.loss
    )
    [s] = asyncio.run(long.score([it]))
    assert s.status == "ok", s.error
    assert abs(s.metrics["kl"] - cfg.target_kl) <= cfg.kl_tolerance * cfg.target_kl
    assert s.metrics["strength"] * 4 == pytest.approx(base.metrics["strength"], rel=0.1)
    fixed = cfg.scale * it.record.max_activation
    short_kl, long_kl = (x.kl(fixed * x.direction(lat)) for x in (scorer, long))
    assert long_kl > 2 * short_kl  # what intervention's fixed scale would compare
    # a target out of reach is a failed score that says so, never a zero
    scorer.cfg = cfg.model_copy(update={"max_strength": 1e-3})
    [out] = asyncio.run(scorer.score([it]))
    assert out.status == "failed" and "reaches only" in out.error and "kl_score" not in out.metrics
