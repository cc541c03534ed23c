"""Similarity of two coders through their explanations (Paulo et al. 2024, "Automatically
interpreting millions of features in LLMs", who match SAE latents of nearby layers this way).

Every successful explanation of both coders is embedded with the packaged all-MiniLM-L6-v2; the
latents are matched one-to-one by the Hungarian algorithm on the cosine similarity matrix
(`scipy.optimize.linear_sum_assignment(..., maximize=True)`). The distribution of the matched
similarities is reported against a baseline: the same statistics for a random one-to-one matching
(fixed seed). Two coders that learned the same concepts have a matched distribution far above it.

Usage: `autointerp similarity RUN_A CODER_A RUN_B CODER_B --out OUT`. From Python:

    from autointerp.similarity import coder_similarity
    result = coder_similarity(Path("runs/a"), "layers.15", Path("runs/a"), "neurons.15", Path("sim"))

`coder_similarity(run_a: Path, coder_a: str, run_b: Path, coder_b: str, out: Path | None, *,
top: int = 20, max_latents: int | None = 5000, seed: int = 0) -> dict` returns the result and, with
`out`, writes it as JSON with a histogram PNG: `out` ending in `.json` names the JSON file (the PNG
goes beside it with the same stem), any other `out` is a folder that gets `similarity.json` and
`similarity.png`. A coder with more than `max_latents` explained latents is subsampled (fixed seed) so
that the dense matrix and the cubic matching stay small; the result says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from autointerp.errors import RunError
from autointerp.report import open_run
from autointerp.runfolder import RunFolder

log = logging.getLogger(__name__)

QUANTILES = {"q10": 10, "q25": 25, "q75": 75, "q90": 90}


def explained(run: RunFolder, coder: str) -> dict[int, str]:
    """Latent -> explanation text, for the coder's successful, non-empty explanations."""
    run.coder(coder)  # RunError naming the available coders
    out = {
        latent: e.text.strip()
        for latent, e in sorted(run.explanations(coder).items())
        if e.text is not None and e.text.strip()
    }
    if not out:
        raise RunError(f"coder {coder!r} in {run.root} has no successful explanations")
    return out


def _subsample(texts: dict[int, str], limit: int | None, seed: int) -> dict[int, str]:
    if limit is None or len(texts) <= limit:
        return texts
    keep = np.random.default_rng(seed).choice(sorted(texts), size=limit, replace=False)
    return {int(k): texts[int(k)] for k in sorted(keep)}


def embed(texts: list[str]) -> np.ndarray:
    """Unit-norm MiniLM embeddings of `texts` (the packaged model, as the embedding scorer uses)."""
    from autointerp.embed import load_embedder

    model = load_embedder()
    emb = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def stats(values: np.ndarray) -> dict[str, float | int]:
    """n, mean, median and the q10..q90 percentiles of some similarities."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, float | int] = {
        "n": len(v),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
    }
    return out | {k: float(np.percentile(v, p)) for k, p in QUANTILES.items()}


def random_matching(n_a: int, n_b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random one-to-one matching of min(n_a, n_b) pairs (rows, cols)."""
    rng = np.random.default_rng(seed)
    n = min(n_a, n_b)
    return rng.permutation(n_a)[:n], rng.permutation(n_b)[:n]


def match(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching with the largest total similarity (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(sim, maximize=True)


def coder_similarity(
    run_a: Path,
    coder_a: str,
    run_b: Path,
    coder_b: str,
    out: Path | None = None,
    *,
    top: int = 20,
    max_latents: int | None = 5000,
    seed: int = 0,
) -> dict:
    """Match two coders' latents through their explanations; see the module docstring."""
    ra, rb = open_run(Path(run_a)), open_run(Path(run_b))
    all_a, all_b = explained(ra, coder_a), explained(rb, coder_b)
    ta, tb = _subsample(all_a, max_latents, seed), _subsample(all_b, max_latents, seed)
    la, lb = list(ta), list(tb)
    ea, eb = embed(list(ta.values())), embed(list(tb.values()))
    sim = np.clip(ea @ eb.T, -1.0, 1.0)
    rows, cols = match(sim)
    matched = sim[rows, cols]
    rr, rc = random_matching(len(la), len(lb), seed)
    order = np.argsort(-matched, kind="stable")[:top]
    result = {
        "a": _side(ra, coder_a, all_a, ta),
        "b": _side(rb, coder_b, all_b, tb),
        "model": "all-MiniLM-L6-v2",
        "matched": stats(matched),
        "random": stats(sim[rr, rc]),
        "seed": seed,
        "top_pairs": [
            {
                "latent_a": la[rows[i]],
                "latent_b": lb[cols[i]],
                "similarity": float(matched[i]),
                "explanation_a": ta[la[rows[i]]],
                "explanation_b": tb[lb[cols[i]]],
            }
            for i in order
        ],
    }
    if out is not None:
        result["files"] = write(result, matched, sim[rr, rc], Path(out))
    return result


def _side(run: RunFolder, coder: str, all_texts: dict, used: dict) -> dict:
    return {
        "run": str(run.root),
        "coder": coder,
        "hookpoint": run.coders[coder].get("hookpoint"),
        "explained": len(all_texts),
        "used": len(used),
        "subsampled": len(used) < len(all_texts),
    }


def write(result: dict, matched: np.ndarray, baseline: np.ndarray, out: Path) -> dict[str, str]:
    """Write the JSON and the histogram PNG; return their paths."""
    if out.suffix == ".json":
        json_path, png_path = out, out.with_suffix(".png")
    else:
        json_path, png_path = out / "similarity.json", out / "similarity.png"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    files = {"json": str(json_path), "png": str(png_path)}
    histogram(matched, baseline, result, png_path)
    json_path.write_text(json.dumps(result | {"files": files}, indent=2) + "\n")
    return files


def histogram(matched: np.ndarray, baseline: np.ndarray, result: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.8), dpi=100)
    ax = fig.subplots()
    lo = float(min(matched.min(), baseline.min(), 0.0))
    bins = np.linspace(lo, 1.0, 41)
    # matplotlib's stubs type `bins` as Sequence[float]; its docs and code take an array
    ax.hist(baseline, bins=bins, alpha=0.5, color="grey", label="random matching")  # type: ignore[arg-type]
    ax.hist(matched, bins=bins, alpha=0.7, color="C0", label="Hungarian matching")  # type: ignore[arg-type]
    a, b = result["a"], result["b"]
    ax.set_title(f"{a['coder']} vs {b['coder']}: explanation similarity of matched latents")
    ax.set_xlabel("cosine similarity (all-MiniLM-L6-v2)")
    ax.set_ylabel("matched pairs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
