"""`autointerp plan`: the pilot's counts equal what a real run sends, scaling, the price table, the
CLI, and the run's own plan compared with what it recorded."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autointerp.api import run_config
from autointerp.cli import app
from autointerp.config import ClientConfig
from autointerp.errors import ConfigError
from autointerp.plan import (
    PLAN_FILE,
    PRICES,
    ApiPrice,
    PrefixTrie,
    StageWork,
    api_cost,
    chat_tokens,
    describe_comparison,
    load_prices,
    make_plan,
    recorded_usage,
)

# Every LLM stage, small: the packaged SmolLM2 through transformers explains and judges 4 latents
# (the judge check needs 4) of the `small_run` fixture's cache.
LLM_RUN = """
corpus: {n_tokens: 16384}
coders:
  - {hookpoint: layers.15}
  - {hookpoint: layers.15, format: neurons, k: 32, name: neurons.15}
only_coders: [layers.15]
client: {backend: transformers, model: smollm2}
sample: {n_train: 6, n_test: 4, n_random_negatives: 2, n_similar_negatives: 2, min_examples: 8, min_train: 4}
explain: {max_tokens: 16}
score:
  scorers: [detection, fuzzing, intruder, simulation, embedding]
  detection: {calibrate: true}
  fuzzing: {n_wrong: 1}
  intruder: {n_prompts: 2}
  simulation: {n_activating: 1, n_negative: 0}
  judge_check: {min_latents: 4}
max_latents: 4
chunk_latents: 4
report: false
"""


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory, small_run) -> tuple[Path, Path]:
    """A real run of every LLM stage on 4 latents: (config, run folder). Read-only."""
    root = tmp_path_factory.mktemp("plan_run")
    out = root / "run"
    shutil.copytree(small_run / "cache", out / "cache")
    cfg = root / "llm.yaml"
    cfg.write_text(LLM_RUN)
    r = _cli("run", cfg, "--out", out)
    assert r.exit_code == 0, (r.output, r.exception)
    return cfg, out


@pytest.mark.slow
def test_pilot_counts_equal_the_prompts_a_real_run_sent(llm_run):
    """The planner's calls and prompt tokens per latent, on the run's own latents and explanations,
    equal what the real client reported for every LLM stage; generated tokens are exact where the
    answer is one logprob token and bound the recorded ones elsewhere. Drift in prompt building,
    rendering or tokenization fails here."""
    cfg, out = llm_run
    plan = make_plan(run_config(cfg), out=out, pilot=4)
    actual = recorded_usage(out)
    stages = {s.stage: s for s in plan.stages}
    assert plan.exact_tokens and "smollm2" in plan.tokenizer
    expected = {"explain", "detection", "fuzzing", "intruder", "simulation"}
    assert expected <= set(stages) and expected <= set(actual), (stages, actual)
    assert "embedding" not in stages  # no LLM
    assert {"judge check: detection", "judge check: fuzzing"} <= set(actual)
    for name, a in actual.items():
        s = stages[name]
        assert a["latents"] == 4, (name, a)
        assert s.calls == a["calls"], name
        if name.startswith("judge check"):  # other latents' explanations: the same ones, permuted
            assert s.prompt_tokens == pytest.approx(a["prompt_tokens"], rel=0.02), name
        else:
            assert s.prompt_tokens == a["prompt_tokens"], name
        if s.generated == "exact":
            assert s.generated_tokens == a["generated_tokens"], name
        else:
            assert s.generated == "at most" and s.generated_tokens >= a["generated_tokens"], name
    assert stages["detection"].calls == 2 * 8  # calibrated: each of 4 + 4 examples judged twice
    # the control's uninformative prompts equal the true scoring's: the response cache answers them
    check = stages["judge check: detection"]
    assert check.calls == 8 and check.reused_prompt_tokens > 0
    u = stages["detection"]
    assert 0 < u.uncached_prompt_tokens < u.prompt_tokens and u.once_uncached > 0


@pytest.mark.slow
def test_the_run_saves_its_plan_and_compares_it_with_what_it_recorded(llm_run):
    """`autointerp run` saved plan.json before its first LLM call (placeholder explanations: it had
    none yet) and its summary compares each stage's prediction with the recorded tokens."""
    _, out = llm_run
    saved = json.loads((out / PLAN_FILE).read_text())
    assert saved["latents"] == 4 and saved["pilot"].startswith("4 sampled latents")
    assert any("placeholder" in n for n in saved["notes"])
    compared = json.loads((out / "summary.json").read_text())["plan"]
    by = {r["stage"]: r for r in compared["stages"]}
    assert by["explain"]["prompt_change"] == 0  # the explainer's prompts hold no explanation
    for r in compared["stages"]:
        assert abs(r["prompt_change"]) < 0.1, r  # the placeholders' length is a typical one
    lines = describe_comparison(compared)  # what the run logs
    assert (
        lines[1].startswith("plan: detection: predicted ")
        and "prompt tokens per latent, actual" in lines[1]
    )
    assert lines[-1].startswith("plan: all stages: predicted ")


