"""autointerp as a library: the whole job, reports and exports on run folders, and explaining and
scoring latents given as examples in memory. Every name here is also `autointerp.<name>`.

    import autointerp
    summary = autointerp.run("my-run.yaml", "runs/my-run")        # what `autointerp run` does
    page = autointerp.report(["runs/my-run"])                      # RUN/report/index.html
    files = autointerp.export("runs/my-run")                       # RUN/export/...
    e = autointerp.explain(examples)                               # an `Explanation`
    s = autointerp.score(e, examples, negatives, scorer="detection")  # a `LatentScore`

Examples are anything with `tokens` (strings) and `activations` (one number per token), as objects
(OpenAI's neuron-explainer `ActivationRecord`) or dicts; optional `quantile` and, for negatives,
`kind` (random | similar). `explain` and `score` return the records that the explain and score stages
write. The `a...` forms (`aexplain`, `ascore`) are coroutines; the plain forms also work where an
event loop is already running (a notebook): they run their own loop in a worker thread.

A client is a `ClientConfig` (or a dict of its keys), any object with the client protocol (a `model`
name and `async complete(chats, params)`, `autointerp.clients.base.LLMClient`), or None for the
configured default (the packaged local model on this machine's CPU or GPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from autointerp.aio import run_sync
from autointerp.clients.base import LLMClient
from autointerp.config import CacheConfig, ClientConfig, as_config, validate
from autointerp.errors import ConfigError
from autointerp.score.base import LatentScore
from autointerp.types import Example, ExampleRef, Explanation, LatentId

if TYPE_CHECKING:
    from autointerp.effects import LatentEffects

Config = str | Path | dict | Any | None
"""A YAML path, a dict as the YAML would hold it, a config object, or None for the defaults."""
P = ParamSpec("P")
T = TypeVar("T")


def default_run_config() -> Path:
    """The embedded default's config (`autointerp run` without one)."""
    return Path(__file__).parent / "data" / "default_run.yaml"


