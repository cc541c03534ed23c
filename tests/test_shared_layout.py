"""The shared-prefix layout of detection and fuzzing (golden prompts, the prefix both scorers share,
the marked-token lists), the coalescing client that sends both scorers' prompts together, and a
real llama.cpp judge computing each example's text once for both scorers."""

from __future__ import annotations

import asyncio
import re

import pytest

from autointerp.clients.base import Completion, GenParams
from autointerp.clients.coalesce import CoalescingClient
from autointerp.score.classifier import ClassifierConfig, ClassifierScorer, marked_spans
from autointerp.types import Example
from tests.test_score import NUMBERS, PROSE, ex, item

SYSTEM = (
    "You check explanations of a feature of a language model's activations. A feature fires on "
    "some tokens of a text and stays at zero elsewhere; its explanation says which tokens or "
    "contexts make it fire.\n\nYou get an explanation and numbered text examples, then one of two "
    "questions about each example:\n"
    '- "Fires?": answer 1 if the feature would fire somewhere in the example, else 0.\n'
    '- "Marked?": the marked tokens of each example are listed; answer 1 if they are the ones the '
    "explanation describes, else 0.\n\n"
    "Answer with a list of 0s and 1s, one per example in order, and nothing else. For three "
    "examples: [1,0,1]"
)


def shared(name: str, client=None, **kw) -> ClassifierScorer:
    cfg = ClassifierConfig(layout="shared", **kw)
    return ClassifierScorer(name, client or Truthful(), cfg)  # type: ignore[arg-type]


class Truthful:
    """Answers shared-layout prompts from the example text (detection) or from the marked tokens
    (fuzzing: yes when every marked text is a number), one digit per example, with logprobs."""

    model = "truthful"

    def __init__(self):
        self.calls: list[list] = []  # the chats of each call

    async def complete(self, chats, params: GenParams):
        self.calls.append(list(chats))
        return [self._answer(c) for c in chats]

    def _answer(self, chat) -> Completion:
        user = chat[1]["content"]
        body, _, marks = user.partition("\n\nMarked tokens:\n")
        if marks:
            lines = re.findall(r"^\d+: (.*)$", marks, re.M)
            digits = [
                "1" if all(re.fullmatch(r'"\d+"( \(.*\))?', m) for m in line.split(", ")) else "0"
                for line in lines
            ]
        else:
            texts = re.findall(r"^Example \d+: (.*)$", body, re.M)
            digits = ["1" if re.search(r"\d", t) else "0" for t in texts]
        prefilled = chat[-1]["role"] == "assistant"
        text = ("" if prefilled else "[") + ",".join(digits) + "]"
        return Completion(text=text, prompt_tokens=50, completion_tokens=3)


# ---------------------------------------------------------------- prompts


def test_golden_shared_detection_prompt():
    scorer = shared("detection", examples_per_prompt=2, prefill=True)
    chat = scorer.prompt("numbers", [ex("In 1901 there were 7 ships", [1, 4]), ex("A cat\nsat")])
    assert chat == [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Explanation: numbers\n\nExamples:\nExample 1: In 1901 there were 7 ships\n"
            "Example 2: A cat\\nsat\n\nFires?",
        },
        {"role": "assistant", "content": "["},
    ]


def test_golden_shared_fuzzing_prompt():
    scorer = shared("fuzzing", examples_per_prompt=2, prefill=True)
    chat = scorer.prompt("numbers", [ex("In 1901 there were 7 ships", [1, 4]), ex("A cat\nsat")])
    assert chat == [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Explanation: numbers\n\nExamples:\nExample 1: In 1901 there were 7 ships\n"
            "Example 2: A cat\\nsat\n\n"
            "Marked tokens:\n"
            '1: "1901", "7"\n'
            "2: none\n\n"
            "Marked?",
        },
        {"role": "assistant", "content": "["},
    ]


def test_marked_spans_name_repeated_texts_and_whole_characters():
    the = ex("the cat and the dog and the bird", [3])
    assert marked_spans(the) == '"the" (occurrence 2 of 3)'
    run = ex("New York is in New York State", [0, 1])  # a run of tokens is one span
    assert marked_spans(run) == '"New York" (occurrence 1 of 2)'
    nl = Example(tokens=["a", "\n", "b"], activations=[0, 1.0, 0], seq=0, start=0)
    assert marked_spans(nl) == '"\\n"'
    # a character split over two tokens: the half rendered as "" passes its activation on
    split = Example(tokens=["caf", "", "é", " au", " lait"], activations=[0, 2.0, 0, 0, 0],
                    seq=0, start=0)  # fmt: skip
    assert marked_spans(split) == '"é"'
    assert marked_spans(ex("nothing fires here")) == "none"


def test_old_layout_prompt_ids_are_unchanged():
    """Scores written before the shared layout existed keep their prompt ids (resume)."""

    def pid(name, **kw):
        return ClassifierScorer(name, Truthful(), ClassifierConfig(**kw)).prompt_id  # type: ignore[arg-type]

    assert pid("detection", examples_per_prompt=1) == "detection@b86db19622d0"
    assert pid("detection", examples_per_prompt=5) == "detection@88b53a9090c1"
    assert pid("fuzzing", examples_per_prompt=1) == "fuzzing@f322fc1c77e6"
    assert pid("fuzzing", examples_per_prompt=5) == "fuzzing@93d7907e324d"
    assert pid("detection", calibrate=True) == "detection+cal@ffafd87edf5d"
    new = pid("detection", examples_per_prompt=5, layout="shared")
    assert new.startswith("detection@") and new != "detection@88b53a9090c1"


