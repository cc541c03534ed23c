"""How autointerp scales with the number of latents: time, CPU and peak memory of each stage of a run
over 1k, 10k and 100k latents, decoder neighbours for 65,536 latents, sampling cost per latent at 1M
and 10M tokens, and what 1M latents over 10M tokens would take.

Everything runs on synthetic inputs in the real formats (`eval.synthetic`): a random TopK SAE per size
(d_in 576, k 32, sparsify layout) and a cache of real token windows (the packaged Wikipedia leads,
SmolLM2 tokenizer) with log-normal latent densities and values, which `autointerp run` takes as its
own finished cache. No LLM is involved: the `token-stats` explainer and the `embedding` scorer with a
tiny sentence-transformers model the benchmark makes itself (one BERT layer of width 32 with
all-MiniLM-L6-v2's tokenizer), so that what is measured is the pipeline's own overhead. Sample sizes
are the embedded default's (15 explainer examples, 10 test, 5 + 5 non-activating), not the paper's,
to keep the benchmark short; the judge check is off.

Each stage runs in a fresh process (`python -m eval.bench_scale _stage ...`), measured by the parent
with wait4: wall seconds, CPU seconds (user + system, the process and its children) and peak RSS
(ru_maxrss). The child also reports its RSS after its imports and models (the sentence-transformers
model, for `run` and `resume`), so that peak RSS excluding the models can be stated. Stages:
- run: `autointerp run` over every latent of the coder (`max_latents: null`, no HTML report);
- resume: the same command again, with nothing left to do;
- report: `autointerp report RUN`;
- export: `autointerp export RUN`.
Before each timed stage the benchmark waits (up to --quiet-wait s) for other processes to leave the
CPU idle, and records the CPU they used during the stage (`other_cores`).

Then, on a 65,536-latent coder: `neighbours_s_65k`, the first (computing) call of the stored decoder
neighbours (`autointerp.neighbours.neighbours`; where that module is missing, the older
`autointerp.sample._neighbours`); and `sample_cpu_ms_per_latent_1M` / `_10M`: CPU ms per latent of
`Sampler.sample` for --sample-latents random latents on a 1M- and a 10M-token cache, after the
sampler's one-time setup (index, BOS mask, neighbours), which is reported separately. The encoder's
numbers come from `eval.bench_encoder.measure` where it exists.

Usage:
    python -m eval.bench_scale [--sizes 1000,10000,100000] [--tokens 1000000] [--sample-latents 500]
        [--skip-10M] [--skip-neighbours] [--skip-encoder] [--quiet-wait 60] [--work DIR] [--keep]
Writes results/bench_scale.json and results/bench_scale.md (--results to change the folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from eval import common
from eval.bench_cache import VERSIONS, wait_quiet
from eval.common import cpu_seconds
from eval.synthetic import cache_config, tiny_embedder, write_cache, write_coder

log = logging.getLogger("bench_scale")
REPO = Path(__file__).resolve().parents[1]
STAGES = ("run", "resume", "report", "export")
NEIGHBOURS_LATENTS = 65_536
SAMPLE = {"n_train": 15, "n_test": 10, "n_random_negatives": 5, "n_similar_negatives": 5}
"""Sample sizes of every run here (the embedded default's)."""
GOALS = {
    "flat_growth": 0.10,
    "peak_excl_models_mib_100k": 2048,
    "neighbours_s_65k": 60,
    "sample_ratio_10M_1M": 3,
}
TARGET_LATENTS, TARGET_TOKENS = 1_000_000, 10_000_000
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------------
# Measuring one process


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def process_usage(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> dict:
    """Run `cmd` in a fresh process and wait for it: wall seconds, CPU seconds (user + system of the
    process and the children it waited for), peak RSS (its ru_maxrss as GNU time reports it, MiB), exit status, and the CPU that
    other processes used meanwhile (cores, averaged)."""
    # ru_maxrss of a forked child counts the parent's pages until exec (the kernel keeps the
    # high-water mark across exec), so the child is started by GNU time, a small process, whose
    # own child's peak is then its own
    peak_file = Path(tempfile.mkstemp(suffix=".maxrss")[1])
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd]
    t0, (busy0, _) = time.perf_counter(), cpu_seconds()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    busy, _ = cpu_seconds()
    cpu = usage.ru_utime + usage.ru_stime
    result = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mib": round(int(peak_file.read_text().split()[-1]) / 1024, 1),  # KiB
        "other_cores": round(max(0.0, busy - busy0 - cpu) / wall, 2),
        "exit": proc.returncode,
    }
    peak_file.unlink()
    return result


