"""Benchmark the activation cache against the width of the sparse coder.

Two TopK coders in the sparsify layout with random weights (d_in 576, k 32; 4,608 and 65,536
latents by default) are written to a temporary folder, and `build_cache` runs each of them at
`layers.15` of the default subject model (SmolLM2-135M-Instruct, `dtype: auto`) over the first N
tokens of the default corpus, tokenized once, with the model loaded once. Per coder it records the
cache's tokens/s, that rate times the encoder's FLOPs per token (2 x d_in x n_latents), and the
peak resident memory. The goal (issue 12): the widest coder's tokens/s x FLOPs within 1.5x of the
narrowest one's. A bare forward pass to the hookpoint is timed too, so that the encoder's own share
of each cache run (its time per token above the forward's) shows as GFLOP/s.

One batch of activations is also encoded by the widest coder alone, in steps of `encode_budget`
bytes (the default) and whole (one product, as before steps existed), to show what the steps save
in peak memory.

Before each timed phase the benchmark waits (up to --quiet-wait seconds) until other processes
leave the CPU idle, and records the CPU they used meanwhile and the load average. Writes
results/bench_encoder.md and results/bench_encoder.json. `measure(...)` returns the same dict, for
other benchmarks (eval/bench_scale.py) to call.

Usage:
    python -m eval.bench_encoder [--tokens 4096] [--latents 4608 65536] [--batch-size 16]
                                 [--quiet-wait 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from safetensors.torch import save_file

from autointerp import cache as cache_mod
from autointerp.coders import load_coder
from autointerp.config import CacheConfig, CoderConfig, CorpusConfig, SubjectConfig
from autointerp.corpus import TokenWindows, iter_windows
from autointerp.subject import Site, Subject, load_subject, resolve_dtype
from eval import common
from eval.bench_cache import BUSY_CORES, VERSIONS, Monitor, wait_quiet

log = logging.getLogger("bench_encoder")
REPO = Path(__file__).resolve().parents[1]
HOOKPOINT = "layers.15"
D_IN = 576  # SmolLM2-135M's residual stream
K = 32
TARGET_RATIO = 1.5  # narrowest coder's tokens/s x FLOPs / widest coder's, at most
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def write_coder(folder: Path, n_latents: int, d_in: int = D_IN, k: int = K, seed: int = 0) -> Path:
    """A TopK coder with random weights in the sparsify layout (`sae.safetensors` + `cfg.json`)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(n_latents, d_in, generator=g) / d_in**0.5
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        "encoder.weight": enc,
        "encoder.bias": torch.zeros(n_latents),
        "W_dec": enc / enc.norm(dim=1, keepdim=True),
        "b_dec": torch.zeros(d_in),
    }
    save_file(weights, folder / "sae.safetensors")
    cfg = {"activation": "topk", "num_latents": n_latents, "k": k, "d_in": d_in}
    cfg |= {"expansion_factor": 1, "normalize_decoder": True, "multi_topk": False}
    cfg |= {"skip_connection": False, "transcode": False}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def cpu_flags() -> dict[str, bool]:
    """The CPU flags that decide the dtype `auto` picks (bf16 needs native support)."""
    try:
        line = next(
            x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")
        )
    except (OSError, StopIteration):
        return {}
    have = set(line.split(":", 1)[1].split())
    return {f: f in have for f in CPU_FLAGS}


def _phase(quiet_wait: float, fn) -> dict:
    """Run `fn` when the CPU is quiet; its seconds, peak RSS (above the start and absolute), the
    CPU other processes used meanwhile, and the load average after it."""
    wait_quiet(quiet_wait)
    with Monitor() as mem:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    if mem.other_cores > BUSY_CORES:
        log.warning("  other processes used %.2f CPU cores meanwhile", mem.other_cores)
    return {
        "seconds": round(seconds, 3),
        "peak_rss_increase_mib": round(mem.increase_mb, 1),
        "peak_rss_mib": round(mem.peak_kb / 1024, 1),
        "other_processes_cpu_cores": round(mem.other_cores, 2),
        "loadavg": os.getloadavg()[0],
    }


def _forward(subject: Subject, windows: list[np.ndarray], batch_size: int) -> None:
    site = Site.parse(HOOKPOINT)
    for i in range(0, len(windows), batch_size):
        subject.activations(torch.from_numpy(np.stack(windows[i : i + batch_size])), [site])


class _Given(TokenWindows):
    """Windows tokenized once beforehand, in the place of the corpus the cache would read."""

    def __init__(self, cfg: CorpusConfig, tokenizer, windows: list[np.ndarray]):
        super().__init__(cfg, tokenizer)
        self.windows = windows

    def __iter__(self):
        return iter(self.windows)


