"""Explainer prompts (golden), answer parsing, the token-statistics baseline, and a real local run."""

import json

import pytest

from autointerp.cache import ActivationCache, build_cache
from autointerp.clients import make_client
from autointerp.clients.base import Completion, GenParams
from autointerp.config import CacheConfig, ClientConfig, CorpusConfig
from autointerp.effects import Continuation, LatentEffects
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
    per_type = {"top_logits", "steer_prompts"}  # test_prompt_id_of_output_explainers
    # best-of-k's options count only with best_of > 1 (tests/test_best_of.py)
    assert set(changes) | {"latents_per_call"} | per_type | BEST_OF_OPTIONS == set(
        ExplainConfig.model_fields
    )
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


def test_prompt_id_of_output_explainers():
    """An option of one explainer type changes only that type's id (old ids stay as they were);
    the intervention explainer's id covers the steering it is shown."""
    for kind, option, value in (
        ("logits", "top_logits", 5),
        ("mixed", "top_logits", 5),
        ("intervention", "steer_prompts", 3),
    ):
        cfg = ExplainConfig(explainer=kind)
        assert prompt_id(cfg.model_copy(update={option: value})) != prompt_id(cfg), kind
        assert prompt_id(cfg).startswith(f"{kind}@")
    default = ExplainConfig()
    assert prompt_id(default.model_copy(update={"top_logits": 3, "steer_prompts": 2})) == (
        prompt_id(default)
    )
    steer = ExplainConfig(explainer="intervention")
    assert prompt_id(steer, steering={"scale": 4.0}) != prompt_id(steer, steering={"scale": 8.0})
    assert prompt_id(default, steering={"scale": 4.0}) == prompt_id(default)


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


class Recording:
    """A real client that also keeps every chat it was sent (in `seen`)."""

    def __init__(self, inner, seen: list):
        self.inner, self.model, self.seen = inner, inner.model, seen

    async def complete(self, chats, params):
        self.seen.extend(chats)
        return await self.inner.complete(chats, params)


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


EFFECTS = LatentEffects(
    promoted=['" cat"', '" kitten"'],
    suppressed=['" dog"'],
    continuations=[
        Continuation(prompt="My pet", clean=" is a dog.\nIt", steered=" cat purrs"),
        Continuation(prompt="The", clean=" end", steered=" cat"),
    ],
)
LOGITS_SYSTEM = """You study the internal features of a language model. A feature is a direction in the model's activations. When it is active, it pushes the model's prediction of the next token towards some tokens and away from others. You will see the tokens the feature promotes most and the tokens it suppresses most.

Find what the promoted tokens have in common (the suppressed ones help rule out explanations that are too broad), and describe what the feature makes the model write next as a short phrase (a few words to one sentence). Describe the pattern, not the individual tokens; do not list alternatives.

End your answer with one line of the form:
[EXPLANATION]: <your explanation>"""


def test_golden_logits_prompt():
    chat = build_prompt(EX, [], ExplainConfig(explainer="logits"), prefill=True, effects=EFFECTS)
    assert chat == [
        {"role": "system", "content": LOGITS_SYSTEM},
        {
            "role": "user",
            "content": 'Tokens the feature promotes: " cat", " kitten"\n'
            'Tokens the feature suppresses: " dog"',
        },
        {"role": "assistant", "content": "[EXPLANATION]:"},
    ]


def test_golden_mixed_prompt():
    chat = build_prompt(EX, [], ExplainConfig(explainer="mixed", cot=True), effects=EFFECTS)
    rules = (
        "\nAfter the excerpts you will also see the tokens the feature promotes most and suppresses "
        "most in the model's prediction of the next token. Describe what the feature responds to in "
        "the text and, where the promoted tokens agree with it, what it makes the model write next.\n"
        "\nThink step by step before you answer: first list the marked tokens, then what comes before them, "
        "then what they share, and only then state your explanation.\n"
    )
    assert chat[0]["content"] == SYSTEM.format(rules=rules)
    assert chat[1]["content"] == (
        "Excerpts where the feature fires:\n\n"
        "Example 1: The<< cat>> sat on the<< mat>>\n"
        "Example 2: A dog and a<< cat\\n>>\n\n"
        'Tokens the feature promotes: " cat", " kitten"\n'
        'Tokens the feature suppresses: " dog"'
    )


