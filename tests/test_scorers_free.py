"""The explanation-free scorers: `intruder` (an LLM names the one non-activating example among a
latent's activating ones) and `example-embedding` (held-out examples by similarity to the latent's
train examples). A scripted judge for parsing; the real MiniLM and the real packaged SmolLM2 through
`autointerp score` for the rest."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

from autointerp.clients.base import Completion, GenParams, TokenLogprob
from autointerp.score import EXPLANATION_FREE, MAIN_METRIC, SCORERS, ScoreConfig, precheck
from autointerp.score.base import LatentItem, text_of
from autointerp.score.intruder import IntruderConfig, IntruderScorer, parse_number
from autointerp.types import Example, Explanation, LatentId, SampledLatent

LID = LatentId(coder="c", latent=7)


def ex(text: str, fire=(), q: int | None = None, kind="activating", seq=0) -> Example:
    tokens = re.findall(r"\s*\S+", text)
    acts = [float(i + 1) if i in fire else 0.0 for i in range(len(tokens))]
    return Example(tokens=tokens, activations=acts, seq=seq, start=0, quantile=q, kind=kind)


def item(test, negatives, train=(), text: str | None = None, latent: int = 7) -> LatentItem:
    lid = LID.model_copy(update={"latent": latent})
    rec = SampledLatent(
        id=lid, status="ok", density=0.1, max_activation=3.0, n_activating_windows=len(test)
    )
    expl = Explanation(latent=lid, text=text, raw="", model="m", prompt="p", error="no line")
    return LatentItem(rec, expl, list(test), list(negatives), list(train))


NUMBERS = [ex(f"In {1900 + i} there were {i * 7} ships", [1, 4], q=i % 2, seq=i) for i in range(6)]
PROSE = [
    ex("The cat sat on the warm mat", kind="random", seq=100),
    ex("Rivers flow down to the sea", kind="random", seq=101),
    ex("She sang a song about love", kind="similar", seq=102),
    ex("Green leaves fall in autumn", kind="similar", seq=103),
]


class Judge:
    """A scripted intruder judge: names the example whose text is a non-activating one (`truthful`),
    or answers `reply` verbatim; one answer token with top logprobs when `logprobs`."""

    model = "scripted"

    def __init__(self, intruders: set[str], reply: str | None = None, logprobs: bool = True):
        self.intruders, self.reply, self.logprobs = intruders, reply, logprobs
        self.chats: list[list[dict]] = []

    async def complete(self, chats, params: GenParams):
        out = []
        for chat in chats:
            self.chats.append(chat)
            texts = re.findall(r"^Example \d+: (.*)$", chat[1]["content"], re.M)
            plain = [t.replace("<<", "").replace(">>", "") for t in texts]
            right = str(next(i for i, t in enumerate(plain, 1) if t in self.intruders))
            text = self.reply if self.reply is not None else right
            other = "1" if right != "1" else "2"
            top = [(text, math.log(0.7)), (other, math.log(0.2)), ("The", math.log(0.1))]
            lp = [TokenLogprob(token=text, logprob=math.log(0.7), top=top)]
            prefilled = chat[-1]["role"] == "assistant"
            out.append(
                Completion(
                    text=text if prefilled or self.reply is not None else f"[{text}]",
                    logprobs=lp if self.logprobs else None,
                    prompt_tokens=50,
                    completion_tokens=1,
                )
            )
        return out


def _score(it: LatentItem, judge: Judge, **cfg):
    scorer = IntruderScorer(judge, IntruderConfig(**cfg))
    [s] = asyncio.run(scorer.score([it]))
    return s


# ---------------------------------------------------------------- intruder: the prompt


GOLDEN_SYSTEM = """\
You find the odd one out among numbered text examples. A feature of a language model's activations \
fires on every example but one: those examples share something, such as a word, a kind of token, a \
topic or a style. Exactly one example, the intruder, comes from text where the feature stays silent.

Where tokens are marked <<like this>>, the marks show where the feature fires; in the intruder, the \
marked tokens were picked without regard to the feature.

Find what the other examples share and answer with the number of the example that does not share it, \
in brackets, and nothing else. If example 3 is the intruder: [3]"""

GOLDEN_USER = """\
Examples:
Example 1: In<< 1901>> there were<< 7>> ships
Example 2: In<< 1905>> there were<< 35>> ships
Example 3: <<The>> cat sat on the<< warm>> mat