def measured(args: list[str], quiet_wait: float) -> dict:
    """`python -m eval.bench_scale <args>` in a fresh process (`process_usage`), after waiting for a
    quiet CPU, with what the child wrote to its JSON file (the last argument)."""
    wait_quiet(quiet_wait)
    out_json = Path(args[-1])
    out_json.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "eval.bench_scale", *args]
    result = process_usage(cmd, {**ENV, "PYTHONPATH": str(REPO)})
    if out_json.exists():
        result.update(json.loads(out_json.read_text()))
    if result["exit"] != 0:
        log.error("%s failed with exit status %d", " ".join(args[:2]), result["exit"])
    return result


def _stage_child(stage: str, run: Path, config: Path, embedder: str, out_json: Path) -> None:
    """One stage through the CLI, in this process; writes the RSS after imports and models."""
    from autointerp.cli import app

    if stage in ("run", "resume"):  # the scorer's model, loaded once per process and shared
        from autointerp.score.embedding import sentence_model

        sentence_model(embedder)
    models = _rss_mib()
    argv = {
        "run": ["run", str(config), "--out", str(run), "--no-report"],
        "resume": ["run", str(config), "--out", str(run), "--no-report"],
        "report": ["report", str(run)],
        "export": ["export", str(run)],
    }[stage]
    code = app(argv, standalone_mode=False)
    out_json.write_text(json.dumps({"models_rss_mib": round(models, 1), "cli_exit": code or 0}))
    sys.exit(code or 0)


def _neighbours_child(cache_dir: Path, out_json: Path) -> None:
    """Time the first (computing) call of decoder neighbours for the cache's coder."""
    from autointerp.cache import ActivationCache

    cache = ActivationCache(cache_dir)
    coder = next(iter(cache.coders))
    shutil.rmtree(cache_dir / "neighbours", ignore_errors=True)  # the first call computes
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        from autointerp.neighbours import neighbours

        found = neighbours(cache, coder, 10, by="decoder", progress=False)
        method = "autointerp.neighbours.neighbours(by='decoder'), first call"
    except ImportError:
        from autointerp.sample import _neighbours

        found = _neighbours(cache, coder, 10)
        method = "autointerp.sample._neighbours (no stored neighbours in this version)"
    result = {
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "method": method,
        "shape": list(np.shape(found)),
    }
    out_json.write_text(json.dumps(result))


def _sample_child(cache_dir: Path, n: int, out_json: Path) -> None:
    """CPU per latent of Sampler.sample for `n` random latents, after the sampler's setup."""
    from autointerp.cache import ActivationCache
    from autointerp.sample import SampleConfig, Sampler

    cache = ActivationCache(cache_dir)
    coder = next(iter(cache.coders))
    c0, t0 = time.process_time(), time.perf_counter()
    sampler = Sampler(cache, coder, SampleConfig(**SAMPLE))
    setup = time.process_time() - c0, time.perf_counter() - t0
    c0, t0 = time.process_time(), time.perf_counter()
    if hasattr(sampler, "neighbours"):
        sampler.neighbours()
    neigh = time.process_time() - c0, time.perf_counter() - t0
    ids = np.sort(
        np.random.default_rng(0).choice(cache.coders[coder]["n_latents"], n, replace=False)
    )
    c0, t0 = time.process_time(), time.perf_counter()
    status = [sampler.sample(int(i)).status for i in ids]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    result = {
        "latents": n,
        "ok": status.count("ok"),
        "cpu_ms_per_latent": round(1000 * cpu / n, 2),
        "wall_ms_per_latent": round(1000 * wall / n, 2),
        "setup_cpu_s": round(setup[0], 2),
        "setup_wall_s": round(setup[1], 2),
        "neighbours_cpu_s": round(neigh[0], 2),
        "neighbours_wall_s": round(neigh[1], 2),
    }
    out_json.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# Inputs


