"""Explainer prompts (golden), answer parsing, the token-statistics baseline, and a real local run."""

import json

import pytest

from autointerp.cache import ActivationCache, build_cache
from autointerp.clients import make_client
from autointerp.clients.base import Completion, GenParams
from autointerp.config import CacheConfig, ClientConfig, CorpusConfig
from autointerp.explain import (
    BEST_OF_OPTIONS,
    ExplainConfig,
    Explainer,
    build_prompt,
    explain_coder,
    mark,
    parse_explanation,
    prompt_id,
    read_explanations,
    token_stats_explanation,
)
from autointerp.sample import SampleConfig, TokenDecoder, sample_coder
from autointerp.types import Example

EX = [
    Example(
        tokens=["The", " cat", " sat", " on", " the", " mat"],
        activations=[0, 2.0, 0, 0, 0, 8.0],
        seq=0,
        start=0,
    ),
    Example(
        tokens=["A", " dog", " and", " a", " cat", "\n"],
        activations=[0, 0, 0, 0, 4.0, 1.0],
        seq=1,
        start=0,
    ),
]
NEG = [
    Example(tokens=["No", " pets", " here"], activations=[0, 0, 0], seq=2, start=0, kind="similar")
]

SYSTEM = """You study the internal features of a language model. A feature is a direction in the model's activations that turns on for some pattern in text. You will see short text excerpts on which one feature fires. In each excerpt, the tokens where it fires are wrapped in double angle brackets, <<like this>>; a run of consecutive firing tokens is wrapped as one span, <<like so>>.

Find what the marked tokens, and the words just before them, have in common, and describe it as a short phrase (a few words to one sentence). Describe the pattern, not the individual examples; do not list alternatives; do not mention the brackets.
{rules}
End your answer with one line of the form:
[EXPLANATION]: <your explanation>"""


def test_golden_default_prompt():
    chat = build_prompt(EX, [], ExplainConfig())
    assert chat == [
        {"role": "system", "content": SYSTEM.format(rules="")},
        {
            "role": "user",
            "content": "Excerpts where the feature fires:\n\n"
            "Example 1: The<< cat>> sat on the<< mat>>\n"
            "Example 2: A dog and a<< cat\\n>>",
        },
    ]


def test_golden_prompt_with_values_cot_and_negatives():
    chat = build_prompt(
        EX, NEG, ExplainConfig(explainer="contrastive", activations=True, cot=True), prefill=True
    )
    rules = (
        "\nAfter each excerpt, the firing tokens are listed with the strength of the feature on them, from 1 "
        "(weak) to 10 (strongest seen); weigh the strong ones most.\n"
        "\nThink step by step before you answer: first list the marked tokens, then what comes before them, "
        "then what they share, and only then state your explanation.\n"
    )
    assert chat[0]["content"] == SYSTEM.format(rules=rules)
    assert chat[1]["content"] == (
        "Excerpts where the feature fires:\n\n"
        "Example 1: The<< cat>> sat on the<< mat>>\n"
        "Strengths: ' cat': 3, ' mat': 10\n"
        "Example 2: A dog and a<< cat\\n>>\n"
        "Strengths: ' cat': 5, '\\n': 1\n\n"
        "Similar excerpts where the feature does NOT fire (use them to rule out explanations that are too broad):\n\n"
        "Example 1: No pets here"
    )
    assert len(chat) == 2  # no prefill with chain of thought: the reasoning comes first
    assert build_prompt(EX, [], ExplainConfig(), prefill=True)[-1] == {
        "role": "assistant",
        "content": "[EXPLANATION]:",
    }


def test_prompt_id_covers_every_option_and_template(monkeypatch, tmp_path):
    """Any option that shapes the prompt or the answer changes the id; batching does not."""
    import shutil

    import autointerp.explain as explain

    base = ExplainConfig()
    ids = {"base": prompt_id(base)}
    changes = {
        "explainer": "contrastive",
        "activations": True,
        "cot": True,
        "mark_threshold": 0.5,
        "max_tokens": 100,
        "prefill": True,
    }
    # best-of-k's options count only with best_of > 1 (tests/test_best_of.py)
    assert set(changes) | {"latents_per_call"} | BEST_OF_OPTIONS == set(ExplainConfig.model_fields)
    for name, value in changes.items():
        ids[name] = prompt_id(base.model_copy(update={name: value}))
    assert len(set(ids.values())) == len(ids), ids
    assert prompt_id(base, prefill=True) == ids["prefill"]  # the prefill in effect counts
    assert prompt_id(base.model_copy(update={"latents_per_call": 2})) == ids["base"]
    assert prompt_id(ExplainConfig()) == ids["base"]  # stable
    assert ids["activations"].startswith("default+values@")
    with_rules = ExplainConfig(activations=True, cot=True)
    before = {"base": ids["base"], "rules": prompt_id(with_rules)}
    for name in ("default.system.txt", "default.user.txt", "values_rule.txt", "cot_rule.txt"):
        copy = tmp_path / name / "prompts"
        shutil.copytree(explain.PROMPTS, copy)
        (copy / "explain" / name).write_text((copy / "explain" / name).read_text() + "\nMore.")
        monkeypatch.setattr(explain, "PROMPTS", copy)
        assert prompt_id(with_rules) != before["rules"], name
        if name.startswith("default"):
            assert prompt_id(base) != before["base"], name
        monkeypatch.undo()