@pytest.mark.slow
def test_totals_scale_linearly_with_latents(llm_run):
    cfg, out = llm_run
    plans = {n: make_plan(run_config(cfg), latents=n, out=out) for n in (1000, 2000, 3000)}
    for key in ("prompt_tokens", "generated_tokens"):
        for s in plans[1000].stages:
            if s.stage.startswith("judge check"):
                continue  # at least min_latents: linear only above that floor
            totals = [
                next(x for x in plans[n].stages if x.stage == s.stage).total(key) for n in plans
            ]
            assert totals[1] == pytest.approx(2 * totals[0]) and totals[2] == pytest.approx(
                3 * totals[0]
            )
    one, two, three = (p.total("uncached_prompt_tokens") for p in plans.values())
    assert two - one == pytest.approx(three - two)  # once per run + per latent
    check = {
        p.latents: next(s for s in p.stages if s.stage == "judge check: detection")
        for p in plans.values()
    }
    assert [check[n].latents for n in (1000, 2000, 3000)] == [100, 200, 300]  # 10% of the latents
    h100 = [next(g for g in p.gpu if g.gpu == "H100") for p in plans.values()]
    assert h100[1].gpu_hours > h100[0].gpu_hours > 0 and h100[0].usd == pytest.approx(
        3.24 * h100[0].gpu_hours
    )


@pytest.mark.slow
def test_cli_prints_the_table_and_saves_the_plan(llm_run, tmp_path):
    cfg, out = llm_run
    target = tmp_path / "planned"
    shutil.copytree(out, target)
    (target / PLAN_FILE).unlink()
    r = _cli("plan", cfg, "--latents", "1000000", "--out", target, "--from", out, "--gpu", "H100")
    assert r.exit_code == 0, r.output
    for text in (
        "explain",
        "detection",
        "judge check: detection",
        "total",
        "GPU-hours",
        "openai/gpt-4o-mini",
        "checked 2026-",
    ):
        assert text in r.output, text
    assert (
        "8B model on 1 x H100" in r.output
        and "A100" not in r.output.split("GPU time")[1].split("API")[0]
    )
    assert "recorded in" in r.output  # --from: generated tokens from the run
    plan = json.loads((target / PLAN_FILE).read_text())
    assert plan["latents"] == 1_000_000
    gen = {s["stage"]: s["generated"] for s in plan["stages"]}
    assert gen["explain"] == "recorded" and gen["detection"] == "exact"
    r = _cli("plan", cfg, "--latents", "10", "--gpu", "TPU")
    assert (
        r.exit_code == 1
        and "no throughput for any size on TPU" in r.output
        and "8B on H100" in r.output
    )