Which example is the intruder?"""


def test_intruder_prompt_golden():
    """The whole rendered prompt, with fixed inputs and seed: two activating examples of one
    quantile with their firing tokens marked, the intruder with as many random tokens marked."""
    it = item(NUMBERS, PROSE[:2])
    scorer = IntruderScorer(Judge(set()), IntruderConfig(n_prompts=2, examples_per_prompt=2))
    prompts = scorer.prompts(it)
    chat = scorer.chat(prompts[1].shown)
    assert [m["role"] for m in chat] == ["system", "user"]  # no prefill for a remote client
    assert chat[0]["content"] == GOLDEN_SYSTEM
    assert chat[1]["content"] == GOLDEN_USER
    assert prompts[1].at == 2 and prompts[1].intruder.kind == "random"
    assert prompts[1].intruder.seq == 100 and prompts[1].intruder.quantile == 1
    prefilled = IntruderScorer(Judge(set()), IntruderConfig(prefill=True)).chat(prompts[1].shown)
    assert prefilled[-1] == {"role": "assistant", "content": "["}
    plain = IntruderScorer(Judge(set()), IntruderConfig(highlight=False)).chat(prompts[1].shown)
    assert "<<" not in plain[1]["content"]


def test_intruder_prompts_cycle_quantiles_similar_intruders_first_seeded_by_latent():
    it = item(NUMBERS, PROSE)
    scorer = IntruderScorer(Judge(set()), IntruderConfig(n_prompts=6, examples_per_prompt=3))
    prompts = scorer.prompts(it)
    assert [p.intruder.quantile for p in prompts] == [0, 1, 0, 1, 0, 1]
    assert [p.intruder.kind for p in prompts] == ["similar"] * 2 + ["random"] * 2 + ["similar"] * 2
    for p in prompts:
        assert len(p.shown) == 4
        others = [e for i, e in enumerate(p.shown) if i != p.at]
        assert all(e.quantile == p.intruder.quantile for e in others)  # one quantile per prompt
        assert text_of(p.shown[p.at]) in {text_of(e) for e in PROSE}
        assert sum(a > 0 for a in p.shown[p.at].activations) == 2  # as many marks as the others
    assert len({p.at for p in prompts}) > 1
    assert scorer.prompts(it) == prompts  # seeded
    other = item(NUMBERS, PROSE, latent=8)
    assert scorer.prompts(other) != prompts  # by the latent's id


def test_intruder_truthful_judge_is_perfect_and_independent_of_the_batch():
    it = item(NUMBERS, PROSE)
    judge = Judge({text_of(e) for e in PROSE})
    scorer = IntruderScorer(judge, IntruderConfig(n_prompts=5))
    [s] = asyncio.run(scorer.score([it]))
    assert s.status == "ok" and s.scorer == "intruder" and s.explanation is None
    assert s.metrics["accuracy"] == 1.0 and s.metrics["chance"] == pytest.approx(0.2)
    assert s.metrics["n"] == 5 and s.metrics["n_failed"] == 0
    low, high = s.intervals["accuracy"]  # Wilson: 5 of 5 is not certainty
    assert 0.4 < low < 0.6 and high == 1.0
    assert s.metrics["mean_probability"] == pytest.approx(0.7 / 0.9)  # P(right) among numbers
    assert s.calls == 5 and s.prompt_tokens == 250 and s.prompt.startswith("intruder@")
    assert all(p.label and p.prediction for p in s.predictions)
    assert s.per_group["q0"]["n"] == 3 and s.per_group["similar"]["accuracy"] == 1.0
    # Scored among other latents, a latent gets the same prompts and the same score.
    other = item(NUMBERS[:3], PROSE[:1], latent=3)
    _, again = asyncio.run(scorer.score([other, it]))
    assert again == s


def test_intruder_read_from_the_answer_tokens_logprobs():
    """Prefilled `[` (as for the local backends): the answer is the one token's top logprobs."""
    it = item(NUMBERS, PROSE)
    judge = Judge({text_of(e) for e in PROSE})
    s = _score(it, judge, n_prompts=3, prefill=True)
    assert all(c[-1] == {"role": "assistant", "content": "["} for c in judge.chats)
    assert s.status == "ok" and s.metrics["accuracy"] == 1.0
    assert all(p.probability == pytest.approx(0.7 / 0.9) for p in s.predictions)
    nolp = _score(it, Judge({text_of(e) for e in PROSE}, logprobs=False), n_prompts=3)
    assert nolp.metrics["accuracy"] == 1.0 and nolp.metrics["mean_probability"] is None
    assert any("logprobs" in n for n in nolp.notes)


class WordyJudge(Judge):
    """Its one answer token is "Example", with the right number among the top alternatives."""

    async def complete(self, chats, params: GenParams):
        out = []
        for c in await super().complete(chats, params):
            right = c.logprobs[0].token
            other = "1" if right != "1" else "2"
            top = [("Example", math.log(0.6)), (right, math.log(0.3)), (other, math.log(0.1))]
            lp = [TokenLogprob(token="Example", logprob=math.log(0.6), top=top)]
            out.append(c.model_copy(update={"text": "Example", "logprobs": lp}))
        return out


