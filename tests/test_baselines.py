"""Baselines (Heap et al., 2025): `random-model` re-initialises the subject, `random-coder` the
coders; both run through the same pipeline, and a report puts trained and random side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autointerp.cache import build_cache, check_inputs
from autointerp.cli import app
from autointerp.coders import load_coder
from autointerp.config import CacheConfig, CoderConfig, SubjectConfig
from autointerp.errors import CacheError, CoderError
from autointerp.subject import Site, load_subject, model_fingerprint
from tests.conftest import write_saelens, write_sparsify

HOOK = "layers.3"  # shallow: the forward pass stops there, so the real model runs fast
SUBJECT = SubjectConfig(dtype="float32", device="cpu")


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _acts(subject, ids: torch.Tensor) -> torch.Tensor:
    return subject.activations(ids, [Site.parse(HOOK)])[Site.parse(HOOK)].float()


def test_random_model_is_seeded_keeps_the_tokenizer_and_differs_from_the_trained(subject):
    ids = torch.tensor([subject.tokenizer("The cat sat on the mat because it was warm.").input_ids])
    a, again, other = (load_subject(SUBJECT, random_seed=s) for s in (0, 0, 1))
    assert torch.equal(_acts(a, ids), _acts(again, ids))  # same seed, same weights
    assert not torch.allclose(_acts(a, ids), _acts(other, ids))
    trained = _acts(subject, ids)
    assert trained.shape == _acts(a, ids).shape and not torch.allclose(trained, _acts(a, ids))
    # the architecture's own init (Llama: normal(0, initializer_range), unit norm weights)
    w = dict(a.model.named_parameters())
    assert w["model.layers.0.mlp.up_proj.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(w["model.norm.weight"], torch.ones_like(w["model.norm.weight"]))
    # the same tokenizer as the trained model
    assert a.tokenizer.get_vocab() == subject.tokenizer.get_vocab()
    text = "Baselines keep the tokenizer."
    assert a.tokenizer(text).input_ids == subject.tokenizer(text).input_ids
    # fingerprints: one per seed, none the trained model's; known without loading
    prints = {subject.fingerprint, a.fingerprint, other.fingerprint}
    assert len(prints) == 3 and a.fingerprint == again.fingerprint
    assert model_fingerprint(SUBJECT, 0) == a.fingerprint
    assert model_fingerprint(SUBJECT) == subject.fingerprint


def test_random_coder_has_the_shape_but_not_the_latents(tmp_path):
    trained_cfg = CoderConfig(path=str(write_sparsify(tmp_path / "sae", n=256, k=8)))
    trained = load_coder(trained_cfg)
    rand = load_coder(trained_cfg, baseline="random-coder", seed=0)
    for field in ("d_in", "n_latents", "k", "activation", "site", "transcoder", "kind"):
        assert getattr(rand, field) == getattr(trained, field), field
    assert rand.W_enc.shape == trained.W_enc.shape and rand.W_dec.shape == trained.W_dec.shape
    assert rand.fingerprint != trained.fingerprint
    mean_norm = trained.W_enc.norm(dim=1).mean()
    assert torch.allclose(rand.W_enc.norm(dim=1), mean_norm.expand(256), rtol=1e-3)
    assert torch.allclose(rand.W_dec.norm(dim=1), torch.ones(256), rtol=1e-3)
    assert torch.count_nonzero(rand.b_enc) == 0  # TopK: zero bias, k sets the sparsity
    x = torch.randn(64, trained.d_in, generator=torch.Generator().manual_seed(0))
    (_, idx_t), (_, idx_r) = trained.encode(x), rand.encode(x)
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(idx_t, idx_r, strict=True)]
    assert sum(overlap) / (64 * 8) < 0.2  # other latents fire (chance: 8/256)
    # seeded by the seed and the coder's name
    again = load_coder(trained_cfg, baseline="random-coder", seed=0)
    assert torch.equal(again.W_enc, rand.W_enc)
    assert not torch.equal(
        load_coder(trained_cfg, baseline="random-coder", seed=1).W_enc, rand.W_enc
    )
    renamed = trained_cfg.model_copy(update={"name": "other"})
    assert not torch.equal(load_coder(renamed, baseline="random-coder").W_enc, rand.W_enc)
    # JumpReLU keeps its thresholds and bias (they alone set its sparsity)
    jump_cfg = CoderConfig(path=str(write_saelens(tmp_path / "jump", "jumprelu")))
    jump, rjump = load_coder(jump_cfg), load_coder(jump_cfg, baseline="random-coder")
    assert rjump.activation == "jumprelu" and torch.equal(rjump.threshold, jump.threshold)
    assert rjump.W_enc.shape == jump.W_enc.shape and not torch.allclose(rjump.W_enc, jump.W_enc)


def test_random_coder_refuses_neurons():
    cfg = CacheConfig(
        baseline="random-coder", coders=[CoderConfig(hookpoint=HOOK, format="neurons")]
    )
    with pytest.raises(CoderError, match="neurons.*no weights to randomise"):
        check_inputs(cfg)


def test_the_embedded_sae_is_refused_under_random_model(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("baseline: random-model\ncorpus: {n_tokens: 512}\n")  # the embedded SAE
    r = _cli("cache", cfg, "--out", tmp_path / "cache")
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "embedded SAE, made for the trained model" in text
    assert "autointerp train-sae --baseline random-model --baseline-seed 0" in text
    assert "`neurons` coder" in text
    assert not (tmp_path / "cache" / "cache.json").exists()


@pytest.fixture(scope="module")
def random_sae(tmp_path_factory) -> Path:
    """`autointerp train-sae --baseline random-model`, tiny: 20k tokens, 256 latents."""
    out = tmp_path_factory.mktemp("random_sae") / "sae"
    r = _cli(
        "train-sae",
        "--out",
        out,
        "--baseline",
        "random-model",
        "--tokens",
        20_000,
        "--latents",
        256,
        "--k",
        8,
        "--hookpoint",
        HOOK,
    )
    assert r.exit_code == 0, (r.output, r.exception)
    return out


def test_train_sae_on_the_random_model_writes_a_coder_it_accepts(random_sae):
    meta = json.loads((random_sae / "cfg.json").read_text())
    assert meta["baseline"] == "random-model" and meta["baseline_seed"] == 0
    cfg = CoderConfig(hookpoint=HOOK, path=str(random_sae))
    coder = load_coder(cfg, baseline="random-model", seed=0)
    assert coder.n_latents == 256 and coder.k == 8
    with pytest.raises(CoderError, match="another seed"):
        load_coder(cfg, baseline="random-model", seed=1)
    with pytest.raises(CoderError, match="Set `baseline: random-model`"):
        load_coder(cfg)  # made for the random model: refused on the trained one


RUN = """
corpus: {{n_tokens: 8192, ctx_len: 64}}
coders:
{coders}
explain: {{explainer: token-stats}}
score: {{scorers: [embedding]}}
sample: {{n_train: 10, n_test: 10, n_random_negatives: 10, n_similar_negatives: 10}}
latents: 0-5
report: false
"""
NEURONS = f"  - {{hookpoint: {HOOK}, format: neurons, k: 16, name: neurons.3}}\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, random_sae) -> dict[str, Path]:
    """A trained run (neurons) and a random-model run (neurons and the SAE trained on it)."""
    root = tmp_path_factory.mktemp("baseline_runs")
    sae = f"  - {{hookpoint: {HOOK}, path: '{random_sae}', name: sae.3}}\n"
    texts = {
        "trained": RUN.format(coders=NEURONS),
        "random": "baseline: random-model\n" + RUN.format(coders=NEURONS + sae),
    }
    out = {}
    for name, text in texts.items():
        (root / f"{name}.yaml").write_text(text)
        out[name] = root / name
        r = _cli("run", root / f"{name}.yaml", "--out", out[name])
        assert r.exit_code == 0, (name, r.output, r.exception)
    return out


def test_a_random_model_run_end_to_end(runs, monkeypatch):
    run = runs["random"]
    manifest = json.loads((run / "cache" / "cache.json").read_text())
    assert manifest["config"]["baseline"] == "random-model"
    assert manifest["fingerprints"]["model"] == model_fingerprint(SubjectConfig(), 0)
    trained = json.loads((runs["trained"] / "cache" / "cache.json").read_text())
    assert trained["fingerprints"]["model"] != manifest["fingerprints"]["model"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_scored"] > 0 and summary["scorers"]["embedding"]["mean"] is not None
    for coder in ("neurons.3", "sae.3"):
        assert (run / "scores" / "embedding" / f"{coder}.jsonl").exists()
    # the random model's activations differ from the trained model's: other top neurons
    a = (run / "cache" / "stats" / "neurons.3.npz").read_bytes()
    assert a != (runs["trained"] / "cache" / "stats" / "neurons.3.npz").read_bytes()

    # the finished cache is reused without loading any model, random or trained
    import autointerp.cache
    import autointerp.subject

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for name in ("load_subject", "random_model"):
        monkeypatch.setattr(autointerp.subject, name, refuse)
    monkeypatch.setattr(autointerp.cache, "load_subject", refuse)
    cfg = CacheConfig.model_validate(manifest["config"])
    assert build_cache(cfg, run / "cache", progress=False) == run / "cache"


def test_scorers_see_the_random_model_and_judge_with_the_trained_one(runs):
    from autointerp.cache import ActivationCache
    from autointerp.score import ScoreContext, ScoreStageConfig

    cache = ActivationCache(runs["random"] / "cache")
    ctx = ScoreContext(cache, ScoreStageConfig(), example_len=32)
    assert ctx.subject.fingerprint == cache.manifest["fingerprints"]["model"]  # intervention's
    assert ctx.coder("sae.3").fingerprint == cache.manifest["fingerprints"]["coders"]["sae.3"]
    loss = ctx.loss_model("smollm2", 4)  # surprisal reads explanations: the trained model
    assert loss.lm is not ctx.subject.model


def test_a_cache_or_run_folder_never_mixes_baseline_and_trained(runs, tmp_path):
    random_cfg = CacheConfig.model_validate(
        json.loads((runs["random"] / "cache" / "cache.json").read_text())["config"]
    )
    trained_cfg = random_cfg.model_copy(
        update={"baseline": None, "coders": [CoderConfig(hookpoint=HOOK, format="neurons", k=16)]}
    )
    folder = tmp_path / "cache"
    build_cache(random_cfg.model_copy(update={"coders": trained_cfg.coders}), folder, False)
    with pytest.raises(CacheError, match="baseline: cache has 'random-model', this run has None"):
        build_cache(trained_cfg, folder, progress=False)
    r = _cli("run", runs["trained"].parent / "trained.yaml", "--out", runs["random"])
    assert r.exit_code == 1
    assert "baseline: folder has 'random-model', this run has None" in r.output


def test_the_report_puts_trained_and_random_side_by_side(runs, tmp_path):
    r = _cli("report", runs["trained"], runs["random"], "--out", tmp_path / "rep")
    assert r.exit_code == 0, (r.output, r.exception)
    text = (tmp_path / "rep" / "summary.txt").read_text()
    assert "neurons.3 [random-model]" in text and "sae.3 [random-model]" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("neurons.3 - "))
    assert "neurons.3 - neurons.3 [random-model] (trained vs random-model):" in line
    assert "Mann-Whitney p" in line
    pairs = (tmp_path / "rep" / "compare_pairs.csv").read_text()
    assert "trained vs random-model" in pairs
    assert "trained vs random-model" in (tmp_path / "rep" / "index.html").read_text()


def test_a_random_coder_cache_encodes_with_the_random_weights(tmp_path):
    from autointerp.cache import ActivationCache
    from autointerp.coders.baseline import random_coder
    from autointerp.neighbours import neighbours

    path = str(write_sparsify(tmp_path / "sae", n=256, k=8))
    coders = [CoderConfig(hookpoint=HOOK, path=path, name="sae.3")]
    corpus = {"n_tokens": 1024, "ctx_len": 64}
    cfg = CacheConfig(subject=SUBJECT, corpus=corpus, coders=coders, baseline="random-coder")
    cache = ActivationCache(build_cache(cfg, tmp_path / "random", progress=False))
    trained = load_coder(coders[0])
    assert cache.coders["sae.3"]["n_latents"] == 256 and cache.coders["sae.3"]["d_in"] == 576
    assert cache.manifest["fingerprints"]["coders"]["sae.3"] != trained.fingerprint
    base = ActivationCache(build_cache(cfg.model_copy(update={"baseline": None}), tmp_path / "t"))
    counts = [c.stats("sae.3")["count"] for c in (cache, base)]
    assert counts[0].sum() == counts[1].sum() == 1024 * 8  # k latents per token in both
    assert (counts[0] != counts[1]).mean() > 0.5  # but other latents fire, other times
    # similar negatives come from the random coder's own decoder
    w = torch.nn.functional.normalize(random_coder(trained, 0).W_dec.float(), dim=1)
    expected = (w @ w.T).topk(4, dim=1).indices[:, 1:].numpy()
    assert (neighbours(cache, "sae.3", 3, progress=False) == expected).mean() > 0.95
