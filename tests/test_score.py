"""Scorers: metrics, answer parsing, failures recorded as failures, resume; real models where a user
would use them (the packaged SmolLM2 as scorer, LM and steered subject; the packaged MiniLM)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from autointerp.cache import ActivationCache, build_cache
from autointerp.clients.base import Completion, GenParams, TokenLogprob
from autointerp.config import CacheConfig, CorpusConfig
from autointerp.explain import ExplainConfig, Explainer
from autointerp.sample import (
    SampleConfig,
    TokenDecoder,
    read_records,
    sample_coder,
    write_config,
)
from autointerp.score import ScoreContext, ScoreStageConfig, precheck, read_scores, score_coder
from autointerp.score.base import LatentItem, text_of
from autointerp.score.classifier import (
    ClassifierConfig,
    ClassifierScorer,
    answer_probabilities,
    parse_answer,
)
from autointerp.score.metrics import auroc, classification, pearson
from autointerp.score.simulation import (
    SimulationConfig,
    SimulationScorer,
    expected_values,
    parse_values,
)
from autointerp.subject import load_tokenizer
from autointerp.types import Example, Explanation, LatentId, SampledLatent

LID = LatentId(coder="c", latent=7)


def ex(text: str, fire: list[int] = (), q: int | None = None, kind="activating", seq=0) -> Example:
    tokens = re.findall(r"\s*\S+", text)
    acts = [float(i + 1) if i in fire else 0.0 for i in range(len(tokens))]
    return Example(tokens=tokens, activations=acts, seq=seq, start=0, quantile=q, kind=kind)


def item(test, negatives, text="digits and numbers", record_kw=None) -> LatentItem:
    rec = SampledLatent(
        id=LID, status="ok", density=0.1, max_activation=3.0, n_activating_windows=len(test),
        **(record_kw or {}),
    )  # fmt: skip
    expl = Explanation(latent=LID, text=text, raw=text, model="m", prompt="p")
    return LatentItem(rec, expl, list(test), list(negatives))


NUMBERS = [ex(f"In {1900 + i} there were {i * 7} ships", [1, 4], q=i % 2, seq=i) for i in range(6)]
PROSE = [
    ex(t, kind=k, seq=100 + i)
    for i, (t, k) in enumerate(
        [
            ("The cat sat on the warm mat", "random"),
            ("Rivers flow down to the sea", "random"),
            ("She sang a song about love", "similar"),
            ("Green leaves fall in autumn", "similar"),
            ("He walked home after dinner", "random"),
            ("Birds build nests in spring", "similar"),
        ]
    )
]


# ---------------------------------------------------------------- metrics and parsing


def test_metrics_known_values():
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.85]) == 0.75
    assert auroc([1, 0], [0.5, 0.5]) == 0.5  # ties count half
    assert auroc([1, 1], [0.1, 0.2]) is None
    m = classification([1, 1, 1, 0, 0], [1, 1, 0, 0, 1], [None] * 5)
    assert m["accuracy"] == 0.6 and m["recall"] == 2 / 3 and m["specificity"] == 0.5
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["precision"] == 2 / 3 and m["f1"] == pytest.approx(2 / 3) and m["auroc"] is None
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 1], [0, 1]) is None


def test_parse_answer_names_the_problem():
    assert parse_answer("[1, 0,1]", 3) == [True, False, True]
    assert parse_answer("Answer: [true, no]", 2) == [True, False]
    with pytest.raises(ValueError, match="3 values for 5 examples"):
        parse_answer("[1,0,1]", 5)
    with pytest.raises(ValueError, match="'2', not 0 or 1"):
        parse_answer("[1,2]", 2)
    with pytest.raises(ValueError, match="no \\[..\\] list"):
        parse_answer("yes", 1)


def test_simulation_answers_and_expected_values():
    assert parse_values("[0, 3, 12]", 3) == [0, 3, 10]
    with pytest.raises(ValueError, match="2 values for 3 tokens"):
        parse_values("[0,1]", 3)
    lp = [
        TokenLogprob(token="0", logprob=0.0, top=[("0", math.log(0.5)), ("4", math.log(0.5))]),
        TokenLogprob(token=",", logprob=0.0),
        TokenLogprob(token="1", logprob=0.0, top=[("1", 0.0)]),
        TokenLogprob(token="0", logprob=0.0, top=[("0", 0.0)]),  # "10" in two tokens
    ]
    assert expected_values(Completion(text="0,10]", logprobs=lp), 2) == [2.0, 10.0]


# ---------------------------------------------------------------- a scripted scorer LLM


class Scripted:
    """Answers detection/fuzzing prompts from the example texts: truthfully by default; `mode`
    makes it answer lists of the wrong length, fail, or leave out logprobs."""

    model = "scripted"

    def __init__(self, truth: dict, mode: str = "truth", fail_after: int | None = None):
        """`truth`: example text -> label, or explanation -> (example text -> label)."""
        self.truth, self.mode, self.fail_after, self.calls = truth, mode, fail_after, 0
        self.per_explanation = any(isinstance(v, dict) for v in truth.values())

    async def complete(self, chats, params: GenParams):
        out = []
        for chat in chats:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise RuntimeError("scripted client stopped")
            texts = re.findall(r"^Example \d+: (.*)$", chat[1]["content"], re.M)
            truth = self.truth
            if self.per_explanation:  # one window may fire for one latent and not for another
                truth = next(t for x, t in self.truth.items() if x in chat[1]["content"])
            answers = [truth[t.replace("<<", "").replace(">>", "")] for t in texts]
            if self.mode == "error":
                out.append(Completion(text=None, error="HTTP 500 after 3 retries"))
                continue
            if self.mode == "short":
                answers = answers[:-1]
            digits = ["1" if a else "0" for a in answers]
            lp = [
                TokenLogprob(
                    token=d,
                    logprob=math.log(0.9),
                    top=[(d, math.log(0.9)), ("10"[d == "1"], math.log(0.1))],
                )
                for d in digits
            ]
            out.append(
                Completion(
                    text="[" + ",".join(digits) + "]",
                    logprobs=None if self.mode == "nologprobs" else lp,
                    prompt_tokens=100,
                    completion_tokens=2 * len(digits) + 1,
                )
            )
        return out


def _truth(it: LatentItem) -> dict[str, bool]:
    return {text_of(e): lab for e, lab in it.labelled()}


def test_detection_with_a_truthful_scorer_is_perfect():
    it = item(NUMBERS, PROSE)
    client = Scripted(_truth(it))
    [s] = asyncio.run(ClassifierScorer("detection", client, ClassifierConfig()).score([it]))
    assert s.status == "ok" and s.metrics["balanced_accuracy"] == 1.0 and s.metrics["auroc"] == 1.0
    assert s.metrics["n"] == 12 and s.metrics["n_failed"] == 0
    assert client.calls == s.calls == 3  # 12 examples, 5 per prompt
    assert s.per_group["q0"]["n"] == 3 and s.per_group["q1"]["accuracy"] == 1.0
    assert s.per_group["q0"]["auroc"] == 1.0 and s.per_group["random"]["n"] == 3
    assert {p.kind for p in s.predictions} == {"activating", "random", "similar"}


def test_fuzzing_marks_firing_random_and_wrong_tokens():
    it = item(NUMBERS, PROSE)
    scorer = ClassifierScorer("fuzzing", Scripted({}), ClassifierConfig(n_wrong=2))
    shown = scorer.samples(it)
    kinds = [p.kind for _, p in shown]
    assert kinds.count("activating") == 6 and kinds.count("wrong") == 2 and len(shown) == 14
    for e, p in shown:
        marked = {i for i, a in enumerate(e.activations) if a > 0}
        if p.kind == "activating":
            assert marked == {1, 4} and p.label
        elif p.kind == "wrong":
            assert len(marked) == 2 and not marked & {1, 4} and not p.label
        else:  # non-activating text, as many random tokens as an activating example fires on
            assert len(marked) == 2 and not p.label
    assert "<<" in scorer._show(shown[0][0])
    assert scorer.samples(it) == shown  # seeded by the latent


def test_bad_answers_are_recorded_failures_never_wrong_answers():
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig()
    [short] = asyncio.run(
        ClassifierScorer("detection", Scripted(_truth(it), "short"), cfg).score([it])
    )
    assert short.status == "failed" and "4 values for 5 examples" in short.error
    assert all(p.prediction is None and p.error for p in short.predictions)
    [err] = asyncio.run(
        ClassifierScorer("detection", Scripted(_truth(it), "error"), cfg).score([it])
    )
    assert err.status == "failed" and "HTTP 500" in err.error and err.metrics == {}
    [nolp] = asyncio.run(
        ClassifierScorer("detection", Scripted(_truth(it), "nologprobs"), cfg).score([it])
    )
    assert nolp.status == "ok" and nolp.metrics["balanced_accuracy"] == 1.0
    assert nolp.metrics["auroc"] is None and "logprobs" in nolp.notes[0]


def _truthful_reply(truth: dict[str, bool], prefill: bool = False):
    """The answer text a truthful scorer gives to a detection/fuzzing request body."""

    def reply(body: dict) -> str:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        texts = re.findall(r"^Example \d+: (.*)$", user, re.M)
        digits = ",".join(
            "1" if truth[t.replace("<<", "").replace(">>", "")] else "0" for t in texts
        )
        return digits + "]" if prefill else f"[{digits}]"

    return reply


@pytest.mark.parametrize("name", ["detection", "fuzzing"])
@pytest.mark.parametrize("per_prompt", [5, 1])
def test_a_server_without_logprobs_still_scores(name, per_prompt):
    """An OpenAI-compatible server (a real HTTP server of the tests) that ignores `logprobs`: the
    answers count (balanced accuracy), AUROC is None and the score notes why; one example per
    prompt with a prefilled `[` (read from logprobs when there are some) falls back to the text."""
    from openai_fake import FakeOpenAI

    from autointerp.clients.remote import OpenAIClient

    it = item(NUMBERS, PROSE)
    server = FakeOpenAI(logprobs=False)
    server.reply = _truthful_reply(_truth(it), prefill=per_prompt == 1)
    try:
        client = OpenAIClient("fake-model", base_url=server.url)
        cfg = ClassifierConfig(examples_per_prompt=per_prompt, prefill=per_prompt == 1, n_wrong=0)
        [s] = asyncio.run(ClassifierScorer(name, client, cfg).score([it]))
    finally:
        server.close()
    assert all(r["logprobs"] is True for r in server.requests)  # asked for, not given
    assert s.status == "ok", s.error
    assert s.metrics["balanced_accuracy"] == 1.0 and s.metrics["n_failed"] == 0
    assert s.metrics["auroc"] is None and any("logprobs" in n for n in s.notes)
    assert all(p.probability is None and p.prediction is not None for p in s.predictions)


def test_scores_record_their_prompt():
    it = item(NUMBERS, PROSE)
    scorers = {
        (n, k): ClassifierScorer(n, Scripted(_truth(it)), ClassifierConfig(examples_per_prompt=k))
        for n in ("detection", "fuzzing")
        for k in (4, 5)
    }
    ids = {key: sc.prompt_id for key, sc in scorers.items()}
    assert len(set(ids.values())) == 4  # scorer and options both count
    assert all(v.startswith(f"{key[0]}@") for key, v in ids.items())
    for key, sc in scorers.items():
        [s] = asyncio.run(sc.score([it]))
        assert s.prompt == ids[key]
    again = ClassifierScorer("detection", Scripted({}), ClassifierConfig(examples_per_prompt=5))
    assert again.prompt_id == ids["detection", 5]  # stable
    sim = SimulationScorer(Scripted({}), SimulationConfig())
    assert sim.prompt_id.startswith("simulation@")
    assert sim.prompt_id != SimulationScorer(Scripted({}), SimulationConfig(n_negative=2)).prompt_id


def test_a_scorers_prompt_id_follows_its_template(monkeypatch, tmp_path):
    import shutil

    import autointerp.explain as explain

    before = ClassifierScorer("detection", Scripted({}), ClassifierConfig()).prompt_id
    copy = tmp_path / "prompts"
    shutil.copytree(explain.PROMPTS, copy)
    (copy / "score" / "detection.user.txt").write_text(
        (copy / "score" / "detection.user.txt").read_text() + "\nBe careful."
    )
    monkeypatch.setattr(explain, "PROMPTS", copy)
    assert ClassifierScorer("detection", Scripted({}), ClassifierConfig()).prompt_id != before


def test_answer_probabilities_from_top_logprobs():
    lp = [
        TokenLogprob(token="1", logprob=-0.1, top=[("1", math.log(0.6)), ("0", math.log(0.2))]),
        TokenLogprob(token=",", logprob=-0.1),
        TokenLogprob(token="0", logprob=-0.1, top=[("0", math.log(0.5)), ("1", math.log(0.5))]),
    ]
    assert answer_probabilities(Completion(text="1,0", logprobs=lp), 2) == pytest.approx(
        [0.75, 0.5]
    )
    assert answer_probabilities(Completion(text="1,0", logprobs=lp), 3) is None


def test_unscorable_latents_fail_with_the_reason():
    rec = SampledLatent(id=LID, status="ok", density=0.1, max_activation=1, n_activating_windows=0)
    bad = Explanation(latent=LID, text=None, raw="blah", model="m", prompt="p", error="no line")
    assert "explanation failed: no line" in precheck(rec, bad, "detection").error
    empty = bad.model_copy(update={"text": "  ", "error": None})
    assert "empty" in precheck(rec, empty, "detection").error
    good = bad.model_copy(update={"text": "digits", "error": None})
    assert "no test examples" in precheck(rec, good, "detection").error


# ---------------------------------------------------------------- the calibrated judge


class LogOdds:
    """A judge whose P(1) for an example depends on the explanation in the prompt: `p1[expl][text]`
    (texts without `<<>>`); records every chat it is sent. `lose` drops the logprobs of answers to
    prompts holding that explanation; `fail` makes those requests fail."""

    model = "logodds"

    def __init__(self, p1: dict[str, dict[str, float]], lose: str = "", fail: str = ""):
        self.p1, self.lose, self.fail, self.chats = p1, lose, fail, []

    async def complete(self, chats, params: GenParams):
        out = []
        for chat in chats:
            self.chats.append(chat)
            user = chat[1]["content"]
            expl = re.match(r"Explanation: (.*)", user).group(1)
            if expl == self.fail:
                out.append(Completion(text=None, error="HTTP 500 after 3 retries"))
                continue
            texts = re.findall(r"^Example \d+: (.*)$", user, re.M)
            probs = [self.p1[expl][t.replace("<<", "").replace(">>", "")] for t in texts]
            digits = ["1" if q > 0.5 else "0" for q in probs]
            lp = [
                TokenLogprob(token=d, logprob=0.0, top=[("1", math.log(q)), ("0", math.log(1 - q))])
                for d, q in zip(digits, probs, strict=True)
            ]
            out.append(
                Completion(
                    text=",".join(digits) + "]",  # prefilled with `[`
                    logprobs=None if expl == self.lose else lp,
                    prompt_tokens=50,
                    completion_tokens=len(digits),
                )
            )
        return out


def _yes_biased(it: LatentItem) -> dict[str, dict[str, float]]:
    """The explanation raises P(1) of activating examples a little (0.5 -> 0.6) and lowers that of
    non-activating ones (0.95 -> 0.9), but the judge says yes to those regardless: by P(1) alone
    the negatives rank above the positives; by the change in log-odds they rank below."""
    expl, base = {}, {}
    for e, label in it.labelled():
        expl[text_of(e)], base[text_of(e)] = (0.6, 0.5) if label else (0.9, 0.95)
    return {it.text: expl, "text": base}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize("per_prompt", [1, 5])
def test_calibrated_judge_ranks_by_the_change_in_log_odds(per_prompt):
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(examples_per_prompt=per_prompt, prefill=True)
    plain_client, cal_client = LogOdds(_yes_biased(it)), LogOdds(_yes_biased(it))
    [plain] = asyncio.run(ClassifierScorer("detection", plain_client, cfg).score([it]))
    cal_cfg = cfg.model_copy(update={"calibrate": True})
    [cal] = asyncio.run(ClassifierScorer("detection", cal_client, cal_cfg).score([it]))
    assert plain.status == cal.status == "ok", (plain.error, cal.error)
    assert plain.metrics["auroc"] == 0.0 and cal.metrics["auroc"] == 1.0
    # the answers are the explanation's: every example "yes", balanced accuracy 0.5 both ways
    assert cal.metrics["balanced_accuracy"] == plain.metrics["balanced_accuracy"] == 0.5
    assert [p.prediction for p in cal.predictions] == [p.prediction for p in plain.predictions]
    for p in cal.predictions:
        expected = _logit(0.6) - _logit(0.5) if p.label else _logit(0.9) - _logit(0.95)
        assert p.value == pytest.approx(expected)
        assert p.probability == pytest.approx(0.6 if p.label else 0.9)
    assert cal.per_group["q0"]["auroc"] is not None
    # the uninformative prompts' LLM work counts in the latent's usage
    assert len(cal_client.chats) == 2 * len(plain_client.chats) == cal.calls == 2 * plain.calls
    assert cal.prompt_tokens == 2 * plain.prompt_tokens
    assert cal.completion_tokens == 2 * plain.completion_tokens


@pytest.mark.parametrize("name", ["detection", "fuzzing"])
def test_calibration_asks_the_same_examples_with_the_uninformative_explanation(name):
    it = item(NUMBERS, PROSE)
    p1 = _yes_biased(it)
    client = LogOdds({"text": p1["text"], it.text: p1[it.text]})
    cfg = ClassifierConfig(examples_per_prompt=5, prefill=True, n_wrong=0, calibrate=True)
    scorer = ClassifierScorer(name, client, cfg)
    [s] = asyncio.run(scorer.score([it]))
    assert s.status == "ok", s.error
    explained = [c for c in client.chats if c[1]["content"].startswith(f"Explanation: {it.text}\n")]
    neutral = [c for c in client.chats if c[1]["content"].startswith("Explanation: text\n")]
    assert len(explained) == len(neutral) == 3 and len(client.chats) == 6
    for a, b in zip(explained, neutral, strict=True):  # the same examples, in the same order
        assert a[0] == b[0] and a[2] == b[2] == {"role": "assistant", "content": "["}
        assert a[1]["content"].replace(it.text, "text", 1) == b[1]["content"]
    shown = [e for e, _ in scorer.samples(it)]
    chunks = [shown[j : j + 5] for j in range(0, len(shown), 5)]
    assert sorted(map(str, neutral)) == sorted(str(scorer.prompt("text", c)) for c in chunks)
    assert scorer.prompt_id.startswith(f"{name}+cal@")


def test_golden_uninformative_prompt():
    scorer = ClassifierScorer(
        "detection",
        LogOdds({}),
        ClassifierConfig(examples_per_prompt=2, prefill=True, calibrate=True),
    )
    chat = scorer.prompt(
        scorer.cfg.uninformative, [ex("In 1901 there were 7 ships"), ex("The cat sat\non it")]
    )
    assert chat == [
        {
            "role": "system",
            "content": "You check explanations of a feature of a language model's activations. "
            "A feature fires on some tokens of a text and stays at zero elsewhere; its explanation "
            "says which tokens or contexts make it fire.\n\n"
            "You get an explanation and numbered text examples. For each example in order, answer "
            "1 if the feature described by the explanation would fire somewhere in the example, "
            "else 0.\n\n"
            "Answer with a list of 0s and 1s, one per example, and nothing else. "
            "For three examples: [1,0,1]",
        },
        {
            "role": "user",
            "content": "Explanation: text\n\nExamples:\n"
            "Example 1: In 1901 there were 7 ships\n"
            "Example 2: The cat sat\\non it",
        },
        {"role": "assistant", "content": "["},
    ]


def test_calibration_is_in_the_prompt_id():
    def pid(**kw) -> str:
        return ClassifierScorer("detection", Scripted({}), ClassifierConfig(**kw)).prompt_id

    plain, cal = pid(), pid(calibrate=True)
    assert plain.startswith("detection@") and cal.startswith("detection+cal@") and plain != cal
    assert pid(uninformative="nothing") == plain  # off: the calibration options do not count
    assert pid(calibrate=True, uninformative="nothing") != cal


def test_calibration_without_logprobs_fails_plainly():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="calibrate reads P\\(yes\\) from logprobs"):
        ClassifierConfig(calibrate=True, logprobs=False)
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(calibrate=True)
    [s] = asyncio.run(  # every answer lacks them
        ClassifierScorer("detection", Scripted(_truth(it), "nologprobs"), cfg).score([it])
    )
    assert s.status == "failed" and "logprobs" in s.error and "calibration" in s.error
    assert s.metrics == {} and all(p.value is None and p.error for p in s.predictions)


@pytest.mark.parametrize("broken", ["fail", "lose"])
def test_calibration_whose_uninformative_prompt_failed_keeps_the_answers(broken):
    """The uninformative prompts fail (or their answers lack logprobs): the explanation's answers
    still count (balanced accuracy as without calibration); only the calibrated values, and so
    the calibrated AUROC, are missing, and a note says why."""
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(calibrate=True, prefill=True)  # LogOdds answers after a prefilled `[`
    client = LogOdds(_yes_biased(it), **{broken: "text"})
    [s] = asyncio.run(ClassifierScorer("detection", client, cfg).score([it]))
    plain_cfg = cfg.model_copy(update={"calibrate": False})
    [plain] = asyncio.run(
        ClassifierScorer("detection", LogOdds(_yes_biased(it)), plain_cfg).score([it])
    )
    assert s.status == "ok" and s.metrics["n_failed"] == 0
    assert s.metrics["balanced_accuracy"] == plain.metrics["balanced_accuracy"] == 0.5
    assert s.metrics["auroc"] is None and "auroc" not in s.intervals
    assert all(p.error is None and p.value is None for p in s.predictions)
    why = "HTTP 500" if broken == "fail" else "logprobs"
    assert any(n.startswith("calibration: ") and why in n for n in s.notes)


def test_calibrated_per_group_mean_is_p_yes_and_the_log_odds_change_has_its_own_key():
    it = item(NUMBERS, PROSE)
    cfg = ClassifierConfig(prefill=True)
    [plain] = asyncio.run(ClassifierScorer("detection", LogOdds(_yes_biased(it)), cfg).score([it]))
    cal_cfg = cfg.model_copy(update={"calibrate": True})
    [cal] = asyncio.run(
        ClassifierScorer("detection", LogOdds(_yes_biased(it)), cal_cfg).score([it])
    )
    assert set(cal.per_group) == set(plain.per_group)
    for g, row in cal.per_group.items():
        assert row["mean"] == pytest.approx(plain.per_group[g]["mean"])  # P(yes) both ways
        positive = g.startswith("q")
        expected = _logit(0.6) - _logit(0.5) if positive else _logit(0.9) - _logit(0.95)
        assert row["mean_delta_logodds"] == pytest.approx(expected)
        assert "mean_delta_logodds" not in plain.per_group[g]


def test_calibrated_judge_on_the_real_llamacpp_backend():
    """The packaged SmolLM2 run by llama.cpp in this process: each calibrated value is the change
    in log-odds between the same judge asked with the explanation and with `text`."""
    pytest.importorskip("llama_cpp")
    from autointerp.clients import make_client
    from autointerp.config import ClientConfig
    from autointerp.score.classifier import log_odds

    client = make_client(ClientConfig(backend="llamacpp", model="smollm2", threads=1, n_ctx=512))
    it = item(NUMBERS[:3], PROSE[:3])
    neutral = item(NUMBERS[:3], PROSE[:3], text="text")
    cfg = ClassifierConfig(examples_per_prompt=1)
    [plain] = asyncio.run(ClassifierScorer("detection", client, cfg).score([it]))
    [base] = asyncio.run(ClassifierScorer("detection", client, cfg).score([neutral]))
    cal_cfg = cfg.model_copy(update={"calibrate": True})
    [cal] = asyncio.run(ClassifierScorer("detection", client, cal_cfg).score([it]))
    assert cal.status == "ok", cal.error
    assert cal.prompt.startswith("detection+cal@") and cal.calls == 2 * plain.calls == 12
    key = {(p.seq, p.start): p for p in base.predictions}
    for p, q in zip(cal.predictions, plain.predictions, strict=True):
        assert p.prediction == q.prediction
        expected = log_odds(q.probability) - log_odds(key[p.seq, p.start].probability)
        assert p.value == pytest.approx(expected, abs=0.05)
    assert cal.metrics["auroc"] is not None


# ---------------------------------------------------------------- a real run folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real cache of the packaged model, 6 sampled latents, token-statistics explanations."""
    root = tmp_path_factory.mktemp("run")
    cache = ActivationCache(
        build_cache(
            CacheConfig(corpus=CorpusConfig(n_tokens=16_384)), root / "cache", progress=False
        )
    )
    cfg = SampleConfig(
        n_train=10, n_test=10, n_quantiles=5, n_random_negatives=5, n_similar_negatives=5
    )
    write_config(root / "sample", cfg)
    sample_coder(cache, "layers.15", cfg, root / "sample", list(range(6)), progress=False)
    tok = load_tokenizer(CacheConfig().subject)
    explainer = Explainer(
        cache, ExplainConfig(explainer="token-stats"), None, TokenDecoder(tok), 32
    )
    records = [r for r in read_records(root / "sample" / "layers.15.jsonl") if r.status == "ok"]
    out = root / "explanations"
    out.mkdir()
    with open(out / "layers.15.jsonl", "w") as f:
        for e in asyncio.run(explainer.explain(records)):
            f.write(e.model_dump_json() + "\n")
    return root