def run_config(cache_cfg: dict, embedder: Path, sample: dict | None = None) -> dict:
    """The run config of every size: the synthetic cache's keys, every latent, no LLM; `sample`: the
    sample sizes (default SAMPLE; {} for the package's defaults, the paper's)."""
    return {
        **cache_cfg,
        "max_latents": None,
        "sample": SAMPLE if sample is None else sample,
        "explain": {"explainer": "token-stats"},
        "score": {
            "scorers": ["embedding"],
            "embedding": {"model": str(embedder)},
            "judge_check": {"enabled": False},
        },
        "report": False,
    }


def du_mib(path: Path) -> float:
    """Bytes on disk under `path` (allocated blocks), MiB."""
    total = sum(
        p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink()
    )
    return round(total / 2**20, 1)


def synthetic(work: Path, name: str, n_latents: int, n_tokens: int) -> tuple[Path, Path, dict]:
    """(coder folder, run folder, generation info) with a finished synthetic cache in RUN/cache."""
    coder = write_coder(work / f"coder-{n_latents}", n_latents)
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    cfg = cache_config(coder, n_tokens)
    info = write_cache(cfg, run / "cache", progress=False)
    info["cache_config"] = cfg.model_dump(mode="json", exclude_defaults=True)
    log.info("%s: synthetic cache of %d latents x %d tokens: %s", name, n_latents, n_tokens, info)
    return coder, run, info


# ------------------------------------------------------------------------------------------------
# Parts of the benchmark


def bench_size(work: Path, n_latents: int, n_tokens: int, embedder: Path, quiet: float) -> dict:
    coder, run, gen = synthetic(work, f"run-{n_latents}", n_latents, n_tokens)
    config = work / f"run-{n_latents}.yaml"
    config.write_text(yaml.safe_dump(run_config(gen.pop("cache_config"), embedder)))
    stages = {}
    for stage in STAGES:
        log.info("size %d: %s", n_latents, stage)
        stages[stage] = measured(
            ["_stage", stage, str(run), str(config), str(embedder), str(work / "stage.json")], quiet
        )
        log.info("  %s", stages[stage])
    summary = (
        json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    )
    out = {
        "latents": n_latents,
        "tokens": gen["n_tokens"],
        **{key: {s: stages[s][key] for s in STAGES} for key in ("wall_s", "cpu_s", "peak_rss_mib")},
        "models_rss_mib": {s: stages[s].get("models_rss_mib") for s in STAGES},
        "peak_excl_models_mib": {
            s: round(stages[s]["peak_rss_mib"] - stages[s].get("models_rss_mib", 0), 1)
            for s in STAGES
        },
        "other_cores": {s: stages[s]["other_cores"] for s in STAGES},
        "exit": {s: stages[s]["exit"] for s in STAGES},
        "disk_mib": du_mib(run),
        "disk_mib_parts": {p.name: du_mib(p) for p in sorted(run.iterdir()) if p.is_dir()},
        "coder_mib": du_mib(coder),
        "run_summary": {
            k: summary.get(k)
            for k in ("n_latents", "n_skipped", "n_explained", "n_scored", "n_failed")
        },
        "synthetic_cache": gen,
    }
    shutil.rmtree(run)
    shutil.rmtree(coder)
    return out


def bench_sampling(
    work: Path, n_tokens: int, n_sample: int, quiet: float, neighbours: bool
) -> dict:
    """Neighbours (first call) and sample CPU per latent on a 65,536-latent cache of `n_tokens`."""
    _, run, gen = synthetic(work, f"sample-{n_tokens}", NEIGHBOURS_LATENTS, n_tokens)
    out: dict = {
        "tokens": gen["n_tokens"],
        "synthetic_cache": {k: v for k, v in gen.items() if k != "cache_config"},
    }
    if neighbours:
        out["neighbours"] = measured(
            ["_neighbours", str(run / "cache"), str(work / "n.json")], quiet
        )
        log.info("neighbours, %d tokens: %s", n_tokens, out["neighbours"])
    out["sample"] = measured(
        ["_sample", str(run / "cache"), str(n_sample), str(work / "s.json")], quiet
    )
    log.info("sampling, %d tokens: %s", n_tokens, out["sample"])
    out["disk_mib"] = du_mib(run)
    shutil.rmtree(run)
    return out


