"""Every script under eval/ imports (its optional dependencies, such as delphi, only when it runs)
and answers --help; the helpers they share live once, in eval/common.py."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "eval").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_eval_script_imports(name):
    module = importlib.import_module(f"eval.{name}")
    assert module.__doc__, f"eval/{name}.py has no docstring saying what it measures"
    if hasattr(module, "main"):
        r = subprocess.run(
            [sys.executable, "-m", f"eval.{name}", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-2000:]


def test_no_helper_is_defined_twice_in_eval():
    """A top-level function of the same name and body in two eval scripts belongs in common.py."""
    seen: dict[str, str] = {}
    twice = []
    for path in sorted((ROOT / "eval").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name not in ("main", "parse_args"):
                body = ast.dump(ast.Module(body=node.body, type_ignores=[]))
                key = f"{node.name}:{body}"
                if key in seen:
                    twice.append(f"{node.name} in {seen[key]} and {path.name}")
                seen.setdefault(key, path.name)
    assert not twice, twice


def _chats(cfg, client):
    """A detection and a fuzzing prompt of the same two examples, as the scorers write them."""
    from autointerp.score.classifier import ClassifierScorer
    from autointerp.types import Example

    examples = [
        Example(tokens=["The", " cat", " sat"], activations=[0.0, 2.0, 0.0], seq=0, start=0),
        Example(tokens=["A", " dog", "?"], activations=[0.0, 0.0, 0.0], seq=1, start=4),
    ]
    return {
        name: ClassifierScorer(name, client, cfg).prompt("cats", examples)
        for name in ("detection", "fuzzing")
    }


@pytest.mark.parametrize("layout", ["separate", "shared"])
@pytest.mark.parametrize("prefill", [False, True])
def test_bench_llm_work_tells_the_stages_apart(layout, prefill):
    """Detection and fuzzing share one system message in the shared layout: the question that
    ends the user message tells them apart (a prefilled answer after it changes nothing)."""
    from autointerp.score.classifier import ClassifierConfig
    from eval.bench_llm_work import scorer_stages

    cfg = ClassifierConfig(layout=layout, examples_per_prompt=5, n_wrong=0, prefill=prefill)
    client = SimpleNamespace(model="fake")
    chats = _chats(cfg, client)
    if layout == "shared":
        assert chats["detection"][0] == chats["fuzzing"][0]  # one system message for both
    stage_of = scorer_stages(cfg, client)
    assert {name: stage_of(chat) for name, chat in chats.items()} == {
        "detection": "detection",
        "fuzzing": "fuzzing",
    }
    explain = [{"role": "system", "content": "You explain."}, {"role": "user", "content": "Fires?"}]
    assert stage_of(explain) == "explain"


def test_bench_llm_work_reads_the_adaptive_results(tmp_path):
    """The adaptive keys come from eval.adaptive's JSON when it is there (None when not), and a
    report re-rendered from the benchmark's JSON reads that file afresh."""
    import json

    from eval import bench_llm_work as b

    missing = b.read_adaptive(tmp_path / "none.json")
    assert set(missing) >= {f"adaptive_{k}" for k in ("tokens_ratio", "spearman", "judge")}
    assert all(v is None for v in missing.values())
    adaptive = tmp_path / "adaptive.json"
    src = {
        "tokens_ratio": 2.4,
        "spearman": 0.96,
        "spearman_ci95": [0.93, 0.98],
        "n_latents": 60,
        "judge": "a judge",
        "setting": "rounds of 20",
        "command": "python -m eval.adaptive",
        "date": "2026-01-01",
    }
    adaptive.write_text(json.dumps(src))
    got = b.read_adaptive(adaptive)
    assert got["adaptive_tokens_ratio"] == 2.4 and got["adaptive_spearman_ci95"] == [0.93, 0.98]
    assert got["adaptive_n_latents"] == 60 and got["adaptive_setting"] == "rounds of 20"
    assert got["adaptive_goal_met"] is True
    adaptive.write_text(json.dumps({**src, "n_latents": 40}))
    assert b.read_adaptive(adaptive)["adaptive_goal_met"] is False  # too few latents

    data = json.loads((ROOT / "results" / "bench_llm_work.json").read_text())
    b.finish(data, [b.Phase(**p) for p in data["phases"]], adaptive)
    md = tmp_path / "bench_llm_work.md"
    b.write_markdown(md, data)
    text = md.read_text()
    assert data["adaptive_n_latents"] == 40 and "## Adaptive scoring" in text
    assert "**not met**" in text.split("## Adaptive scoring")[1].split("Notes:")[0]
    assert "autointerp" in data and "delphi" in data and data["ratios"]["autointerp"]["targets"]