def _explanations(run: Path) -> dict[int, Explanation]:
    lines = (run / "explanations" / "layers.15.jsonl").read_text().splitlines()
    return {e.latent.latent: e for e in (Explanation.model_validate_json(x) for x in lines)}


def _ctx(run: Path, client=None, **score) -> ScoreContext:
    cfg = ScoreStageConfig.model_validate({"score": {"latents_per_call": 2, **score}})
    return ScoreContext(
        ActivationCache(run / "cache"), cfg, 32, (lambda: client) if client else None
    )


def test_scores_are_written_per_latent_and_resume(run, tmp_path):
    """A client that dies mid-run loses nothing finished; the re-run scores only what is left."""
    expl = _explanations(run)
    sample = run / "sample" / "layers.15.jsonl"
    ctx = _ctx(run)
    truth = {}
    for r in read_records(sample):
        if r.status == "ok":
            it = ctx.item(r, expl[r.id.latent])
            truth[it.text] = _truth(it)
    dying = Scripted(truth, fail_after=4)  # 2 latents x 2 prompts, then it dies
    ctx = _ctx(run, dying, detection={"examples_per_prompt": 10})
    with pytest.raises(RuntimeError, match="scripted client stopped"):
        score_coder(ctx, ["detection"], sample, expl, tmp_path, progress=False)
    path = tmp_path / "detection" / "layers.15.jsonl"
    first = path.read_text().splitlines()
    assert len(first) == 2  # the first chunk (2 latents, 2 prompts each) was written
    ctx = _ctx(run, Scripted(truth), detection={"examples_per_prompt": 10})
    score_coder(ctx, ["detection"], sample, expl, tmp_path, progress=False)
    lines = path.read_text().splitlines()
    assert lines[:2] == first and len(lines) == len(expl)
    scores = read_scores(path)
    assert sorted(scores) == sorted(expl)
    assert all(s.status == "ok" and s.metrics["balanced_accuracy"] == 1.0 for s in scores.values())