def _cache(subject, windows, coder_dir: Path, out: Path, batch_size: int) -> int:
    """`build_cache` with the shared model and pre-tokenized windows; the number of tokens cached."""
    ctx = len(windows[0])
    cfg = CacheConfig(
        subject=SubjectConfig(),
        corpus=CorpusConfig(n_tokens=len(windows) * ctx, ctx_len=ctx),
        coders=[CoderConfig(hookpoint=HOOKPOINT, path=str(coder_dir))],
        batch_size=batch_size,
    )
    with (
        mock.patch.object(cache_mod, "load_subject", lambda *_a: subject),
        mock.patch.object(cache_mod, "TokenWindows", lambda cfg, tok: _Given(cfg, tok, windows)),
    ):
        cache_mod.build_cache(cfg, out, progress=False)
    n_tokens = json.loads((out / cache_mod.MANIFEST).read_text())["n_tokens"]
    shutil.rmtree(out)
    return n_tokens


def _encode_batch(subject, windows, coder_dir: Path, batch_size: int, quiet_wait: float) -> dict:
    """One batch through the widest coder alone: in steps of the default budget, and whole."""
    coder = load_coder(CoderConfig(hookpoint=HOOKPOINT, path=str(coder_dir)))
    coder = coder.to(subject.dtype, subject.device)
    ids = torch.from_numpy(np.stack(windows[:batch_size]))
    x = subject.activations(ids, [coder.site])[coder.site].reshape(-1, coder.d_in)
    out = {"tokens": x.shape[0], "budget_mib": coder.encode_budget / 2**20}
    out["chunk_shape"] = list(coder.chunk_shape(x.shape[0], x.element_size()))
    whole = dataclasses.replace(coder, encode_budget=1 << 62)
    for name, c in (("steps", coder), ("whole", whole)):
        out[name] = _phase(quiet_wait, lambda c=c: c.encode(x))
        log.info("  encode one batch, %s: %s", name, out[name])
    return out


def measure(
    latents: tuple[int, ...] = (4608, 65536),
    n_tokens: int = 4096,
    batch_size: int = 16,
    quiet_wait: float = 20.0,
    subject: Subject | None = None,
    workdir: Path | None = None,
) -> dict:
    """Cache tokens/s, tokens/s x encoder FLOPs and peak RSS per coder width (see the module
    docstring). `subject`: an already loaded default subject model, else it is loaded here."""
    subject = subject or load_subject(SubjectConfig())
    windows = list(iter_windows(CorpusConfig(n_tokens=n_tokens), subject.tokenizer))
    with tempfile.TemporaryDirectory(prefix="bench_encoder-", dir=workdir) as tmp:
        root = Path(tmp)
        dirs = {n: write_coder(root / f"coder-{n}", n) for n in latents}
        _cache(subject, windows[: 2 * batch_size], dirs[min(latents)], root / "warm", batch_size)
        log.info("forward to %s", HOOKPOINT)
        forward = _phase(quiet_wait, lambda: _forward(subject, windows, batch_size))
        runs = {}
        for n in latents:
            log.info("cache, %d latents", n)
            runs[n] = _phase(
                quiet_wait, lambda n=n: _cache(subject, windows, dirs[n], root / "c", batch_size)
            )
            log.info("  %s", runs[n])
        encode = _encode_batch(subject, windows, dirs[max(latents)], batch_size, quiet_wait)
    return _summarize(forward, runs, encode, len(windows) * len(windows[0]), subject, batch_size)


def _summarize(forward, runs, encode, n_tokens, subject, batch_size) -> dict:
    fwd_s_per_token = forward["seconds"] / n_tokens
    per = {}
    for n, r in runs.items():
        flops = 2 * D_IN * n
        tps = n_tokens / r["seconds"]
        encoder_s = r["seconds"] / n_tokens - fwd_s_per_token  # the cache's time above the forward
        per[str(n)] = r | {
            "latents": n,
            "tokens_per_s": round(tps, 1),
            "encoder_flops_per_token": flops,
            "tokens_per_s_x_flops": tps * flops,
            "encoder_gflops_per_s": round(flops / encoder_s / 1e9, 2) if encoder_s > 0 else None,
        }
    narrow, wide = per[str(min(runs))], per[str(max(runs))]
    ratio = narrow["tokens_per_s_x_flops"] / wide["tokens_per_s_x_flops"]
    dtype, why = resolve_dtype("auto", "cpu")
    return {
        "n_tokens": n_tokens,
        "batch_size": batch_size,
        "d_in": D_IN,
        "k": K,
        "hookpoint": HOOKPOINT,
        "forward": forward | {"tokens_per_s": round(n_tokens / forward["seconds"], 1)},
        "coders": per,
        "encode_one_batch": encode,
        "ratio_tokens_x_flops": round(ratio, 3),
        "target": {"ratio_at_most": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
        "timings_clean": all(
            r["other_processes_cpu_cores"] <= BUSY_CORES for r in [forward, *runs.values()]
        ),
        "subject_dtype": str(subject.dtype).removeprefix("torch."),
        "dtype_auto": {"cpu": dtype, "why": why},
        "machine": {
            "cpu": common.cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "flags": cpu_flags(),
            "mem_total_mib": _mem_total_kb() // 1024,
        },
        "versions": common.versions(VERSIONS),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def _mem_total_kb() -> int:
    try:
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in x)
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1])


