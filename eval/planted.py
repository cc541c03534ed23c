"""Planted latents: do the scorers tell a latent's true explanation from a wrong one?

The latents of a real SAE have no known meaning, so a scorer's number alone cannot say whether it
rewards the right explanation. Here the evaluation defines latents over the corpus itself (fires on
digits; on the word "the"; on words inside parentheses; on country names; on the first word after a
full stop; ...), so each latent's true explanation is known. They are stored as one more coder
(`planted`) in a copy of a real cache, with autointerp's own layout and statistics functions, then
sampled and scored exactly like real latents.

Steps (each resumes, so a re-run after an interruption redoes only what is missing):
1. a real cache of the default corpus (`build_cache`, the packaged SmolLM2-135M and embedded SAE);
2. a copy of it with the `planted` coder added: for each latent, the tokens that overlap a match of
   its definition fire, with a graded value (1-10: a per-token-type weight times a per-occurrence
   jitter, both fixed hashes), so activation quantiles are not all equal;
3. sampling (`sample_coder`): small test sets to keep CPU time modest; similar negatives by
   co-occurrence (the planted coder has no decoder);
4. three explanation files: each latent's true explanation; another latent's true explanation (a
   derangement); a few random vocabulary words;
5. scoring each file with each scorer (`score_coder`); the intervention scorer is skipped: it steers
   the latent's decoder direction, and a planted latent has none.

Per scorer and client the report gives the AUROC over latents of the main metric for the true versus
the other latent's explanation (`auroc_true_vs_other`; 1.0 = the true explanation always scores
higher), the same against the random-word explanation, the mean main metric of each kind of
explanation (`mean_score_random_explanation` is the floor), and diagnostics of the LLM classifiers
(how often they answer yes on activating and on non-activating examples).

Clients: the local `transformers` backend with the packaged SmolLM2-135M-Instruct (the default), and
optionally any OpenAI-compatible server, e.g. llama.cpp serving the same GGUF file:
    python -m llama_cpp.server --model FILE.gguf --host 127.0.0.1 --port 8090 --n_threads 2
    python -m eval.planted --openai-url http://127.0.0.1:8090/v1 --openai-model smollm2

Usage:
    python -m eval.planted [--tokens 200000] [--n-test 40] [--n-negatives 20]
                           [--scorers detection fuzzing surprisal embedding simulation]
                           [--workdir runs/planted] [--openai-url URL --openai-model NAME]
                           [--openai-scorers detection fuzzing]
Writes results/planted.md and results/planted.json; the caches, samples, explanations and scores
stay in the work folder (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from autointerp.cache import ActivationCache, build_cache, sparse_layout, write_stats
from autointerp.config import CacheConfig, ClientConfig, CorpusConfig, SubjectConfig
from autointerp.jsonl import read_jsonl
from autointerp.sample import SampleConfig, read_records, sample_coder, write_config
from autointerp.score import MAIN_METRIC, ScoreConfig, ScoreContext, ScoreStageConfig, score_coder
from autointerp.score.base import LatentScore
from autointerp.score.classifier import ClassifierConfig
from autointerp.score.intruder import IntruderConfig
from autointerp.score.metrics import auroc
from autointerp.score.simulation import SimulationConfig
from autointerp.types import Explanation, LatentId
from eval import common

log = logging.getLogger("planted")
REPO = Path(__file__).resolve().parents[1]
CODER = "planted"
VARIANTS = ("true", "other", "random")
LLM_SCORERS = ("detection", "fuzzing", "simulation", "intruder")
EXPLANATION_FREE = ("intruder", "example-embedding")
ALL_SCORERS = (
    "detection",
    "fuzzing",
    "surprisal",
    "embedding",
    "simulation",
    "intruder",
    "example-embedding",
)
CALIBRATED = ("detection+cal", "fuzzing+cal")
"""Detection and fuzzing with the calibrated judge (`calibrate: true`)."""
SHARED = ("detection+shared", "fuzzing+shared")
"""Detection and fuzzing in the shared-prefix layout (`layout: shared`), scored together (one
`score_coder` call, so their prompts reach the judge side by side) when both are asked for."""
LOCAL = "transformers:smollm2"
FREE = "free"
"""The explanation-free scorers' one scoring of all 2n latents (planted and their controls)."""


# ------------------------------------------------------------------------------------------------
# The planted latents


def _words(*words: str) -> str:
    return r"\b(?:" + "|".join(words) + r")\b"


COUNTRIES = (
    "Afghanistan Albania Algeria Argentina Armenia Australia Austria Bangladesh Belgium Bolivia "
    "Brazil Bulgaria Cambodia Canada Chile China Colombia Croatia Cuba Denmark Egypt England "
    "Estonia Ethiopia Finland France Germany Ghana Greece Hungary Iceland India Indonesia Iran Iraq "
    "Ireland Israel Italy Jamaica Japan Kenya Korea Latvia Lebanon Lithuania Malaysia Mexico "
    "Morocco Nepal Netherlands Nigeria Norway Pakistan Peru Philippines Poland Portugal Romania "
    "Russia Scotland Serbia Singapore Spain Sweden Switzerland Syria Taiwan Thailand Turkey Uganda "
    "Ukraine Vietnam Wales Zimbabwe"
).split() + ["United States", "United Kingdom", "New Zealand", "South Africa", "Saudi Arabia"]
MONTHS = (
    "January February March April May June July August September October November December".split()
)


@dataclass(frozen=True)
class Planted:
    name: str
    explanation: str
    """The true explanation, as an explainer might write it."""
    pattern: str
    """Regex over a window's text: tokens that overlap a match (or its group 1) fire."""
    flags: int = 0


PLANTED = (
    Planted("digits", "digits and numbers written in digits", r"\d"),
    Planted("the", 'the word "the"', r"\b[Tt]he\b"),
    Planted("parentheses", "words inside parentheses", r"\(([^()\n]{1,200})\)"),
    Planted("countries", "names of countries", _words(*COUNTRIES)),
    Planted(
        "sentence_start", "the first word of a sentence, right after a full stop", r"\.\s+(\w)"
    ),
    Planted("months", "names of months", _words(*MONTHS)),
    Planted("commas", "commas", r","),
    Planted(
        "pronouns",
        "third-person pronouns such as he, she, his, her, they",
        _words("he", "she", "him", "his", "her", "hers", "they", "them", "their"),
        re.IGNORECASE,
    ),
    Planted(
        "colours",
        "colour words such as red, blue, green, white",
        _words(
            *"red orange yellow green blue purple violet pink brown black white gr[ae]y".split()
        ),
        re.IGNORECASE,
    ),
    Planted(
        "number_words",
        "numbers written as words, such as two, three, hundred",
        _words(
            *"one two three four five six seven eight nine ten eleven twelve twenty thirty hundred "
            "thousand million billion".split()
        ),
        re.IGNORECASE,
    ),
    Planted(
        "family",
        "family members such as mother, son, wife, brother",
        _words(
            *"mother father sons? daughters? wife wives husbands? brothers? sisters? parents? "
            "child children grandfather grandmother uncle aunt cousins?".split()
        ),
        re.IGNORECASE,
    ),
    Planted("ing_words", 'words ending in "-ing"', r"\b[A-Za-z]{2,}ing\b"),
)