def test_real_local_model_as_detection_scorer(run, tmp_path):
    """The packaged 135M model scores through the default local client: one example per prompt,
    P(1) read from the first answer token; every example gets a probability, none fails."""
    expl = _explanations(run)
    ctx = _ctx(run)
    paths = score_coder(
        ctx, ["detection"], run / "sample" / "layers.15.jsonl", expl, tmp_path, {0}, progress=False
    )
    [s] = read_scores(paths["detection"]).values()
    assert s.status == "ok" and s.metrics["n"] == 20 and s.metrics["n_failed"] == 0
    assert all(0 <= p.probability <= 1 for p in s.predictions)
    assert s.metrics["auroc"] is not None and s.calls == 20 and s.completion_tokens <= 20


def test_real_embedding_and_surprisal_scorers(run):
    from autointerp.score.embedding import EmbeddingConfig, EmbeddingScorer
    from autointerp.score.surprisal import LossModel, SurprisalConfig, SurprisalScorer

    it = item(NUMBERS, PROSE, text="years and numbers")
    [emb] = asyncio.run(EmbeddingScorer(EmbeddingConfig()).score([it]))
    assert emb.status == "ok" and emb.metrics["auroc"] > 0.9
    assert emb.metrics["mean_activating"] > emb.metrics["mean_non_activating"]
    lm = LossModel("smollm2")
    text = "The quick brown fox jumps over the lazy dog."
    seen, unseen = lm.losses([(text + "\n", text), ("Hello.\n", text)])
    assert 0 < seen < unseen  # a prefix holding the text makes it predictable
    [sur] = asyncio.run(SurprisalScorer(SurprisalConfig(), lm).score([it]))
    assert sur.status == "ok" and sur.metrics["n"] == 12 and sur.metrics["auroc"] is not None
    assert all(np.isfinite(p.value) for p in sur.predictions)


