"""Adaptive scoring against full scoring: scorer tokens saved, and latents ranked as full scoring ranks them.

Latents: planted ones (`eval.planted`), so that the judge has something to tell apart: the 12
concept latents of `eval.planted.PLANTED` and 38 single-word latents (`WORDS`: 'the word "river"'),
50 in all, each scored with its own explanation (true) and with another latent's (other), i.e. 100
scorings per scorer whose scores range from the judge's best to chance. Samples: `--n-test`
activating examples over 10 activation quantiles and `--n-negatives` random + as many similar
non-activating ones per latent; fuzzing adds `--n-wrong` activating examples with wrong tokens marked.

Judge: a llama.cpp model (`--judge`, default the packaged Qwen2.5-Coder-1.5B-Instruct), detection and
fuzzing in the shared-prefix layout, one example per prompt (the local default), scored together.

1. Full scoring: every example, once, through autointerp's on-disk response cache.
2. Adaptive scoring, for each setting of `SETTINGS`: the same scorers with `score.adaptive` on. Its
   prompts are the full run's prompts (same examples, same layout, same order of examples within a
   prompt), so the response cache serves every answer: the adaptive scorer sees exactly the answers
   the judge gave in the full run, and its token counts are those of the prompts it asked for (a
   cached answer carries its prompt's token counts). That makes the comparison exact: the only
   difference between the two scorings is where the adaptive one stopped. The script checks that
   the adaptive runs made no new call to the judge.

Reported per setting and scorer: scorer tokens (prompt + generated) of full over adaptive scoring
(2.0 = half), the Spearman rank correlation of the two scorings' main metric (balanced accuracy)
over the 100 scorings with a 95% percentile bootstrap interval (latents resampled, both of a
latent's scorings together), the same over the 50 true explanations, and the mean examples used. The
judge's own quality: AUROC over latents of full-scoring true vs other explanations (0.5 = chance).

Usage:
    python -m eval.adaptive [--judge qwen2.5-coder-1.5b] [--n-test 40] [--n-negatives 20]
                            [--n-wrong 10] [--threads 2] [--workdir runs/adaptive]
Writes results/adaptive.md and results/adaptive.json; caches, samples and scores stay in the work
folder (git-ignored), and a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from autointerp.clients import BACKENDS, make_client
from autointerp.config import ClientConfig, SubjectConfig
from autointerp.jsonl import read_jsonl
from autointerp.score import ScoreConfig, ScoreContext, ScoreStageConfig, score_coder
from autointerp.score.base import LatentScore
from autointerp.score.classifier import AdaptiveConfig, ClassifierConfig
from autointerp.score.metrics import auroc
from eval import common
from eval.planted import (
    CODER,
    PLANTED,
    Planted,
    derangement,
    prepare,
    sample_config,
    write_explanations,
)

log = logging.getLogger("adaptive")
REPO = Path(__file__).resolve().parents[1]
SCORERS = ("detection", "fuzzing")
VARIANTS = ("true", "other")
"""The explanations a latent can be scored with (`--variants`)."""

WORDS = (
    "city cities|world|species|century centuries|language|state|history histories|population|"
    "region|capital|empire|water|people|country countries|music|political|human|king|military|"
    "theory theories|power|earth|republic|space|genus|ocean|dynasty dynasties|river|science|"
    "literature|energy|government|island|kingdom|death|plant|animal|research"
).split("|")
"""Single words (and their plural when it is not word + s) for the word latents."""


def word_latent(spec: str) -> Planted:
    forms = spec.split()
    word = forms[0]
    alternatives = forms if len(forms) > 1 else [word, word + "s"]
    pattern = r"\b(?:" + "|".join(alternatives) + r")\b"
    return Planted(f"word_{word}", f'the word "{word}"', pattern, re.IGNORECASE)


LATENTS = PLANTED + tuple(word_latent(w) for w in WORDS)

SETTINGS = {
    "round 10, width 0.3": AdaptiveConfig(enabled=True, round=10, min_examples=20, width=0.3),
    "round 10, width 0.25": AdaptiveConfig(enabled=True, round=10, min_examples=20, width=0.25),
    "round 20, width 0.3": AdaptiveConfig(enabled=True, round=20, min_examples=20, width=0.3),
    "round 20, width 0.2 (default)": AdaptiveConfig(enabled=True),
    "round 10, width 0.25, threshold 0.5": AdaptiveConfig(
        enabled=True, round=10, min_examples=20, width=0.25, threshold=0.5
    ),
    "round 10, width 0.3, threshold 0.6": AdaptiveConfig(
        enabled=True, round=10, min_examples=20, width=0.3, threshold=0.6
    ),
}
"""Settings compared with full scoring (the adaptive defaults among them)."""


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float | None:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 3:
        return None
    rx, ry = rank(x), rank(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_ci(pairs: dict[int, list[tuple[float, float]]], n: int = 2000, seed: int = 0):
    """95% percentile bootstrap interval of Spearman's rho, latents resampled (a latent's
    scorings stay together)."""
    keys = sorted(pairs)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        pick = rng.choice(keys, size=len(keys), replace=True)
        rows = [p for k in pick for p in pairs[k]]
        r = spearman([a for a, _ in rows], [b for _, b in rows])
        if r is not None:
            stats.append(r)
    if not stats:
        return None
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def auroc_ci(true: list[float], other: list[float], n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    t, o = np.array(true), np.array(other)
    stats = []
    for _ in range(n):
        i = rng.integers(0, len(t), len(t))
        stats.append(auroc([True] * len(i) + [False] * len(i), [*t[i], *o[i]]))
    lo, hi = np.percentile([s for s in stats if s is not None], [2.5, 97.5])
    return [round(float(lo), 3), round(float(hi), 3)]


# ------------------------------------------------------------------------------------------------


def stage_config(args, adaptive: AdaptiveConfig | None) -> ScoreStageConfig:
    cls = ClassifierConfig(layout="shared", n_wrong=args.n_wrong)
    return ScoreStageConfig(
        score=ScoreConfig(
            scorers=list(SCORERS),
            detection=cls,
            fuzzing=cls,
            adaptive=adaptive or AdaptiveConfig(),
            latents_per_call=8,
        ),
        client=ClientConfig(backend="llamacpp", model=args.judge, n_ctx=2048, threads=args.threads),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)


def read_scores(path: Path) -> dict[int, LatentScore]:
    return {s.latent.latent: s for s in read_jsonl(path, LatentScore)} if path.exists() else {}


def run(args, cache, sample_path: Path, expl, work: Path) -> dict:
    """Full scoring, then each adaptive setting from the response cache. Returns seconds and
    the judge's calls made by the adaptive runs (must be 0)."""
    client_cfg = stage_config(args, None).client
    inner: dict = {}

    def factory():
        if "client" not in inner:
            inner["client"] = Counted(BACKENDS["llamacpp"](client_cfg))
        return make_client(client_cfg, work / "llm_cache.sqlite", inner["client"])

    ids = set(range(min(args.latents, len(LATENTS))))
    timing_path = work / "seconds.json"
    seconds = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    calls_after_full = None
    for name, adaptive in [("full", None), *SETTINGS.items()]:
        ctx = ScoreContext(cache, stage_config(args, adaptive), args.example_len, factory)
        for variant in args.variants:
            out = work / "scores" / _slug(name) / variant
            t0 = time.perf_counter()
            score_coder(ctx, list(SCORERS), sample_path, expl[variant], out, ids)
            seconds.setdefault(name, {})[variant] = seconds.get(name, {}).get(variant, 0.0) + round(
                time.perf_counter() - t0, 1
            )
            timing_path.write_text(json.dumps(seconds, indent=2))
        if name == "full":
            calls_after_full = _judge_calls(inner)
    new_calls = None if calls_after_full is None else _judge_calls(inner) - calls_after_full
    return {"seconds": seconds, "adaptive_new_judge_calls": new_calls}


