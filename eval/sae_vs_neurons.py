"""The paper's finding, reproduced here: are SAE latents more interpretable than neurons, and than
the same coders on a randomly initialised model?

Runs, into `WORKDIR/sae-vs-neurons` and `WORKDIR/random-model` (each resumes; a finished run
folder is only read):
1. `configs/sae_vs_neurons.yaml`: the embedded TopK SAE (layer 15 residual stream) and the 1,536 MLP
   neurons of layer 15 (top-32 per token), 40 random latents of each;
2. `configs/random_model.yaml`: the same neurons on SmolLM2 with its weights re-initialised
   (`baseline: random-model`, seed 0), 40 random latents;
then the report's comparison (`autointerp.report.analyse`): each coder's mean main metric per scorer
with a 95% bootstrap interval over latents, and for every pair the difference of means, its
interval and a two-sided Mann-Whitney U p-value.

Usage:
    python -m eval.sae_vs_neurons [--workdir runs] [--results results]
Writes results/sae_vs_neurons.md and results/sae_vs_neurons.json (rows: `coder`, `scorer`, `mean`,
`ci_low`, `ci_high`, `n`, `p_value`; a coder's row has no p-value, a pair's `coder` is `a - b`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "sae-vs-neurons": REPO / "configs" / "sae_vs_neurons.yaml",
    "random-model": REPO / "configs" / "random_model.yaml",
}


def run_all(workdir: Path) -> dict[str, dict]:
    from autointerp.config import load_yaml
    from autointerp.pipeline import RunConfig, run_job

    summaries = {}
    for name, config in RUNS.items():
        cfg = load_yaml(config, RunConfig)
        t0 = time.time()
        summary = run_job(cfg, workdir / name, progress=True)  # type: ignore[arg-type]
        summaries[name] = summary | {"seconds_this_call": round(time.time() - t0, 1)}
    return summaries


def rows(workdir: Path) -> list[dict]:
    from autointerp.report import analyse

    a = analyse([workdir / name for name in RUNS])
    out = []
    for r in a.comparison["coders"].itertuples(index=False):
        out.append(
            {
                "coder": r.label,
                "scorer": r.scorer,
                "metric": r.metric,
                "mean": round(float(r.mean), 4),
                "ci_low": round(float(r.ci_low), 4),
                "ci_high": round(float(r.ci_high), 4),
                "n": int(r.n),
                "p_value": None,
            }
        )
    for p in a.comparison["pairs"].itertuples(index=False):
        out.append(
            {
                "coder": f"{p.coder_a} - {p.coder_b}",
                "scorer": p.scorer,
                "metric": p.metric,
                "mean": round(float(p.diff), 4),
                "ci_low": round(float(p.ci_low), 4),
                "ci_high": round(float(p.ci_high), 4),
                "n": int(p.n_a) + int(p.n_b),
                "p_value": float(f"{p.p_mannwhitney:.3g}"),
                "contrast": p.contrast or "sae vs neurons",
            }
        )
    return out


def render(res: dict) -> str:
    lines = [
        "# SAE latents vs neurons, and trained vs random model",
        "",
        f"Command: `{res['command']}` ({res['date']}, {res['cores']} CPU cores, load average "
        f"{res['load_before']} before). Runs (seconds of this invocation; a run folder finished "
        "earlier is only read): "
        + "; ".join(
            f"`{n}` {s.get('n_scored', '?')} latents scored, {s.get('n_skipped', 0)} skipped, "
            f"{s.get('wall_s', '?')} s"
            for n, s in res["runs"].items()
        )
        + ".",
        "",
        "Explainer: the packaged SmolLM2-135M-Instruct. Scorers: `embedding` (explanation vs "
        "held-out examples, MiniLM) and `example-embedding` (no explanation: held-out examples vs "
        "the latent's own train examples, MiniLM). Mean of each latent's main metric (AUROC) with "
        "a 95% bootstrap interval over latents; for pairs the difference of means, its interval "
        "and a two-sided Mann-Whitney U p-value.",
        "",
        "| coder | scorer | mean | 95% interval | n | p-value |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in res["rows"]:
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(
            f"| {r['coder']} | {r['scorer']} | {r['mean']:+.3f} | [{r['ci_low']:+.3f}, "
            f"{r['ci_high']:+.3f}] | {r['n']} | {p} |"
        )
    return "\n".join(lines + [""] + res.get("findings", [])) + "\n"


def findings(table: list[dict]) -> list[str]:
    out = ["## Findings", ""]
    for r in (x for x in table if x["p_value"] is not None):
        sign = "higher" if r["mean"] > 0 else "lower"
        sure = r["ci_low"] > 0 or r["ci_high"] < 0
        out.append(
            f"- {r['scorer']}, {r['coder']} ({r['contrast']}): the first is {sign} by "
            f"{abs(r['mean']):.3f} (interval [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = "
            f"{r['p_value']:.3g}): "
            + (
                "the interval excludes 0."
                if sure
                else "the interval includes 0: no difference shown."
            )
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m eval.sae_vs_neurons", description=__doc__.split("\n")[0]
    )
    p.add_argument("--workdir", type=Path, default=REPO / "runs")
    p.add_argument("--results", type=Path, default=REPO / "results")
    args = p.parse_args(argv)
    load = round(os.getloadavg()[0], 2)
    summaries = run_all(args.workdir)
    table = rows(args.workdir)
    res = {
        "command": " ".join(
            ["python -m eval.sae_vs_neurons", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "load_before": load,
        "runs": {
            n: {k: s.get(k) for k in ("n_latents", "n_skipped", "n_scored", "n_failed", "wall_s")}
            for n, s in summaries.items()
        },
        "rows": table,
    }
    res["findings"] = findings(table)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "sae_vs_neurons.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.results / "sae_vs_neurons.md").write_text(render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
