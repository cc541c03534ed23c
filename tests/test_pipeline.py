"""`autointerp run`: resume after a kill, the run folder's config check, selection, Ray."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autointerp.cli import app

# The coders and corpus of the `small_run` fixture, so that its cache can be reused.
BASE = """
corpus: {n_tokens: 16384}
coders:
  - {hookpoint: layers.15}
  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}
chunk_latents: 2
report: false
"""
NO_LLM = (
    BASE
    + """
explain: {explainer: token-stats}
score: {scorers: [embedding]}
max_latents: 6
"""
)


def _folder(tmp_path: Path, small_run: Path, text: str, name: str = "run") -> tuple[Path, Path]:
    out = tmp_path / name
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text)
    return cfg, out


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _results(out: Path) -> dict[str, dict]:
    """Every results file of a run, keyed by latent (order of lines may differ between runs)."""
    files = sorted((out / "explanations").glob("*.jsonl")) + sorted(
        (out / "scores").glob("*/*.jsonl")
    )
    found = {}
    for f in files:
        rows = _lines(f)
        by = {json.dumps(r["latent"], sort_keys=True): r for r in rows}
        assert len(by) == len(rows), f"{f} holds a latent twice"
        found[str(f.relative_to(out))] = by
    return found


def test_run_resumes_and_refuses_another_config(tmp_path, small_run):
    cfg, out = _folder(tmp_path, small_run, NO_LLM)
    r = _cli("run", cfg, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_latents"] == 12 and summary["scorers"]["embedding"]["mean"] is not None
    assert summary["n_scored"] + summary["n_failed"] + summary["n_skipped"] >= 12
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["score_client"]["model"] == "smollm2" and "api_key" not in saved["client"]
    first = _results(out)
    assert set(first) == {
        "explanations/layers.15.jsonl",
        "explanations/neurons.15.jsonl",
        "scores/embedding/layers.15.jsonl",
        "scores/embedding/neurons.15.jsonl",
    }
    # Again with more latents: only the new ones are done, nothing is written twice.
    r = _cli("run", cfg, "--out", out, "--max-latents", "8")
    assert r.exit_code == 0, r.output
    again = _results(out)
    for name, rows in first.items():
        assert all(again[name][k] == v for k, v in rows.items())
    assert json.loads((out / "summary.json").read_text())["n_latents"] == 16
    # A config that changes results is refused, naming the key; --force moves the old results aside.
    cfg.write_text(NO_LLM.replace("max_latents: 6", "max_latents: 6\nsample: {n_train: 20}"))
    r = _cli("run", cfg, "--out", out)
    assert r.exit_code == 1 and "sample.n_train: folder has 40, this run has 20" in r.output
    assert _results(out) == again  # nothing touched
    r = _cli("run", cfg, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    (aside,) = out.glob("superseded-*")
    assert sorted(p.name for p in aside.iterdir()) == [
        "explanations",
        "run_config.yaml",
        "sample",
        "scores",
    ]
    assert (out / "cache" / "cache.json").exists()  # the cache did not change: kept
    assert yaml.safe_load((out / "run_config.yaml").read_text())["sample"]["n_train"] == 20


def test_run_selection_and_bad_input(tmp_path, small_run):
    cfg, out = _folder(tmp_path, small_run, NO_LLM)
    r = _cli("run", cfg, "--out", out, "--hookpoint", "layers.99")
    assert r.exit_code == 1 and "no coder at hookpoint(s) ['layers.99']" in r.output
    assert "layers.15" in r.output
    r = _cli("run", cfg, "--out", out, "--coder", "neurons.15", "--latents", "3,5")
    assert r.exit_code == 0, r.output
    assert [e["latent"]["latent"] for e in _lines(out / "explanations" / "neurons.15.jsonl")] in (
        [3, 5],
        [3],
        [5],
        [],
    )  # a latent that fires too rarely is skipped, with the reason, in the sample file
    assert not (out / "explanations" / "layers.15.jsonl").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "explain: {explainr: x}\nmax_latents: lots\n")
    r = _cli("run", bad, "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert "explain.explainr: Extra inputs are not permitted" in r.output
    assert "max_latents: Input should be a valid integer" in r.output
    t0 = time.time()
    r = _cli("run", cfg, "--out", tmp_path / "o2", "--ray", "127.0.0.1:9")
    assert r.exit_code == 1 and "Ray address 127.0.0.1:9 does not answer" in r.output
    assert time.time() - t0 < 30 and not (tmp_path / "o2").exists()


def test_run_on_local_ray_equals_a_local_run(tmp_path, small_run):
    pytest.importorskip("ray")
    cfg, local = _folder(tmp_path, small_run, NO_LLM, "local")
    _, distributed = _folder(tmp_path, small_run, NO_LLM, "ray")
    assert _cli("run", cfg, "--out", local).exit_code == 0
    r = _cli("run", cfg, "--out", distributed, "--ray", "local", "--workers", "2")
    assert r.exit_code == 0, r.output
    a, b = _results(local), _results(distributed)
    assert a.keys() == b.keys() and all(len(v) > 0 for v in a.values())
    for name in a:
        for key, row in a[name].items():
            if "metrics" in row:
                assert b[name][key]["metrics"] == pytest.approx(row["metrics"], abs=1e-6)
            else:
                assert b[name][key]["text"] == row["text"]
    assert list(distributed.glob("explanations/llm_cache.w*.sqlite")) == []  # no LLM: no cache
    work = json.loads((distributed / "summary.json").read_text())["chunks_by_worker"]
    assert sorted(work) == ["w0", "w1"] and min(work.values()) >= 2  # both workers did work


LLM = (
    BASE
    + """