def test_price_table_loads_and_a_malformed_one_names_the_problem(tmp_path):
    table = load_prices()
    assert table.date.year >= 2026 and "openai/gpt-4o-mini" in table.apis
    assert table.throughput["8B"]["H100"].prefill > table.throughput["8B"]["H100"].decode
    assert "ASSUMED" in table.throughput_source and "7117" in table.throughput_source
    assert all(p.source for p in [*table.apis.values(), *table.gpus.values()])
    good = yaml.safe_load(PRICES.read_text())
    cases = {
        "no date": ({k: v for k, v in good.items() if k != "date"}, "date: Field required"),
        "negative price": (
            {**good, "apis": {"x": {"input": -1, "output": 1, "source": "s"}}},
            "apis.x.input: Input should be greater than or equal to 0",
        ),
        "zero throughput": (
            {**good, "throughput": {"8B": {"H100": {"prefill": 0, "decode": 1}}}},
            "throughput.8B.H100.prefill",
        ),
        "unknown key": (
            {**good, "gpus": {"H100": {"hourly": 2, "source": "s", "hourli": 3}}},
            "hourli",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(ConfigError) as e:
            load_prices(path)
        assert str(path) in str(e.value) and message in str(e.value), (name, str(e.value))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    r = _cli("plan", "--latents", "10", "--prices", tmp_path / "list.yaml")
    assert r.exit_code == 1 and "not a mapping" in r.output
    r = _cli("plan", "--latents", "10", "--prices", tmp_path / "missing.yaml")
    assert r.exit_code == 1 and "config file not found" in r.output


def test_api_cost_follows_the_providers_caching_rule():
    """OpenAI caches prompts of 1,024 tokens or more, in blocks of 128: a 900-token prompt pays in
    full, a 2,000-token one with 1,500 shared tokens pays 1,408 at the cached price."""
    stage = StageWork(
        stage="detection",
        latents=1_000_000,
        calls=2,
        prompt_tokens=2900,
        uncached_prompt_tokens=1400,
        generated_tokens=2,
        generated="exact",
        prompts=[[(900, 800), (2000, 1500)]],
    )
    rule = ApiPrice(
        input=1.0, cached_input=0.5, output=2.0, cache_min_tokens=1024, cache_block=128, source="t"
    )
    cost = api_cost("x", rule, [stage])
    assert cost.cached_usd == pytest.approx(1408 * 0.5)
    assert cost.input_usd == pytest.approx((2900 - 1408) * 1.0)
    assert cost.output_usd == pytest.approx(2 * 2.0) and cost.usd == pytest.approx(704 + 1492 + 4)
    free = api_cost("y", ApiPrice(input=1.0, output=1.0, source="t"), [stage])
    assert free.cached_usd == 0 and free.input_usd == pytest.approx(2900)


def test_prefix_trie_counts_the_longest_shared_prefix():
    trie = PrefixTrie()
    assert [trie.insert(x) for x in ([1, 2, 3], [1, 2, 4], [1, 2, 3, 5], [7], [1, 2])] == [
        0,
        2,
        3,
        0,
        2,
    ]


def test_a_model_without_a_local_tokenizer_is_counted_approximately_and_says_so():
    t = chat_tokens(ClientConfig(backend="openai", model="no-such-org/no-such-model"))
    assert (
        not t.exact
        and "approximate: 4 characters per token" in t.label
        and "no-such-model" in t.label
    )
    chat = [{"role": "user", "content": "x" * 40}]
    assert len(t.encode(chat)) == len("<|user|>" + "x" * 40 + "\n") // 4 + 1


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python")
def test_llamacpp_counts_equal_the_llamacpp_clients():
    """The `llamacpp` backend is counted with llama.cpp's own tokenizer and chat template: the
    counts equal the prompt tokens the real client reports (the packaged SmolLM2 GGUF)."""
    from autointerp.aio import run_sync
    from autointerp.clients.base import GenParams
    from autointerp.clients.llamacpp import LlamaCppClient

    tokens = chat_tokens(ClientConfig(backend="llamacpp", model="smollm2"))
    assert tokens.exact and "llama.cpp" in tokens.label
    chats = [
        [
            {"role": "system", "content": "Judge."},
            {"role": "user", "content": "Example 1: a <<cat>>"},
            {"role": "assistant", "content": "["},
        ],
        [{"role": "system", "content": "Explain."}, {"role": "user", "content": "Example 1: dogs"}],
    ]
    sent = run_sync(LlamaCppClient("smollm2", threads=1).complete(chats, GenParams(max_tokens=1)))
    assert [len(tokens.encode(c)) for c in chats] == [c.prompt_tokens for c in sent]


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="--pilot must be at least 2"):
        make_plan(run_config(), latents=10, pilot=1)
    with pytest.raises(ConfigError, match="--latents must be at least 1"):
        make_plan(run_config(), latents=0)
    r = _cli("plan", "--latents", "10", "--from", "no/such/run")
    assert r.exit_code == 1 and "not a run folder" in r.output


def test_a_judge_on_another_backend_is_planned_as_that_backend_sends():
    """The judge's prompts follow its own backend (a server: 5 examples per prompt, a generated
    list), the explainer's its own (the local model: a prefilled one-line answer), each counted
    with its own tokenizer; synthetic pilot latents of the configured sizes."""
    config = {
        "client": {"backend": "transformers", "model": "smollm2"},
        "score_client": {
            "backend": "openai",
            "model": "no-such-org/judge",
            "base_url": "http://127.0.0.1:9/v1",
        },
        "sample": {"n_train": 6, "n_test": 4, "n_random_negatives": 3, "n_similar_negatives": 3},
        "score": {"scorers": ["detection", "embedding"], "judge_check": {"enabled": False}},
    }
    plan = make_plan(run_config(config), latents=10, pilot=2)
    explain, detection = plan.stages
    assert (explain.stage, detection.stage) == ("explain", "detection")  # no judge check
    assert explain.calls == 1 and explain.generated_tokens == 64  # prefilled: one line, <= 64
    assert detection.calls == 2 and detection.generated == "at most"  # 10 examples, 5 a prompt
    assert detection.generated_tokens == 2 * (3 * 5 + 4)
    assert (
        plan.tokenizer.startswith("explainer: smollm2's tokenizer")
        and "judge: approximate" in plan.tokenizer
    )
    assert not plan.exact_tokens and plan.pilot.startswith(
        "2 synthetic latents (6 train, 4 test, 3 + 3"
    )


@pytest.mark.parametrize(
    "explain", [{"best_of": 4}, {"explainer": "mixed"}, {"explainer": "intervention"}]
)
def test_explainers_the_planner_does_not_model_are_refused_by_name(explain):
    from autointerp.errors import ConfigError
    from autointerp.pipeline import RunConfig
    from autointerp.plan import make_plan

    cfg = RunConfig.model_validate({"explain": explain})
    with pytest.raises(ConfigError, match="does not yet predict"):
        make_plan(cfg, latents=10)


def test_the_shared_layout_and_adaptive_scoring_are_planned():
    """In the shared layout, fuzzing's prompts repeat detection's up to the question: the plan
    counts its uncached tokens as its marks and question only. Adaptive scoring is planned on every
    example (an upper bound) and says so."""

    def plan(layout: str, adaptive: bool = False):
        cls = {"layout": layout, "n_wrong": 0}
        config = {
            "client": {"backend": "transformers", "model": "smollm2"},
            "sample": {
                "n_train": 6,
                "n_test": 6,
                "n_random_negatives": 3,
                "n_similar_negatives": 3,
            },
            "score": {
                "scorers": ["detection", "fuzzing"],
                "detection": cls,
                "fuzzing": cls,
                "adaptive": adaptive,
                "judge_check": {"enabled": False},
            },
        }
        return {
            s.stage: s for s in make_plan(run_config(config), latents=10, pilot=2).stages
        }, config

    separate, _ = plan("separate")
    shared, _ = plan("shared")

    def shared_tokens(stage) -> float:  # mean tokens a prompt shares with an earlier one
        return sum(s for prompts in stage.prompts for _, s in prompts) / sum(
            len(prompts) for prompts in stage.prompts
        )

    # shared: a fuzzing prompt shares the example's text too (with detection's prompt of it)
    gain = shared_tokens(shared["fuzzing"]) - shared_tokens(shared["detection"])
    assert gain > 20
    assert shared_tokens(separate["fuzzing"]) - shared_tokens(separate["detection"]) < 10
    assert shared["fuzzing"].uncached_prompt_tokens < separate["fuzzing"].uncached_prompt_tokens
    assert shared["fuzzing"].calls == shared["detection"].calls == 12  # one example a prompt
    stages, config = plan("shared", adaptive=True)
    assert {k: v.prompt_tokens for k, v in stages.items()} == {
        k: v.prompt_tokens for k, v in shared.items()
    }
    full = make_plan(run_config(config), latents=10, pilot=2)
    assert any("adaptive scoring is on" in n for n in full.notes)