def test_bench_llm_work_charges_a_latent_whose_answers_all_failed():
    """A latent whose answers could not be used has a failed score, but its examples were judged:
    it counts among the latents a scorer's work is divided by. One whose explanation failed (no
    predictions) does not."""
    from autointerp.score.base import classifier_score, failed, prediction
    from autointerp.types import Example, LatentId
    from eval.bench_llm_work import Quality

    e = Example(tokens=["a"], activations=[1.0], seq=0, start=0)
    bad = prediction(e, True, error="answer has 3 values for 5 examples")
    item = SimpleNamespace(record=SimpleNamespace(id=LatentId(coder="c", latent=0)), text="x")
    lost = classifier_score(item, "detection", [bad, bad], [])  # type: ignore[arg-type]
    assert lost.status == "failed"
    q = Quality()
    q.add("detection", lost)
    q.add("detection", failed(LatentId(coder="c", latent=1), "detection", "explanation failed"))
    assert (q.scored["detection"], q.examples["detection"], q.answered["detection"]) == (1, 2, 0)


def test_planted_compares_layouts_and_keeps_earlier_rows():
    """eval.planted: the shared layout's AUROC true vs other is compared with the separate one's,
    paired over latents; rows of an earlier results file made from the same samples are kept, and
    those of another setup are not."""
    from eval import planted as p

    def row(true, other):
        return {
            "per_latent": {"true": true, "other": other, "random": [None] * len(true)},
            "auroc_true_vs_other": p._auroc_over_latents(true, other),
            "auroc_true_vs_other_ci95": p._bootstrap_ci(true, other),
            "prompt_tokens": {"true": 100, "other": 100},
            "seconds": {"true": 10.0, "other": 10.0},
        }

    same = row([0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.5, 0.5])
    worse = row([0.9, 0.4, 0.7, 0.45], [0.5, 0.5, 0.5, 0.5])
    res = {
        "scorers": {"fuzzing | judge": same, "fuzzing+shared | judge": worse},
        "setup": {"sample": {"n_test": 20}, "n_tokens": 5, "definitions": [], "derangement": []},
    }
    res["layout"] = [cmp] = p.layout_comparison(res)
    assert (cmp["scorer"], cmp["separate"], cmp["shared"]) == ("fuzzing", 1.0, 0.5)
    d = cmp["shared_minus_separate"]
    assert d["difference"] == -0.5 and d["n_latents"] == 4 and d["ci95"][0] < -0.2
    assert any("| fuzzing | judge | 1.000" in line for line in p.layout_section(res))

    earlier = {"date": "2026-01-01", "setup": dict(res["setup"]), "scorers": {"old | x": same}}
    kept = p.keep_earlier_rows(res, earlier)
    assert kept == ["old | x"] and res["scorers"]["old | x"]["from"] == "2026-01-01"
    other_setup = {
        **earlier,
        "setup": {**earlier["setup"], "n_tokens": 6},
        "scorers": {"b | y": same},
    }
    assert p.keep_earlier_rows(res, other_setup) == [] and "b | y" not in res["scorers"]