def test_real_intervention_and_a_scale_that_breaks_the_model(run):
    expl = _explanations(run)
    rec = next(r for r in read_records(run / "sample" / "layers.15.jsonl") if r.status == "ok")
    small = {"n_prompts": 3, "prompt_len": 8, "new_tokens": 6}
    ctx = _ctx(run, intervention=small)
    from autointerp.score import SCORERS

    scorer = SCORERS["intervention"](ctx, "layers.15")
    [s] = asyncio.run(scorer.score([ctx.item(rec, expl[rec.id.latent])]))
    assert s.status == "ok" and s.metrics["n"] == 6 and s.metrics["score"] is not None
    assert s.metrics["changed"] > 0  # steering at 4x the max activation changes continuations
    scorer.cfg = scorer.cfg.model_copy(update={"scale": 1e38})
    [nan] = asyncio.run(scorer.score([ctx.item(rec, expl[rec.id.latent])]))
    assert nan.status == "failed" and "NaN or inf" in nan.error


def test_cli_score_errors_and_summary(run, tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app

    r = CliRunner().invoke(app, ["score", str(run / "cache"), "--sample", str(tmp_path)])
    assert r.exit_code == 1 and "no samples in" in r.output
    r = CliRunner().invoke(app, ["score", str(run / "cache"), "--scorer", "bogus"])
    assert r.exit_code == 1 and "score.scorers.0" in r.output
    out = tmp_path / "scores"
    r = CliRunner().invoke(
        app, ["score", str(run / "cache"), "--scorer", "embedding", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "layers.15 embedding: 6 scored, 0 failed, mean auroc" in r.output
    lines = [
        json.loads(x) for x in (out / "embedding" / "layers.15.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 6 and all(0 <= x["metrics"]["auroc"] <= 1 for x in lines)
