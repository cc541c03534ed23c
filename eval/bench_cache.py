"""Benchmark autointerp's activation cache against EleutherAI delphi's `LatentCache`.

Both run in one process on the same inputs: the default subject model (SmolLM2-135M-Instruct in
bf16, one model object shared by all phases), the embedded TopK SAE at `layers.15` (delphi loads the
same folder with its own sparsify loader) and the first N tokens of the default corpus, tokenized
once. Four phases are timed, interleaved and repeated (forward, encode, autointerp, delphi, ...;
the best time of each is kept, and the ratios within each round are reported too):

- forward: the bare forward pass to the hookpoint (`Subject.activations`, which stops at layer 15),
  at autointerp's batch size;
- encode: the same plus the SAE encode (autointerp's `SparseCoder.encode`), results dropped: the
  floor of any cache, which splits autointerp's overhead into encoding and storing;
- autointerp: `build_cache` (encode, latent-sorted shards, fsync, statistics) into a temporary
  folder, given the shared model and the pre-tokenized windows instead of loading them again;
- delphi: `load_sparsify_hooks`, then `LatentCache.run` and `save_splits` (its default 5 splits,
  tokens included) as delphi's own `populate_cache` does, on the base model (delphi loads
  `AutoModel`: no LM head), at the fastest of a few batch sizes tried first on fewer tokens.

Peak memory of a phase is its largest resident set above the RSS at its start (VmHWM after a reset,
and VmRSS sampled every 20 ms), measured at the full and at half the token count, so that its growth
with the number of tokens shows. Bytes per nonzero count the files that hold the nonzeros
(autointerp: offsets, pos, values; delphi: its split files less the copies of the tokens in them).
Before each timed phase the benchmark waits (up to --quiet-wait seconds) until other processes
leave the CPU idle, and it records the CPU they used during each phase; a phase during which they
used more than 0.1 core is redone (up to --retries times). Writes results/bench_cache.md and
results/bench_cache.json; caches go to a temporary folder that is deleted afterwards.

delphi hard-depends on vLLM, which this benchmark does not use. Install delphi and sparsify without
dependencies, plus the few light ones its cache and sparsify loader need:
    pip install --no-deps eai-delphi eai-sparsify
    pip install jaxtyping simple-parsing einops natsort schedulefree

Usage:
    python -m eval.bench_cache [--tokens 200000] [--repeats 2] [--delphi-batch-sizes 8 16 32]
                               [--quiet-wait 900]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from autointerp import cache as cache_mod
from autointerp.coders import SparseCoder, embedded_coder_path, load_coder
from autointerp.config import EMBEDDED_CODER, CacheConfig, CoderConfig, CorpusConfig, SubjectConfig
from autointerp.corpus import iter_windows
from autointerp.subject import Site, Subject, load_subject
from eval import common
from eval.common import cpu_seconds

VERSIONS = ("torch", "transformers", "numpy", "autointerp", "eai-delphi", "eai-sparsify")
"""The distributions whose versions the speed benchmarks record."""

log = logging.getLogger("bench_cache")
REPO = Path(__file__).resolve().parents[1]
HOOKPOINT = "layers.15"
DELPHI_SPLITS = 5  # delphi's CacheConfig.n_splits default
METHODS = ("forward", "encode", "autointerp", "delphi")
LABELS = {
    "forward": "forward to hookpoint",
    "encode": "forward + SAE encode, nothing stored",
    "autointerp": "autointerp `build_cache`",
    "delphi": "delphi `LatentCache`",
}
BUSY_CORES = 0.1  # CPU used by other processes during a phase above which its timing is flagged
TARGETS = {  # from the issue
    "ratio_vs_forward": 1.15,  # autointerp time per token / bare forward's, at most
    "ratio_vs_delphi": 1.7,  # autointerp tokens/s / delphi's, at least
    "bytes_per_nonzero": 5.0,  # at most
    # at most, between half and full token count ("does not grow"): this, or the run-to-run spread
    # of autointerp's peak at one count if larger (growth within the noise)
    "peak_rss_growth_mb": 16.0,
}


# ------------------------------------------------------------------------------------------------
# Memory and interference


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} missing from /proc/self/status")


def _release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so a phase's baseline is not inflated."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    """Reset VmHWM (the kernel's peak RSS) to the current RSS; False where not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def wait_quiet(max_wait: float, window: float = 3.0) -> None:
    """Wait (at most `max_wait` s) until other processes use under BUSY_CORES of CPU for `window` s."""
    if max_wait <= 0:
        return
    deadline, told = time.monotonic() + max_wait, False
    while time.monotonic() < deadline:
        t0, (busy0, own0) = time.perf_counter(), cpu_seconds()
        time.sleep(window)
        busy, own = cpu_seconds()
        if ((busy - busy0) - (own - own0)) / (time.perf_counter() - t0) < BUSY_CORES:
            return
        if not told:
            log.info("other processes are using the CPU; waiting up to %.0f s for quiet", max_wait)
            told = True
    log.warning("the CPU did not become quiet within %.0f s; going on", max_wait)


class Monitor:
    """While the `with` block runs: peak resident memory above the RSS at entry (MiB), and the CPU
    that other processes used (cores, averaged), which makes a timing unreliable."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.baseline_kb = self.peak_kb = 0
        self.other_cores = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False
        self._start = (0.0, 0.0, 0.0)

    def __enter__(self) -> Monitor:
        _release_memory()
        self.baseline_kb = self.peak_kb = _status_kb("VmRSS")
        self._hwm = _reset_hwm()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._start = (time.perf_counter(), *cpu_seconds())
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))

    def __exit__(self, *exc) -> None:
        wall, (busy, own) = time.perf_counter() - self._start[0], cpu_seconds()
        self.other_cores = max(0.0, (busy - self._start[1]) - (own - self._start[2])) / wall
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))
        if self._hwm:
            self.peak_kb = max(self.peak_kb, _status_kb("VmHWM"))

    @property
    def increase_mb(self) -> float:
        return (self.peak_kb - self.baseline_kb) / 1024


# ------------------------------------------------------------------------------------------------
# Phases


@dataclass
class Run:
    method: str
    n_tokens: int  # tokens actually processed
    seconds: float
    peak_rss_mb: float
    nonzeros: int = 0
    coder_bytes: int = 0  # bytes of the files holding the nonzeros (no tokens)
    total_bytes: int = 0  # every byte written, tokens included
    other_cores: float = 0.0  # CPU other processes used meanwhile (cores, averaged)

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds


@dataclass
class Bench:
    """What every phase shares: the model, the token windows, the coder and a scratch folder."""

    subject: Subject
    windows: list[np.ndarray]
    coder_path: str  # as given to autointerp's CoderConfig
    delphi_root: Path  # <root>/<hookpoint> -> the coder folder, the layout delphi's loader reads
    workdir: Path
    batch_size: int  # autointerp's and the forward pass's
    ctx_len: int
    coder: SparseCoder  # autointerp's loaded coder, for the encode-only phase
    quiet_wait: float = 0.0  # before each timed phase, wait up to this long for other processes
    retries: int = 0  # redo a phase during which other processes used the CPU, at most this often


def _tree_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def run_forward(b: Bench, n_seqs: int) -> Run:
    site = Site.parse(HOOKPOINT)
    with Monitor() as mem:
        start = time.perf_counter()
        for i in range(0, n_seqs, b.batch_size):
            ids = torch.from_numpy(np.stack(b.windows[i : min(i + b.batch_size, n_seqs)]))
            b.subject.activations(ids, [site])
        seconds = time.perf_counter() - start
    return Run("forward", n_seqs * b.ctx_len, seconds, mem.increase_mb, other_cores=mem.other_cores)


def run_encode(b: Bench, n_seqs: int) -> Run:
    """The floor of any cache: forward to the hookpoint and SAE encode, results dropped."""
    with Monitor() as mem:
        start = time.perf_counter()
        for i in range(0, n_seqs, b.batch_size):
            ids = torch.from_numpy(np.stack(b.windows[i : min(i + b.batch_size, n_seqs)]))
            x = b.subject.activations(ids, [b.coder.site])[b.coder.site]
            values, indices = b.coder.encode(x.reshape(-1, x.shape[-1]))
            values.float().cpu().numpy(), indices.to(torch.int32).cpu().numpy()
        seconds = time.perf_counter() - start
    return Run("encode", n_seqs * b.ctx_len, seconds, mem.increase_mb, other_cores=mem.other_cores)


def run_autointerp(b: Bench, n_seqs: int) -> Run:
    out = b.workdir / "autointerp"
    cfg = CacheConfig(
        subject=SubjectConfig(),
        corpus=CorpusConfig(n_tokens=n_seqs * b.ctx_len, ctx_len=b.ctx_len),
        coders=[CoderConfig(hookpoint=HOOKPOINT, path=b.coder_path)],
        batch_size=b.batch_size,
    )
    windows = b.windows[:n_seqs]
    shared = (
        mock.patch.object(cache_mod, "load_subject", lambda _cfg: b.subject),
        mock.patch.object(cache_mod, "iter_windows", lambda _cfg, _tok: iter(windows)),
    )
    with shared[0], shared[1], Monitor() as mem:
        start = time.perf_counter()
        cache_mod.build_cache(cfg, out, progress=False)
        seconds = time.perf_counter() - start
    manifest = json.loads((out / cache_mod.MANIFEST).read_text())
    name = cfg.coders[0].name or HOOKPOINT
    if manifest["n_tokens"] != n_seqs * b.ctx_len:
        raise RuntimeError(
            f"autointerp cached {manifest['n_tokens']} tokens, expected {n_seqs * b.ctx_len}"
        )
    run = Run(
        "autointerp",
        manifest["n_tokens"],
        seconds,
        mem.increase_mb,
        nonzeros=manifest["summary"][name]["nonzeros"],
        coder_bytes=_tree_bytes((out / "shards").glob(f"*/{name}/*.npy")),
        total_bytes=_tree_bytes(out.rglob("*")),
        other_cores=mem.other_cores,
    )
    shutil.rmtree(out)
    return run


def import_delphi(progress: bool = False) -> tuple[type, Callable]:
    """delphi's `LatentCache` and `load_sparsify_hooks`, skipping two eager package imports:
    `delphi.clients` (vLLM) and `delphi.latents/__init__` (faiss, sentence-transformers), neither of
    which the cache uses. Their submodules still import from the installed files."""
    spec = importlib.util.find_spec("delphi")
    if spec is None or spec.origin is None:
        raise SystemExit("delphi is not installed; see the module docstring of eval.bench_cache")
    root = Path(spec.origin).parent
    for sub in ("clients", "latents"):
        name = f"delphi.{sub}"
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(root / sub)]
            sys.modules[name] = stub
    with contextlib.redirect_stdout(io.StringIO()):  # sparsify prints a notice about triton
        from delphi.latents.cache import LatentCache
        from delphi.sparse_coders.load_sparsify import load_sparsify_hooks
    if not progress:  # tqdm reads TQDM_DISABLE at import time, so silence delphi's bar here
        delphi_cache = sys.modules["delphi.latents.cache"]
        delphi_cache.tqdm = functools.partial(delphi_cache.tqdm, disable=True)
    return LatentCache, load_sparsify_hooks


def run_delphi(b: Bench, n_seqs: int, batch_size: int, delphi: tuple[type, Callable]) -> Run:
    latent_cache, load_hooks = delphi
    out = b.workdir / "delphi"
    out.mkdir()
    tokens = torch.from_numpy(np.stack(b.windows[:n_seqs]))
    model = b.subject.base  # what delphi's AutoModel.from_pretrained gives: no LM head
    with Monitor() as mem:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the hookpoint it resolves
            hooks, transcode = load_hooks(model, str(b.delphi_root), [HOOKPOINT])
        cache = latent_cache(model, hooks, batch_size=batch_size, transcode=transcode)
        cache.run(n_seqs * b.ctx_len, tokens)
        cache.save_splits(n_splits=DELPHI_SPLITS, save_dir=out)
        seconds = time.perf_counter() - start
        nonzeros = int(cache.cache.latent_activations[HOOKPOINT].numel())
        kept_tokens = cache.cache.tokens[HOOKPOINT]
        del cache, hooks
    files = list(out.rglob("*.safetensors"))
    total = _tree_bytes(files)
    run = Run(
        "delphi",
        kept_tokens.numel(),  # delphi drops the last partial batch
        seconds,
        mem.increase_mb,
        nonzeros=nonzeros,
        coder_bytes=total - len(files) * kept_tokens.numel() * kept_tokens.element_size(),
        total_bytes=total,
        other_cores=mem.other_cores,
    )
    shutil.rmtree(out)
    return run


# ------------------------------------------------------------------------------------------------
# Orchestration


def setup(args: argparse.Namespace, workdir: Path) -> Bench:
    start = time.perf_counter()
    subject = load_subject(SubjectConfig())
    log.info(
        "subject loaded in %.1f s (%s, %s)",
        time.perf_counter() - start,
        subject.name,
        subject.dtype,
    )
    corpus = CorpusConfig(n_tokens=args.tokens)
    start = time.perf_counter()
    windows = list(iter_windows(corpus, subject.tokenizer))
    log.info(
        "%d windows of %d tokens tokenized in %.1f s",
        len(windows),
        corpus.ctx_len,
        time.perf_counter() - start,
    )
    coder_dir = embedded_coder_path() if args.coder == EMBEDDED_CODER else Path(args.coder)
    if not (coder_dir / "sae.safetensors").exists():
        raise SystemExit(
            f"no sparsify SAE in {coder_dir} (make the embedded one with `autointerp train-sae`)"
        )
    coder = load_coder(CoderConfig(hookpoint=HOOKPOINT, path=args.coder))
    coder = coder.to(subject.dtype, subject.device)
    delphi_root = workdir / "delphi-sae"
    delphi_root.mkdir()
    (delphi_root / HOOKPOINT).symlink_to(coder_dir.resolve(), target_is_directory=True)
    return Bench(
        subject,
        windows,
        args.coder,
        delphi_root,
        workdir,
        args.batch_size,
        corpus.ctx_len,
        coder,
        args.quiet_wait,
        args.retries,
    )


def warm_up(b: Bench, delphi) -> None:
    n = min(2 * b.batch_size, len(b.windows))
    run_forward(b, n)
    run_autointerp(b, n)
    run_delphi(b, n, b.batch_size, delphi)


def tune_delphi(
    b: Bench, delphi, sizes: list[int], n_tokens: int, rounds: int = 2
) -> tuple[int, dict]:
    """delphi's fastest batch size (sequences) on a short run; each size tried `rounds` times."""
    n_seqs = n_tokens // b.ctx_len
    rates: dict[int, float] = {}
    for _ in range(rounds):
        for size in sizes:
            run = run_clean(
                b, functools.partial(run_delphi, b, n_seqs, size, delphi), f"delphi/{size}"
            )
            rates[size] = max(rates.get(size, 0.0), run.tokens_per_s)
    best = max(rates, key=rates.__getitem__)
    log.info("delphi batch size: %d", best)
    return best, rates


def measure(b: Bench, delphi, delphi_batch: int, repeats: int) -> list[Run]:
    """`repeats` pairs of rounds, one at the full token count and one at half of it; a round runs
    every method once, back to back. Equal numbers of runs at both counts keep the peak-memory
    comparison even."""
    full = len(b.windows)
    schedule = [full, full // 2] * repeats
    phases = {
        "forward": lambda n: run_forward(b, n),
        "encode": lambda n: run_encode(b, n),
        "autointerp": lambda n: run_autointerp(b, n),
        "delphi": lambda n: run_delphi(b, n, delphi_batch, delphi),
    }
    runs = []
    for i, n_seqs in enumerate(schedule, 1):
        log.info("round %d/%d: %d tokens", i, len(schedule), n_seqs * b.ctx_len)
        for method in METHODS:
            runs.append(run_clean(b, functools.partial(phases[method], n_seqs), method))
    return runs


def run_clean(b: Bench, phase: Callable[[], Run], label: str) -> Run:
    """Run a phase when the CPU is quiet; redo it (up to `b.retries` times) if other processes
    used the CPU meanwhile."""
    for attempt in range(b.retries + 1):
        wait_quiet(b.quiet_wait)
        run = phase()
        _log_run(run, label)
        if run.other_cores <= BUSY_CORES:
            break
        if attempt < b.retries:
            log.info("  redoing %s", label)
    return run


def _log_run(run: Run, label: str | None = None) -> None:
    log.info(
        "  %-10s %7.0f tokens/s  %6.1f s  peak RSS +%.0f MiB",
        label or run.method, run.tokens_per_s, run.seconds, run.peak_rss_mb,
    )  # fmt: skip
    if run.other_cores > BUSY_CORES:
        log.warning("  other processes used %.2f CPU cores meanwhile", run.other_cores)


def _at(
    runs: list[Run], method: str, n_seqs: int, ctx_len: int, batch: int | None = None
) -> list[Run]:
    """Runs of a method at a token count (delphi's counts are rounded down to whole batches)."""
    want = n_seqs if batch is None else n_seqs // batch * batch
    return [r for r in runs if r.method == method and r.n_tokens == want * ctx_len]


def summarize(b: Bench, runs: list[Run], delphi_batch: int, tuning: dict, args) -> dict:
    full, half = len(b.windows), len(b.windows) // 2
    batches = {m: b.batch_size for m in METHODS} | {"delphi": delphi_batch}
    rounding = {"delphi": delphi_batch}
    at = {
        m: {n: _at(runs, m, n, b.ctx_len, rounding.get(m)) for n in (full, half)} for m in METHODS
    }
    best = {m: min(at[m][full], key=lambda r: r.seconds) for m in METHODS}
    tps = {m: best[m].tokens_per_s for m in METHODS}
    peak = {m: {n: max(r.peak_rss_mb for r in at[m][n]) for n in (full, half)} for m in METHODS}
    ai, de = best["autointerp"], best["delphi"]
    res = {
        "n_tokens": full * b.ctx_len,
        "n_tokens_half": half * b.ctx_len,
        "autointerp_tokens_per_s": round(tps["autointerp"], 1),
        "delphi_tokens_per_s": round(tps["delphi"], 1),
        "forward_tokens_per_s": round(tps["forward"], 1),
        "encode_tokens_per_s": round(tps["encode"], 1),
        "ratio_vs_delphi": round(tps["autointerp"] / tps["delphi"], 3),
        "ratio_vs_forward": round(tps["forward"] / tps["autointerp"], 3),
        "ratio_encode_vs_forward": round(tps["forward"] / tps["encode"], 3),
        "per_round": _paired_ratios(runs),
        "bytes_per_nonzero": round(ai.coder_bytes / ai.nonzeros, 3),
        "delphi_bytes_per_nonzero": round(de.coder_bytes / de.nonzeros, 3),
        "bytes_per_nonzero_with_tokens": round(ai.total_bytes / ai.nonzeros, 3),
        "delphi_bytes_per_nonzero_with_tokens": round(de.total_bytes / de.nonzeros, 3),
        "nonzeros": {"autointerp": ai.nonzeros, "delphi": de.nonzeros},
        "tokens_processed": {m: best[m].n_tokens for m in METHODS},
        "peak_rss_mb": round(peak["autointerp"][full], 1),
        "delphi_peak_rss_mb": round(peak["delphi"][full], 1),
        "peak_rss_mb_by_method": {
            m: {str(n * b.ctx_len): round(peak[m][n], 1) for n in (half, full)} for m in METHODS
        },
        "peak_rss_growth_mb": {m: round(peak[m][full] - peak[m][half], 1) for m in METHODS},
        "peak_rss_spread_mb": {  # run-to-run spread of the peak at one count: the noise level
            m: round(max(_spread(at[m][n]) for n in (full, half)), 1) for m in METHODS
        },
        "seconds": {m: [round(r.seconds, 2) for r in at[m][full]] for m in METHODS},
        "other_processes_cpu_cores": {
            m: [round(r.other_cores, 2) for r in at[m][full]] for m in METHODS
        },
        "batch_sizes": batches,
        "delphi_batch_tuning_tokens_per_s": {str(k): round(v, 1) for k, v in tuning.items()},
        "delphi_batch_tuning_tokens": args.tune_tokens,
        "delphi_n_splits": DELPHI_SPLITS,
        "repeats": args.repeats,
        "command": "python -m eval.bench_cache " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "versions": common.versions(
            ("torch", "transformers", "numpy", "autointerp", "eai-delphi", "eai-sparsify")
        ),
        "machine": {
            "cpu": common.cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    res["timings_clean"] = all(r.other_cores <= BUSY_CORES for r in runs)
    res["targets"] = _targets(res)
    return res


def _paired_ratios(runs: list[Run]) -> dict:
    """Ratios within each round (phases run back to back), and their medians: less sensitive than
    best-of to a machine whose speed drifts between rounds."""
    rounds = [runs[i : i + len(METHODS)] for i in range(0, len(runs), len(METHODS))]
    per_token = [{r.method: r.seconds / r.n_tokens for r in rnd} for rnd in rounds]
    ratios = {
        "ratio_vs_forward": [t["autointerp"] / t["forward"] for t in per_token],
        "ratio_vs_delphi": [t["delphi"] / t["autointerp"] for t in per_token],
        "ratio_encode_vs_forward": [t["encode"] / t["forward"] for t in per_token],
    }
    out = {k: [round(x, 3) for x in v] for k, v in ratios.items()}
    out |= {f"{k}_median": round(float(np.median(v)), 3) for k, v in ratios.items()}
    return out


def _spread(runs: list[Run]) -> float:
    peaks = [r.peak_rss_mb for r in runs]
    return max(peaks) - min(peaks)


def _targets(res: dict) -> dict:
    growth = res["peak_rss_growth_mb"]["autointerp"]
    tolerance = max(TARGETS["peak_rss_growth_mb"], res["peak_rss_spread_mb"]["autointerp"])
    checks = {
        "ratio_vs_forward": (
            res["ratio_vs_forward"],
            res["ratio_vs_forward"] <= TARGETS["ratio_vs_forward"],
        ),
        "ratio_vs_delphi": (
            res["ratio_vs_delphi"],
            res["ratio_vs_delphi"] >= TARGETS["ratio_vs_delphi"],
        ),
        "bytes_per_nonzero": (
            res["bytes_per_nonzero"],
            res["bytes_per_nonzero"] <= TARGETS["bytes_per_nonzero"],
        ),
        "peak_rss_growth_mb": (growth, growth <= tolerance),
    }
    out = {
        k: {"target": TARGETS[k], "measured": v, "met": bool(ok)} for k, (v, ok) in checks.items()
    }
    out["peak_rss_growth_mb"]["target"] = round(tolerance, 1)
    return out


# ------------------------------------------------------------------------------------------------
# Report

TARGET_ROWS = (  # key, label, comparison, unit of the measured value
    ("ratio_vs_forward", "autointerp time per token / bare forward's", "<=", "x"),
    ("ratio_vs_delphi", "autointerp tokens/s / delphi's", ">=", "x"),
    ("bytes_per_nonzero", "autointerp bytes on disk per nonzero", "<=", ""),
    (
        "peak_rss_growth_mb",
        "autointerp peak RSS growth, half -> full tokens (within 16 MiB or the run-to-run spread)",
        "<=",
        " MiB",
    ),
)


def method_table(res: dict) -> list[str]:
    peak, growth = res["peak_rss_mb_by_method"], res["peak_rss_growth_mb"]
    half, full = str(res["n_tokens_half"]), str(res["n_tokens"])
    bpn = {
        "autointerp": (res["bytes_per_nonzero"], res["bytes_per_nonzero_with_tokens"]),
        "delphi": (res["delphi_bytes_per_nonzero"], res["delphi_bytes_per_nonzero_with_tokens"]),
    }
    lines = [
        f"| method | tokens/s | batch (seqs) | bytes/nonzero | incl. tokens "
        f"| peak RSS +MiB, {half} tok | {full} tok | growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        stored = bpn.get(m)
        cells = [
            LABELS[m],
            f"{res[f'{m}_tokens_per_s']:,.0f}",
            str(res["batch_sizes"][m]),
            f"{stored[0]:.2f}" if stored else "-",
            f"{stored[1]:.2f}" if stored else "-",
            f"{peak[m][half]:.0f}",
            f"{peak[m][full]:.0f}",
            f"{growth[m]:+.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_table(res: dict) -> list[str]:
    lines = [
        "| target | goal | measured (best runs) | median of per-round ratios | |",
        "|---|---|---:|---:|---|",
    ]
    for key, label, op, unit in TARGET_ROWS:
        t = res["targets"][key]
        median = res["per_round"].get(f"{key}_median")
        cells = [
            label,
            f"{op} {t['target']:g}{unit}",
            f"{t['measured']:.2f}{unit}",
            "-" if median is None else f"{median:.2f}{unit}",
            "met" if t["met"] else "**not met**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def notes(res: dict) -> list[str]:
    tuning = ", ".join(f"{k}: {v:,.0f}" for k, v in res["delphi_batch_tuning_tokens_per_s"].items())
    nz = res["nonzeros"]
    return [
        "- The forward pass stops at the hookpoint (layer 15 of 30), as autointerp's cache does; "
        "delphi runs the whole base model (no LM head), as its `populate_cache` does. 'forward + "
        "SAE encode' adds autointerp's encoder and drops the result: the floor of any cache "
        f"({res['ratio_encode_vs_forward']:.2f}x the forward's time in the best runs, median "
        f"{res['per_round']['ratio_encode_vs_forward_median']:.2f}x per round).",
        "- autointerp: `build_cache` end to end (encode, shards with fsync, statistics), given the "
        "shared model and the pre-tokenized windows. delphi: `load_sparsify_hooks`, "
        f"`LatentCache.run`, `save_splits(n_splits={res['delphi_n_splits']})`; it drops the last "
        f"partial batch ({res['tokens_processed']['delphi']:,} tokens processed).",
        f"- delphi's batch size is its fastest on {res['delphi_batch_tuning_tokens']:,} tokens "
        f"(tokens/s by batch size: {tuning}).",
        "- Bytes per nonzero: autointerp's offsets + pos + values files; delphi's split files less "
        "the copy of the tokens each split holds. 'incl. tokens' counts every file written. "
        f"Nonzeros stored: autointerp {nz['autointerp']:,}, delphi {nz['delphi']:,}.",
        "- Per-round ratios (phases back to back, so drift of the machine's speed between rounds "
        "cancels): autointerp/forward time "
        + ", ".join(map(str, res["per_round"]["ratio_vs_forward"]))
        + "; delphi/autointerp time per token "
        + ", ".join(map(str, res["per_round"]["ratio_vs_delphi"]))
        + ".",
        "- Peak RSS: the largest resident set above the phase's starting RSS (kernel high-water "
        "mark reset per phase, and VmRSS sampled every 20 ms), max over the runs at that count. "
        "Run-to-run spread of the peak at one count (MiB): "
        + ", ".join(f"{m} {v:.0f}" for m, v in res["peak_rss_spread_mb"].items())
        + ".",
        f"- Seconds per run at {res['n_tokens']:,} tokens: "
        + "; ".join(f"{m} {', '.join(map(str, s))}" for m, s in res["seconds"].items())
        + ". CPU cores used by other processes meanwhile: "
        + "; ".join(
            f"{m} {', '.join(map(str, c))}" for m, c in res["other_processes_cpu_cores"].items()
        )
        + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".",
    ]


def render_markdown(res: dict) -> str:
    machine = res["machine"]
    head = [
        "# Activation cache benchmark: autointerp vs delphi",
        "",
        f"{res['n_tokens']:,} tokens of the default corpus, SmolLM2-135M-Instruct in bf16, the "
        f"embedded TopK SAE at `{HOOKPOINT}`; {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['torch_threads']} torch threads; {res['date']}.",
        "",
        f"Command: `{res['command']}` (best of {res['repeats']} interleaved runs per method).",
        "",
    ]
    if not res["timings_clean"]:
        head += [
            f"**Other processes used more than {BUSY_CORES} CPU core during some timed runs (see "
            "the notes): those timings are unreliable.**",
            "",
        ]
    body = method_table(res) + [""] + target_table(res) + ["", "Notes:", ""] + notes(res)
    return "\n".join(head + body) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m eval.bench_cache", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--tokens", type=int, default=200_000, help="tokens of the default corpus (default 200000)"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method at the full count")
    p.add_argument(
        "--batch-size", type=int, default=16, help="autointerp's (and the forward's) batch size"
    )
    p.add_argument("--delphi-batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument(
        "--tune-tokens", type=int, default=32_768, help="tokens per delphi batch-size trial"
    )
    p.add_argument(
        "--coder",
        default=EMBEDDED_CODER,
        help="sparsify SAE folder for layers.15 (default: embedded)",
    )
    p.add_argument(
        "--results", type=Path, default=REPO / "results", help="folder for bench_cache.md/.json"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=900,
        help="before each timed phase, wait up to this many seconds until other processes leave "
        "the CPU idle (0: do not wait)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="redo a timed phase during which other processes used the CPU, at most this often",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show delphi's progress bars and logs"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("delphi").setLevel(logging.WARNING)
    delphi = import_delphi(progress=args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary folder is removed
    with tempfile.TemporaryDirectory(prefix="bench_cache-") as tmp:
        bench = setup(args, Path(tmp))
        log.info("warming up")
        warm_up(bench, delphi)
        sizes = [s for s in args.delphi_batch_sizes if s * bench.ctx_len <= args.tune_tokens]
        delphi_batch, tuning = tune_delphi(bench, delphi, sizes, args.tune_tokens)
        runs = measure(bench, delphi, delphi_batch, args.repeats)
        res = summarize(bench, runs, delphi_batch, tuning, args)
    write_results(res, args.results)
    print("\n".join(method_table(res) + [""] + target_table(res)))
    return res


if __name__ == "__main__":
    main()


def write_results(res: dict, folder: Path) -> None:
    common.write_results(res, folder, "bench_cache", render_markdown)