def _unit(x: np.ndarray, salt: int) -> np.ndarray:
    """A fixed hash of integers to [0, 1) (splitmix64)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def token_strings(tokenizer) -> list[str]:
    """Each token id's text; special tokens (BOS, EOS between documents) read as a line break."""
    special = set(tokenizer.all_special_ids)
    return ["\n" if i in special else tokenizer.decode([i]) for i in range(len(tokenizer))]


def firing(strings: list[str], ids: np.ndarray, latents=PLANTED) -> np.ndarray:
    """(len(ids), n_latents) bool: which planted latent fires on which token of one window."""
    pieces = [strings[int(t)] for t in ids]
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.array([len(p) for p in pieces])
    text = "".join(pieces)
    out = np.zeros((len(ids), len(latents)), dtype=bool)
    for j, p in enumerate(latents):
        for m in re.finditer(p.pattern, text, p.flags):
            a, b = m.span(1) if m.re.groups else m.span()
            lo = np.searchsorted(ends, a, side="right")  # first token ending after a
            hi = np.searchsorted(starts, b, side="left")  # tokens starting before b
            out[lo:hi, j] = True
    return out


def planted_values(tokens: np.ndarray, fires: np.ndarray, first_token: int) -> np.ndarray:
    """Graded activations (n_tokens, n_latents): 10 x a weight of the token type (0.3-1) x a jitter
    of the occurrence (0.5-1) where the latent fires, else 0."""
    flat = tokens.reshape(-1).astype(np.int64)
    pos = np.arange(len(flat), dtype=np.int64) + first_token
    vals = np.zeros(fires.shape, dtype=np.float32)
    for j in range(fires.shape[1]):
        weight = 0.3 + 0.7 * _unit(flat, 1000 + j)
        jitter = 0.5 + 0.5 * _unit(pos, 2000 + j)
        vals[:, j] = np.where(fires[:, j], np.round(10 * weight * jitter, 2), 0.0)
    return vals


# ------------------------------------------------------------------------------------------------
# Caches


def real_cache(folder: Path, n_tokens: int) -> Path:
    cfg = CacheConfig(corpus=CorpusConfig(n_tokens=n_tokens))
    return build_cache(cfg, folder)


def noise_fires(pos: np.ndarray, densities: np.ndarray) -> np.ndarray:
    """(len(pos), n) bool: control latent i fires on a fixed pseudo-random set of token positions,
    as often as planted latent i does, whatever the text (a latent that means nothing)."""
    return np.stack([_unit(pos, 3000 + i) < d for i, d in enumerate(densities)], axis=1)


def add_planted(real: Path, folder: Path, tokenizer, latents=PLANTED) -> ActivationCache:
    """A copy of the real cache with the planted coder added (rebuilt whenever asked): latents
    0..n-1 are the planted ones, n..2n-1 their meaningless controls (`noise_fires`), which the
    explanation-free scorers are checked against."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(real, folder)
    cache = ActivationCache(folder)
    strings = token_strings(tokenizer)
    shard_tokens = cache.shard_seqs * cache.ctx_len
    n = len(latents)
    manifest = json.loads((folder / "cache.json").read_text())
    manifest["coders"][CODER] = {
        "hookpoint": "tokens",
        "n_latents": 2 * n,
        "kind": "planted",
        "d_in": 0,
    }
    manifest["planted"] = [
        {"latent": i, "name": p.name, "explanation": p.explanation, "pattern": p.pattern}
        for i, p in enumerate(latents)
    ] + [{"latent": n + i, "name": f"noise_{p.name}"} for i, p in enumerate(latents)]
    (folder / "cache.json").write_text(json.dumps(manifest, indent=2))
    tokens = {s: np.load(folder / "shards" / s / "tokens.npy") for s in cache.shard_names}
    fires = {
        s: np.concatenate([firing(strings, row, latents) for row in t]) for s, t in tokens.items()
    }
    densities = sum(f.sum(0) for f in fires.values()) / sum(len(f) for f in fires.values())
    for shard in cache.shard_names:
        first = int(shard) * shard_tokens
        pos = np.arange(len(fires[shard]), dtype=np.int64) + first
        both = np.concatenate([fires[shard], noise_fires(pos, densities)], axis=1)
        vals = planted_values(tokens[shard], both, first)
        idx = np.broadcast_to(np.arange(2 * n, dtype=np.int32), vals.shape)
        out = folder / "shards" / shard / CODER
        out.mkdir(exist_ok=True)
        for key, arr in sparse_layout(vals, np.ascontiguousarray(idx), 2 * n).items():
            np.save(out / f"{key}.npy", arr)
    summary = write_stats(folder, [SimpleNamespace(name=CODER, n_latents=2 * n)], cache.n_tokens)
    manifest["summary"] = {**manifest.get("summary", {}), **summary}
    (folder / "cache.json").write_text(json.dumps(manifest, indent=2))
    return ActivationCache(folder)


# ------------------------------------------------------------------------------------------------
# Explanations


def derangement(n: int, seed: int) -> list[int]:
    """A fixed permutation with no fixed point: latent i gets latent perm[i]'s explanation."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return [int(x) for x in perm]


def random_words(tokenizer, n_latents: int, k: int, seed: int) -> list[str]:
    """k random vocabulary words (whole lowercase word tokens of 4+ letters) per latent."""
    vocab = sorted({s.strip() for s in token_strings(tokenizer) if re.fullmatch(r" [a-z]{4,}", s)})
    rng = np.random.default_rng(seed)
    return [", ".join(rng.choice(vocab, size=k, replace=False)) for _ in range(n_latents)]


