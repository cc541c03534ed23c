"""Best-of-k explanations: the pilot's choice, its examples (never the scorers'), failures, costs,
best_of=1 unchanged, the run, the stage and the Python API, and the real local model."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import autointerp
import autointerp.stages
from autointerp.aio import run_sync
from autointerp.best_of import best, candidate_views, make_explainer, split_pilot
from autointerp.cache import ActivationCache
from autointerp.clients.base import Completion, GenParams, TokenLogprob
from autointerp.errors import ConfigError
from autointerp.explain import ExplainConfig, Explainer, explain_coder, prompt_id
from autointerp.jsonl import read_jsonl
from autointerp.sample import TokenDecoder, render
from autointerp.score.base import text_of
from autointerp.types import Candidate, Explanation, LatentId, SampledLatent

EXPLAINER = "You study the internal features"  # how the explainer's system prompt starts
LINE = re.compile(r"^Example \d+: (.*)$", re.M)
OLD_KEYS = {
    "latent",
    "text",
    "raw",
    "model",
    "prompt",
    "error",
    "prompt_tokens",
    "completion_tokens",
}


def _plain(line: str) -> str:
    return line.replace("<<", "").replace(">>", "")


class Fake:
    """Explainer and pilot judge in one scripted client. Explainer prompts get the next of
    `answers` (None: a failed request); judge prompts are answered by the mode `judgements` gives
    the explanation: `truth` (1 for the texts in `activating`), `yes` (1 for all) or `fail`."""

    model = "fake"

    def __init__(self, answers, activating=frozenset(), judgements=None):
        self.answers, self.activating = list(answers), set(activating)
        self.judgements = judgements or {}
        self.explain_chats: list = []
        self.judge_chats: list = []
        self.params: list[GenParams] = []

    async def complete(self, chats, params: GenParams):
        self.params.append(params)
        return [self._one(chat) for chat in chats]

    def _one(self, chat) -> Completion:
        if chat[0]["content"].startswith(EXPLAINER):
            self.explain_chats.append(chat)
            a = self.answers.pop(0)
            if a is None:
                return Completion(text=None, error="HTTP 500")
            return Completion(text=a, prompt_tokens=100, completion_tokens=5)
        self.judge_chats.append(chat)
        user = chat[1]["content"]
        mode = self.judgements[re.search(r"^Explanation: (.*)$", user, re.M).group(1)]
        if mode == "fail":
            return Completion(text=None, error="HTTP 503")
        said = [mode == "yes" or _plain(t) in self.activating for t in LINE.findall(user)]
        digits = ["1" if s else "0" for s in said]
        lp = [
            TokenLogprob(
                token=d, logprob=math.log(0.9), top=[(d, math.log(0.9)), ("10"[d == "1"], -2.3)]
            )
            for d in digits
        ]
        return Completion(
            text="[" + ",".join(digits) + "]", logprobs=lp, prompt_tokens=50, completion_tokens=9
        )


def _texts(chats) -> set[str]:
    return {_plain(t) for chat in chats for t in LINE.findall(chat[1]["content"])}


@pytest.fixture(scope="module")
def sampled(small_run, tokenizer):
    """The small run's cache, sample file, two sampled latents and their rendered example sets."""
    cache = ActivationCache(small_run / "cache")
    path = small_run / "sample" / "layers.15.jsonl"
    ok = [r for r in read_jsonl(path, SampledLatent) if r.status == "ok"]
    records = sorted(ok, key=lambda r: -len(r.train))[:2]  # the most train examples
    decode, tokens = TokenDecoder(tokenizer), cache.tokens()

    def texts(refs):
        return [text_of(render(x, tokens, decode, 32)) for x in refs]

    sets = {
        r.id.latent: {
            k: texts(getattr(r, k)) for k in ("train", "test", "negatives", "explain_negatives")
        }
        for r in records
    }
    return cache, path, records, sets


def _explainer(sampled, tokenizer, client, **options) -> Explainer:
    cache = sampled[0]
    return make_explainer(cache, ExplainConfig(**options), client, TokenDecoder(tokenizer), 32)


