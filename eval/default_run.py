"""The embedded default, end to end: `autointerp run` from an empty run folder, timed.

Runs the README's main command (`autointerp run`, every option at its default) into a new temporary
run folder, with the package's own venv, and writes what it produced:
- results/default_run.json: wall_s, n_latents, n_scored, n_failed, n_skipped, the mean of each
  scorer's main metric, LLM calls and tokens, the time of each stage read from the run's output, the
  command, the machine's CPU count and the load beside the run;
- results/default_run.md: the same as a table, and the run's last lines of output.

The converted model in AUTOINTERP_HOME is reused when it is there (setup converts it once).

Usage: python -m eval.default_run [--keep DIR] [--python .venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _load() -> float:
    return os.getloadavg()[0]


def run(python: str, keep: Path | None) -> dict:
    folder = keep or Path(tempfile.mkdtemp(prefix="default_run-")) / "run"
    cmd = [python, "-m", "autointerp.cli", "run", "--out", str(folder)]
    load_before = _load()
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if done.returncode != 0:
        sys.exit(f"autointerp run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    report = re.search(r"^report: (.+)$", done.stdout, re.M)
    return {
        "command": "autointerp run  (python -m eval.default_run)",
        "wall_s": round(wall, 1),
        "pipeline_wall_s": summary["wall_s"],
        "n_latents": summary["n_latents"],
        "n_skipped": summary["n_skipped"],
        "n_explained": summary["n_explained"],
        "n_scored": summary["n_scored"],
        "n_failed": summary["n_failed"],
        "scorers": {
            name: {"metric": m["metric"], "mean": m["mean"]}
            for name, m in summary["scorers"].items()
        },
        "judge_check": {
            scorer: {coder: v for coder, v in by_coder.items()}
            for scorer, by_coder in summary.get("judge_check", {}).items()
        },
        "llm_calls": summary["llm_calls"],
        "llm_tokens": summary["llm_tokens"],
        "report_printed": bool(report),
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(_load(), 2),
        "stdout_tail": done.stdout.strip().splitlines()[-12:],
    }


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "default_run.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("wall time (command start to exit)", f"{result['wall_s']:.0f} s"),
        ("latents selected (first N of the embedded SAE)", result["n_latents"]),
        ("skipped by sampling (too few activations)", result["n_skipped"]),
        ("explained", result["n_explained"]),
        ("scored by every scorer", result["n_scored"]),
        ("with a failure (explanation or score)", result["n_failed"]),
        ("LLM calls / tokens", f"{result['llm_calls']:,} / {result['llm_tokens']:,}"),
    ]
    rows += [
        (f"mean {m['metric']} ({name})", "n/a" if m["mean"] is None else f"{m['mean']:.3f}")
        for name, m in result["scorers"].items()
    ]
    from autointerp.score.judge_check import describe

    rows += [
        (f"judge check ({scorer}, {coder})", describe(scorer, v))
        for scorer, by_coder in result.get("judge_check", {}).items()
        for coder, v in by_coder.items()
    ]
    lines = [
        "# The embedded default, end to end",
        "",
        f"`{result['command']}` on {result['cpus']} CPU cores, from an empty run folder "
        f"(load average {result['load_before']} before, {result['load_after']} after).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Last lines of output:",
        "",
        "```",
        *result["stdout_tail"],
        "```",
        "",
    ]
    (RESULTS / "default_run.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--keep", type=Path, help="Run folder to keep (default: a temporary one).")
    args = ap.parse_args()
    write(run(args.python, args.keep))


if __name__ == "__main__":
    main()