def write_explanations(
    folder: Path, tokenizer, seed: int, latents=PLANTED
) -> dict[str, dict[int, Explanation]]:
    n = len(latents)
    perm = derangement(n, seed)
    texts = {
        "true": [p.explanation for p in latents],
        "other": [latents[perm[i]].explanation for i in range(n)],
        "random": random_words(tokenizer, n, 4, seed),
        # The explanation-free scorers see no explanation: planted latents and their controls.
        FREE: ["(unused by explanation-free scorers)"] * (2 * n),
    }
    out = {}
    for variant, column in texts.items():
        records = {
            i: Explanation(
                latent=LatentId(coder=CODER, latent=i),
                text=t,
                raw=t,
                model="planted",
                prompt=f"planted:{variant}",
            )
            for i, t in enumerate(column)
        }
        path = folder / variant / f"{CODER}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(e.model_dump_json() + "\n" for e in records.values()))
        out[variant] = records
    return out


# ------------------------------------------------------------------------------------------------
# Scoring


def _base(key: str) -> str:
    """The scorer of a scorer key (`detection+cal` -> `detection`)."""
    return key.split("+")[0]


def score_config(args, client: ClientConfig, key: str) -> ScoreStageConfig:
    cal = {"calibrate": True} if key.endswith("+cal") else {}
    if key.endswith("+shared"):
        cal = {"layout": "shared"}
    return ScoreStageConfig(
        score=ScoreConfig(
            scorers=[_base(key)],
            detection=ClassifierConfig(**cal),
            fuzzing=ClassifierConfig(n_wrong=args.n_wrong, **cal),
            simulation=SimulationConfig(
                n_activating=args.sim_activating, n_negative=args.sim_negative
            ),
            intruder=IntruderConfig(n_prompts=args.intruder_prompts),
            latents_per_call=len(PLANTED),
        ),
        client=client,
    )


def clients(args) -> dict[str, ClientConfig]:
    """Client label -> config."""
    out = {LOCAL: ClientConfig()}
    if args.openai_url:
        out[f"openai:{args.openai_model}"] = ClientConfig(
            backend="openai",
            model=args.openai_model,
            base_url=args.openai_url,
            api_key_env="PLANTED_UNUSED_KEY",
            max_concurrency=2,
        )
    for name in args.llamacpp or ():
        out[f"llamacpp:{name}"] = ClientConfig(
            backend="llamacpp", model=name, n_ctx=2048, threads=args.threads
        )
    return out


def _variants(args, label: str, key: str) -> tuple[str, ...]:
    if _base(key) in EXPLANATION_FREE:
        return (FREE,)
    return VARIANTS if label == LOCAL else tuple(args.judge_variants)


def _out(work: Path, label: str, key: str, variant: str) -> Path:
    """The folder `score_coder` writes `<scorer>/planted.jsonl` into."""
    base = work / "scores" / _slug(label) / variant
    if key.endswith("+shared"):
        return base / "shared"
    return base / "cal" if key.endswith("+cal") else base


def run_scoring(args, cache: ActivationCache, sample_path: Path, expl, work: Path) -> dict:
    """Score every (client, scorer, variant), one scorer at a time so that each is timed alone.
    Returns the seconds each took; they are kept in the work folder, so a re-run that finds the
    scores already written reports the time of the run that wrote them."""
    from autointerp.clients import BACKENDS, make_client

    timing = work / "scores" / "seconds.json"
    seconds = json.loads(timing.read_text()) if timing.exists() else {}
    for label, ccfg in clients(args).items():
        cache_file = work / "llm_cache" / f"{_slug(label)}.sqlite"
        inner = {}  # one model per client label, shared by its scorers

        def factory(c=ccfg, f=cache_file, inner=inner):
            if "client" not in inner:
                inner["client"] = BACKENDS[c.backend](c)
            return make_client(c, f, inner["client"])

        keys = _scorers_for(args, label)
        together = [k for k in SHARED if k in keys] if all(k in keys for k in SHARED) else []
        for key in [k for k in keys if k not in together[1:]]:
            cfg = score_config(args, ccfg, key)
            names = [_base(k) for k in together] if key in together else [_base(key)]
            ctx = ScoreContext(cache, cfg, args.example_len, factory)
            for variant in _variants(args, label, key):
                out = _out(work, label, key, variant)
                want = 2 * len(PLANTED) if variant == FREE else len(PLANTED)
                if all(len(_scores(out / b / f"{CODER}.jsonl")) >= want for b in names):
                    continue
                t0 = time.perf_counter()
                score_coder(ctx, names, sample_path, expl[variant], out)
                dt = time.perf_counter() - t0
                for k in together if key in together else [key]:  # a joint time, for both
                    seconds.setdefault(_key(k, label), {})[variant] = round(dt, 1)
                timing.write_text(json.dumps(seconds, indent=2))
                log.info("%s %s %s: %.0f s", label, "+".join(names), variant, dt)
    return seconds


def _scorers_for(args, label: str) -> list[str]:
    """Every chosen scorer with the local client; with a server or llama.cpp, its LLM scorers."""
    if label == LOCAL:
        return list(args.scorers)
    if label.startswith("llamacpp:"):
        return list(args.llamacpp_scorers)
    return [s for s in args.openai_scorers if s in args.scorers and s in LLM_SCORERS]


def _slug(label: str) -> str:
    return re.sub(r"[^\w.-]+", "_", label)


def _key(scorer: str, client: str) -> str:
    return f"{scorer} | {client if _base(scorer) in LLM_SCORERS else _SCORER_CLIENT[scorer]}"


_SCORER_CLIENT = {
    "surprisal": "SmolLM2-135M loss",
    "embedding": "all-MiniLM-L6-v2",
    "example-embedding": "all-MiniLM-L6-v2",
}


# ------------------------------------------------------------------------------------------------
# Summary


def _scores(path: Path) -> dict[int, LatentScore]:
    return {s.latent.latent: s for s in read_jsonl(path, LatentScore)}


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def _auroc_over_latents(a: list, b: list) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return None
    xs, ys = zip(*pairs, strict=True)
    res = auroc([True] * len(xs) + [False] * len(ys), list(xs) + list(ys))
    return None if res is None else round(res, 4)