def test_the_pilot_keeps_the_candidate_it_ranks_best(sampled, tokenizer, tmp_path):
    _, path, records, sets = sampled
    train = {t for s in sets.values() for t in s["train"]}
    # per latent: one over-broad candidate, one without an explanation line, the right one
    answers = ["[EXPLANATION]: everything", "no line", "[EXPLANATION]: the right thing"] * 2
    fake = Fake(answers, train, {"everything": "yes", "the right thing": "truth"})
    ex = _explainer(sampled, tokenizer, fake, best_of=3, pilot=6)
    ids = {r.id.latent for r in records}
    written = explain_coder(ex, path, tmp_path, ids, progress=False)
    got = {e.latent.latent: e for e in read_jsonl(written, Explanation)}

    for e in got.values():
        assert e.text == "the right thing" and e.prompt.startswith("default+best3@")
        assert [c.chosen for c in e.candidates] == [False, False, True]
        broad, broken, right = e.candidates
        assert broad.pilot["balanced_accuracy"] == 0.5 and broad.pilot_error is None
        assert right.pilot["balanced_accuracy"] == 1.0 and right.pilot["auroc"] == 1.0
        assert right.judge == "fake" and right.pilot_calls > 0
        assert broken.text is None and broken.error == "no [EXPLANATION]: line in the answer"
        assert broken.pilot == {} and broken.pilot_calls == 0
        s = sets[e.latent.latent]
        # the pilot: 6 train examples (at most half of them) and the explain negatives
        assert right.pilot["n"] == min(6, len(s["train"]) // 2) + len(s["explain_negatives"])
        spent = sum(c.prompt_tokens + c.pilot_prompt_tokens for c in e.candidates)
        assert e.prompt_tokens == spent == 3 * 100 + 50 * (right.pilot_calls + broad.pilot_calls)
        assert "candidates" in json.loads(e.model_dump_json())

    # subsets: each candidate saw its own half of the other train examples, all in the record
    for e in got.values():
        views = [c.shown for c in e.candidates]
        n = len(sets[e.latent.latent]["train"])
        half = round(0.5 * (n - min(6, n // 2)))
        assert len({tuple(v) for v in views}) == 3 and all(len(v) == half for v in views)
    # the explainer's usage counts the k answers and every pilot call
    assert (
        ex.usage.calls
        == len(fake.explain_chats) + len(fake.judge_chats)
        == 6 + len(fake.judge_chats)
    )


@pytest.mark.parametrize("explainer", ["default", "contrastive"])
def test_the_pilot_never_sees_the_scorers_examples(sampled, tokenizer, tmp_path, explainer):
    """Per latent, the judge sees held-out train examples and explain negatives only; the
    candidates never see the pilot (with the contrastive explainer, they see the other half of
    the explain negatives)."""
    _, path, records, sets = sampled
    for r in records:
        s = sets[r.id.latent]
        fake = Fake(["[EXPLANATION]: a", "[EXPLANATION]: b"], s["train"], {"a": "yes", "b": "yes"})
        ex = _explainer(sampled, tokenizer, fake, best_of=2, pilot=6, explainer=explainer)
        written = explain_coder(ex, path, tmp_path / str(r.id.latent), {r.id.latent})
        [e] = read_jsonl(written, Explanation)
        judged, shown = _texts(fake.judge_chats), _texts(fake.explain_chats)
        assert judged.isdisjoint(s["test"] + s["negatives"])  # never the scorers' examples
        negatives = set(s["explain_negatives"])
        if explainer == "contrastive":
            assert judged & negatives == set(s["explain_negatives"][1::2])
            assert shown & negatives == set(s["explain_negatives"][0::2])
        else:
            assert judged & negatives == negatives and shown & negatives == set()
        pilot = judged - negatives
        assert pilot <= set(s["train"]) and len(pilot) == 6 and pilot.isdisjoint(shown)
        assert shown - negatives <= set(s["train"]) - pilot
        seen = {s["train"][i] for c in e.candidates for i in c.shown}
        assert seen == shown - negatives  # the record says what each candidate saw


def test_failures_are_recorded_and_never_chosen(sampled, tokenizer, tmp_path):
    _, path, records, sets = sampled
    lat = records[0].id.latent
    # every answer unusable: the explanation fails as without best-of, no pilot is asked
    fake = Fake(["no line", None])
    ex = _explainer(sampled, tokenizer, fake, best_of=2, pilot=4)
    [e] = read_jsonl(explain_coder(ex, path, tmp_path / "a", {lat}), Explanation)
    assert e.text is None and fake.judge_chats == []
    assert e.error == (
        "none of the 2 candidates could be kept "
        "(0: no [EXPLANATION]: line in the answer; 1: HTTP 500)"
    )
    assert [c.error for c in e.candidates] == ["no [EXPLANATION]: line in the answer", "HTTP 500"]
    # a parsed candidate whose pilot failed is not kept either
    fake = Fake(["[EXPLANATION]: a", "[EXPLANATION]: b"], judgements={"a": "fail", "b": "truth"})
    ex = _explainer(sampled, tokenizer, fake, best_of=2, pilot=4)
    [e] = read_jsonl(explain_coder(ex, path, tmp_path / "b", {lat}), Explanation)
    assert e.text == "b" and e.candidates[0].pilot_error.startswith("no answer could be used")
    fake = Fake(["[EXPLANATION]: a", "[EXPLANATION]: a"], judgements={"a": "fail"})
    ex = _explainer(sampled, tokenizer, fake, best_of=2, pilot=4)
    [e] = read_jsonl(explain_coder(ex, path, tmp_path / "c", {lat}), Explanation)
    assert e.text is None and "none of the 2 candidates" in e.error and len(e.candidates) == 2
    assert ex.usage.failures == len(fake.judge_chats) > 0  # failed pilot calls count as such
    # a latent without explain negatives fails before any LLM work, naming why
    bare = records[0].model_copy(update={"explain_negatives": []})
    ex = _explainer(sampled, tokenizer, Fake([]), best_of=2, pilot=4)
    [e] = run_sync(ex.explain([bare]))
    assert e.text is None and "explain negatives" in e.error and e.candidates == []


def test_best_of_1_writes_what_it_wrote_before(sampled, tokenizer, tmp_path):
    """Prompts, prompt id and JSON lines as before best-of-k (ids from the code before it)."""
    _, path, records, _ = sampled
    lat = records[0].id.latent
    fake = Fake(["[EXPLANATION]: digits"])
    options = {"temperature": 0.2, "pilot": 3, "candidates": "temperature", "subset": 0.3}
    ex = _explainer(sampled, tokenizer, fake, **options)  # best-of's options without best_of
    [line] = explain_coder(ex, path, tmp_path, {lat}, progress=False).read_text().splitlines()
    assert set(json.loads(line)) == OLD_KEYS
    assert json.loads(line)["prompt"] == "default@b09111898b62"
    assert prompt_id(ExplainConfig(), prefill=True) == "default@5f2e045c8d6f"
    assert prompt_id(ExplainConfig(**options)) == "default@6f5a8b39e82c"
    assert len(fake.explain_chats) == 1 and fake.judge_chats == []
    assert fake.params == [GenParams(max_tokens=256)]
    assert Explanation.model_validate_json(line).candidates == []  # older files load


def test_prompt_id_holds_the_best_of_options():
    two = ExplainConfig(best_of=2)
    assert prompt_id(two).startswith("default+best2@") and prompt_id(two) != prompt_id(
        ExplainConfig()
    )
    changes = {
        "best_of": 3,
        "candidates": "temperature",
        "temperature": 0.3,
        "subset": 0.25,
        "pilot": 4,
        "pilot_scorer": "fuzzing",
    }
    ids = {prompt_id(two)} | {prompt_id(two.model_copy(update={k: v})) for k, v in changes.items()}
    assert len(ids) == len(changes) + 1


def test_the_pilot_spans_the_activations_and_candidates_differ():
    peaks = [float(x) for x in range(20)][::-1]  # strongest first
    held, rest = split_pilot(peaks, 5)
    assert sorted(peaks[i] for i in held) == [2.0, 6.0, 10.0, 14.0, 18.0]  # one per quintile
    assert sorted(held + rest) == list(range(20))
    assert split_pilot(peaks[:6], 10)[0].__len__() == 3  # at most half of a latent's examples
    lid = LatentId(coder="c", latent=7)
    cfg = ExplainConfig(best_of=4, subset=0.5)
    views = candidate_views(cfg, lid, rest, peaks)
    assert len({tuple(v) for v in views}) == 4 and all(len(v) == 8 for v in views)
    for v in views:  # one of each stratum by peak: the two weakest, ..., the strongest
        assert set(v) <= set(rest) and sum(peaks[i] in (0.0, 1.0) for i in v) == 1
        assert any(peaks[i] == 19.0 for i in v)
    assert views == candidate_views(cfg, lid, rest, peaks)  # seeded
    hot = candidate_views(ExplainConfig(best_of=3, candidates="temperature"), lid, rest, peaks)
    assert hot[0] == rest and all(sorted(v) == rest for v in hot)
    assert len({tuple(v) for v in hot}) == 3  # an order of its own: no two equal requests


def test_ties_go_to_auroc_then_to_the_first():
    def c(ba, auroc=None, text="x"):
        return Candidate(text=text, raw="", pilot={"balanced_accuracy": ba, "auroc": auroc})

    assert best([c(0.8, 0.7), c(0.9, 0.6), c(0.9, 0.8)]) == 2
    assert best([c(0.9), c(0.9, 0.5)]) == 1
    assert best([c(0.9), c(0.9)]) == 0
    assert best([c(1.0, text=None), c(0.6)]) == 1
    assert best([c(None), c(None, 1.0)]) is None


def test_temperature_candidates_are_sampled(sampled, tokenizer, tmp_path):
    _, path, records, _ = sampled
    fake = Fake(["[EXPLANATION]: a", "[EXPLANATION]: b"], judgements={"a": "yes", "b": "yes"})
    cfg = {"best_of": 2, "pilot": 4, "candidates": "temperature", "temperature": 0.9}
    ex = _explainer(sampled, tokenizer, fake, **cfg)
    [e] = read_jsonl(explain_coder(ex, path, tmp_path, {records[0].id.latent}), Explanation)
    assert fake.params[0].temperature == 0.9
    first, second = (c[1]["content"] for c in fake.explain_chats)
    assert first != second and _texts(fake.explain_chats[:1]) == _texts(fake.explain_chats[1:])
    assert e.text == "a"  # a tie on the pilot goes to the first


def test_bad_options_are_named(small_run, tmp_path):
    from autointerp.pipeline import RunConfig

    with pytest.raises(ValueError, match="default and contrastive explainers, not 'token-stats'"):
        ExplainConfig(best_of=2, explainer="token-stats")
    with pytest.raises(ValueError, match="temperature 0 gives k identical"):
        ExplainConfig(best_of=2, candidates="temperature", temperature=0)
    with pytest.raises(ValueError, match=r"explain.pilot \(40\) must be less .*n_train: 40"):
        RunConfig(explain={"best_of": 2, "pilot": 40})
    with pytest.raises(ValueError, match="n_explain_negatives is 0"):
        RunConfig(explain={"best_of": 2}, sample={"n_explain_negatives": 0})
    with pytest.raises(ConfigError, match=r"explain.pilot \(40\).*the samples in"):
        autointerp.stages.explain(
            small_run / "cache", out=tmp_path, config={"explain": {"best_of": 2, "pilot": 40}}
        )
    ex = [{"tokens": ["a", "b"], "activations": [0, 1]}] * 4
    with pytest.raises(ConfigError, match="negatives given is 0"):
        autointerp.explain(ex, client=Fake([]), config={"best_of": 2, "pilot": 2})
    with pytest.raises(ConfigError, match=r"pilot \(4\) must be less .*given: 4"):
        autointerp.explain(ex, client=Fake([]), negatives=ex, config={"best_of": 2, "pilot": 4})


def test_python_api_takes_best_of_through_the_config():
    pos = [{"tokens": ["x", f" {i}"], "activations": [0, 1 + i]} for i in range(6)]
    neg = [{"tokens": ["y", " z"], "activations": [0, 0]}] * 3
    fake = Fake(
        ["[EXPLANATION]: any", "[EXPLANATION]: digits"],
        activating={"x 0", "x 1", "x 2", "x 3", "x 4", "x 5"},
        judgements={"any": "yes", "digits": "truth"},
    )
    e = autointerp.explain(pos, client=fake, negatives=neg, config={"best_of": 2, "pilot": 2})
    assert e.text == "digits" and [c.chosen for c in e.candidates] == [False, True]
    assert _texts(fake.judge_chats) == {"x 1", "x 4", "y z"}  # 2 held out, the negatives
    assert _texts(fake.explain_chats).isdisjoint({"x 1", "x 4", "y z"})


def test_older_run_folders_resume_without_the_best_of_keys():
    import copy

    from autointerp.pipeline import RunConfig, config_dict, config_differences

    now = config_dict(RunConfig())
    older = copy.deepcopy(now)
    for key in ("best_of", "candidates", "temperature", "subset", "pilot", "pilot_scorer"):
        older["explain"].pop(key)
    assert config_differences(older, now) == []
    changed = config_dict(RunConfig(explain={"best_of": 2}))
    assert [k for k, _, _ in config_differences(older, changed)][0] == "explain.best_of"


def test_run_with_best_of_counts_the_pilot(tmp_path, small_run):
    """`autointerp run` with `explain: {best_of: 2}` against a scripted OpenAI-compatible server:
    two candidates per latent with pilot metrics, every pilot call in the run's LLM calls."""
    from openai_fake import FakeOpenAI

    from autointerp.cli import app

    server = FakeOpenAI()
    count = iter(range(10_000))

    def reply(body):
        messages = body["messages"]
        if messages[0]["content"].startswith(EXPLAINER):
            return f"[EXPLANATION]: candidate {next(count)}"
        return "[" + ",".join("1" for _ in LINE.findall(messages[1]["content"])) + "]"

    server.reply = reply
    out = tmp_path / "run"
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "corpus: {n_tokens: 16384}\n"
        "coders:\n"
        "  - {hookpoint: layers.15}\n"
        "  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}\n"
        "report: false\nmax_latents: 2\n"
        f"client: {{backend: openai, base_url: '{server.url}', model: fake-model}}\n"
        "explain: {best_of: 2, pilot: 4}\n"
        "score: {scorers: [embedding]}\n"
    )
    try:
        r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out), "--coder", "layers.15"])
    finally:
        server.close()
    assert r.exit_code == 0, r.output
    lines = (out / "explanations" / "layers.15.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert rows and all(len(row["candidates"]) == 2 for row in rows)
    for row in rows:
        assert "+best2@" in row["prompt"] and row["text"].startswith("candidate")
        assert all(c["pilot"]["balanced_accuracy"] == 0.5 for c in row["candidates"])
    summary = json.loads((out / "summary.json").read_text())
    pilots = len(server.requests) - 2 * len(rows)
    assert pilots > 0 and summary["llm_calls"] == len(server.requests)


def test_real_local_model_best_of_2(small_run, tmp_path):
    """SmolLM2 through the transformers backend writes 2 candidates per latent and judges each on
    the pilot; the usage counts both answers and the pilot's calls."""
    path = small_run / "sample" / "layers.15.jsonl"
    ok = [r for r in read_jsonl(path, SampledLatent) if r.status == "ok"][:2]
    done = autointerp.stages.explain(
        small_run / "cache",
        out=tmp_path,
        config={"explain": {"best_of": 2, "pilot": 4, "max_tokens": 24}},
        coders=["layers.15"],
        latents=",".join(str(r.id.latent) for r in ok),
        progress=False,
    )
    got = list(read_jsonl(Path(done["coders"]["layers.15"]["path"]), Explanation))
    assert len(got) == 2
    for e, r in zip(got, ok, strict=True):
        assert e.model == "smollm2" and "+best2@" in e.prompt and len(e.candidates) == 2
        assert (e.text is None) == (e.error is not None)
        for c in e.candidates:
            if c.text is None:
                continue
            assert c.judge == "smollm2" and c.pilot_calls == 4 + len(r.explain_negatives)
            assert c.pilot["n"] + c.pilot["n_failed"] == 4 + len(r.explain_negatives)
            assert c.pilot_error is not None or 0 <= c.pilot["balanced_accuracy"] <= 1
        if e.text is not None:
            assert sum(c.chosen for c in e.candidates) == 1
    judged = sum(c.pilot_calls for e in got for c in e.candidates)
    assert judged > 0 and done["usage"]["calls"] == 4 + judged