def test_intruder_single_token_reads_the_digits_when_the_chosen_token_is_a_word():
    judge = WordyJudge({text_of(e) for e in PROSE})
    s = _score(item(NUMBERS, PROSE), judge, n_prompts=3, prefill=True)
    assert s.status == "ok" and s.metrics["accuracy"] == 1.0
    assert all(p.probability == pytest.approx(0.75) and p.error is None for p in s.predictions)


def test_a_shared_sentence_model_encodes_one_call_at_a_time():
    """The embedding scorers share one model across threads; a fast tokenizer used by two threads
    at once raises "Already borrowed" (this model raises as it does)."""
    import threading
    import time

    import numpy as np

    from autointerp.score.embedding import encode

    class Model:
        busy = False

        def encode(self, texts, **kw):
            if self.busy:
                raise RuntimeError("Already borrowed")
            self.busy = True
            time.sleep(0.05)
            self.busy = False
            return np.ones((len(texts), 2)) / np.sqrt(2)

    model, errors = Model(), []

    def run():
        try:
            assert encode(model, ["a", "b"], 8).shape == (2, 2)
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_intruder_garbage_answers_fail_never_count_as_wrong():
    it = item(NUMBERS, PROSE)
    s = _score(it, Judge(set(map(text_of, PROSE)), reply="I cannot tell"), n_prompts=3)
    assert s.status == "failed" and "no example number in the answer" in s.error
    assert s.metrics == {} and all(p.error and p.prediction is None for p in s.predictions)
    far = _score(it, Judge(set(map(text_of, PROSE)), reply="[9]"), n_prompts=2)
    assert far.status == "failed" and "names example 9, not one of 1..5" in far.error
    with pytest.raises(ValueError, match="no example number"):
        parse_number("[", 5)
    assert parse_number("[3]", 5) == 3 and parse_number("Example 2 is the odd one", 5) == 2

    class Flaky(Judge):  # every other prompt is answered with garbage
        async def complete(self, chats, params):
            out = await super().complete(chats, params)
            return [c if i % 2 else c.model_copy(update={"text": "?"}) for i, c in enumerate(out)]

    flaky = _score(it, Flaky(set(map(text_of, PROSE)), logprobs=False), n_prompts=4)
    assert flaky.status == "ok" and flaky.metrics["n"] == 2 and flaky.metrics["n_failed"] == 2
    assert flaky.metrics["accuracy"] == 1.0

    class Down(Judge):
        async def complete(self, chats, params):
            return [Completion(text=None, error="HTTP 500 after 3 retries") for _ in chats]

    down = _score(it, Down(set()), n_prompts=2)
    assert down.status == "failed" and "HTTP 500" in down.error


def test_intruder_without_enough_examples_fails_with_the_reason():
    judge = Judge(set())
    lone = _score(item(NUMBERS[:1], PROSE), judge)
    assert lone.status == "failed" and "at least 2" in lone.error
    alone = _score(item(NUMBERS, []), judge)
    assert alone.status == "failed" and "no non-activating examples" in alone.error
    assert judge.chats == []  # nothing was asked


# ---------------------------------------------------------------- both: explanation-free


def test_registered_and_exempt_from_the_explanation_check():
    assert EXPLANATION_FREE == {"intruder", "example-embedding"} <= set(SCORERS)
    assert MAIN_METRIC["intruder"] == "accuracy" and MAIN_METRIC["example-embedding"] == "auroc"
    cfg = ScoreConfig.model_validate(
        {"scorers": ["intruder", "example-embedding"], "intruder": {"n_prompts": 3}}
    )
    assert cfg.intruder.n_prompts == 3 and cfg.example_embedding.model == "all-MiniLM-L6-v2"
    rec = SampledLatent(
        id=LID, status="ok", density=0.1, max_activation=1, n_activating_windows=3
    ).model_copy(update={"test": [{"seq": 0, "start": 0}]})
    bad = Explanation(latent=LID, text=None, raw="x", model="m", prompt="p", error="no line")
    empty = bad.model_copy(update={"text": " ", "error": None})
    for name in EXPLANATION_FREE:
        assert precheck(rec, bad, name) is None and precheck(rec, empty, name) is None
        none = precheck(rec.model_copy(update={"test": []}), bad, name)
        assert "no test examples" in none.error and none.explanation is None
    assert "explanation failed" in precheck(rec, bad, "detection").error