def test_golden_intervention_prompt():
    chat = build_prompt([], [], ExplainConfig(explainer="intervention"), effects=EFFECTS)
    assert chat[0]["content"] == (
        "You study the internal features of a language model. A feature is a direction in the "
        "model's activations. You will see how the model continues a few texts normally (clean) "
        "and when the feature is turned up (steered).\n\n"
        "Find what the steered continuations have in common that the clean ones lack, and describe "
        "what the feature makes the model write as a short phrase (a few words to one sentence). "
        "Describe the pattern, not the individual continuations; do not list alternatives.\n\n"
        "End your answer with one line of the form:\n[EXPLANATION]: <your explanation>"
    )
    assert chat[1]["content"] == (
        "Texts continued clean and steered:\n\n"
        "Text 1: My pet\nClean:  is a dog.\\nIt\nSteered:  cat purrs\n\n"
        "Text 2: The\nClean:  end\nSteered:  cat"
    )
    with pytest.raises(ValueError, match="needs the latent's effects"):
        build_prompt(EX, [], ExplainConfig(explainer="logits"))


def test_direct_logits_are_what_a_huge_steer_at_the_last_layer_makes_the_model_predict(subject):
    """W_U · norm(d), computed from the weights, ranks tokens as the real model's output does when
    d, scaled up until it dominates the residual stream, is added after the last layer (where
    the final norm sees almost only d)."""
    import torch

    from autointerp.effects import direct_logits, top_tokens

    gen = torch.Generator().manual_seed(0)
    d = torch.randn(2, subject.model.config.hidden_size, generator=gen)
    layer = subject.model.model.layers[-1]
    ids = torch.tensor([subject.tokenizer.encode("The weather today is")])
    for i in range(2):
        handle = layer.register_forward_hook(
            lambda m, inp, out, v=d[i]: (
                (out[0] + 1e4 * v.to(out[0].dtype), *out[1:])
                if isinstance(out, tuple)
                else out + 1e4 * v.to(out.dtype)
            )
        )
        try:
            with torch.inference_mode():
                steered = subject.model(input_ids=ids).logits[0, -1].float()
        finally:
            handle.remove()
        mine = direct_logits(subject, d[i : i + 1])[0]
        top = set(mine.topk(20).indices.tolist())
        assert len(top & set(steered.topk(20).indices.tolist())) >= 15
        assert (
            len(set((-mine).topk(20).indices.tolist()) & set((-steered).topk(20).indices.tolist()))
            >= 15
        )
    [(promoted, suppressed)] = top_tokens(subject, d[:1], 5)
    assert len(promoted) == 5 and len(suppressed) == 5 and not set(promoted) & set(suppressed)
    assert all(t.startswith('"') and t.endswith('"') for t in promoted + suppressed)


def test_direct_logits_refuse_a_direction_outside_the_residual_stream(subject):
    import torch

    from autointerp.effects import direct_logits
    from autointerp.errors import AutointerpError

    with pytest.raises(AutointerpError, match="not in the residual stream"):
        direct_logits(subject, torch.zeros(1, 1536))