@pytest.mark.parametrize("per_prompt", [1, 3])
def test_detection_and_fuzzing_prompts_share_all_but_the_question(per_prompt):
    it = item(NUMBERS, PROSE)
    det = shared("detection", examples_per_prompt=per_prompt, n_wrong=2)
    fuz = shared("fuzzing", examples_per_prompt=per_prompt, n_wrong=2)
    d, f = det.samples(it), fuz.samples(it)
    assert [(e.seq, p.label) for e, p in d] == [(e.seq, p.label) for e, p in f[: len(d)]]
    assert [p.kind for _, p in f[len(d) :]] == ["wrong", "wrong"]  # wrong ones last
    dc, fc = det._chunks(d), fuz._chunks(f)
    assert len(fc) == len(dc) + (2 if per_prompt == 1 else 1)  # wrong ones in their own prompts
    for a, b in zip(dc, fc, strict=False):
        pa = det.prompt(it.text, [e for e, _ in a])
        pb = fuz.prompt(it.text, [e for e, _ in b])
        assert pa[0] == pb[0]  # the same instructions
        head = pa[1]["content"].removesuffix("\n\nFires?")
        assert pa[1]["content"] == head + "\n\nFires?"
        assert pb[1]["content"].startswith(head + "\n\nMarked tokens:\n")
        assert "<<" not in pb[1]["content"]


def test_shared_layout_scores_like_the_separate_one_with_a_truthful_judge():
    it = item(NUMBERS, PROSE)
    for name in ("detection", "fuzzing"):
        [s] = asyncio.run(shared(name, n_wrong=2).score([it]))
        assert s.status == "ok", s.error
        assert s.metrics["balanced_accuracy"] == 1.0 and s.metrics["n_failed"] == 0
        assert s.metrics["n"] == (12 if name == "detection" else 14)
        assert s.prompt == shared(name, n_wrong=2).prompt_id


# ---------------------------------------------------------------- the coalescing client


def test_coalescing_client_sends_concurrent_requests_as_one_call():
    it = item(NUMBERS, PROSE)
    inner = Truthful()
    client = CoalescingClient(inner)  # type: ignore[arg-type]
    det = shared("detection", client, examples_per_prompt=1, prefill=True, logprobs=False)
    fuz = shared("fuzzing", client, examples_per_prompt=1, prefill=True, logprobs=False, n_wrong=0)

    async def both():
        return await asyncio.gather(det.score([it]), fuz.score([it]))

    [d], [f] = asyncio.run(both())
    assert len(inner.calls) == 1 and len(inner.calls[0]) == 24  # 12 + 12 prompts, one call
    assert d.metrics["balanced_accuracy"] == 1.0 and f.metrics["balanced_accuracy"] == 1.0


def test_coalescing_client_fails_every_request_of_a_failed_call():
    class Broken:
        model = "broken"

        async def complete(self, chats, params):
            raise RuntimeError("the server went away")

    client = CoalescingClient(Broken())  # type: ignore[arg-type]
    chat = [{"role": "user", "content": "hi"}]

    async def two():
        return await asyncio.gather(
            client.complete([chat], GenParams()),
            client.complete([chat], GenParams()),
            return_exceptions=True,
        )

    a, b = asyncio.run(two())
    assert isinstance(a, RuntimeError) and isinstance(b, RuntimeError)
    assert "went away" in str(a)


# ---------------------------------------------------------------- a real llama.cpp judge


class Recorder:
    """Keeps what a real client answered (with the prompt tokens it reused from its KV cache)."""

    def __init__(self, inner):
        self.inner, self.model, self.seen = inner, inner.model, []

    async def complete(self, chats, params):
        out = await self.inner.complete(chats, params)
        self.seen += list(zip(chats, out, strict=True))
        return out


def test_real_llamacpp_judge_reads_each_example_once_for_both_scorers():
    from autointerp.clients.llamacpp import LlamaCppClient

    it = item(NUMBERS[:4], PROSE[:4])
    real = LlamaCppClient("smollm2", n_ctx=2048, threads=1)
    rec = Recorder(real)
    client = CoalescingClient(rec)  # type: ignore[arg-type]
    det = shared("detection", client, n_wrong=0)
    fuz = shared("fuzzing", client, n_wrong=0)
    assert det.single(1) and det.per_prompt == 1  # the local default: one example, one token

    async def both():
        return await asyncio.gather(det.score([it]), fuz.score([it]))

    [d], [f] = asyncio.run(both())
    assert d.status == f.status == "ok" and d.metrics["n"] == f.metrics["n"] == 8
    assert len(rec.seen) == 16

    def n_tokens(text: str) -> int:
        return len(real.llm.tokenize(text.encode(), add_bos=False, special=False))

    by_example: dict[str, list] = {}  # the prompt up to the question -> its two prompts
    for chat, c in rec.seen:
        content = chat[1]["content"]
        head, _, tail = content.partition("\n\nMarked tokens:")
        if not tail:
            head, _, tail = content.partition("\n\nFires?")
        by_example.setdefault(head, []).append((c, n_tokens(tail)))
    assert len(by_example) == 8 and all(len(v) == 2 for v in by_example.values())
    for pair in by_example.values():
        # the later of the two computes only its question (and the template's closing tokens):
        # the explanation and the example were in the KV cache from the other one
        second = min(c.prompt_tokens - c.cached_tokens - tail for c, tail in pair)
        assert second <= 12, pair
        first = max(c.prompt_tokens - c.cached_tokens - tail for c, tail in pair)
        assert first > 12  # the example's own text, computed once