client: {dtype: float32}
sample: {n_train: 10, n_test: 10, n_random_negatives: 5, n_similar_negatives: 5}
score:
  scorers: [detection, embedding]
  detection: {examples_per_prompt: 1}
only_coders: [layers.15]
max_latents: 6
"""
)


def _run_cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "autointerp.cli", "run", str(cfg), "--out", str(out)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, small_run):
    """The real local model; the run is killed (SIGKILL) mid-stage, then run again."""
    cfg, whole = _folder(tmp_path, small_run, LLM, "whole")
    _, killed = _folder(tmp_path, small_run, LLM, "killed")
    done = subprocess.run(_run_cmd(cfg, whole), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        _run_cmd(cfg, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    expl = killed / "explanations" / "layers.15.jsonl"
    deadline = time.time() + 900
    while not (expl.exists() and expl.stat().st_size) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _results(killed)
    total = len(_results(whole)["explanations/layers.15.jsonl"])
    n_done = len(partial.get("scores/detection/layers.15.jsonl", {}))
    assert n_done < total, "the run finished before it was killed"
    again = subprocess.run(_run_cmd(cfg, killed), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr
    a, b = _results(whole), _results(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key, row in a[name].items():
            other = b[name][key]
            if "metrics" in row:
                assert other["status"] == row["status"]
                assert other["metrics"] == pytest.approx(row["metrics"], abs=1e-3)
            else:
                assert other["text"] == row["text"]
    # what was finished before the kill is untouched
    for name, rows in partial.items():
        assert all(b[name][k] == v for k, v in rows.items())


def test_config_check_ignores_selection_and_speed_but_not_results():
    from autointerp.config import ClientConfig
    from autointerp.pipeline import RunConfig, _server, config_dict, config_differences

    base = config_dict(RunConfig())
    servers = ClientConfig(backend="openai", base_urls=["http://a:1/v1", "http://b:2/v1"])
    faster = RunConfig(max_latents=50, pick="random", chunk_latents=4, client=servers)
    assert [k for k, _, _ in config_differences(base, config_dict(faster))] == [
        "client.backend",
        "score_client.backend",
    ]
    other = RunConfig(client=ClientConfig(model="other"), score={"detection": {"n_wrong": 3}})
    assert [k for k, _, _ in config_differences(base, config_dict(other))] == [
        "score.detection.n_wrong",
        "client.model",
        "score_client.model",
    ]
    assert [_server(servers, i).base_url for i in range(3)] == [
        "http://a:1/v1",
        "http://b:2/v1",
        "http://a:1/v1",
    ]


def test_a_servers_dtype_is_not_part_of_the_folder_check(monkeypatch):
    """An `openai` client's dtype means nothing: folders saved on machines whose `auto` differs (or
    by an older autointerp, which saved it resolved) accept each other; a local client's counts."""
    import autointerp.subject
    from autointerp.config import ClientConfig
    from autointerp.pipeline import RunConfig, config_dict, config_differences

    server = RunConfig(client=ClientConfig(backend="openai", base_url="http://127.0.0.1:1/v1"))
    local = RunConfig(client=ClientConfig())  # dtype: auto
    saved = {}
    for machine in ("float32", "bfloat16"):
        monkeypatch.setattr(
            autointerp.subject,
            "resolved_dtype",
            lambda dtype, device, m=machine: m if dtype == "auto" else dtype,
        )
        saved[machine] = (config_dict(server), config_dict(local))
    assert config_differences(saved["float32"][0], saved["bfloat16"][0]) == []
    for dtype in ("bfloat16", "float32"):
        older = {k: dict(v) if isinstance(v, dict) else v for k, v in saved["float32"][0].items()}
        older["client"]["dtype"] = older["score_client"]["dtype"] = dtype
        assert config_differences(older, saved["float32"][0]) == []
    assert [k for k, _, _ in config_differences(saved["float32"][1], saved["bfloat16"][1])] == [
        "client.dtype",
        "score_client.dtype",
    ]