class Counted:
    """The judge, counting the prompts that reach it (those the response cache did not answer)."""

    def __init__(self, inner):
        self.inner, self.model, self.prompts = inner, inner.model, 0

    async def complete(self, chats, params):
        self.prompts += len(chats)
        return await self.inner.complete(chats, params)


def _judge_calls(inner: dict) -> int:
    client = inner.get("client")
    return 0 if client is None else client.prompts


# ------------------------------------------------------------------------------------------------


def _metric(s: LatentScore | None) -> float | None:
    if s is None or s.status != "ok":
        return None
    v = s.metrics.get("balanced_accuracy")
    return None if v is None else float(v)


def _tokens(scores: dict[int, LatentScore]) -> int:
    return sum(s.prompt_tokens + s.completion_tokens for s in scores.values())


def summarize(work: Path) -> dict:
    def scores(name: str, variant: str, scorer: str) -> dict[int, LatentScore]:
        return read_scores(work / "scores" / _slug(name) / variant / scorer / f"{CODER}.jsonl")

    full = {(v, s): scores("full", v, s) for v in VARIANTS for s in SCORERS}
    judge = {}
    for scorer in SCORERS:
        t = full["true", scorer]
        o = full["other", scorer]
        both_metrics = [(_metric(t[i]), _metric(o.get(i))) for i in t]
        kept = [(a, b) for a, b in both_metrics if a is not None and b is not None]
        tv, ov = [a for a, _ in kept], [b for _, b in kept]
        ok_true = [x for x in t.values() if x.status == "ok"]
        p_auroc = [
            float(x.metrics["auroc"] or 0) for x in ok_true if x.metrics.get("auroc") is not None
        ]
        above = [x for x in ok_true if x.intervals.get("balanced_accuracy", (0.0, 0.0))[0] > 0.5]
        judge[scorer] = {
            "auroc_true_vs_other": _round(auroc([True] * len(tv) + [False] * len(ov), [*tv, *ov]))
            if kept
            else None,
            "auroc_ci95": auroc_ci(tv, ov) if len(kept) > 1 else None,
            "mean_true": _round(float(np.mean([_metric(x) for x in ok_true]))) if ok_true else None,
            "mean_other": round(float(np.mean(ov)), 4) if ov else None,
            "mean_p_yes_auroc_true": _round(float(np.mean(p_auroc))) if p_auroc else None,
            "share_above_chance_true": _round(len(above) / len(ok_true)) if ok_true else None,
            "n_latents": len(t),
            "failed": sum(x.status != "ok" for v in VARIANTS for x in full[v, scorer].values()),
        }
    settings = {}
    for name, cfg in SETTINGS.items():
        per: dict = {}
        tok_full = tok_adapt = 0
        for scorer in SCORERS:
            pairs: dict[int, list[tuple[float, float]]] = {}
            true_pairs = []
            used, available = [], []
            for v in VARIANTS:
                a = scores(name, v, scorer)
                f = full[v, scorer]
                for i, s in a.items():
                    x, y = _metric(f.get(i)), _metric(s)
                    if x is None or y is None:
                        continue
                    pairs.setdefault(i, []).append((x, y))
                    if v == "true":
                        true_pairs.append((x, y))
                    used.append(s.metrics.get("n") or 0)
                    available.append(s.metrics.get("n_available") or 0)
            rows = [p for ps in pairs.values() for p in ps]
            rho = spearman([a for a, _ in rows], [b for _, b in rows])
            f_tok = sum(
                _tokens({i: full[v, scorer][i] for i in scores(name, v, scorer)}) for v in VARIANTS
            )
            a_tok = sum(_tokens(scores(name, v, scorer)) for v in VARIANTS)
            tok_full, tok_adapt = tok_full + f_tok, tok_adapt + a_tok
            per[scorer] = {
                "spearman": None if rho is None else round(rho, 4),
                "spearman_ci95": spearman_ci(pairs) if rows else None,
                "spearman_true_only": _round(
                    spearman([a for a, _ in true_pairs], [b for _, b in true_pairs])
                ),
                "n_scorings": len(rows),
                "n_latents": len(pairs),
                "tokens_ratio": round(f_tok / a_tok, 3) if a_tok else None,
                "mean_examples_used": round(float(np.mean(used)), 1) if used else None,
                "mean_examples_available": round(float(np.mean(available)), 1)
                if available
                else None,
                "stopped_early": sum(u < a for u, a in zip(used, available, strict=True)),
            }
        worst = [per[s]["spearman"] for s in SCORERS if per[s]["spearman"] is not None]
        settings[name] = {
            "config": cfg.model_dump(mode="json"),
            "per_scorer": per,
            "tokens_ratio": round(tok_full / tok_adapt, 3) if tok_adapt else None,
            "spearman_min": min(worst) if len(worst) == len(SCORERS) else None,
        }
    return {"judge_quality": judge, "settings": settings}


