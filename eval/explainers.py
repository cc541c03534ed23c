"""Explainer types compared: does output-side evidence, or best-of-k, buy better explanations?

Two comparisons, each with a paired 95% bootstrap interval over latents (the same latents, the same
test examples, the same judge for both arms):
1. `mixed` (activating examples + the latent's promoted and suppressed tokens) against `default`
   (activating examples only), and `logits` and `intervention` beside them, on the intervention
   scores (`intervention`: the change in the explanation's log-probability when the latent is
   steered; `intervention-kl`: the same per nat of KL at a fixed KL), on real latents of the embedded
   SAE (planted latents have no decoder direction to steer).
2. best-of-k (`explain.best_of`, candidates judged on a pilot held out from the explainer's own
   examples) against best-of-1 (the `default` explainer's one answer, which sees every train
   example), on detection and fuzzing, on planted latents (whose meaning is known: `eval.planted`)
   and on real latents.

The explainer and the judge are the best models available on this machine (default: the
qwen2.5-coder-1.5b GGUF that `scripts/setup.sh` installs, run by llama.cpp); the intervention scores'
reader is the subject model (SmolLM2-135M), as in a run. Every step resumes from its files in the
work folder; `tokens_per_latent` is the explainer's prompt + generated tokens per explained latent
(best-of-k: its k candidates and its pilot scoring included).

Usage:
    python -m eval.explainers [--real 8] [--planted 4] [--best-real 4] [--k 4] [--pilot 4]
                              [--judge qwen2.5-coder-1.5b] [--workdir runs/explainers]
Writes results/explainers.md and results/explainers.json (rows: explainer, scorer, mean, ci_low,
ci_high, n_latents, tokens_per_latent, plus the latent set and, for gains, the arm compared with).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from autointerp import stages
from autointerp.cache import ActivationCache
from autointerp.config import ClientConfig, SubjectConfig
from autointerp.explain import ExplainConfig, read_explanations
from autointerp.pipeline import RunConfig
from autointerp.report import mean_interval
from autointerp.sample import SampleConfig, sample_coder, write_config
from autointerp.score.classifier import ClassifierConfig
from autointerp.score.judge_check import JudgeCheckConfig
from autointerp.score.names import main_metric
from autointerp.score.stage import ScoreConfig, ScoreStageConfig, read_scores
from eval import common
from eval.planted import CODER as PLANTED_CODER
from eval.planted import PLANTED, _f, add_planted, real_cache

log = logging.getLogger("explainers")
REAL_CODER = "layers.15"
OUTPUT_TYPES = ("default", "mixed", "logits", "intervention")
INTERVENTION_SCORERS = ("intervention", "intervention-kl")
CLASSIFIERS = ("detection", "fuzzing")
MIN_LATENTS = 5
"""Fewer paired latents than this: a comparison's interval is not read as a finding."""


def sample_cfg(args, similar_by: str) -> SampleConfig:
    return SampleConfig(
        n_train=args.n_train,
        n_test=args.n_test,
        n_random_negatives=args.n_negatives,
        n_similar_negatives=args.n_negatives,
        n_explain_negatives=args.n_explain_negatives,
        similar_by=similar_by,  # type: ignore[arg-type]
        min_examples=args.n_train + args.n_test,
        seed=args.seed,
    )


def prepare(args, work: Path) -> dict[str, tuple[ActivationCache, Path, list[int]]]:
    """Per latent set: its cache, sample folder and the latents to use (the first that sampled)."""
    from autointerp.subject import load_tokenizer

    real = real_cache(work / "cache", args.tokens)
    out = {}
    cache = ActivationCache(real)
    folder = work / "sample_real"
    write_config(folder, sample_cfg(args, "decoder"))
    path = sample_coder(
        cache,
        REAL_CODER,
        sample_cfg(args, "decoder"),
        folder,
        list(range(args.scan)),
        progress=False,
    )
    out["real"] = (cache, folder, _ok(path)[: args.real])
    planted_dir = work / "planted_cache"
    if (planted_dir / "stats" / f"{PLANTED_CODER}.npz").exists():
        planted = ActivationCache(planted_dir)
    else:
        planted = add_planted(real, planted_dir, load_tokenizer(SubjectConfig()))
    folder = work / "sample_planted"
    cfg = sample_cfg(args, "cooccurrence")
    write_config(folder, cfg)
    path = sample_coder(
        planted, PLANTED_CODER, cfg, folder, list(range(len(PLANTED))), progress=False
    )
    out["planted"] = (planted, folder, _ok(path)[: args.planted])
    return out