COOKING = [
    "Whisk the eggs with sugar, then fold in the flour and bake for twenty minutes.",
    "Simmer the tomato sauce with garlic and basil until it thickens.",
    "Season the chicken with salt and pepper before roasting it in the oven.",
    "Knead the bread dough for ten minutes and let it rise in a warm place.",
    "Chop the onions finely and fry them in butter until golden.",
    "Add a pinch of cinnamon to the apple pie filling before baking.",
]
COOKING_TEST = [
    "Stir the risotto often and add the stock one ladle at a time.",
    "Marinate the beef overnight in soy sauce, ginger and honey.",
    "Grate the cheese over the pasta and serve it hot.",
    "Beat the butter and sugar until pale, then add the eggs one by one.",
    "Boil the potatoes in salted water, drain them and mash with milk.",
]
OTHER = [
    "The telescope observed a distant galaxy forming new stars.",
    "Shares fell sharply after the central bank raised interest rates.",
    "The striker scored twice in the second half of the final.",
    "Parliament passed the bill after a long debate on taxation.",
    "The volcano erupted, sending ash high into the atmosphere.",
    "The software update fixes a security flaw in the login page.",
]


def test_example_embedding_ranks_the_latents_topic_first_with_the_real_minilm():
    """Activating examples about cooking rank above unrelated text by their similarity to the
    cooking train examples; no explanation is needed (this latent's failed)."""
    from autointerp.score.embedding import EmbeddingConfig
    from autointerp.score.example_embedding import ExampleEmbeddingScorer

    train = [ex(t, seq=200 + i) for i, t in enumerate(COOKING)]
    test = [ex(t, [1], q=i % 2, seq=i) for i, t in enumerate(COOKING_TEST)]
    kinds = ["random", "similar"]
    negatives = [ex(t, kind=kinds[i % 2], seq=100 + i) for i, t in enumerate(OTHER)]
    scorer = ExampleEmbeddingScorer(EmbeddingConfig())
    good, no_train, no_neg = asyncio.run(
        scorer.score([item(test, negatives, train), item(test, negatives), item(test, [], train)])
    )
    assert good.status == "ok" and good.explanation is None, good.error
    assert good.metrics["auroc"] > 0.8 and good.metrics["n"] == 11
    assert good.metrics["mean_activating"] > good.metrics["mean_non_activating"]
    assert set(good.per_group) == {"q0", "q1", "random", "similar"}
    assert no_train.status == "failed" and "no train examples" in no_train.error
    assert no_neg.status == "failed" and "no non-activating examples" in no_neg.error
    assert SCORERS["example-embedding"].__name__ == "_example_embedding"
    assert scorer.model is ExampleEmbeddingScorer(EmbeddingConfig()).model  # loaded once


# ---------------------------------------------------------------- the real model, the real CLI


def test_cli_score_runs_both_with_the_real_local_model_even_when_the_explanation_failed(
    small_run, tmp_path
):
    """`autointerp score` with the packaged SmolLM2 as judge: both scorers write status ok for a
    latent whose explanation failed and for one whose explanation is fine."""
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.sample import read_records

    ok = [
        r.id.latent
        for r in read_records(small_run / "sample" / "layers.15.jsonl")
        if r.status == "ok"
    ][:2]
    expl = tmp_path / "explanations"
    expl.mkdir()
    rows = [
        json.loads(x)
        for x in (small_run / "explanations" / "layers.15.jsonl").read_text().splitlines()
    ]
    for row in rows:
        if row["latent"]["latent"] == ok[0]:
            row.update(text=None, error="no [EXPLANATION] line in the answer")
    (expl / "layers.15.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "score.yaml"
    cfg.write_text("score: {intruder: {n_prompts: 2, examples_per_prompt: 3}}\n")
    out = tmp_path / "scores"
    args = ["score", small_run / "cache", "--explanations", expl, "--out", out, "--config", cfg]
    args += ["--scorer", "intruder", "--scorer", "example-embedding", "--coder", "layers.15"]
    args += ["--latents", ",".join(map(str, ok))]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "layers.15 intruder: 2 scored, 0 failed, mean accuracy" in r.output
    assert "layers.15 example-embedding: 2 scored, 0 failed, mean auroc" in r.output
    for name in ("intruder", "example-embedding"):
        lines = [json.loads(x) for x in (out / name / "layers.15.jsonl").read_text().splitlines()]
        assert sorted(x["latent"]["latent"] for x in lines) == sorted(ok)
        assert all(x["status"] == "ok" and x["explanation"] is None for x in lines), lines
    intr = [json.loads(x) for x in (out / "intruder" / "layers.15.jsonl").read_text().splitlines()]
    for x in intr:  # the local backend: prefilled, one answer token, P(right number) from logprobs
        assert x["calls"] == 2 and x["completion_tokens"] <= 2 and x["metrics"]["chance"] == 0.25
        assert all(0 <= p["probability"] <= 1 for p in x["predictions"])
