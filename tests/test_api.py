"""The Python API (`autointerp.api`, `autointerp.stages`): the README's examples run as written,
calls on examples in memory return the records the stages write, the sync calls work inside a
running event loop, and the stage functions on folders write what the command line writes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

import autointerp
from autointerp.clients.base import Completion
from autointerp.errors import ConfigError
from autointerp.score.base import LatentScore
from autointerp.types import Explanation

ROOT = Path(__file__).resolve().parents[1]

CATS = [
    {"tokens": ["The", " cat", " sat", " on", " the", " mat"], "activations": [0, 9, 0, 0, 0, 0]},
    {"tokens": ["A", " black", " cat", " purred"], "activations": [0, 0, 7.5, 1.0]},
    {"tokens": ["My", " cat", " likes", " fish"], "activations": [0, 8, 0, 0]},
]
OTHERS = [
    {"tokens": ["The", " stock", " market", " fell"], "activations": [0, 0, 0, 0]},
    {"tokens": ["Rain", " is", " expected", " today"], "activations": [0, 0, 0, 0]},
]


ONE_PER_PROMPT = {"detection": {"examples_per_prompt": 1}}


class Scripted:
    """A client object of the protocol (`model`, `async complete`) that answers from a script:
    a stand-in for a user's own client, to check that any such object is used as given."""

    model = "scripted"

    def __init__(self, answer: str):
        self.answer, self.chats = answer, []

    async def complete(self, chats, params):
        self.chats += chats
        return [Completion(text=self.answer, prompt_tokens=11, completion_tokens=3) for _ in chats]


def test_explain_in_memory_uses_the_client_given_and_returns_the_stage_record():
    client = Scripted("[EXPLANATION]: the word cat")
    e = autointerp.explain(CATS, client=client, latent=("my-sae", 7))
    assert isinstance(e, Explanation)
    assert (e.text, e.model, e.latent.coder, e.latent.latent) == (
        "the word cat",
        "scripted",
        "my-sae",
        7,
    )
    assert (e.prompt_tokens, e.completion_tokens) == (11, 3)
    prompt = client.chats[0][-1]["content"]
    assert "<<cat>>" in prompt.replace(" ", "") or "cat" in prompt  # the examples are in the prompt
    assert all(t.strip() in prompt for ex in CATS for t in ex["tokens"])
    bad = autointerp.explain(CATS, client=Scripted("no format here"))
    assert bad.text is None and "EXPLANATION" in bad.error  # a failure, not an empty explanation


def test_sync_calls_work_inside_a_running_event_loop():
    """As in a notebook: a loop is running when the plain (sync) call is made."""

    async def notebook_cell():
        assert asyncio.get_running_loop()
        e = autointerp.explain(CATS, explainer="token-stats")
        awaited = await autointerp.aexplain(CATS, explainer="token-stats")
        s = autointerp.score(
            "the word cat", CATS, OTHERS, "detection", Scripted("[1]"), ONE_PER_PROMPT
        )
        return e, awaited, s

    e, awaited, s = asyncio.run(notebook_cell())
    assert e.text == awaited.text and '"cat"' in e.text
    assert isinstance(s, LatentScore) and s.status == "ok"
    # the scripted judge says yes to everything: every activating example right, every other wrong
    assert s.metrics["recall"] == 1.0 and s.metrics["specificity"] == 0.0
    assert s.metrics["balanced_accuracy"] == 0.5


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="example 1: 2 tokens and 1 activations"):
        autointerp.explain(
            [CATS[0], {"tokens": ["a", "b"], "activations": [1]}], explainer="token-stats"
        )
    with pytest.raises(ConfigError, match="example 0 has no `tokens`"):
        autointerp.explain([{"text": "a cat"}], explainer="token-stats")
    with pytest.raises(ConfigError, match="a list of strings"):
        autointerp.explain([{"tokens": "a cat", "activations": [1] * 5}], explainer="token-stats")
    with pytest.raises(ConfigError, match="at least one activating example"):
        autointerp.explain([], explainer="token-stats")
    with pytest.raises(ConfigError, match="no scorer 'detectoin'"):
        autointerp.score("cats", CATS, OTHERS, scorer="detectoin")
    with pytest.raises(ConfigError, match="`async complete"):
        autointerp.explain(CATS, client=object())
    with pytest.raises(ConfigError, match="needs an activation cache"):
        autointerp.score("cats", CATS, OTHERS, scorer="intervention")
    failed = autointerp.score(
        Explanation(
            latent={"coder": "c", "latent": 1},
            text=None,
            raw="",
            model="m",
            prompt="p",
            error="timeout",
        ),
        CATS,
        OTHERS,
        scorer="embedding",
    )
    assert failed.status == "failed" and "timeout" in failed.error  # recorded, never a zero