def _ok(path: Path) -> list[int]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return sorted({x["id"]["latent"] for x in lines if x["status"] == "ok"})


def client(args) -> ClientConfig:
    return ClientConfig(
        backend="llamacpp", model=args.judge, n_ctx=args.n_ctx, threads=args.threads
    )


def _latents(ids: list[int]) -> str:
    return ",".join(map(str, ids))


def explain(args, cache, sample, ids, out: Path, explain_cfg: ExplainConfig) -> float:
    """Explanations into `out` (resumes); returns the seconds this call spent."""
    if args.summarize_only:
        return 0.0
    start = time.perf_counter()
    cfg = RunConfig(explain=explain_cfg, client=client(args))
    stages.explain(cache.root, sample, out, cfg, latents=_latents(ids), progress=False)
    return time.perf_counter() - start


def score(args, cache, sample, ids, expl: Path, out: Path, scorers) -> float:
    if args.summarize_only:
        return 0.0
    start = time.perf_counter()
    cfg = ScoreStageConfig(
        score=ScoreConfig(
            scorers=list(scorers),
            detection=ClassifierConfig(),
            fuzzing=ClassifierConfig(n_wrong=0),
            judge_check=JudgeCheckConfig(enabled=False),
        ),
        client=client(args),
    )
    stages.score(cache.root, sample, expl, out, cfg, latents=_latents(ids), progress=False)
    return time.perf_counter() - start


def tally(work: Path, seconds: dict[str, float], key: str, spent: float) -> None:
    """Add a step's seconds to those of earlier invocations (work/seconds.json, kept as it goes)."""
    seconds[key] = seconds.get(key, 0.0) + spent
    (work / "seconds.json").write_text(json.dumps(seconds, indent=1))


def _coder(cache: ActivationCache) -> str:
    return PLANTED_CODER if PLANTED_CODER in cache.coders else REAL_CODER


def values(folder: Path, scorer: str, coder: str, ids: list[int]) -> dict[int, float]:
    """Latent -> the scorer's main metric, for the latents scored successfully."""
    got = read_scores(folder / scorer / f"{coder}.jsonl")
    metric = main_metric(scorer)
    return {
        i: float(s.metrics[metric])
        for i, s in got.items()
        if i in ids and s.status == "ok" and s.metrics.get(metric) is not None
    }


def tokens_per_latent(expl: Path, coder: str, ids: list[int]) -> float | None:
    got = [e for i, e in read_explanations(expl / f"{coder}.jsonl").items() if i in ids]
    return float(np.mean([e.prompt_tokens + e.completion_tokens for e in got])) if got else None


def row(name, scorer, latent_set, vals: dict[int, float], tokens, n_boot, seed) -> dict:
    x = np.array(list(vals.values()), dtype=float)
    lo, hi = (
        mean_interval((x,), n_boot, seed, f"{latent_set}/{name}/{scorer}")
        if len(x)
        else (None, None)
    )
    return {
        "set": latent_set,
        "explainer": name,
        "scorer": scorer,
        "metric": main_metric(scorer),
        "mean": float(x.mean()) if len(x) else None,
        "ci_low": lo,
        "ci_high": hi,
        "n_latents": len(x),
        "tokens_per_latent": tokens,
    }


def gain(name, base, scorer, latent_set, a: dict, b: dict, tokens, n_boot, seed) -> dict:
    """`name` minus `base` on the latents both scored: mean paired difference, bootstrap interval."""
    both = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in both], dtype=float)
    out = row(
        f"{name} - {base}",
        scorer,
        latent_set,
        dict(zip(both, d, strict=True)),
        tokens,
        n_boot,
        seed,
    )
    out["compared_with"] = base
    out["wins"] = float(np.mean(d > 0) + 0.5 * np.mean(d == 0)) if len(d) else None
    return out