def _round(x: float | None, d: int = 4) -> float | None:
    return None if x is None else round(x, d)


def headline(res: dict) -> dict:
    """The setting reported to bench_llm_work: the default settings' numbers, and, apart, the
    setting with the largest token ratio whose Spearman is at least 0.95 for both scorers (chosen on
    these data: an optimistic choice)."""
    settings = res["settings"]
    default = "round 20, width 0.2 (default)"
    ok = {
        k: v
        for k, v in settings.items()
        if v["spearman_min"] is not None and v["spearman_min"] >= 0.95
    }
    best = max(ok, key=lambda k: ok[k]["tokens_ratio"] or 0) if ok else None
    chosen = best or default
    c = settings[chosen]
    low = min(SCORERS, key=lambda s: c["per_scorer"][s]["spearman"] or -1)
    return {
        "setting": chosen,
        "chosen_by": "largest token ratio at Spearman >= 0.95 for both scorers"
        if best
        else "no setting reached Spearman 0.95 for both scorers: the default settings",
        "tokens_ratio": c["tokens_ratio"],
        "spearman": c["per_scorer"][low]["spearman"],
        "spearman_ci95": c["per_scorer"][low]["spearman_ci95"],
        "spearman_scorer": low,
        "n_latents": c["per_scorer"][low]["n_latents"],
        "n_scorings": c["per_scorer"][low]["n_scorings"],
    }