@pytest.mark.slow
def test_explain_and_score_in_memory_with_the_real_local_model():
    """The packaged model as explainer and detection judge, and the packaged embedder: records
    shaped as a run's, one prediction per example."""
    e = autointerp.explain(CATS, client={"dtype": "float32"})
    assert e.error is None or e.text is None  # a usable answer, or a recorded failure
    assert e.model and e.prompt_tokens > 0
    s = autointerp.score(
        "the word cat", CATS, OTHERS, scorer="detection", client={"dtype": "float32"}
    )
    assert s.status == "ok" and len(s.predictions) == len(CATS) + len(OTHERS)
    assert sorted(p.label for p in s.predictions) == [False] * 2 + [True] * 3  # shuffled
    emb = autointerp.score("the word cat", CATS, OTHERS, scorer="embedding")
    assert emb.status == "ok" and 0.0 <= emb.metrics["auroc"] <= 1.0
    free = autointerp.score("", CATS, OTHERS, scorer="example-embedding", train=CATS[:2])
    assert free.status == "ok"  # an explanation-free scorer scores without an explanation


def test_stage_modules_are_the_api_calls_of_their_name():
    import autointerp.explain as explain_module
    import autointerp.score.metrics  # noqa: F401 (a submodule of a callable module imports)

    assert autointerp.explain is explain_module and explain_module.Explainer
    for name in ("cache", "report", "export", "explain", "score"):
        assert callable(getattr(autointerp, name)), name
    assert autointerp.explain(CATS, explainer="token-stats").text  # also after the import


@pytest.mark.slow
def test_stage_functions_write_what_the_command_line_writes(small_run, tmp_path):
    """`autointerp.stages` on a copy of a run made with the command line: the same records."""
    from autointerp import stages

    run = Path(
        shutil.copytree(
            small_run,
            tmp_path / "run",
            ignore=shutil.ignore_patterns("scores", "explanations", "report", "export"),
        )
    )
    info = stages.cache_info(run / "cache")
    assert info["coders"]["layers.15"]["n_latents"] == 4608
    done = stages.explain(
        run / "cache", config={"explain": {"explainer": "token-stats"}}, progress=False
    )
    assert done["coders"]["layers.15"]["explained"] == 12 and done["usage"]["calls"] == 0
    for coder in ("layers.15", "neurons.15"):
        ours = (run / "explanations" / f"{coder}.jsonl").read_text().splitlines()
        theirs = (small_run / "explanations" / f"{coder}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in ours] == [json.loads(x) for x in theirs]
    scored = stages.score(
        run / "cache",
        config={"score": {"scorers": ["embedding"]}},
        coders=["layers.15"],
        progress=False,
    )
    by = scored["coders"]["layers.15"]["embedding"]
    assert by["scored"] + by["failed"] == 12
    ours = [
        json.loads(x)["metrics"]
        for x in (run / "scores" / "embedding" / "layers.15.jsonl").read_text().splitlines()
    ]
    theirs = [
        json.loads(x)["metrics"]
        for x in (small_run / "scores" / "embedding" / "layers.15.jsonl").read_text().splitlines()
    ]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_has_python_api_examples():
    blocks = readme_examples()
    assert len(blocks) >= 3
    assert any("asyncio" in b for b in blocks)  # one runs inside an event loop


@pytest.mark.slow
def test_readme_python_api_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README's "Python API" section, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in readme_examples():
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "api" / "summary.json").exists()


def test_one_example_and_no_examples():
    """Edges: one activating example explains; scored without negatives its balanced accuracy is
    undefined (None, never 0); no test example at all is a recorded failure."""
    one = [{"tokens": ["a", " cat"], "activations": [0, 5]}]
    assert autointerp.explain(one, explainer="token-stats").text.startswith('the tokens "cat"')
    s = autointerp.score("cats", one, [], "detection", Scripted("[1]"), ONE_PER_PROMPT)
    assert s.status == "ok" and s.metrics["n"] == 1 and s.metrics["recall"] == 1.0
    assert s.metrics["balanced_accuracy"] is None and s.metrics["specificity"] is None
    none = autointerp.score("cats", [], [], "detection", Scripted("[1]"), ONE_PER_PROMPT)
    assert none.status == "failed" and "no test examples" in none.error