def run_output_types(args, work: Path, sets: dict, seconds: dict) -> list[dict]:
    cache, sample, ids = sets["real"]
    rows, vals = [], {}
    for kind in args.types:
        expl = work / "real" / kind / "explanations"
        tally(
            work,
            seconds,
            f"explain real {kind}",
            explain(
                args,
                cache,
                sample,
                ids,
                expl,
                ExplainConfig(explainer=kind, max_tokens=args.max_tokens),
            ),
        )
        tally(
            work,
            seconds,
            f"score real {kind}",
            score(
                args,
                cache,
                sample,
                ids,
                expl,
                work / "real" / kind / "scores",
                INTERVENTION_SCORERS,
            ),
        )
        tokens = tokens_per_latent(expl, REAL_CODER, ids)
        for scorer in INTERVENTION_SCORERS:
            vals[kind, scorer] = values(work / "real" / kind / "scores", scorer, REAL_CODER, ids)
            rows.append(
                row(kind, scorer, "real", vals[kind, scorer], tokens, args.n_boot, args.seed)
            )
    for kind in [t for t in args.types if t != "default"]:
        for scorer in INTERVENTION_SCORERS:
            rows.append(
                gain(
                    kind,
                    "default",
                    scorer,
                    "real",
                    vals[kind, scorer],
                    vals["default", scorer],
                    None,
                    args.n_boot,
                    args.seed,
                )
            )
    return rows


def run_best_of(args, work: Path, sets: dict, seconds: dict) -> list[dict]:
    rows = []
    for latent_set, n in (("planted", args.planted), ("real", args.best_real)):
        cache, sample, ids = sets[latent_set]
        ids = ids[:n]
        coder = _coder(cache)
        arms = {
            "default (best-of-1)": ExplainConfig(max_tokens=args.max_tokens),
            f"default best-of-{args.k}": ExplainConfig(
                max_tokens=args.max_tokens, best_of=args.k, pilot=args.pilot
            ),
        }
        vals, tokens = {}, {}
        for arm, cfg in arms.items():
            slug = "best1" if cfg.best_of == 1 else f"best{args.k}"
            base = work / latent_set / ("default" if slug == "best1" else slug)
            tally(
                work,
                seconds,
                f"explain {latent_set} {slug}",
                explain(args, cache, sample, ids, base / "explanations", cfg),
            )
            tally(
                work,
                seconds,
                f"score {latent_set} {slug}",
                score(
                    args, cache, sample, ids, base / "explanations", base / "scores", CLASSIFIERS
                ),
            )
            tokens[arm] = tokens_per_latent(base / "explanations", coder, ids)
            for scorer in CLASSIFIERS:
                vals[arm, scorer] = values(base / "scores", scorer, coder, ids)
                rows.append(
                    row(
                        arm,
                        scorer,
                        latent_set,
                        vals[arm, scorer],
                        tokens[arm],
                        args.n_boot,
                        args.seed,
                    )
                )
        one, best = arms
        for scorer in CLASSIFIERS:
            rows.append(
                gain(
                    best,
                    one,
                    scorer,
                    latent_set,
                    vals[best, scorer],
                    vals[one, scorer],
                    None,
                    args.n_boot,
                    args.seed,
                )
            )
    return rows


def render_markdown(res: dict) -> str:
    lines = [
        "# Explainer types and best-of-k",
        "",
        f"{res['date']}, {res['machine']['cores']} CPU cores, no GPU. Command: `{res['command']}`. "
        f"Explainer and judge: {res['setup']['judge']} (llama.cpp); intervention scores read by "
        f"SmolLM2-135M (the subject model). {_timing(res)}",
        "",
        "Rows `A - B` are paired: the mean over latents of A's score minus B's on the latents both "
        "scored, with a 95% bootstrap interval (BCa) of that mean; `wins` is the share of latents "
        "where A scores higher (ties half). Other rows: the mean and its interval. Tokens: the "
        "explainer's prompt + generated tokens per latent (best-of-k: candidates and pilot included).",
        "",
        "| set | explainer | scorer | metric | mean | 95% interval | latents | wins | tokens / latent |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['set']} | {r['explainer']} | {r['scorer']} | {r['metric']} | {_f(r['mean'])} | "
            f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] | {r['n_latents']} | {_f(r.get('wins'), 2)} | "
            f"{_f(r['tokens_per_latent'], 0)} |"
        )
    lines += ["", "## Findings", ""] + findings(res) + ["", "## Setup", ""]
    s = res["setup"]
    lines += [
        f"- Real latents: {s['real_latents']} of the embedded SAE (`{REAL_CODER}`), the first that "
        f"sampled among latents 0-{s['scan'] - 1}; planted latents: {s['planted_latents']} "
        "(definitions in `eval/planted.py`).",
        f"- Sample: {json.dumps(s['sample'])}.",
        f"- Best-of-{s['k']}: pilot of {s['pilot']} train examples held out from every candidate, "
        "with the latent's explain negatives; candidates differ by example subsets (the default).",
        f"- Seconds per step: {json.dumps({k: v for k, v in res['seconds'].items() if v})}.",
        f"- Versions: {json.dumps(res['versions'])}.",
    ]
    return "\n".join(lines) + "\n"