def test_real_logits_explainer_through_the_explain_stage(run, tmp_path):
    """`autointerp explain` with the `logits` explainer: the embedded SmolLM2 is shown the tokens
    the real coder's latents promote (the same tokens `top_tokens` computes), and explains them."""
    import autointerp.stages as stages
    from autointerp.explain import ExplainStageConfig
    from autointerp.sample import write_config

    root, cache, sample = run
    write_config(root / "sample", SampleConfig())  # as `autointerp sample` leaves the folder
    seen = []

    cfg = ExplainStageConfig.model_validate({"explain": {"explainer": "logits", "max_tokens": 24}})
    client = Recording(make_client(ClientConfig(), tmp_path / "llm_cache.sqlite"), seen)
    done = stages.explain(
        root / "cache",
        root / "sample",
        tmp_path / "out",
        cfg,
        latents="1-2",
        client=client,
        progress=False,
    )
    got = read_explanations(done["coders"]["layers.15"]["path"])
    assert set(got) == {1, 2} and len(seen) == 2
    for e in got.values():
        assert e.prompt.startswith("logits@") and (e.text is None) == (e.error is not None)
    from autointerp.effects import top_tokens
    from autointerp.score.stage import ScoreContext, ScoreStageConfig

    ctx = ScoreContext(cache, ScoreStageConfig(), 32)
    coder = ctx.coder("layers.15")
    [(promoted, suppressed)] = top_tokens(
        ctx.subject, coder.direction(1, ctx.subject.device)[None], 10
    )
    assert seen[0][1]["content"] == (
        f"Tokens the feature promotes: {', '.join(promoted)}\n"
        f"Tokens the feature suppresses: {', '.join(suppressed)}"
    )


def test_real_intervention_explainer_holds_out_the_scorers_prompts(run, tmp_path):
    """The intervention explainer shows the embedded model's clean and steered continuations of
    cache rows that the intervention scorer (same seed and n_prompts) never uses."""
    import numpy as np

    from autointerp.explain import effects_for
    from autointerp.score.intervention import InterventionConfig, prompt_rows
    from autointerp.score.stage import ScoreContext, ScoreStageConfig

    _, cache, sample = run
    steer = InterventionConfig(n_prompts=6, prompt_len=8, new_tokens=6, scale=8.0)
    ctx = ScoreContext(cache, ScoreStageConfig(), 32)
    cfg = ExplainConfig(explainer="intervention", steer_prompts=3, max_tokens=24)
    effects = effects_for(cfg, ctx, steer)
    seen = []

    client = Recording(make_client(ClientConfig(), tmp_path / "llm_cache.sqlite"), seen)
    ex = Explainer(cache, cfg, client, ctx.decode, 32, effects)
    got = read_explanations(explain_coder(ex, sample, tmp_path, latents={1}, progress=False))
    assert got[1].prompt.startswith("intervention@") and len(seen) == 1

    st = effects.steerer("layers.15")
    scorer_rows = prompt_rows(len(ctx.tokens), steer.n_prompts, steer.seed)
    assert len(st.prompts) == 3
    shown = {tuple(p.tolist()) for p in st.prompts}
    held = {tuple(ctx.tokens[r, :8].astype(np.int64).tolist()) for r in scorer_rows}
    assert not shown & held
    conts = effects.continuations("layers.15", 1, 10.0)
    assert [c.clean for c in conts] == st.continue_prompts(None)[0]
    assert any(c.clean != c.steered for c in conts)  # steering at 8x a large activation shows
    assert seen[0][1]["content"].startswith("Texts continued clean and steered:\n\nText 1: ")
    assert seen[0][1]["content"].count("\nSteered: ") == 3
    # a different steering gives a different prompt id (and so never reuses the other's answers)
    other = Explainer(cache, cfg, client, None, 32, effects_for(cfg, ctx, InterventionConfig()))
    assert other.prompt != ex.prompt


def test_promoted_tokens_leave_out_halves_of_split_characters(tokenizer):
    """A token that is part of a character split across tokens decodes to U+FFFD alone: the logits
    explainer's token lists leave it out instead of showing a replacement character."""
    from autointerp.effects import _shown

    half = tokenizer.encode("東京")[:1]  # the first byte-level piece of a multi-byte character
    assert "\ufffd" in tokenizer.decode(half)
    whole = tokenizer.encode(" cat")
    assert _shown(tokenizer, half + whole) == ['" cat"']