def _bootstrap_ci(a: list, b: list, n: int = 2000, seed: int = 0) -> list[float] | None:
    """95% interval of the AUROC over latents when the latents are resampled (pairs kept)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 2:
        return None
    rng = np.random.default_rng(seed)
    xs, ys = np.array(pairs).T
    stats = []
    for _ in range(n):
        i = rng.integers(0, len(pairs), len(pairs))
        stats.append(auroc([True] * len(i) + [False] * len(i), [*xs[i], *ys[i]]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 3), round(float(hi), 3)]


def _win_rate(a: list, b: list) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return None
    return round(float(np.mean([1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs])), 4)


def _classifier_diagnostics(scores: dict[int, LatentScore]) -> dict:
    """Yes-rate and mean P(yes) by kind of example, pooled over latents, and how many distinct
    P(yes) values occur (few values mean many ties in the AUROC)."""
    by: dict[str, list[tuple[bool, float | None]]] = {}  # kind -> (answered yes, P(yes))
    for s in scores.values():
        for p in s.predictions:
            if p.error is None:
                kind = "activating" if p.label else p.kind
                by.setdefault(kind, []).append((bool(p.prediction), p.probability))
    by_kind = {}
    for kind, xs in sorted(by.items()):
        probs = [q for _, q in xs if q is not None]
        by_kind[kind] = {
            "n": len(xs),
            "yes_rate": round(float(np.mean([y for y, _ in xs])), 4),
            "mean_p_yes": round(float(np.mean(probs)), 4) if probs else None,
        }
    distinct = {round(q, 6) for xs in by.values() for _, q in xs if q is not None}
    return {"by_kind": by_kind, "distinct_p_yes_values": len(distinct)}


def summarize_scores(args, work: Path, seconds: dict, n: int) -> dict:
    out = {}
    for label in clients(args):
        for scorer in _scorers_for(args, label):
            key = _key(scorer, label)
            if _base(scorer) in EXPLANATION_FREE:
                both = _scores(_out(work, label, scorer, FREE) / scorer / f"{CODER}.jsonl")
                files = {
                    "true": {i: x for i, x in both.items() if i < n},
                    "other": {i - n: x for i, x in both.items() if i >= n},
                    "random": {},
                }
            else:
                files = {
                    v: _scores(_out(work, label, scorer, v) / _base(scorer) / f"{CODER}.jsonl")
                    for v in VARIANTS
                }
            res = _summarize_one(_base(scorer), files, n)
            res |= {"seconds": seconds.get(key, {}), "judge": label}
            if _base(scorer) in EXPLANATION_FREE:
                res["control"] = "meaningless latents firing as often as each planted one"
            elif _base(scorer) in LLM_SCORERS:
                res["judge_check"] = judge_verdict(res, _base(scorer))
            out[key] = res
    return out


def keep_earlier_rows(res: dict, earlier: dict | None) -> list[str]:
    """Copy into `res` the scorer rows of an earlier results file that this invocation did not
    produce, when that file was made from the same latents and samples; returns the keys kept."""
    if not earlier or earlier.get("setup", {}).get("sample") != res["setup"]["sample"]:
        return []
    same = ("n_tokens", "definitions", "derangement", "n_wrong")
    if any(earlier["setup"].get(k) != res["setup"].get(k) for k in same):
        return []
    kept = [k for k in earlier.get("scorers", {}) if k not in res["scorers"]]
    for k in kept:
        res["scorers"][k] = {**earlier["scorers"][k], "from": earlier.get("date")}
    return kept


def _paired_difference(a: tuple[list, list], b: tuple[list, list], n: int = 2000, seed: int = 0):
    """AUROC true vs other of `b` minus that of `a` over the latents both scored, with a 95%
    paired percentile bootstrap interval (latents resampled)."""
    rows = [
        (x, y, u, v)
        for x, y, u, v in zip(a[0], a[1], b[0], b[1], strict=True)
        if None not in (x, y, u, v)
    ]
    if len(rows) < 2:
        return None
    arr = np.array(rows, dtype=float)

    def diff(idx) -> float:
        lab = [True] * len(idx) + [False] * len(idx)
        old = auroc(lab, [*arr[idx, 0], *arr[idx, 1]])
        new = auroc(lab, [*arr[idx, 2], *arr[idx, 3]])
        return float(new - old)  # type: ignore[operator]

    rng = np.random.default_rng(seed)
    boot = [diff(rng.integers(0, len(rows), len(rows))) for _ in range(n)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "difference": round(diff(np.arange(len(rows))), 4),
        "ci95": [round(float(lo), 3), round(float(hi), 3)],
        "n_latents": len(rows),
    }


def layout_comparison(res: dict) -> list[dict]:
    """For each judge scored in both layouts: the shared layout's AUROC true vs other against the
    separate layout's, per classifier, paired over latents."""
    out = []
    for key, r in res["scorers"].items():
        scorer, client = key.split(" | ")
        if not scorer.endswith("+shared"):
            continue
        old = res["scorers"].get(f"{_base(scorer)} | {client}")
        if old is None:
            continue
        a = (old["per_latent"]["true"], old["per_latent"]["other"])
        b = (r["per_latent"]["true"], r["per_latent"]["other"])
        out.append(
            {
                "scorer": _base(scorer),
                "judge": client,
                "separate": old["auroc_true_vs_other"],
                "separate_ci95": old["auroc_true_vs_other_ci95"],
                "shared": r["auroc_true_vs_other"],
                "shared_ci95": r["auroc_true_vs_other_ci95"],
                "shared_minus_separate": _paired_difference(a, b),
                "prompt_tokens": {"separate": old["prompt_tokens"], "shared": r["prompt_tokens"]},
                "seconds": {"separate": old.get("seconds"), "shared": r.get("seconds")},
            }
        )
    return out