def bench_encoder() -> dict:
    try:
        from eval.bench_encoder import measure
    except ImportError:
        return {"note": "eval.bench_encoder is not in this version"}
    return measure()


# ------------------------------------------------------------------------------------------------
# Summary


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of a least-squares line; with one point, a line through the origin."""
    if len(xs) < 2:
        return 0.0, ys[0] / xs[0]
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(intercept), float(slope)


def extrapolate(res: dict) -> dict:
    """CPU-hours, RAM and disk for 1M latents over 10M tokens, from the measured growth:
    - CPU: the CPU per latent of run + report + export (slope over the measured sizes at the bench's
      token count), with its sampling share replaced by the measured sampling CPU per latent at 10M tokens, times 1M; plus
      neighbours (exact search is O(n^2): the 65k CPU time x (1M / 65,536)^2, an upper bound: above
      131,072 latents a FAISS index searches instead, where installed);
    - RAM: the largest per-stage peak RSS, extrapolated linearly in the latents from the two largest
      sizes, plus the coder's weights for 1M latents (encoder + decoder, float32);
    - disk: the cache (10M tokens x k nonzeros x (4 B in the shards + 6 B in the index)) plus the run's
      outputs per latent (slope of the measured disk use less the cache) x 1M."""
    sizes = res["sizes"]
    if not sizes:
        return {}
    xs = [s["latents"] for s in sizes]
    job = ("run", "report", "export")  # a resume with nothing to do is no part of the work
    _, cpu_slope = _fit(xs, [sum(s["cpu_s"][st] for st in job) for s in sizes])
    sample_1m = res.get("sample_cpu_ms_per_latent_1M")
    sample_10m = res.get("sample_cpu_ms_per_latent_10M") or sample_1m
    per_latent_s = cpu_slope + ((sample_10m or 0) - (sample_1m or 0)) / 1000
    n65 = res.get("neighbours_cpu_s_65k")
    neighbours_h = None if n65 is None else n65 * (TARGET_LATENTS / NEIGHBOURS_LATENTS) ** 2 / 3600
    ram = []
    for stage in STAGES:
        peaks = [s["peak_rss_mib"][stage] for s in sizes[-2:]]
        if len(peaks) < 2:  # one size: no growth to extrapolate
            ram.append(peaks[0])
            continue
        intercept, slope = _fit(xs[-2:], peaks)
        ram.append(intercept + slope * TARGET_LATENTS)
    coder_mib = TARGET_LATENTS * 576 * 4 * 2 / 2**20
    outputs = [s["disk_mib"] - s["disk_mib_parts"].get("cache", 0) for s in sizes]
    _, disk_slope = _fit(xs, outputs)
    cache_mib = TARGET_TOKENS * 32 * (4 + 6) / 2**20
    return {
        "latents": TARGET_LATENTS,
        "tokens": TARGET_TOKENS,
        "cpu_hours_pipeline": round(per_latent_s * TARGET_LATENTS / 3600, 2),
        "cpu_hours_neighbours_exact": None if neighbours_h is None else round(neighbours_h, 2),
        "cpu_s_per_latent": round(per_latent_s, 4),
        "ram_gib": round((max(ram) + coder_mib) / 1024, 2),
        "ram_gib_coder_weights": round(coder_mib / 1024, 2),
        "disk_gib": round((cache_mib + disk_slope * TARGET_LATENTS) / 1024, 1),
        "disk_gib_cache": round(cache_mib / 1024, 1),
        "formula": extrapolate.__doc__.split("growth:", 1)[1].strip(),
        "excludes": "the subject model's forward pass over 10M tokens (see `encoder`) and any LLM work",
    }


def goals(res: dict) -> dict:
    """The issue's goals, each with the measured value and whether it is met (None: not measured)."""
    out: dict = {}
    by = {s["latents"]: s for s in res["sizes"]}
    if 10_000 in by and 100_000 in by:
        growth = {
            st: round(by[100_000]["peak_rss_mib"][st] / by[10_000]["peak_rss_mib"][st] - 1, 3)
            for st in STAGES
        }
        out["peak_rss_growth_10k_100k"] = {
            "value": growth,
            "goal": f"<= {GOALS['flat_growth']:.0%}",
            "met": all(g <= GOALS["flat_growth"] for g in growth.values()),
        }
        excl = max(by[100_000]["peak_excl_models_mib"].values())
        out["peak_excl_models_mib_100k"] = {
            "value": excl,
            "goal": "< 2048",
            "met": excl < GOALS["peak_excl_models_mib_100k"],
        }
    n65 = res.get("neighbours_s_65k")
    out["neighbours_s_65k"] = {
        "value": n65,
        "goal": "< 60",
        "met": None if n65 is None else n65 < GOALS["neighbours_s_65k"],
    }
    a, b = res.get("sample_cpu_ms_per_latent_1M"), res.get("sample_cpu_ms_per_latent_10M")
    ratio = None if not (a and b) else round(b / a, 2)
    out["sample_ratio_10M_1M"] = {
        "value": ratio,
        "goal": "<= 3",
        "met": None if ratio is None else ratio <= 3,
    }
    return out


