"""The command line, end to end on the embedded default, and its errors (non-zero exit, clear message)."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from autointerp.cache import ActivationCache
from autointerp.cli import app

runner = CliRunner()


def test_run_embedded_default_end_to_end(tmp_path):
    """`autointerp run` with the real packaged models, coder and corpus (the embedded default:
    autointerp/data/default_run.yaml, Qwen2.5-Coder-1.5B explaining and judging through llama.cpp):
    cache, sample, explain, score, judge check, report."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "autointerp.cli",
        "run",
        "--out",
        str(out),
        "--tokens",
        "16384",
        "--max-latents",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert (
        "16,384 tokens" in done.stdout
        and "layers.15: sparsify at layers.15, 4,608 latents" in done.stdout
    )
    cache = ActivationCache(out / "cache")
    assert cache.manifest["summary"]["layers.15"]["mean_l0"] == 32.0
    stats = cache.stats("layers.15")
    assert stats["count"].sum() == 32 * 16384 and (stats["max"] > 0).sum() > 3000
    samples = [json.loads(x) for x in (out / "sample" / "layers.15.jsonl").read_text().splitlines()]
    assert [s["id"]["latent"] for s in samples] == [0, 1, 2]
    explained = [
        json.loads(x) for x in (out / "explanations" / "layers.15.jsonl").read_text().splitlines()
    ]
    assert len(explained) == sum(s["status"] == "ok" for s in samples) > 0
    assert all(
        e["model"] == "qwen2.5-coder-1.5b" and (e["text"] is None) == (e["error"] is not None)
        for e in explained
    )
    for scorer in ("detection", "embedding", "example-embedding"):
        scores = [
            json.loads(x)
            for x in (out / "scores" / scorer / "layers.15.jsonl").read_text().splitlines()
        ]
        assert sorted(s["latent"]["latent"] for s in scores) == sorted(
            e["latent"]["latent"] for e in explained
        )
        for s in scores:  # a failed explanation is a failed score, never a zero
            if scorer != "example-embedding":  # explanation-free: its records hold none
                assert (s["status"] == "failed") == (s["explanation"] is None) or s["error"]
            if s["status"] == "ok":
                key = "accuracy" if scorer == "detection" else "auroc"
                assert 0 <= s["metrics"][key] <= 1
        assert f"{scorer}: mean " in done.stdout
    # 3 latents are too few for the judge check's verdict, and the run says so
    assert "judge check: too few latents" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_latents"] == 3 and summary["llm_calls"] > 0
    assert summary["judge_check"]["detection"]["layers.15"]["verdict"] == "too few latents"
    index = out / "report" / "index.html"
    assert f"report: {index.resolve()}" in done.stdout and index.exists()
    # A second run reuses everything: no LLM call, nothing written twice.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "LLM calls 0, tokens 0" in again.stdout
    assert len((out / "explanations" / "layers.15.jsonl").read_text().splitlines()) == len(
        explained
    )


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("corpus:\n  ctx_lenn: 10\nbatch_size: many\n")
    r = _cli("cache", cfg, "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert "corpus.ctx_lenn: Extra inputs are not permitted" in r.output
    assert "batch_size: Input should be a valid integer" in r.output
    r = _cli("cache", tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "config file not found" in r.output


def test_cache_takes_a_run_config(tmp_path):
    """`autointerp cache RUN.yaml` caches what the run would (the cache keys of a run config; the
    later stages' sections and `max_latents` are for them), and a typo is still named."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "corpus: {n_tokens: 2048}\nmax_latents: 3\nexplain: {explainer: token-stats}\n"
        "score: {scorers: [embedding]}\n"
    )
    r = _cli("cache", cfg, "--out", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert ActivationCache(tmp_path / "cache").n_tokens == 2048
    cfg.write_text("corpus: {n_tokens: 2048}\nmax_latent: 3\n")
    r = _cli("cache", cfg, "--out", tmp_path / "cache2")
    assert r.exit_code == 1 and "max_latent: Extra inputs are not permitted" in r.output


def test_bad_inputs_exit_nonzero(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("na\xefve".encode("latin-1") * 100)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"corpus": {"source": str(bad)}}))
    r = _cli("cache", cfg, "--out", tmp_path / "o1")
    assert r.exit_code == 1 and "latin1.txt is not UTF-8" in r.output
    cfg.write_text(json.dumps({"coders": [{"hookpoint": "layers.99"}]}))
    r = _cli("cache", cfg, "--out", tmp_path / "o2")
    assert r.exit_code == 1 and "unknown hookpoint 'layers.99'" in r.output
    cfg.write_text(json.dumps({"coders": [{"path": str(tmp_path / "nothing")}]}))
    r = _cli("cache", cfg, "--out", tmp_path / "o3")
    assert r.exit_code == 1 and "coder path not found" in r.output
    r = _cli("info", tmp_path)
    assert r.exit_code == 1 and "not an activation cache" in r.output


def test_stages_on_an_incomplete_cache_fail_before_loading_anything(
    tmp_path, small_run, monkeypatch
):
    import shutil

    import autointerp.cache
    import autointerp.subject

    def refuse(cfg):
        raise AssertionError("a model or tokenizer was loaded before the cache was checked")

    for name in ("load_subject", "load_tokenizer"):
        monkeypatch.setattr(autointerp.subject, name, refuse)
    monkeypatch.setattr(autointerp.cache, "load_subject", refuse)
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    shutil.rmtree(run / "cache" / "shards" / "000000" / "layers.15")
    for stage in ("sample", "explain", "score"):
        r = _cli(stage, run / "cache")
        assert r.exit_code == 1, (stage, r.output, r.exception)
        assert "damaged: shards/000000/layers.15/values.npy missing" in r.output
    manifest = json.loads((run / "cache" / "cache.json").read_text())
    (run / "cache" / "cache.json").write_text(json.dumps({**manifest, "complete": False}))
    for stage in ("sample", "explain", "score"):
        r = _cli(stage, run / "cache")
        assert r.exit_code == 1 and "is unfinished" in r.output, (stage, r.output)


def test_run_without_a_config_runs_the_packaged_default_and_overrides_apply():
    from autointerp.api import default_run_config
    from autointerp.cli import _run_config
    from autointerp.config import load_yaml
    from autointerp.pipeline import RunConfig

    packaged = load_yaml(default_run_config(), RunConfig)
    cfg = _run_config(None, {"max_latents": 3, "corpus.n_tokens": 16384})
    assert cfg.client.backend == "llamacpp" and cfg.client.model == "qwen2.5-coder-1.5b"
    assert cfg.score_client is None  # the explainer judges too
    assert cfg.score.scorers == ["detection", "embedding", "example-embedding"]
    assert (cfg.max_latents, cfg.corpus.n_tokens) == (3, 16384)
    assert cfg.sample == packaged.sample and cfg.sample.n_test == 10
