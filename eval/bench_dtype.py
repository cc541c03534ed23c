"""What `dtype: auto` picks on this machine, and whether it picked the faster one.

Loads the embedded SmolLM2-135M once per dtype (bfloat16, float32) on the CPU and times the cache's
forward pass (up to layer 15, no LM head) over the same windows of the embedded corpus, interleaving
the dtypes round by round so that both see the same load on a shared machine. Writes:
- results/bench_dtype.json: the CPU's bf16 flags, what `auto` chose and why, tokens/s per dtype (the
  median of the rounds), the fp32/bf16 ratio, the load average before and after;
- results/bench_dtype.md: the same as a table.

Usage: python -m eval.bench_dtype [--rounds 5] [--seqs 32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from autointerp.config import CorpusConfig, SubjectConfig
from autointerp.corpus import TokenWindows
from autointerp.subject import Site, cpu_flags, load_subject, resolve_dtype

RESULTS = Path(__file__).resolve().parents[1] / "results"
DTYPES = ("bfloat16", "float32")


def _windows(tokenizer, n_seqs: int, ctx_len: int) -> torch.Tensor:
    cfg = CorpusConfig(n_tokens=n_seqs * ctx_len, ctx_len=ctx_len)
    rows = list(islice(TokenWindows(cfg, tokenizer), n_seqs))
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


def bench(rounds: int, n_seqs: int, batch: int, ctx_len: int) -> dict:
    subjects = {d: load_subject(SubjectConfig(dtype=d, device="cpu")) for d in DTYPES}
    ids = _windows(subjects["float32"].tokenizer, n_seqs, ctx_len)
    site = Site.parse("layers.15")
    for s in subjects.values():  # warm-up
        s.activations(ids[:batch], [site])
    seconds: dict[str, list[float]] = {d: [] for d in DTYPES}
    for _ in range(rounds):
        for d, s in subjects.items():
            t0 = time.perf_counter()
            for i in range(0, len(ids), batch):
                s.activations(ids[i : i + batch], [site])
            seconds[d].append(time.perf_counter() - t0)
    tokens = ids.numel()
    rate = {d: tokens / statistics.median(v) for d, v in seconds.items()}
    chosen, why = resolve_dtype("auto", "cpu")
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f in ("avx2", "avx512f", "amx_tile"))
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "threads": torch.get_num_threads(),
        "auto_chose": chosen,
        "auto_reason": why,
        "tokens_per_round": tokens,
        "rounds": rounds,
        "tokens_per_s": {d: round(r, 1) for d, r in rate.items()},
        "fp32_over_bf16": round(rate["float32"] / rate["bfloat16"], 3),
        "auto_is_faster": chosen == max(rate, key=rate.get),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seqs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    out = bench(args.rounds, args.seqs, args.batch, args.ctx_len)
    out["load_before"], out["load_after"] = round(load_before, 2), round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_dtype.json").write_text(json.dumps(out, indent=2) + "\n")
    rows = "\n".join(f"| {d} | {r:,.0f} |" for d, r in out["tokens_per_s"].items())
    (RESULTS / "bench_dtype.md").write_text(
        "# dtype: auto on this machine\n\n"
        f"`python -m eval.bench_dtype` ({out['rounds']} interleaved rounds of "
        f"{out['tokens_per_round']:,} tokens, forward pass to layers.15 of SmolLM2-135M, "
        f"{out['threads']} threads; load average {out['load_before']} before, "
        f"{out['load_after']} after).\n\n"
        f"CPU flags: {', '.join(out['cpu_flags'])}. `auto` chose **{out['auto_chose']}**: "
        f"{out['auto_reason']}.\n\n| dtype | tokens/s (median) |\n|---|---|\n{rows}\n\n"
        f"fp32 / bf16 speed: {out['fp32_over_bf16']}x; auto picked the faster dtype: "
        f"{out['auto_is_faster']}.\n"
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