# ------------------------------------------------------------------------------------------------
# Report


def render_markdown(res: dict) -> str:
    m = res["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of " + ", ".join(CPU_FLAGS)
    lines = [
        "# Encoder benchmark: the cache against the coder's width",
        "",
        f"{res['n_tokens']:,} tokens of the default corpus, SmolLM2-135M-Instruct in "
        f"{res['subject_dtype']} (`dtype: auto`: {res['dtype_auto']['why']}), random TopK coders "
        f"(sparsify layout, d_in {res['d_in']}, k {res['k']}) at `{res['hookpoint']}`, batches of "
        f"{res['batch_size']} windows; {m['cpu']} (flags: {flags}), {m['cores']} cores, "
        f"{m['torch_threads']} torch threads; {res['date']}.",
        "",
        f"Command: `{res['command']}`.",
        "",
    ]
    if not res["timings_clean"]:
        lines += [
            f"**Other processes used more than {BUSY_CORES} CPU core during some timed phases "
            "(see the table): those timings are unreliable.**",
            "",
        ]
    lines += [
        "| phase | tokens/s | encoder FLOPs/token | tokens/s x FLOPs | encoder GFLOP/s "
        "| peak RSS MiB (+ above start) | other procs (cores) | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    f = res["forward"]
    lines.append(
        f"| forward to hookpoint | {f['tokens_per_s']:,.0f} | - | - | - | {f['peak_rss_mib']:,.0f} "
        f"(+{f['peak_rss_increase_mib']:,.0f}) | {f['other_processes_cpu_cores']} "
        f"| {f['loadavg']:.2f} |"
    )
    for c in res["coders"].values():
        gf = "-" if c["encoder_gflops_per_s"] is None else f"{c['encoder_gflops_per_s']:.1f}"
        lines.append(
            f"| cache, {c['latents']:,} latents | {c['tokens_per_s']:,.0f} "
            f"| {c['encoder_flops_per_token'] / 1e6:.1f} M | {c['tokens_per_s_x_flops'] / 1e9:.1f} G "
            f"| {gf} | {c['peak_rss_mib']:,.0f} (+{c['peak_rss_increase_mib']:,.0f}) "
            f"| {c['other_processes_cpu_cores']} | {c['loadavg']:.2f} |"
        )
    e = res["encode_one_batch"]
    t = res["target"]
    lines += [
        "",
        f"Goal: the narrowest coder's tokens/s x FLOPs / the widest one's <= {t['ratio_at_most']}: "
        f"**{res['ratio_tokens_x_flops']:.2f}** ({'met' if t['met'] else 'not met'}).",
        "",
        "Notes:",
        "",
        "- Encoder GFLOP/s: the encoder's FLOPs per token over the cache's time per token above the "
        "bare forward's (so it also carries the cost of storing the nonzeros).",
        f"- One batch ({e['tokens']:,} tokens) through the {max(map(int, res['coders'])):,}-latent "
        f"coder alone: in steps of {e['chunk_shape'][1]:,} latents (budget "
        f"{e['budget_mib']:.0f} MiB) {e['steps']['seconds']:.2f} s, peak RSS "
        f"+{e['steps']['peak_rss_increase_mib']:,.0f} MiB; whole (one product) "
        f"{e['whole']['seconds']:.2f} s, +{e['whole']['peak_rss_increase_mib']:,.0f} MiB.",
        "- Peak RSS of a cache run includes its coder's weights (encoder and decoder, float32) "
        "and the model (loaded once before).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m eval.bench_encoder", description=__doc__.split("\n")[0]
    )
    p.add_argument("--tokens", type=int, default=4096, help="tokens of the default corpus")
    p.add_argument("--latents", type=int, nargs="+", default=[4608, 65536], help="coder widths")
    p.add_argument("--batch-size", type=int, default=16, help="the cache's batch size (windows)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each timed phase, wait up to this many seconds until other processes leave "
        "the CPU idle (0: do not wait)",
    )
    p.add_argument("--results", type=Path, default=REPO / "results", help="folder for the results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    res = measure(tuple(args.latents), args.tokens, args.batch_size, args.quiet_wait)
    res["command"] = " ".join(["python -m eval.bench_encoder", *sys.argv[1:]])
    write_results(res, args.results)
    print(render_markdown(res))
    return res


if __name__ == "__main__":
    main()


def write_results(res: dict, folder: Path) -> None:
    common.write_results(res, folder, "bench_encoder", render_markdown)