def test_marking_threshold():
    assert mark(EX[0], threshold=0.5) == "The cat sat on the<< mat>>"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Some thinking.\n[EXPLANATION]: the word cat", "the word cat"),
        ('[explanation] :  "animals in text" ', "animals in text"),
        ("[EXPLANATION]: first\nmore\n[EXPLANATION]: second", "second"),
        ("I think it is about cats.", None),
        ("[EXPLANATION]:   ", None),
    ],
)
def test_parse_explanation(raw, expected):
    assert parse_explanation(raw) == expected


def test_token_stats_baseline():
    text = token_stats_explanation(EX)
    assert text.startswith('the tokens "cat" (50%)') and 'often after "The"' in text


def test_token_stats_count_split_characters_whole():
    """A character split across tokens renders as "" then the whole character: the firing part
    counts for the character, never as an empty token."""
    split = [
        Example(tokens=["Tokyo", " is", "", "東京"], activations=[0, 0, 2.0, 0], seq=0, start=0),
        Example(tokens=[" in", "", "", "北京"], activations=[0, 1.0, 0, 0.5], seq=1, start=0),
    ]
    text = token_stats_explanation(split)
    assert text == 'the tokens "東京" (50%), "北京" (50%), often after "is", "in"'


class Scripted:
    """A fake client for unit tests of parsing: answers from a list, one may fail."""

    model = "scripted"

    def __init__(self, answers):
        self.answers = list(answers)

    async def complete(self, chats, params: GenParams):
        out = []
        for _ in chats:
            a = self.answers.pop(0)
            out.append(
                Completion(text=None, error="HTTP 500")
                if a is None
                else Completion(text=a, prompt_tokens=10, completion_tokens=3)
            )
        return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cache = ActivationCache(
        build_cache(
            CacheConfig(corpus=CorpusConfig(n_tokens=16_384)), root / "cache", progress=False
        )
    )
    sample = sample_coder(
        cache, "layers.15", SampleConfig(), root / "sample", [1, 2, 3, 4], progress=False
    )
    return root, cache, sample


def test_failures_are_recorded_not_scored(run, tokenizer, tmp_path):
    _, cache, sample = run
    answers = ["[EXPLANATION]: digits", "no explanation line here", None, "[EXPLANATION]: commas"]
    ex = Explainer(cache, ExplainConfig(), Scripted(answers), TokenDecoder(tokenizer), 32)
    path = explain_coder(ex, sample, tmp_path, progress=False)
    got = read_explanations(path)
    assert [got[i].text for i in (1, 2, 3, 4)] == ["digits", None, None, "commas"]
    assert (
        got[2].error == "no [EXPLANATION]: line in the answer"
        and got[2].raw == "no explanation line here"
    )
    assert got[3].error == "HTTP 500"
    # A re-run skips finished latents (the scripted client has no answers left: a call would fail).
    explain_coder(ex, sample, tmp_path, progress=False)
    assert len(path.read_text().splitlines()) == 4


def test_real_local_explainer_end_to_end(run, tokenizer, tmp_path):
    """The embedded SmolLM2 explains two latents; a second run is served from the response cache."""
    _, cache, sample = run
    cfg = ExplainConfig(max_tokens=24)
    client = make_client(ClientConfig(), tmp_path / "llm_cache.sqlite")
    ex = Explainer(cache, cfg, client, TokenDecoder(tokenizer), 32)
    path = explain_coder(ex, sample, tmp_path / "a", latents={1, 2}, progress=False)
    got = read_explanations(path)
    assert set(got) == {1, 2}
    for e in got.values():
        assert e.model == "smollm2" and e.prompt_tokens > 200
        assert (e.text is None) == (e.error is not None)
    assert ex.usage.calls == 2 and ex.usage.prompt_tokens > 400
    again = Explainer(cache, cfg, client, TokenDecoder(tokenizer), 32)
    path2 = explain_coder(again, sample, tmp_path / "b", latents={1, 2}, progress=False)
    assert again.usage.calls == 0 and again.usage.cache_hits == 2
    assert [json.loads(x)["text"] for x in path2.read_text().splitlines()] == [
        got[1].text,
        got[2].text,
    ]