def _timing(res: dict) -> str:
    spent = sum(res["seconds"].values())
    if not spent:
        return "Not timed: the results were summarized from files that earlier invocations wrote."
    return (
        f"Explaining and scoring took {spent / 60:.0f} min (per step: Setup), on a machine shared "
        "with other jobs (load average in the JSON)."
    )


def findings(res: dict) -> list[str]:
    out = []
    for r in res["rows"]:
        if "compared_with" not in r or r["mean"] is None:
            continue
        lo, hi = r["ci_low"], r["ci_high"]
        if r["n_latents"] < MIN_LATENTS:
            out.append(
                f"- {r['set']}, {r['scorer']}: {r['explainer']} = {_f(r['mean'])} over "
                f"{r['n_latents']} latents: too few latents for the interval to mean anything "
                f"(fewer than {MIN_LATENTS}); no conclusion."
            )
            continue
        verdict = (
            "better"
            if lo is not None and lo > 0
            else "worse"
            if hi is not None and hi < 0
            else "no clear difference"
        )
        out.append(
            f"- {r['set']}, {r['scorer']}: {r['explainer']} = {_f(r['mean'])} "
            f"[{_f(lo)}, {_f(hi)}] over {r['n_latents']} latents: {verdict}."
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=200_000, help="tokens of the real cache")
    p.add_argument("--real", type=int, default=8, help="real latents for the explainer types")
    p.add_argument("--best-real", type=int, default=4, help="of those, latents for best-of-k")
    p.add_argument("--planted", type=int, default=4, help="planted latents for best-of-k")
    p.add_argument("--scan", type=int, default=64, help="real latents 0..scan-1 are sampled")
    p.add_argument(
        "--types",
        nargs="+",
        default=list(OUTPUT_TYPES),
        choices=OUTPUT_TYPES,
        help="explainer types compared on the intervention scores (default first)",
    )
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--pilot", type=int, default=4, help="train examples held out for best-of-k")
    p.add_argument(
        "--n-explain-negatives", type=int, default=6, help="the pilot's negatives (sampled)"
    )
    p.add_argument("--n-train", type=int, default=20)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--n-negatives", type=int, default=5, help="random and similar, each")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--judge", default="qwen2.5-coder-1.5b")
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="write the results from what earlier invocations explained and scored, run nothing",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=["output", "best-of"])
    p.add_argument("--workdir", type=Path, default=Path("runs/explainers"))
    p.add_argument("--results", type=Path, default=Path("results"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    sets = prepare(args, work)
    timing = work / "seconds.json"
    seconds: dict[str, float] = json.loads(timing.read_text()) if timing.exists() else {}
    rows = []
    if "output" not in args.skip:
        rows += run_output_types(args, work, sets, seconds)
    if "best-of" not in args.skip:
        rows += run_best_of(args, work, sets, seconds)
    res = {
        "rows": rows,
        "setup": {
            "judge": args.judge,
            "real_latents": sets["real"][2],
            "planted_latents": sets["planted"][2][: args.planted],
            "scan": args.scan,
            "k": args.k,
            "pilot": args.pilot,
            "sample": sample_cfg(args, "decoder").model_dump(mode="json"),
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "seconds_total": round(time.perf_counter() - start, 1),
        "command": " ".join(
            ["python -m eval.explainers", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "versions": common.versions(("torch", "transformers", "llama-cpp-python", "autointerp")),
        "machine": {"cores": os.cpu_count(), "cpu": common.cpu_name()},
    }
    common.write_results(res, args.results, "explainers", render_markdown)
    return res


if __name__ == "__main__":
    main()