def _merge(base: dict, top: Mapping) -> dict:
    """`top` over `base`, mappings merged key by key (a section given in part keeps the rest)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def run_config(config: Config = None, **options: Any):
    """The run's config: `config` (None: the embedded default), with `options` on top, each a
    top-level key of the run config; a section given as a dict changes only the keys it holds
    (`score={"scorers": ["embedding"]}`)."""
    from autointerp.pipeline import RunConfig

    cfg = as_config(default_run_config() if config is None else config, RunConfig)
    if not options:
        return cfg
    return validate(_merge(cfg.model_dump(), options), RunConfig, source="the run's options")


def run(
    config: Config = None,
    out: str | Path = "runs/default",
    *,
    force: bool = False,
    ray: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    retry_failed: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """The whole job into `out` (cache, sample, explain + score, judge check, report), resuming what
    it holds: what `autointerp run` does. `options` change the config (`run_config`), e.g.
    `max_latents=4`. Returns the run's summary (as RUN/summary.json) with `report`, the report's
    index.html (None when there is none: every latent skipped, or `report: false`)."""
    from autointerp.pipeline import run_job

    cfg = run_config(config, **options)
    out = Path(out)
    summary = run_job(
        cfg,
        out,
        force=force,
        ray=ray,
        workers=workers,
        progress=progress,
        gpus_per_worker=gpus_per_worker,
        retry_failed=retry_failed,
    )
    everything_skipped = summary["n_latents"] and summary["n_skipped"] == summary["n_latents"]
    page = None
    if cfg.report and not everything_skipped:
        page = report([out], out / "report", progress=progress)
    return {**summary, "report": page}


def cache(config: Config = None, out: str | Path = "runs/default/cache", progress: bool = True):
    """Cache every coder's sparse activations into `out` (resumes): `autointerp cache`. `config`:
    a cache or run config (its cache keys). Returns the cache folder."""
    from autointerp.cache import build_cache
    from autointerp.pipeline import RunConfig

    cfg = as_config(config, RunConfig).cache_config() if config is not None else CacheConfig()
    return build_cache(cfg, out, progress)


def report(
    runs: Sequence[str | Path] | str | Path,
    out: str | Path | None = None,
    coders: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """The HTML report of one or more run folders (several are compared) into `out` (default
    RUN/report for one run, ./report for several); returns its index.html."""
    from autointerp.report import build_report

    folders = [Path(runs)] if isinstance(runs, str | Path) else [Path(r) for r in runs]
    if not folders:
        raise ConfigError("report: no run folder given")
    target = (
        Path(out)
        if out is not None
        else (folders[0] / "report" if len(folders) == 1 else Path("report"))
    )
    return build_report(folders, target, coders, progress=progress)


def export(run: str | Path, out: str | Path | None = None, **options: Any) -> dict[str, Path]:
    """The run's explanation dataset (Parquet, JSONL, card, Neuronpedia files) into `out` (default
    RUN/export): `autointerp.export.export_run`'s options. Returns each file's path."""
    from autointerp.export import export_run

    return export_run(run, out, **options)


def make_client(client: ClientConfig | Mapping | LLMClient | None = None) -> LLMClient:
    """A client from a `ClientConfig`, a dict of its keys, or None (the default); a client already
    built is returned as is."""
    from autointerp import clients

    if client is None or isinstance(client, Mapping):
        return clients.make_client(validate(dict(client or {}), ClientConfig, source="client"))
    if isinstance(client, ClientConfig):
        return clients.make_client(client)
    if not callable(getattr(client, "complete", None)) or not hasattr(client, "model"):
        raise ConfigError(
            f"a client is a ClientConfig, a dict or an object with `model` and "
            f"`async complete(chats, params)`; {type(client).__name__} has not both"
        )
    return client


def _get(x: Any, key: str, default: Any = None) -> Any:
    return x.get(key, default) if isinstance(x, Mapping) else getattr(x, key, default)


def to_examples(
    items: Sequence[Any], kind: str = "activating", first_seq: int = 0
) -> list[Example]:
    """Examples in memory as autointerp's `Example`s: each item has `tokens` and `activations`
    (as attributes or keys; optional `quantile`, `kind`). Numbered `first_seq`, `first_seq + 1`...
    (their `seq`: the id of an example within a latent's records)."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigError(f"examples are a list, not {type(items).__name__}")
    out = []
    for i, x in enumerate(items):
        if isinstance(x, Example):
            out.append(x)
            continue
        tokens, acts = _get(x, "tokens"), _get(x, "activations")
        if tokens is None or acts is None:
            raise ConfigError(f"example {i} has no `tokens` and `activations`")
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise ConfigError(f"example {i}: `tokens` is a list of strings (one per token)")
        if len(tokens) != len(acts) or not tokens:
            raise ConfigError(
                f"example {i}: {len(tokens)} tokens and {len(acts)} activations; one per token"
            )
        out.append(
            Example(
                tokens=list(tokens),
                activations=[float(a) for a in acts],
                seq=first_seq + i,
                start=0,
                quantile=_get(x, "quantile"),
                kind=_get(x, "kind") or kind,
            )
        )
    return out


def _latent(latent: LatentId | tuple[str, int] | None) -> LatentId:
    if latent is None:
        return LatentId(coder="memory", latent=0)
    if isinstance(latent, LatentId):
        return latent
    coder, index = latent
    return LatentId(coder=coder, latent=int(index))


def _sync(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The plain form of an `a...` coroutine function: `run_sync` of it, also inside a running
    event loop (`autointerp.aio`)."""

    @functools.wraps(coroutine_function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(coroutine_function(*args, **kwargs))

    call.__name__ = call.__qualname__ = coroutine_function.__name__.removeprefix("a")
    call.__doc__ = f"`{coroutine_function.__name__}`, from synchronous code (also inside a running event loop).\n\n{coroutine_function.__doc__}"
    return call


async def aexplain(
    examples: Sequence[Any],
    client: ClientConfig | Mapping | LLMClient | None = None,
    explainer: str = "default",
    negatives: Sequence[Any] = (),
    config: Config = None,
    latent: LatentId | tuple[str, int] | None = None,
    effects: LatentEffects | Mapping | None = None,
) -> Explanation:
    """Explain one latent from its activating examples (and, for the `contrastive` explainer, the
    `negatives`): the record the explain stage writes. `config`: the `explain:` options
    (`ExplainConfig`); `explainer` overrides its choice. The output-side explainers (`logits`,
    `mixed`, `intervention`) read `effects` (`LatentEffects` or a dict: `promoted` and
    `suppressed` tokens, `continuations` as `prompt`/`clean`/`steered`); in a run they are computed
    from the subject model and coder. With `best_of` > 1 the `negatives` (similar non-activating
    examples) and `pilot` of the examples judge the candidates, with the same client
    (`autointerp.best_of`). A failed answer is an Explanation with `text` None and the reason in
    `error`, as in a run."""
    from autointerp.best_of import make_explainer
    from autointerp.effects import LatentEffects
    from autointerp.explain import OUTPUT_EXPLAINERS, ExplainConfig

    cfg = as_config(config, ExplainConfig).model_copy(update={"explainer": explainer})
    cfg = validate(cfg.model_dump(), ExplainConfig, source="explain options")
    train = to_examples(examples)
    if not train and cfg.explainer not in ("logits", "intervention"):
        raise ConfigError("explain needs at least one activating example")
    ev = None
    if cfg.explainer in OUTPUT_EXPLAINERS:
        if effects is None:
            raise ConfigError(
                f"the {cfg.explainer!r} explainer needs `effects` (the latent's promoted and "
                "suppressed tokens or steered continuations) when it explains examples in memory"
            )
        ev = [validate(dict(effects), LatentEffects) if isinstance(effects, Mapping) else effects]
    wanted = cfg.explainer == "contrastive" or cfg.best_of > 1
    negs = to_examples(negatives, "similar", len(train)) if wanted else []
    if cfg.best_of > 1:
        from autointerp.best_of import check_examples

        check_examples(cfg, len(train), len(negs))
    llm = None if cfg.explainer == "token-stats" else make_client(client)
    length = max((len(e.tokens) for e in train + negs), default=0)
    ex = make_explainer(None, cfg, llm, None, length)
    [out] = await ex.explain_examples([_latent(latent)], [(train, negs)], ev)
    return out


explain = _sync(aexplain)


def _refs(xs: list[Example]) -> list[ExampleRef]:
    return [
        ExampleRef(
            seq=x.seq,
            start=x.start,
            quantile=x.quantile,
            kind=x.kind if x.kind in ("activating", "random", "similar") else "activating",
            acts=[(i, a) for i, a in enumerate(x.activations) if a != 0],
        )
        for x in xs
    ]


async def ascore(
    explanation: Explanation | str,
    examples: Sequence[Any],
    negatives: Sequence[Any],
    scorer: str = "detection",
    client: ClientConfig | Mapping | LLMClient | None = None,
    config: Config = None,
    train: Sequence[Any] = (),
    latent: LatentId | tuple[str, int] | None = None,
) -> LatentScore:
    """Score an explanation (an `Explanation` or its text) on held-out activating `examples` and
    non-activating `negatives`: the `LatentScore` the score stage writes, with every prediction.
    `config`: the `score:` options (`ScoreConfig`); `train`: the explainer's examples, which the
    `example-embedding` scorer compares with. The intervention scorers steer the subject model and
    need a run folder (`autointerp.stages.score`)."""
    from autointerp.score.base import LatentItem
    from autointerp.score.names import MAIN_METRIC
    from autointerp.score.stage import (
        SCORERS,
        ScoreConfig,
        ScoreContext,
        ScoreStageConfig,
        precheck,
    )
    from autointerp.types import SampledLatent

    if scorer not in MAIN_METRIC:
        raise ConfigError(f"no scorer {scorer!r} (known: {', '.join(MAIN_METRIC)})")
    lid = _latent(latent)
    if isinstance(explanation, str):
        explanation = Explanation(
            latent=lid, text=explanation, raw=explanation, model="given", prompt="given"
        )
    lid = explanation.latent
    test = to_examples(examples)
    negs = to_examples(negatives, "random", len(test))
    shown = to_examples(train, "activating", len(test) + len(negs))
    every = test + negs + shown
    # the `score:` options: of a ScoreConfig, or the section of a stage or run config
    score_cfg = as_config(config, ScoreConfig, section="score")
    stage = ScoreStageConfig(score=score_cfg.model_copy(update={"scorers": [scorer]}))
    length = max((len(e.tokens) for e in every), default=1)
    ctx = ScoreContext(None, stage, length, lambda: make_client(client))  # built if a scorer asks
    record = SampledLatent(
        id=lid,
        status="ok",
        density=0.0,
        max_activation=max((max(e.activations) for e in test), default=0.0),
        n_activating_windows=len(test),
        train=_refs(shown),
        test=_refs(test),
        negatives=_refs(negs),
    )
    bad = precheck(record, explanation, scorer)
    if bad is not None:
        return bad
    built = SCORERS[scorer](ctx, lid.coder)
    [result] = await built.score([LatentItem(record, explanation, test, negs, shown)])
    return result


score = _sync(ascore)