def _cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return []


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def render_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Scale: time and memory by number of latents",
        "",
        f"`{res['command']}` at {res['git_commit']}, {res['date']}."
        + (
            " **Partial: the benchmark had not finished when this was written.**"
            if res.get("partial")
            else ""
        ),
        f"Machine: {m['cpu']}, {m['cores']} cores; CPU flags {', '.join(m['cpu_flags'])}; "
        f"load average {m['loadavg_start']} at the start, {m['loadavg_end']} at the end.",
        "",
        f"Synthetic inputs (`eval.synthetic`): random TopK SAE (d_in 576, k 32), {res['tokens']:,} tokens of "
        "real Wikipedia windows with log-normal latent densities and values; token-stats explainer, embedding "
        f"scorer with a 1-layer width-32 BERT; sample sizes {res['sample_sizes']}; judge check off.",
        *[
            f"- {name}: `{part['command']}` at {part['git_commit']}, {part['date']}"
            for name, part in (res.get("parts") or {}).items()
        ],
        "",
        "## Stages by number of latents",
        "",
        "| latents | stage | wall s | CPU s | peak RSS MiB | RSS of imports + models MiB | peak excl. models MiB | other cores |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["sizes"]:
        for st in STAGES:
            lines.append(
                f"| {s['latents']:,} | {st} | {s['wall_s'][st]:.1f} | {s['cpu_s'][st]:.1f} | {s['peak_rss_mib'][st]:.0f} "
                f"| {s['models_rss_mib'][st] or 0:.0f} | {s['peak_excl_models_mib'][st]:.0f} | {s['other_cores'][st]:.2f} |"
            )
    lines += [
        "",
        "| latents | disk MiB (run folder) | cache MiB | coder MiB | skipped | synthetic cache tokens/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["sizes"]:
        lines.append(
            f"| {s['latents']:,} | {s['disk_mib']:.0f} | {s['disk_mib_parts'].get('cache', 0):.0f} | {s['coder_mib']:.0f} "
            f"| {s['run_summary'].get('n_skipped')} | {s['synthetic_cache']['tokens_per_s']:,} |"
        )
    lines += ["", "## Neighbours and sampling (65,536 latents)", ""]
    lines.append(
        f"- neighbours_s_65k: {res.get('neighbours_s_65k')} s ({res.get('neighbours_method', 'not measured')})"
    )
    for key in ("1M", "10M"):
        part = res.get(f"sampling_{key}")
        if part:
            s = part["sample"]
            lines.append(
                f"- sampling at {part['tokens']:,} tokens: {s.get('cpu_ms_per_latent')} CPU ms per latent "
                f"({s.get('latents')} latents, {s.get('ok')} sampled, the rest skipped as too rare); setup "
                f"{s.get('setup_wall_s')} s, neighbours {s.get('neighbours_wall_s')} s; synthetic cache "
                f"{part['synthetic_cache']['tokens_per_s']:,} tokens/s, {part['disk_mib']:.0f} MiB"
            )
        else:
            lines.append(f"- sampling at {key} tokens: not measured")
    lines += ["", "## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for key, g in res["goals"].items():
        lines.append(f"| {key} | {g['value']} | {g['goal']} | {g['met']} |")
    if res.get("notes"):
        lines += ["", *[f"- {n}" for n in res["notes"]]]
    ext = res.get("extrapolation_1M") or {}
    if ext:
        lines += ["", "## 1M latents over 10M tokens (extrapolated)", ""]
        lines += [f"- {k}: {v}" for k, v in ext.items() if k not in ("formula",)]
        lines += ["", "Formula: " + " ".join(ext["formula"].split())]
    lines += ["", "## Encoder", "", "```", json.dumps(res.get("encoder"), indent=1), "```", ""]
    lines += [f"Bench parts took (s): {res['timings']}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="1000,10000,100000", help="latents per size, comma-separated"
    )
    ap.add_argument("--tokens", type=int, default=1_000_000, help="cache tokens of every size")
    ap.add_argument("--sample-latents", type=int, default=500)
    ap.add_argument(
        "--skip-1M", action="store_true", help="no neighbours / sampling on the 1M-token cache"
    )
    ap.add_argument("--skip-10M", action="store_true", help="no sampling on the 10M-token cache")
    ap.add_argument("--skip-neighbours", action="store_true")
    ap.add_argument("--skip-encoder", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temporary one)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {
        "command": "python -m eval.bench_scale "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": _git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": common.cpu_name(),
            "cores": os.cpu_count(),
            "cpu_flags": _cpu_flags(),
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            "versions": common.versions(VERSIONS),
            "platform": platform.platform(),
        },
        "tokens": args.tokens,
        "sample_sizes": SAMPLE,
        "sizes": [],
        "timings": {},
    }
    try:
        t = time.perf_counter()
        embedder = tiny_embedder(work / "tiny-embedder")
        for key, tokens, skip in (
            ("1M", 1_000_000, args.skip_1M),
            ("10M", 10_000_000, args.skip_10M),
        ):
            if skip:
                continue
            t = time.perf_counter()
            part = bench_sampling(
                work,
                tokens,
                args.sample_latents,
                args.quiet_wait,
                not args.skip_neighbours and key == "1M",
            )
            res[f"sampling_{key}"] = part
            res[f"sample_cpu_ms_per_latent_{key}"] = part["sample"].get("cpu_ms_per_latent")
            if "neighbours" in part:
                res["neighbours_s_65k"] = part["neighbours"].get("seconds")
                res["neighbours_cpu_s_65k"] = part["neighbours"].get("cpu_s")
                res["neighbours_method"] = part["neighbours"].get("method")
            res["timings"][f"sampling_{key}"] = round(time.perf_counter() - t)
            _save(res, args.results, partial=True)
        for n in [int(x) for x in args.sizes.split(",") if x]:
            t = time.perf_counter()
            res["sizes"].append(bench_size(work, n, args.tokens, embedder, args.quiet_wait))
            res["timings"][f"size_{n}"] = round(time.perf_counter() - t)
            _save(res, args.results, partial=True)  # a long benchmark keeps what it measured
        if not args.skip_encoder:
            t = time.perf_counter()
            res["encoder"] = bench_encoder()
            res["timings"]["encoder"] = round(time.perf_counter() - t)
        elif (args.results / "bench_encoder.json").exists():
            recorded = json.loads((args.results / "bench_encoder.json").read_text())
            res["encoder"] = {"from": "results/bench_encoder.json (--skip-encoder)", **recorded}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _save(res, args.results, partial=False)
    return res


def _save(res: dict, results: Path, partial: bool) -> None:
    """results/bench_scale.{json,md} from what is measured so far; `partial` marks an unfinished run."""
    res["partial"] = partial
    res["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    res["extrapolation_1M"] = extrapolate(res)
    res["goals"] = goals(res)
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_scale.json").write_text(json.dumps(res, indent=2) + "\n")
    (results / "bench_scale.md").write_text(render_markdown(res))
    log.info("wrote %s%s", results / "bench_scale.md", " (partial)" if partial else "")


def child(argv: list[str]) -> None:
    kind, *rest = argv
    logging.basicConfig(level=logging.WARNING)
    if kind == "_stage":
        stage, run, config, embedder, out = rest
        _stage_child(stage, Path(run), Path(config), embedder, Path(out))
    elif kind == "_neighbours":
        _neighbours_child(Path(rest[0]), Path(rest[1]))
    elif kind == "_sample":
        _sample_child(Path(rest[0]), int(rest[1]), Path(rest[2]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        child(sys.argv[1:])
    else:
        main()