def _f(x, d: int = 3) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def _ci(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def render(res: dict) -> str:
    s = res["setup"]
    h = res
    lines = [
        "# Adaptive scoring vs full scoring",
        "",
        f"{s['n_latents']} planted latents (of {len(PLANTED)} concepts of `eval.planted` + "
        f"{len(WORDS)} single words, the first {s['n_latents']}), each scored with its true and another latent's explanation "
        f"by detection and fuzzing in the shared layout; judge `{res['judge']}` (llama.cpp, one "
        f"example per prompt); {s['sample']['n_test']} activating examples over 10 quantiles + "
        f"{s['sample']['n_random_negatives']} random + {s['sample']['n_similar_negatives']} similar "
        f"non-activating per latent, fuzzing + {s['n_wrong']} wrong-marked. {res['date']}, "
        f"{res['machine']['cores']} CPU cores, 1-min load average at the start "
        f"{res['machine']['load_start']}.",
        "",
        f"Command: `{res['command']}`. Full scoring took {res['seconds_full'] / 60:.1f} min of "
        f"judge time; the adaptive runs were served by the response cache (new judge calls: "
        f"{res['adaptive_new_judge_calls']}).",
        "",
        "## Headline",
        "",
        f"- Setting: {h['setting']} ({h['chosen_by']}).",
        f"- Scorer tokens, full / adaptive: **{_f(h['tokens_ratio'], 2)}x** (goal >= 2x).",
        f"- Spearman with full scoring ({h['spearman_scorer']}, the lower of the two scorers): "
        f"**{_f(h['spearman'])}** {_ci(h['spearman_ci95'])} over {h['n_scorings']} scorings of "
        f"{h['n_latents']} latents (goal >= 0.95).",
        "",
        "## Is the judge above chance?",
        "",
        "Full scoring, true explanations: mean balanced accuracy, the mean per-latent AUROC of "
        "P(yes) (activating vs non-activating examples), and the share of latents whose balanced "
        "accuracy's 95% interval lies above 0.5; with `--variants true other`, the AUROC over "
        "latents of true vs other explanations.",
        "",
        "| scorer | mean balanced accuracy (true) | mean AUROC of P(yes) (true) | latents above "
        "chance | AUROC true vs other [95%] | mean other | latents | failed scores |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for scorer, j in res["judge_quality"].items():
        lines.append(
            f"| {scorer} | {_f(j['mean_true'])} | {_f(j['mean_p_yes_auroc_true'])} | "
            f"{_f(j['share_above_chance_true'], 2)} | {_f(j['auroc_true_vs_other'])} "
            f"{_ci(j['auroc_ci95'])} | {_f(j['mean_other'])} | {j['n_latents']} | {j['failed']} |"
        )
    lines += [
        "",
        "## Settings",
        "",
        "| setting | scorer | tokens full / adaptive | Spearman [95%] | Spearman, true only | "
        "examples used / available (mean) | stopped early |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for name, v in res["settings"].items():
        for scorer, p in v["per_scorer"].items():
            lines.append(
                f"| {name} | {scorer} | {_f(p['tokens_ratio'], 2)}x | {_f(p['spearman'])} "
                f"{_ci(p['spearman_ci95'])} | {_f(p['spearman_true_only'])} | "
                f"{_f(p['mean_examples_used'], 1)} / {_f(p['mean_examples_available'], 1)} | "
                f"{p['stopped_early']} of {p['n_scorings']} |"
            )
        lines.append(
            f"| {name} | both | **{_f(v['tokens_ratio'], 2)}x** | min "
            f"{_f(v['spearman_min'])} | | | |"
        )
    lines += ["", "## Notes", ""] + notes(res)
    return "\n".join(lines) + "\n"


def notes(res: dict) -> list[str]:
    return [
        "- Tokens: prompt + generated tokens of the scorers' requests, as each score records "
        "them; the adaptive scores' requests were answered from the response cache, and a cached "
        "answer keeps its prompt's token counts, so the count is what the adaptive scorer asked "
        "for.",
        "- Spearman: rank correlation (ties share their mean rank) of the balanced accuracy of the "
        "full and the adaptive scoring, over every scoring (each latent with its true and with "
        "another latent's explanation); the interval resamples latents, keeping a latent's two "
        "scorings together. 'true only': over the true explanations.",
        "- Adaptive rounds take activating examples from every quantile in turn and negatives of "
        "both kinds in turn; a latent stops once at least `min_examples` are judged and the 95% "
        "interval of its balanced accuracy (Wilson + MOVER) is at most `width` wide, or lies "
        "wholly above or below `threshold`.",
        "- The headline setting is picked on these same data when one reaches the goal, so its "
        "numbers are optimistic; the default settings' row is not picked.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}.",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.adaptive", description=__doc__.split("\n")[0])
    p.add_argument("--judge", default="qwen2.5-coder-1.5b", help="llama.cpp model (name or .gguf)")
    p.add_argument("--tokens", type=int, default=200_000, help="tokens of the default corpus")
    p.add_argument("--n-test", type=int, default=40, help="activating test examples per latent")
    p.add_argument("--n-negatives", type=int, default=20, help="random and (as many) similar")
    p.add_argument("--n-wrong", type=int, default=10, help="fuzzing: wrong-token negatives")
    p.add_argument("--example-len", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--latents", type=int, default=len(LATENTS), help="score only the first N latents (a trial)"
    )
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: auto)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["true"],
        choices=VARIANTS,
        help="explanations each latent is scored with (other: another latent's, a wrong one)",
    )
    p.add_argument("--summarize-only", action="store_true", help="score nothing, re-summarize")
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "adaptive")
    p.add_argument("--results", type=Path, default=REPO / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from autointerp.subject import load_tokenizer

    load = os.getloadavg()[0]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(SubjectConfig())
    cache, sample_path = prepare(args, work, tokenizer, LATENTS, args.n_test)
    expl = write_explanations(work / "explanations", tokenizer, args.seed, LATENTS)
    if args.summarize_only:
        done = json.loads((work / "run.json").read_text())
    else:
        done = run(args, cache, sample_path, expl, work)
        (work / "run.json").write_text(json.dumps(done, indent=2))
    res = summarize(work)
    res |= headline(res)
    res |= {
        "judge": args.judge,
        "n_latents_defined": len(LATENTS),
        "setup": {
            "n_latents": min(args.latents, len(LATENTS)),
            "n_tokens": cache.n_tokens,
            "sample": sample_config(args, args.n_test).model_dump(mode="json"),
            "n_wrong": args.n_wrong,
            "definitions": [
                {"name": p.name, "explanation": p.explanation, "pattern": p.pattern}
                for p in LATENTS
            ],
            "derangement": derangement(len(LATENTS), args.seed),
        },
        "seconds_full": round(sum(done["seconds"].get("full", {}).values()), 1),
        "adaptive_new_judge_calls": done["adaptive_new_judge_calls"],
        "command": " ".join(["python -m eval.adaptive", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": common.cpu_name(),
            "load_start": round(load, 2),
        },
        "versions": common.versions(("llama-cpp-python", "autointerp")),
    }
    common.write_results(res, args.results, "adaptive", render)
    print(render(res))
    return res


if __name__ == "__main__":
    main()