def test_retry_failed_redoes_only_the_failures(tmp_path, small_run):
    cfg, out = _folder(tmp_path, small_run, NO_LLM.replace("max_latents: 6", "max_latents: 4"))
    assert _cli("run", cfg, "--out", out, "--coder", "layers.15").exit_code == 0
    expl = out / "explanations" / "layers.15.jsonl"
    score = out / "scores" / "embedding" / "layers.15.jsonl"
    rows, scores = _lines(expl), _lines(score)
    victim = rows[1]["latent"]["latent"]
    # as a server that went down would leave them: a failed explanation and its failed score
    rows[1] = {**rows[1], "text": None, "error": "server down"}
    scores = [
        {**s, "status": "failed", "error": "the explanation failed", "metrics": {}}
        if s["latent"]["latent"] == victim
        else s
        for s in scores
    ]
    expl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    score.write_text("".join(json.dumps(s) + "\n" for s in scores))
    r = _cli("run", cfg, "--out", out, "--coder", "layers.15")
    assert r.exit_code == 0 and "1 with a failure" in r.output  # recorded, not retried by default
    r = _cli("run", cfg, "--out", out, "--coder", "layers.15", "--retry-failed")
    assert r.exit_code == 0 and "0 with a failure" in r.output, r.output
    after = _lines(expl)
    assert len(after) == len(rows) + 1 and after[:-1] == rows  # appended, nothing rewritten
    assert after[-1]["latent"]["latent"] == victim and after[-1]["text"]
    last = _lines(score)[-1]
    assert last["latent"]["latent"] == victim and last["status"] == "ok"


def test_retry_failed_asks_the_llm_again_only_for_failures(tmp_path, small_run):
    """`--retry-failed` bypasses the response cache only for chunks holding a failure: a chunk
    whose lines were lost after its answers were cached (a kill) is replayed from the cache."""
    from openai_fake import FakeOpenAI

    server = FakeOpenAI()
    server.reply = lambda body: "[EXPLANATION]: numbers and dates"
    client = f"client: {{backend: openai, base_url: '{server.url}', model: fake-model}}\n"
    try:
        cfg, out = _folder(
            tmp_path, small_run, NO_LLM.replace("explain: {explainer: token-stats}\n", client)
        )
        r = _cli("run", cfg, "--out", out, "--coder", "layers.15")
        assert r.exit_code == 0, r.output
        expl = out / "explanations" / "layers.15.jsonl"
        score = out / "scores" / "embedding" / "layers.15.jsonl"
        rows, scores = _lines(expl), _lines(score)
        ids = sorted(row["latent"]["latent"] for row in rows)
        assert len(ids) >= 5 and len(server.requests) == len(ids)  # one request per latent
        # as a run killed before it wrote its last chunk leaves it, with one explanation failed
        keep, victim = set(ids[:4]), ids[0]
        rows = [
            {**x, "text": None, "error": "server down"} if x["latent"]["latent"] == victim else x
            for x in rows
            if x["latent"]["latent"] in keep
        ]
        scores = [
            {**x, "status": "failed", "error": "the explanation failed", "metrics": {}}
            if x["latent"]["latent"] == victim
            else x
            for x in scores
            if x["latent"]["latent"] in keep
        ]
        expl.write_text("".join(json.dumps(x) + "\n" for x in rows))
        score.write_text("".join(json.dumps(x) + "\n" for x in scores))
        before = len(server.requests)
        r = _cli("run", cfg, "--out", out, "--coder", "layers.15", "--retry-failed")
        assert r.exit_code == 0 and "0 with a failure" in r.output, r.output
        again = server.requests[before:]
    finally:
        server.close()
    assert len(again) == 1  # the failure only; the lost chunk came from the response cache
    assert {x["latent"]["latent"] for x in _lines(expl)} == set(ids)
    assert _lines(expl)[len(rows) :][0]["text"] == "numbers and dates"