def layout_section(res: dict) -> list[str]:
    rows = res.get("layout") or []
    if not rows:
        return []
    out = [
        "",
        "## Shared-prefix layout vs separate prompts",
        "",
        "Detection and fuzzing in the shared layout (`layout: shared`: one set of instructions, "
        "plain examples, the question after them, fuzzing's marked tokens listed after the text) "
        "against each scorer's own prompts, same latents, samples and judge. Difference: shared "
        "minus separate AUROC true vs other, with a 95% paired bootstrap interval over latents. "
        "Seconds: the shared layout's detection and fuzzing ran together (one time for both); each "
        "run's time is what the machine's load at the time allowed, so the seconds are no speed "
        "comparison (the token counts are).",
        "",
        "| scorer | judge | separate | shared | shared - separate [95%] | prompt tokens "
        "(true+other) separate / shared | seconds (true+other) separate / shared |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        d = r["shared_minus_separate"] or {}
        tok = {
            k: sum(v.get(x) or 0 for x in ("true", "other")) for k, v in r["prompt_tokens"].items()
        }
        sec = {
            k: sum((v or {}).get(x) or 0 for x in ("true", "other"))
            for k, v in r["seconds"].items()
        }
        out.append(
            f"| {r['scorer']} | {r['judge']} | {_f(r['separate'], 3)} {_ci(r['separate_ci95'])} | "
            f"{_f(r['shared'], 3)} {_ci(r['shared_ci95'])} | "
            f"{_f(d.get('difference'), 3)} {_ci(d.get('ci95'))} | "
            f"{tok['separate']:,} / {tok['shared']:,} | {sec['separate']:.0f} / {sec['shared']:.0f} |"
        )
    return out


def judge_verdict(res: dict, scorer: str) -> dict:
    """What a run's judge check (autointerp.score.judge_check) concludes from these latents, with
    another planted latent's explanation as the control, on the metric the check compares
    (detection's and fuzzing's per-latent AUROC from P(yes) where every score has one)."""
    from autointerp.score.judge_check import MIN_PAIRS, TRUSTED, paired_auroc

    per, metric = res["per_latent"], res["metric"]
    by_p = res.get("per_latent_p_yes_auroc")
    if by_p and all(x is not None for v in ("true", "other") for x in by_p[v]):
        per, metric = by_p, "auroc"
    pairs = [(a, b) for a, b in zip(per["true"], per["other"], strict=True) if None not in (a, b)]
    if len(pairs) < MIN_PAIRS:
        return {"verdict": "too few latents", "n": len(pairs)}
    a, b = zip(*pairs, strict=True)
    auc, lo, hi = paired_auroc(list(a), list(b))
    word = TRUSTED if lo > 0.5 else "worse than chance" if hi < 0.5 else "at chance"
    return {
        "metric": metric,
        "auroc": round(auc, 4),
        "ci95": [round(lo, 3), round(hi, 3)],
        "n": len(pairs),
        "verdict": word,
    }


def _per_latent(files: dict, metric: str, n: int) -> dict[str, list]:
    def value(s: LatentScore | None):
        if s is None or s.status != "ok" or s.metrics.get(metric) is None:
            return None
        return round(float(s.metrics[metric]), 4)

    return {v: [value(files[v].get(i)) for i in range(n)] for v in VARIANTS}


def _summarize_one(scorer: str, files: dict, n: int) -> dict:
    main = MAIN_METRIC[scorer]
    per = _per_latent(files, main, n)
    res = {
        "metric": main,
        "auroc_true_vs_other": _auroc_over_latents(per["true"], per["other"]),
        "auroc_true_vs_other_ci95": _bootstrap_ci(per["true"], per["other"]),
        "auroc_true_vs_random": _auroc_over_latents(per["true"], per["random"]),
        "win_rate_true_vs_other": _win_rate(per["true"], per["other"]),
        "mean_score_true_explanation": _mean(per["true"]),
        "mean_score_other_explanation": _mean(per["other"]),
        "mean_score_random_explanation": _mean(per["random"]),
        "per_latent": per,
        "failed_latents": {
            v: sum(s.status == "failed" for s in files[v].values()) for v in VARIANTS
        },
        "failed_examples": {
            v: sum(int(s.metrics.get("n_failed") or 0) for s in files[v].values()) for v in VARIANTS
        },
        "llm_calls": {v: sum(s.calls for s in files[v].values()) for v in VARIANTS},
        "prompt_tokens": {v: sum(s.prompt_tokens for s in files[v].values()) for v in VARIANTS},
    }
    if scorer in ("detection", "fuzzing"):  # P(yes) ranks examples even when the 0.5 cut is off
        pa = _per_latent(files, "auroc", n)
        res |= {
            "auroc_p_yes": {f"mean_{v}": _mean(pa[v]) for v in VARIANTS},
            "auroc_true_vs_other_by_p_yes_auroc": _auroc_over_latents(pa["true"], pa["other"]),
            "auroc_true_vs_other_by_p_yes_auroc_ci95": _bootstrap_ci(pa["true"], pa["other"]),
            "per_latent_p_yes_auroc": pa,
            "diagnostics": {v: _classifier_diagnostics(files[v]) for v in VARIANTS},
        }
    if scorer == "simulation":
        res["per_latent_auroc"] = _per_latent(files, "auroc", n)
        errors = [p.error or "" for f in files.values() for s in f.values() for p in s.predictions]
        res["examples_simulated"] = len(errors)
        res["answers_counting_1_2_3"] = sum("'[1, 2, 3, 4" in e for e in errors)
    res["errors"] = _errors(files)
    return res


def _errors(files: dict) -> dict[str, int]:
    """The most common reasons of failed latents and examples (numbers and quotes cut off)."""
    reasons: dict[str, int] = {}
    for scores in files.values():
        for s in scores.values():
            errs = [s.error] if s.status == "failed" else [p.error for p in s.predictions]
            for e in errs:
                if e:
                    key = re.sub(r"\d+", "N", e.split(":")[0])
                    reasons[key] = reasons.get(key, 0) + 1
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:3])


