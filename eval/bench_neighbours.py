"""Decoder-neighbour search at scale: exact (tiled W W^T) and FAISS, time and recall@10.

Usage: `python -m eval.bench_neighbours [--exact 65536] [--faiss 65536,262144] [--queries 2000]`
writes results/bench_neighbours.json (and prints it).

Decoder rows are 576-wide (SmolLM2's d_model), in two kinds:
- `random`: isotropic Gaussian rows, the worst case for an approximate index (every latent's nearest
  are at the noise floor, cosine ~0.17, barely above the rest);
- `grouped`: rows around n/32 shared directions (cosine ~0.5 within a group), the structure of a
  wide SAE whose features split, where the neighbours are worth finding.
Recall@10 of FAISS is measured against an exact search of `--queries` random latents over all rows.
CPU seconds are the process's (both threads); the one-minute load average is recorded beside them,
since the machine's cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.neighbours import exact_neighbours, faiss_neighbours

D = 576


def rows(n: int, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D), dtype=np.float32)
    if kind == "grouped":
        x += rng.standard_normal((n // 32, D), dtype=np.float32)[np.arange(n) % (n // 32)]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(f):
    cpu, wall, load = time.process_time(), time.perf_counter(), os.getloadavg()[0]
    out = f()
    return out, {
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "load_1min": round(load, 2),
    }


def recall(x: np.ndarray, found: np.ndarray, queries: int) -> float:
    q = np.sort(np.random.default_rng(1).choice(len(x), size=min(queries, len(x)), replace=False))
    sims = torch.from_numpy(x[q]) @ torch.from_numpy(x).T
    sims[torch.arange(len(q)), torch.from_numpy(q)] = -torch.inf
    truth = sims.topk(10, dim=1).indices.numpy()
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found[q], truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exact", default="65536", help="sizes for the exact search")
    ap.add_argument("--faiss", default="65536,262144", help="sizes for FAISS")
    ap.add_argument("--kinds", default="random,grouped")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", default="results/bench_neighbours.json")
    args = ap.parse_args()
    sizes = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    out: dict = {"threads": torch.get_num_threads(), "exact": [], "faiss": []}
    for n in sizes(args.exact):
        x = torch.from_numpy(rows(n, "random"))
        _, t = timed(lambda x=x: exact_neighbours(x, 10))
        out["exact"].append({"latents": n, **t})
        print(out["exact"][-1], flush=True)
    for n in sizes(args.faiss):
        for kind in args.kinds.split(","):
            x = rows(n, kind)
            found, t = timed(lambda x=x: faiss_neighbours(x, 10))
            out["faiss"].append(
                {"latents": n, "rows": kind, **t, "recall@10": recall(x, found, args.queries)}
            )
            print(out["faiss"][-1], flush=True)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
