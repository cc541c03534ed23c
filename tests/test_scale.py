"""Memory of a run stays flat in the number of latents, on a coder of 20,000 latents.

A synthetic cache (`eval.synthetic`: a random 20,000-latent TopK SAE in the sparsify layout, real
token windows of the packaged Wikipedia corpus, log-normal latent densities, the exact on-disk layout
`autointerp run` takes for its own finished cache) in one run folder: first the SMALL densest latents,
then the same folder extended to the LARGE densest (the paper's sample sizes, so records are full).
After each, `autointerp run` (token-stats explainer, embedding scorer with a tiny one-layer model; no
LLM), the same command again (a resume with nothing to do) and `autointerp export` run in fresh
processes, and their peak RSS (ru_maxrss) is compared between the two.

The bound: a run that keeps every latent's record, explanation and scores in memory (as every stage
did before issue 12: the plan held all records, export held every score with its predictions and a
second copy) grows by the size of those objects per latent: ~665 KiB per latent at the paper's
sample sizes (measured before: 150-200 KiB per latent for resume and export even on this small
cache's half-filled records; BEFORE_KIB_PER_LATENT for full ones), i.e. (LARGE - SMALL) x that
between the two. Bounded-memory stages
grow by what the selection itself costs (a few ids per latent) plus allocator noise, well under
BOUND_MIB, a quarter of the old growth: a stage that again holds per-latent objects fails.
No timing is asserted.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from autointerp.cache import ActivationCache
from eval.bench_scale import process_usage, run_config
from eval.synthetic import cache_config, tiny_embedder, write_cache, write_coder

N_LATENTS = 20_000
TOKENS = 131_072
SMALL, LARGE = 50, 500
BEFORE_KIB_PER_LATENT = 600
GROWTH_BEFORE_MIB = (LARGE - SMALL) * BEFORE_KIB_PER_LATENT / 1024
BOUND_MIB = GROWTH_BEFORE_MIB / 4
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def scale(tmp_path_factory) -> dict:
    """Peak RSS per stage and the summary, after SMALL and after LARGE latents in one run folder."""
    root = tmp_path_factory.mktemp("scale")
    coder = write_coder(root / "coder", N_LATENTS)
    cfg = cache_config(coder, TOKENS)
    write_cache(cfg, root / "run" / "cache", progress=False)
    embedder = tiny_embedder(root / "embedder")
    # the densest latents: full records (the paper's sample sizes), the most memory per latent
    count = ActivationCache(root / "run" / "cache").stats("layers.15")["count"]
    dense = np.argsort(-count, kind="stable")[:LARGE]
    base = run_config(cfg.model_dump(mode="json", exclude_defaults=True), embedder, sample={})
    cli = [sys.executable, "-m", "autointerp.cli"]
    run, out = root / "run", {}
    for n in (
        SMALL,
        LARGE,
    ):  # the second run adds latents to the first's folder (`latents` is free)
        config = root / f"run-{n}.yaml"
        chosen = ",".join(str(i) for i in sorted(dense[:n].tolist()))
        config.write_text(yaml.safe_dump({**base, "latents": chosen}))
        stages = {
            "run": [*cli, "run", str(config), "--out", str(run), "--no-report"],
            "resume": [*cli, "run", str(config), "--out", str(run), "--no-report"],
            "export": [*cli, "export", str(run)],
        }
        peaks = {}
        for stage, cmd in stages.items():
            usage = process_usage(cmd, ENV, cwd=root)
            assert usage["exit"] == 0, (n, stage, usage)
            peaks[stage] = usage["peak_rss_mib"]
        out[n] = {"peaks": peaks, "summary": json.loads((run / "summary.json").read_text())}
    return out


def test_every_selected_latent_is_done(scale):
    for n in (SMALL, LARGE):
        s = scale[n]["summary"]
        assert s["n_latents"] == n
        assert s["n_explained"] + s["n_skipped"] == n
        assert s["n_explained"] == n  # the densest latents all fire often enough


@pytest.mark.parametrize("stage", ["run", "resume", "export"])
def test_peak_memory_flat_in_latents(scale, stage):
    small, large = scale[SMALL]["peaks"][stage], scale[LARGE]["peaks"][stage]
    growth = large - small
    assert growth < BOUND_MIB, (
        f"{stage}: peak RSS {small:.0f} MiB over {SMALL} latents, {large:.0f} MiB over {LARGE}: "
        f"+{growth:.0f} MiB ({1024 * growth / (LARGE - SMALL):.0f} KiB per latent; bound {BOUND_MIB:.0f} MiB)"
    )