@pytest.mark.parametrize(
    "sample, option",
    [
        ("{min_examples: 100000}", "min_examples"),
        ("{min_examples: 1, n_train: 5000, min_train: 5000}", "min_train"),
    ],
)
def test_all_latents_skipped_exits_zero_with_the_reasons(tmp_path, small_run, sample, option):
    """Each skip reason is one line with its count (every number that varies shown as N, the
    threshold kept); the hint names the option that caused the skips; no report is made."""
    text = NO_LLM.replace("report: false", "report: true") + f"sample: {sample}\n"
    cfg, out = _folder(tmp_path, small_run, text)
    r = _cli("run", cfg, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_skipped"] == 12 and sum(summary["skipped"].values()) == 12
    assert "every selected latent (12) was skipped" in r.output
    assert "there is no report" in r.output and not (out / "report").exists()
    by_option = {o: 0 for o in ("min_examples", "min_train")}
    for reason, n in summary["skipped"].items():
        by_option[re.search(r"\((\w+) is ", reason).group(1)] += n
    assert max(by_option, key=by_option.get) == option  # most latents were skipped by it
    named = sorted((o for o in by_option if by_option[o]), key=lambda o: -by_option[o])
    hint = " or ".join(f"`sample.{o}`" for o in named)
    assert f"select other latents or lower {hint}\n" in r.output
    for c in summary["coders"].values():
        assert sum(c["skipped"].values()) == 6
        for reason, n in c["skipped"].items():
            assert f"skipped {n}: {reason}" in r.output
            assert re.fullmatch(r"[^\d]*\((min_examples|min_train) is \d+\)", reason), reason
    threshold = "100000" if option == "min_examples" else "5000"
    assert any(f"({option} is {threshold})" in reason for reason in summary["skipped"])


def test_skip_reasons_group_latents_whatever_their_numbers():
    from types import SimpleNamespace

    from autointerp.pipeline import skip_reasons

    def rec(reason):
        return SimpleNamespace(status="skipped", reason=reason)

    records = [
        rec("only 3 activating windows (min_examples is 20)"),
        rec("only 17 activating windows (min_examples is 20)"),
        rec(
            "only 4 explainer examples from 15 non-overlapping activating windows (min_train is 10)"
        ),
        rec(
            "only 9 explainer examples from 1,204 non-overlapping activating windows (min_train is 10)"
        ),
        SimpleNamespace(status="ok", reason=None),
    ]
    reasons = skip_reasons(records)
    assert reasons == {
        "only N activating windows (min_examples is 20)": 2,
        "only N explainer examples from N non-overlapping activating windows (min_train is 10)": 2,
    }
    from autointerp.pipeline import skip_settings

    assert skip_settings(reasons) == ["min_examples", "min_train"]
    assert skip_settings({**reasons, "only N activating windows (min_examples is 20)": 1}) == [
        "min_train",
        "min_examples",
    ]


CACHE_ONLY = "corpus: {n_tokens: 1000000}\nreport: false\n"


def test_a_second_process_on_one_folder_is_refused(tmp_path):
    """Two real processes: the second `run` (and a `cache` into the first's cache folder) is
    refused at once, naming the first's PID; the lock goes with the first process, even on a kill."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        CACHE_ONLY + "explain: {explainer: token-stats}\nscore: {scorers: [embedding]}\n"
    )
    cache_cfg = tmp_path / "cache.yaml"
    cache_cfg.write_text(CACHE_ONLY.replace("report: false\n", ""))
    out = tmp_path / "run"
    first = subprocess.Popen(_run_cmd(cfg, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = out / "cache" / ".lock"
        deadline = time.time() + 300
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline
            time.sleep(0.2)
        second = subprocess.run(_run_cmd(cfg, out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"run folder {out} is in use by another autointerp process (PID {first.pid})" in (
            second.stderr
        )
        cmd = [sys.executable, "-m", "autointerp.cli", "cache", str(cache_cfg), "--out"]
        third = subprocess.run(
            [*cmd, str(out / "cache")], capture_output=True, text=True, timeout=120
        )
        assert third.returncode == 1 and f"(PID {first.pid})" in third.stderr
        assert first.poll() is None  # the first one was not disturbed
    finally:
        first.kill()
        first.wait()
    from autointerp.locks import folder_lock

    with folder_lock(out), folder_lock(out / "cache"):  # released by the kill
        assert (out / ".lock").read_text().strip() == str(os.getpid())


def test_model_bound_scorers_give_the_same_scores_concurrently(small_run):
    """Surprisal and intervention share the subject model: scored concurrently (as `run` does with
    chunks in flight) they must equal each scorer scoring alone, one chunk at a time."""
    import asyncio
    import threading

    WAIT = 5.0  # seconds each of the two forced waits lasts at most where the scorers exclude

    from autointerp.cache import ActivationCache
    from autointerp.explain import read_explanations
    from autointerp.sample import read_records
    from autointerp.score import SCORERS, ScoreContext, ScoreStageConfig, score_latents

    cache = ActivationCache(small_run / "cache")
    cfg = ScoreStageConfig.model_validate(
        {
            "score": {
                "scorers": ["surprisal", "intervention"],
                "intervention": {"n_prompts": 4, "prompt_len": 8, "new_tokens": 8},
            }
        }
    )
    example_len = json.loads((small_run / "sample" / "sample_config.json").read_text())[
        "example_len"
    ]
    ctx = ScoreContext(cache, cfg, example_len)
    coder = "layers.15"
    records = {r.id.latent: r for r in read_records(small_run / "sample" / f"{coder}.jsonl")}
    expl = read_explanations(small_run / "explanations" / f"{coder}.jsonl")
    ids = [i for i in sorted(expl) if expl[i].text and records[i].status == "ok"][:4]
    assert len(ids) == 4
    chunks = [ids[:2], ids[2:]]

    def build():
        return {name: SCORERS[name](ctx, coder) for name in cfg.score.scorers}

    async def alone():
        out = {}
        for name, scorer in build().items():
            for part in chunks:
                res = await score_latents(ctx, {name: scorer}, part, records, expl)
                out.update({(name, s.latent.latent): s for s in res[name]})
        return out

    async def together():
        scorers = build()
        overlap(scorers)
        done = await asyncio.gather(
            *(score_latents(ctx, scorers, part, records, expl) for part in chunks)
        )
        return {(n, s.latent.latent): s for res in done for n, ss in res.items() for s in ss}

    def overlap(scorers):
        """Make the first surprisal pass wait until a steering hook is on the model, and that
        steered generation wait until the surprisal pass ran: unless the scorers exclude each
        other (then each wait ends after WAIT seconds), the pass certainly sees the hook."""
        model, losses = scorers["intervention"].subject.model, scorers["surprisal"].model
        steering, surprisal_ran = threading.Event(), threading.Event()
        generate, passes = model.generate, losses._losses

        def steered_generate(*args, **kwargs):
            hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
            if hooked and not steering.is_set():
                steering.set()
                surprisal_ran.wait(WAIT)
            return generate(*args, **kwargs)

        def waiting_losses(pairs):
            if not surprisal_ran.is_set():
                steering.wait(WAIT)
            try:
                return passes(pairs)
            finally:
                surprisal_ran.set()

        model.generate, losses._losses = steered_generate, waiting_losses
        cleanup.append(lambda: (delattr(model, "generate"), delattr(losses, "_losses")))

    cleanup = []
    a = asyncio.run(alone())
    try:
        b = asyncio.run(together())
    finally:
        for undo in cleanup:
            undo()
    assert a.keys() == b.keys() and len(a) == 8
    for key, s in a.items():
        assert s.status == "ok", (key, s.error)
        assert b[key].metrics == pytest.approx(s.metrics, abs=1e-5), key


def _refuse_weights(monkeypatch):
    import autointerp.cache
    import autointerp.subject

    def refuse(cfg):
        raise AssertionError("the subject model's weights were loaded")

    monkeypatch.setattr(autointerp.cache, "load_subject", refuse)
    monkeypatch.setattr(autointerp.subject, "load_subject", refuse)


def test_run_on_a_finished_cache_loads_no_model(tmp_path, small_run, monkeypatch):
    cfg, out = _folder(tmp_path, small_run, NO_LLM)
    _refuse_weights(monkeypatch)
    r = _cli("run", cfg, "--out", out)
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads((out / "summary.json").read_text())["n_latents"] == 12


def test_a_folder_saved_before_the_new_options_resumes_when_they_keep_its_results():
    """Options added later (baselines, the calibrated judge, the explanation-free scorers' sections)
    are not differences against a folder saved without them while they are at the values that
    give the older results; set otherwise, they are."""
    import copy

    from autointerp.pipeline import RunConfig, config_dict, config_differences

    now = config_dict(RunConfig())
    older = copy.deepcopy(now)
    for key in ("baseline", "baseline_seed"):
        older.pop(key)
    for name in ("detection", "fuzzing"):
        older["score"][name].pop("calibrate")
        older["score"][name].pop("uninformative")
    older["score"].pop("intruder")
    older["score"].pop("example_embedding")
    assert config_differences(older, now) == []
    changed = config_dict(
        RunConfig(baseline="random-model", score={"detection": {"calibrate": True}})
    )
    assert [k for k, _, _ in config_differences(older, changed)] == [
        "baseline",
        "score.detection.calibrate",
    ]


def test_run_with_the_mixed_explainer_and_the_kl_intervention_score(tmp_path, small_run):
    """`autointerp run` with `explain: {explainer: mixed}`: the explainer (a scripted server) is
    shown each latent's examples and the tokens its decoder direction promotes through the real
    model's final norm and unembedding; `intervention-kl` scores the explanation at the target KL."""
    from openai_fake import FakeOpenAI

    from autointerp.cache import ActivationCache
    from autointerp.effects import top_tokens
    from autointerp.score.stage import ScoreContext, ScoreStageConfig

    server = FakeOpenAI()
    server.reply = lambda body: "[EXPLANATION]: the word cat"
    text = (
        BASE
        + f"client: {{backend: openai, base_url: '{server.url}', model: fake-model}}\n"
        + "explain: {explainer: mixed, top_logits: 5}\n"
        + "score:\n  scorers: [intervention-kl]\n"
        + "  intervention: {n_prompts: 3, prompt_len: 8, new_tokens: 4, kl_steps: 8}\n"
        + "latents: 0-1\nonly_coders: [layers.15]\n"
    )
    cfg, out = _folder(tmp_path, small_run, text)
    try:
        r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    finally:
        server.close()
    assert r.exit_code == 0, (r.output, r.exception)
    expl = _lines(out / "explanations" / "layers.15.jsonl")
    assert {e["latent"]["latent"] for e in expl} == {0, 1}
    assert all(e["prompt"].startswith("mixed@") and e["text"] == "the word cat" for e in expl)
    ctx = ScoreContext(ActivationCache(out / "cache"), ScoreStageConfig(), 32)
    users = [q["messages"][1]["content"] for q in server.requests]
    for latent in (0, 1):
        d = ctx.coder("layers.15").direction(latent, ctx.subject.device)
        [(promoted, suppressed)] = top_tokens(ctx.subject, d[None], 5)
        shown = f"Tokens the feature promotes: {', '.join(promoted)}\n"
        assert sum(shown in u for u in users) == 1, latent
        assert any(f"Tokens the feature suppresses: {', '.join(suppressed)}" in u for u in users)
    scores = _lines(out / "scores" / "intervention-kl" / "layers.15.jsonl")
    for s in scores:
        assert s["status"] in ("ok", "failed"), s
        if s["status"] == "ok":
            m = s["metrics"]
            assert m["kl_score"] == pytest.approx(m["score"] / m["kl"])
        else:
            assert s["error"]  # a recorded reason, never a zero
