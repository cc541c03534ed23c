"""Adaptive scoring of detection and fuzzing: balanced rounds, the stopping rules, what a score
records, equality with full scoring when it never stops, and a real local judge."""

from __future__ import annotations

import asyncio
import string

import pytest

from autointerp.clients.base import Completion
from autointerp.score import ScoreConfig, ScoreStageConfig
from autointerp.score.classifier import AdaptiveConfig, ClassifierConfig, ClassifierScorer
from tests.test_score import Scripted, _truth, ex, item
from tests.test_shared_layout import Truthful


def _word(i: int) -> str:
    return "".join(string.ascii_lowercase[int(d)] for d in f"{i:03d}")


TEST = [ex(f"In {1900 + i} there were {i} ships", [1, 4], q=i % 10, seq=i) for i in range(40)]
NEGATIVES = [
    ex(f"The {_word(i)} cat sat on the mat", kind="random" if i % 2 else "similar", seq=100 + i)
    for i in range(40)
]


def scorer(name="detection", client=None, layout="separate", **adaptive) -> ClassifierScorer:
    it = item(TEST, NEGATIVES)
    a = AdaptiveConfig(enabled=True, **adaptive) if adaptive else None
    cfg = ClassifierConfig(layout=layout, n_wrong=4)
    return ClassifierScorer(name, client or Scripted(_truth(it)), cfg, a)


def test_rounds_take_every_quantile_and_kind_in_turn():
    it = item(TEST, NEGATIVES)
    for layout in ("separate", "shared"):
        rounds = scorer("fuzzing", layout=layout, round=10).rounds(it)
        # 5 + 5, and the 4 wrong ones spread over the 8 rounds
        assert sorted(len(r) for r in rounds) == [10] * 4 + [11] * 4
        all_ = [s for r in rounds for s in r]
        assert sorted(map(str, all_)) == sorted(map(str, scorer("fuzzing").samples(it)))
        for r in rounds:
            kinds = [p.kind for _, p in r]
            assert kinds.count("activating") == 5 and kinds.count("wrong") <= 1
            assert {"random", "similar"} <= set(kinds)
        first_two = {p.quantile for r in rounds[:2] for _, p in r if p.label}
        assert first_two == set(range(10))  # two rounds of 5 positives cover the 10 quantiles
        assert len({p.quantile for _, p in rounds[0] if p.label}) == 5


def test_a_clear_latent_stops_early_and_says_why():
    full = asyncio.run(scorer().score([item(TEST, NEGATIVES)]))[0]
    s = asyncio.run(scorer(round=20, width=0.35).score([item(TEST, NEGATIVES)]))[0]
    assert s.status == "ok" and s.metrics["balanced_accuracy"] == 1.0
    assert s.metrics["n"] < s.metrics["n_available"] == 80 == full.metrics["n"]
    assert s.metrics["n"] % 20 == 0 and s.metrics["n"] >= 20
    [note] = [n for n in s.notes if n.startswith("adaptive:")]
    assert f"stopped after {s.metrics['n']} examples" in note and "at most 0.35 wide" in note
    assert s.prompt_tokens < full.prompt_tokens and s.calls < full.calls
    assert "n_available" not in full.metrics  # only adaptive scores carry it


class Coin(Scripted):
    """Answers yes on every other prompt it sees, whatever the example."""

    def __init__(self):
        super().__init__({})
        self.k = 0

    async def complete(self, chats, params):
        out = []
        for chat in chats:
            self.k += 1
            n = chat[1]["content"].count("\nExample ")
            out.append(Completion(text="[" + ",".join(str(self.k % 2) for _ in range(n)) + "]"))
        return out


def test_an_unsure_latent_uses_every_example():
    s = asyncio.run(scorer(client=Coin(), round=20, width=0.2).score([item(TEST, NEGATIVES)]))[0]
    assert s.status == "ok" and s.metrics["n"] == s.metrics["n_available"] == 80
    assert not [n for n in s.notes if n.startswith("adaptive:")]


def test_threshold_stops_a_clearly_wrong_explanation():
    it = item(TEST, NEGATIVES)
    inverted = Scripted({t: not v for t, v in _truth(it).items()})
    s = asyncio.run(scorer(client=inverted, round=20, width=0.01, threshold=0.5).score([it]))[0]
    assert s.metrics["balanced_accuracy"] == 0.0 and s.metrics["n"] == 20
    assert any("lies below 0.5" in n for n in s.notes)


def test_adaptive_scoring_that_never_stops_judges_what_full_scoring_judges():
    it = item(TEST, NEGATIVES)
    for name in ("detection", "fuzzing"):
        full = asyncio.run(scorer(name, Truthful(), "shared").score([it]))[0]
        slow = asyncio.run(scorer(name, Truthful(), "shared", round=10, width=0.001).score([it]))[0]
        key = [(p.seq, p.kind, p.label, p.prediction) for p in full.predictions]
        assert sorted(key) == sorted(
            (p.seq, p.kind, p.label, p.prediction) for p in slow.predictions
        )
        assert slow.metrics["n"] == full.metrics["n"] == slow.metrics["n_available"]
        assert slow.metrics["balanced_accuracy"] == full.metrics["balanced_accuracy"] == 1.0


def test_adaptive_config():
    assert ScoreConfig(adaptive=True).adaptive.enabled  # type: ignore[arg-type]
    assert not ScoreConfig().adaptive.enabled
    cfg = ScoreStageConfig.model_validate({"score": {"adaptive": {"width": 0.1, "round": 10}}})
    assert cfg.score.adaptive.width == 0.1 and not cfg.score.adaptive.enabled
    with pytest.raises(ValueError, match="needs logprobs"):
        ClassifierScorer(
            "detection",
            Scripted({}),
            ClassifierConfig(logprobs=False),
            AdaptiveConfig(enabled=True, metric="auroc"),
        )
    with pytest.raises(ValueError):
        AdaptiveConfig(width=0)


def test_real_local_judge_scores_adaptively():
    """The packaged SmolLM2 through llama.cpp: a wide enough interval stops each latent after its
    first round; the score says so and counts the examples it used."""
    from autointerp.clients.llamacpp import LlamaCppClient

    client = LlamaCppClient("smollm2", n_ctx=2048, threads=1)
    it = item(TEST[:20], NEGATIVES[:20])
    s = ClassifierScorer(
        "detection", client, ClassifierConfig(), AdaptiveConfig(enabled=True, round=10, width=1.0)
    )
    assert s.per_prompt == 1
    [r] = asyncio.run(s.score([it]))
    assert r.status == "ok" and r.metrics["n_available"] == 40
    assert r.metrics["n"] == 20 == r.calls  # min_examples: two rounds of 10, one call each
    assert any(n.startswith("adaptive: stopped after 20 examples") for n in r.notes)