def latent_table(cache: ActivationCache, sample_path: Path) -> list[dict]:
    stats = cache.stats(CODER)
    records = {r.id.latent: r for r in read_records(sample_path)}
    rows = []
    for i, p in enumerate(PLANTED):
        r = records.get(i)
        rows.append(
            {
                "latent": i,
                "name": p.name,
                "explanation": p.explanation,
                "density": round(float(stats["density"][i]), 5),
                "n_activating_windows": r.n_activating_windows if r else 0,
                "status": r.status if r else "missing",
                "n_test": len(r.test) if r else 0,
                "n_negatives": len(r.negatives) if r else 0,
                "n_similar_negatives": sum(x.kind == "similar" for x in r.negatives) if r else 0,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------
# Report


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def scorer_table(res: dict) -> list[str]:
    lines = [
        "| scorer | judge / model | metric | AUROC true vs other | 95% interval | judge check "
        "| AUROC true vs random | true > other (latents) | mean true | mean other | mean random "
        "| failed (true/other/random) | seconds (true/other/random) |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for key, r in res["scorers"].items():
        scorer, client = key.split(" | ")
        failed = "/".join(str(r["failed_latents"][v]) for v in VARIANTS)
        secs = (
            f"{r['seconds'][FREE]} (planted and control latents together)"
            if FREE in r["seconds"]
            else "/".join(str(r["seconds"].get(v, "-")) for v in VARIANTS)
        )
        cells = [
            scorer,
            client,
            r["metric"],
            _f(r["auroc_true_vs_other"]),
            _ci(r["auroc_true_vs_other_ci95"]),
            _check(r.get("judge_check")),
            _f(r["auroc_true_vs_random"]),
            _f(r["win_rate_true_vs_other"], 2),
            _f(r["mean_score_true_explanation"]),
            _f(r["mean_score_other_explanation"]),
            _f(r["mean_score_random_explanation"]),
            failed,
            secs,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _check(v: dict | None) -> str:
    if not v:
        return "-"
    if "auroc" not in v:
        return v["verdict"]
    return f"{v['verdict']} ({v['metric']}: {v['auroc']:.2f} {_ci(v['ci95'])})"


def per_latent_table(res: dict) -> list[str]:
    keys = list(res["scorers"])
    head = "| latent | density | test / negatives | " + " | ".join(
        f"{k.split(' | ')[0]} ({k.split(' | ')[1]})" for k in keys
    )
    lines = [head + " |", "|---|---:|---|" + "---:|" * len(keys)]
    for row in res["latents"]:
        i = row["latent"]
        cells = [
            f"{i} `{row['name']}`",
            f"{row['density']:.4f}",
            f"{row['n_test']} / {row['n_negatives']} ({row['n_similar_negatives']} similar)",
        ]
        for k in keys:
            per = res["scorers"][k]["per_latent"]
            cells.append(
                f"{_f(per['true'][i], 2)} / {_f(per['other'][i], 2)} / {_f(per['random'][i], 2)}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def classifier_section(res: dict) -> list[str]:
    lines = [
        "| scorer | client | explanation | AUROC from P(yes), mean over latents | yes-rate: "
        "activating | random | similar | wrong tokens marked | mean P(yes): activating | "
        "non-activating |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in res["scorers"].items():
        if "diagnostics" not in r:
            continue
        scorer, client = key.split(" | ")
        for v in VARIANTS:
            d = r["diagnostics"][v]["by_kind"]
            neg = [x for k, x in d.items() if k != "activating"]
            n_neg = sum(x["n"] for x in neg)
            p_neg = (
                sum(x["mean_p_yes"] * x["n"] for x in neg if x["mean_p_yes"] is not None) / n_neg
                if n_neg
                else None
            )
            cells = [
                scorer,
                client,
                v,
                _f(r["auroc_p_yes"][f"mean_{v}"]),
                *(
                    _f(d.get(k, {}).get("yes_rate"), 2)
                    for k in ("activating", "random", "similar", "wrong")
                ),
                _f(d.get("activating", {}).get("mean_p_yes")),
                _f(p_neg),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def findings(res: dict) -> list[str]:
    out = []
    for key, r in res["scorers"].items():
        scorer, client = key.split(" | ")
        ci = r.get("auroc_true_vs_other_ci95")
        failed = sum(r["failed_latents"].values())
        if r["auroc_true_vs_other"] is None:
            out.append(
                f"- {scorer} ({client}): no comparison: {failed} of {3 * len(res['latents'])} "
                "latent scores failed (see below)."
            )
            continue
        if r.get("control"):  # explanation-free: planted latents against meaningless ones
            out.append(
                f"- {scorer} ({client}): {_separates(r['auroc_true_vs_other'])} planted and "
                f"control latents: AUROC {_f(r['auroc_true_vs_other'], 2)}"
                + (f" (95% bootstrap interval {ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
                + f"; mean {r['metric']} planted {_f(r['mean_score_true_explanation'])}, "
                f"control {_f(r['mean_score_other_explanation'])}."
            )
            continue
        out.append(
            f"- {scorer} ({client}): {_separates(r['auroc_true_vs_other'])} true and other "
            f"explanations: AUROC {_f(r['auroc_true_vs_other'], 2)}"
            + (f" (95% bootstrap interval over latents {ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
            + f"; the true explanation wins on {_f(r['win_rate_true_vs_other'], 2)} of latents; "
            f"mean {r['metric']} true {_f(r['mean_score_true_explanation'])}, other "
            f"{_f(r['mean_score_other_explanation'])}, random words "
            f"{_f(r['mean_score_random_explanation'])}"
            + (f"; {failed} of {3 * len(res['latents'])} latent scores failed." if failed else ".")
        )
    return out


def _separates(auc: float | None) -> str:
    """How a metric separates true from other explanations, as a verb phrase."""
    if auc is None:
        return "cannot be compared on"
    if auc >= 0.8:
        return "clearly separates"
    if auc >= 0.6:
        return "weakly separates"
    return "does not separate" if auc > 0.4 else "reverses"


def _yes_rates(r: dict, variant: str) -> tuple[float | None, float | None]:
    d = r["diagnostics"][variant]["by_kind"]
    act = d.get("activating", {}).get("yes_rate")
    neg = [x for k, x in d.items() if k != "activating"]
    n_neg = sum(x["n"] for x in neg)
    return act, (sum(x["yes_rate"] * x["n"] for x in neg) / n_neg if n_neg else None)


def _range(xs: list[float]) -> str:
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def capabilities(res: dict) -> list[str]:
    """What the local model does as a detection/fuzzing/simulation scorer, from the numbers."""
    out = []
    for key, r in res["scorers"].items():
        scorer, client = key.split(" | ")
        if client != LOCAL and scorer != "surprisal":
            continue
        if "diagnostics" in r:
            rates = {v: _yes_rates(r, v) for v in VARIANTS}
            per = [x for v in VARIANTS for x in r["per_latent"][v] if x is not None]
            distinct = r["diagnostics"]["true"]["distinct_p_yes_values"]
            n_true = sum(x["n"] for x in r["diagnostics"]["true"]["by_kind"].values())
            out.append(
                f"- {scorer}: it answers yes on {_pct(rates['true'][0])} of activating and "
                f"{_pct(rates['true'][1])} of non-activating examples with the true explanation "
                f"({_pct(rates['other'][0])} / {_pct(rates['other'][1])} with another latent's, "
                f"{_pct(rates['random'][0])} / {_pct(rates['random'][1])} with random words). "
                f"Balanced accuracy is {_range(per)} over every latent and explanation, so "
                f"the main metric {_separates(r['auroc_true_vs_other'])} true and other "
                f"explanations (AUROC {_f(r['auroc_true_vs_other'], 2)}). Its P(yes) ranks "
                "activating above non-activating examples at a mean per-latent AUROC of "
                f"{_f(r['auroc_p_yes']['mean_true'])} with the true explanation, "
                f"{_f(r['auroc_p_yes']['mean_other'])} with another latent's and "
                f"{_f(r['auroc_p_yes']['mean_random'])} with random words; that AUROC "
                f"{_separates(r['auroc_true_vs_other_by_p_yes_auroc'])} true and other "
                f"explanations (AUROC over latents "
                f"{_f(r['auroc_true_vs_other_by_p_yes_auroc'], 2)}). Every answer "
                f"was usable ({sum(r['failed_examples'].values())} failed examples), but only "
                f"{distinct} distinct P(yes) values occur in {n_true} answers: the local backend "
                "reads P(yes) from bf16 logits, so log-odds come in steps of 1/8 and many "
                "examples tie."
            )
        elif scorer == "simulation":
            failed = r["failed_latents"]
            err = next(iter(r["errors"]), "none")
            counting = r.get("answers_counting_1_2_3", 0)
            out.append(
                f"- simulation: {sum(failed.values())} of {3 * len(res['latents'])} latent "
                f"scores failed (true/other/random: {failed['true']}/{failed['other']}/"
                f"{failed['random']}); most common reason: '{err}'. In {counting} of "
                f"{r.get('examples_simulated', 0)} simulated examples the model, asked for one "
                "activation (0-10) per token, wrote the token numbers (1, 2, 3, ...) instead; "
                "such a list of 32 values does not even fit the answer budget (3 tokens per "
                "value, while SmolLM2 spends 4 on a number above 9). Mean correlation where "
                f"scored: {_f(r['mean_score_true_explanation'])} (true), "
                f"{_f(r['mean_score_other_explanation'])} (other)."
            )
        elif scorer == "surprisal":
            out.append(
                f"- surprisal (the 135M as a reader, not a judge): mean AUROC "
                f"{_f(r['mean_score_true_explanation'])} with the true explanation, "
                f"{_f(r['mean_score_other_explanation'])} with another latent's, "
                f"{_f(r['mean_score_random_explanation'])} with random words; it "
                f"{_separates(r['auroc_true_vs_other'])} true "
                f"and other explanations (AUROC {_f(r['auroc_true_vs_other'], 2)})."
            )
    return out


def render_markdown(res: dict) -> str:
    s = res["setup"]
    head = [
        "# Planted latents: true vs other vs random explanations",
        "",
        f"{len(res['latents'])} latents defined over the tokens of {s['n_tokens']:,} tokens of the "
        "default corpus (bundled Wikipedia leads), stored as a coder in a copy of a real cache and "
        f"sampled like real latents ({s['sample']['n_test']} test examples across "
        f"{s['sample']['n_quantiles']} activation quantiles, up to "
        f"{s['sample']['n_random_negatives']} random + {s['sample']['n_similar_negatives']} "
        f"similar non-activating examples by co-occurrence, {s['sample']['example_len']}-token "
        f"windows). {res['date']}, {res['machine']['cores']} CPU cores, no GPU.",
        "",
        f"Command: `{res['command']}`. Scoring time, summed over scorers, clients and "
        f"explanation files: {res['seconds_scoring'] / 60:.1f} min; this invocation "
        f"{res['seconds_total'] / 60:.1f} min (it resumes: finished scores are read, not redone).",
        "",
        "Each latent is scored with three explanations: its own (true), another planted latent's "
        "(other; a fixed derangement) and four random vocabulary words (random). 'AUROC true vs "
        "other' is the AUROC over latents of the scorer's main metric, true-explanation scores "
        "against other-explanation scores (1.0: every true explanation outscores every wrong one; "
        "0.5: chance). 'true > other' is the share of latents whose true explanation beats the "
        "other one (ties count half). The intervention scorer is not run: it steers the latent's decoder direction, "
        "and a planted latent has none.",
        "",
        "The explanation-free scorers (intruder, example-embedding) see no explanation, so their "
        "'other' is a control latent instead: for each planted latent, one that fires on a fixed "
        "pseudo-random set of tokens as often as it does (a latent that means nothing), sampled "
        "and scored the same way; their 'AUROC true vs other' is planted against control latents. "
        "'judge check' is what a run's judge check concludes from the true and other scores (the "
        "control is another latent's explanation): `discriminates` when the 95% interval of the "
        "AUROC lies above 0.5. The interval is a paired percentile bootstrap over latents.",
        "",
        "## Scores",
        "",
    ]
    latents = [
        "| latent | fires on (true explanation) | density | activating windows |",
        "|---|---|---:|---:|",
    ] + [
        f"| {r['latent']} `{r['name']}` | {r['explanation']} | {r['density']:.4f} | "
        f"{r['n_activating_windows']:,} |"
        for r in res["latents"]
    ]
    body = (
        scorer_table(res)
        + ["", "## Findings", ""]
        + findings(res)
        + layout_section(res)
        + ["", "## What the local 135M model can and cannot do as a scorer", ""]
        + capabilities(res)
        + ["", "## Detection and fuzzing: how the classifier answers", ""]
        + classifier_section(res)
        + [
            "",
            "Yes-rate: share of examples answered yes (P(1) > 0.5), pooled over latents; 'wrong "
            "tokens marked' are fuzzing's activating examples with non-firing tokens marked.",
            "",
            "## Per latent: main metric, true / other / random",
            "",
        ]
        + per_latent_table(res)
        + ["", "## The planted latents", ""]
        + latents
        + ["", "## Notes", ""]
        + notes(res)
        + [
            f"- Rows kept from the earlier results file (same latents and samples; their date is "
            f"in the JSON's `from`): {', '.join(res['kept_from_earlier'])}."
            for _ in [0]
            if res.get("kept_from_earlier")
        ]
    )
    return "\n".join(head + body) + "\n"


def notes(res: dict) -> list[str]:
    s = res["setup"]
    return [
        "- Activation values: 10 x a weight of the token type (0.3-1) x a jitter of the occurrence "
        "(0.5-1), both fixed hashes, where the definition matches; so the quantiles differ in "
        "value but not in meaning.",
        "- Definitions (regexes over a window's decoded tokens; a token fires if it overlaps a "
        "match): "
        + "; ".join(f"`{p['name']}`: `{p['pattern'][:60]}`" for p in s["definitions"])
        + ".",
        f"- Other explanation of latent i: the true explanation of latent {s['derangement']} "
        "(in latent order). Random explanations: "
        + "; ".join(f"{i}: '{t}'" for i, t in enumerate(s["random_explanations"]))
        + ".",
        f"- Client settings: detection and fuzzing with autointerp's defaults for the local "
        "backend (one example per prompt, answer prefilled with `[`, P(1) vs P(0) read from the "
        f"logprobs of one token); fuzzing marks {s['n_wrong']} activating examples with wrong "
        f"tokens as extra negatives. Simulation: {s['sim_activating']} activating + "
        f"{s['sim_negative']} non-activating examples per latent. Surprisal: the packaged "
        "SmolLM2-135M's loss. Embedding: the packaged all-MiniLM-L6-v2.",
        "- Seconds per scorer and explanation file: wall time of the run that wrote the scores, "
        "on a 2-core machine shared with other work (so they are upper bounds), model loading "
        "included for the first scorer that needs a model.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".",
    ] + (
        []
        if any(k.split(" | ")[1].startswith("openai:") for k in res["scorers"])
        else [
            "- Only the local `transformers` client was run; `--openai-url` adds an "
            "OpenAI-compatible server as a second client (e.g. llama.cpp serving the same GGUF "
            "file: there autointerp's defaults put 5 examples in a prompt and do not prefill)."
        ]
    )


# ------------------------------------------------------------------------------------------------
# Main


def _signature(args, latents=PLANTED, min_examples: int = 20) -> str:
    """What the derived folders depend on; a change wipes them (the real cache is kept)."""
    data = {
        "planted": [(p.name, p.explanation, p.pattern, p.flags) for p in latents],
        "tokens": args.tokens,
        "sample": sample_config(args, min_examples).model_dump(mode="json"),
        "seed": args.seed,
        "version": 2,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def sample_config(args, min_examples: int = 20) -> SampleConfig:
    return SampleConfig(
        example_len=args.example_len,
        n_train=1,
        n_test=args.n_test,
        n_quantiles=10,
        n_random_negatives=args.n_negatives,
        n_similar_negatives=args.n_negatives,
        n_explain_negatives=0,
        similar_by="cooccurrence",
        n_neighbours=3,
        min_examples=min_examples,
        seed=args.seed,
    )


def prepare(
    args, work: Path, tokenizer, latents=PLANTED, min_examples: int = 20
) -> tuple[ActivationCache, Path]:
    """The planted cache and its samples, rebuilt when the definitions or settings changed."""
    sig_path = work / "signature.txt"
    sig = _signature(args, latents, min_examples)
    if not sig_path.exists() or sig_path.read_text() != sig:
        for sub in ("planted_cache", "sample", "explanations", "scores"):
            shutil.rmtree(work / sub, ignore_errors=True)
    real = real_cache(work / "cache", args.tokens)
    if (work / "planted_cache" / "stats" / f"{CODER}.npz").exists():
        cache = ActivationCache(work / "planted_cache")
    else:
        log.info("adding the planted coder to a copy of the cache")
        cache = add_planted(real, work / "planted_cache", tokenizer, latents)
    scfg = sample_config(args, min_examples)
    write_config(work / "sample", scfg)
    path = sample_coder(cache, CODER, scfg, work / "sample")
    sig_path.write_text(sig)
    return cache, path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.planted", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=200_000, help="tokens of the default corpus")
    p.add_argument("--n-test", type=int, default=20, help="activating test examples per latent")
    p.add_argument(
        "--n-negatives", type=int, default=10, help="random and (as many) similar negatives"
    )
    p.add_argument("--n-wrong", type=int, default=10, help="fuzzing: wrong-token negatives")
    p.add_argument("--sim-activating", type=int, default=6, help="simulation: activating examples")
    p.add_argument(
        "--sim-negative", type=int, default=3, help="simulation: non-activating examples"
    )
    p.add_argument("--intruder-prompts", type=int, default=5, help="intruder: prompts per latent")
    p.add_argument("--example-len", type=int, default=32)
    p.add_argument("--scorers", nargs="+", default=list(ALL_SCORERS), choices=ALL_SCORERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--openai-url", help="also score with this OpenAI-compatible server")
    p.add_argument("--openai-model", default="smollm2", help="model id for --openai-url")
    p.add_argument(
        "--openai-scorers",
        nargs="+",
        default=["detection", "fuzzing"],
        choices=LLM_SCORERS,
        help="LLM scorers run with --openai-url",
    )
    p.add_argument(
        "--llamacpp",
        nargs="+",
        default=[],
        help="also judge with these llama.cpp models (a known name such as qwen2.5-coder-1.5b, "
        "or a .gguf file)",
    )
    p.add_argument(
        "--llamacpp-scorers",
        nargs="+",
        default=["detection", "fuzzing", "intruder"],
        choices=[*LLM_SCORERS, *CALIBRATED, *SHARED],
        help="scorers run with each --llamacpp model (+cal: the calibrated judge; +shared: the "
        "shared-prefix layout, detection and fuzzing scored together)",
    )
    p.add_argument(
        "--judge-variants",
        nargs="+",
        default=["true", "other"],
        choices=VARIANTS,
        help="explanations the --llamacpp and --openai judges score",
    )
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: auto)")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="write the results from the scores already in the work folder (score nothing)",
    )
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "planted")
    p.add_argument("--results", type=Path, default=REPO / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from autointerp.subject import load_tokenizer

    start = time.perf_counter()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(SubjectConfig())
    cache, sample_path = prepare(args, work, tokenizer)
    expl = write_explanations(work / "explanations", tokenizer, args.seed)
    if args.summarize_only:  # what earlier invocations scored, nothing new
        timing = work / "scores" / "seconds.json"
        seconds = json.loads(timing.read_text()) if timing.exists() else {}
    else:
        seconds = run_scoring(args, cache, sample_path, expl, work)
    n = len(PLANTED)
    res = {
        "scorers": summarize_scores(args, work, seconds, n),
        "latents": latent_table(cache, sample_path),
        "setup": {
            "n_tokens": cache.n_tokens,
            "sample": sample_config(args).model_dump(mode="json"),
            "definitions": [
                {"name": p.name, "explanation": p.explanation, "pattern": p.pattern}
                for p in PLANTED
            ],
            "derangement": derangement(n, args.seed),
            "random_explanations": [e.text for e in expl["random"].values()],
            "n_wrong": args.n_wrong,
            "intruder_prompts": args.intruder_prompts,
            "sim_activating": args.sim_activating,
            "sim_negative": args.sim_negative,
            "intervention": "not run: planted latents have no decoder direction to steer",
        },
        "seconds_total": round(time.perf_counter() - start, 1),
        "seconds_scoring": round(sum(x for v in seconds.values() for x in v.values()), 1),
        "command": " ".join(["python -m eval.planted", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "versions": common.versions(
            ("torch", "transformers", "sentence-transformers", "autointerp")
        ),
        "machine": {"cores": os.cpu_count()},
    }
    earlier = args.results / "planted.json"
    kept = keep_earlier_rows(res, json.loads(earlier.read_text()) if earlier.exists() else None)
    if kept:
        res["kept_from_earlier"] = kept
    res["layout"] = layout_comparison(res)
    write_results(res, args.results)
    print("\n".join(scorer_table(res) + layout_section(res)))
    return res


def write_results(res: dict, folder: Path) -> None:
    common.write_results(res, folder, "planted", render_markdown)


if __name__ == "__main__":
    main()
