"""The stages one at a time, on folders: what `autointerp info`, `sample`, `explain` and `score` run,
and what Python calls (`autointerp.stages.explain(RUN / "cache")`). Each returns what it did as data;
the command line only prints it.

Folders default to those of a run: CACHE's parent holds sample/, explanations/ and scores/. Every
stage resumes what its output folder holds. `autointerp run` (`autointerp.pipeline`) runs the same
explainer (`Explainer`) and scorers (`SCORERS`, `score_latents`) in chunks that explain and score
together; these functions run one stage over whole coders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from autointerp.clients.base import LLMClient
from autointerp.config import as_config
from autointerp.errors import ConfigError

if TYPE_CHECKING:
    from autointerp.explain import ExplainConfig

Config = str | Path | dict | BaseModel | None
"""A YAML path, a dict as the YAML would hold it, a config object, or None for the defaults."""


def cache_info(root: str | Path) -> dict[str, Any]:
    """A cache in numbers: tokens, shards, and per coder its kind, hookpoint, latents, nonzeros,
    mean L0, latents that never fire, and bytes on disk per nonzero (shards, latent index)."""
    from autointerp.cache import ActivationCache

    root = Path(root)
    c = ActivationCache(root)
    summary = c.manifest.get("summary", {})
    coders = {}
    for name, meta in c.coders.items():
        s = summary.get(name, {})
        nnz = s.get("nonzeros", 0)
        size = sum(f.stat().st_size for f in (root / "shards").glob(f"*/{name}/*.npy"))
        index = sum(f.stat().st_size for f in (root / "index" / name).glob("*.npy"))
        coders[name] = {
            "kind": meta["kind"],
            "hookpoint": meta["hookpoint"],
            "n_latents": meta["n_latents"],
            "nonzeros": nnz,
            "mean_l0": s.get("mean_l0", 0),
            "dead_latents": s.get("dead_latents", 0),
            "bytes_per_nonzero": size / max(nnz, 1),
            "index_bytes_per_nonzero": index / max(nnz, 1),
        }
    return {
        "root": root,
        "n_tokens": c.n_tokens,
        "n_shards": len(c.shard_names),
        "shortfall": c.manifest.get("corpus_shortfall"),
        "coders": coders,
    }


def _example_len(sample_dir: Path) -> int:
    sample_file = sample_dir / "sample_config.json"
    if not sample_file.exists():
        raise ConfigError(f"no samples in {sample_dir}; run `autointerp sample` first")
    return json.loads(sample_file.read_text())["example_len"]


def _check_best_of(cfg: ExplainConfig, sample_dir: Path) -> None:
    """Best-of-k's pilot against the samples' numbers of train examples and explain negatives."""
    from autointerp.best_of import config_problem

    sample = json.loads((sample_dir / "sample_config.json").read_text())
    bad = config_problem(cfg, sample["n_train"], sample.get("n_explain_negatives", 0))
    if bad:
        raise ConfigError(f"{bad} (the samples in {sample_dir})")


def _ids(cache, name: str, latents: str | None) -> set[int] | None:
    from autointerp.sample import parse_latents

    return set(parse_latents(latents, cache.coders[name]["n_latents"])) if latents else None


def sample(
    cache_dir: str | Path,
    out: str | Path | None = None,
    config: Config = None,
    coders: list[str] | None = None,
    latents: str | None = None,
    ray: str | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Draw each latent's train, test and non-activating examples into OUT/<coder>.jsonl (OUT
    defaults to CACHE/../sample); `config` holds the sampling options (`SampleConfig`, or a run
    config's `sample:` section). Returns per coder: path, sampled, skipped and the skip reasons."""
    from autointerp.cache import ActivationCache
    from autointerp.jsonl import SampleHead, scan
    from autointerp.pipeline import sample_stage, skip_reasons
    from autointerp.sample import SampleConfig, parse_latents

    cache_dir = Path(cache_dir)
    out = Path(out) if out is not None else cache_dir.parent / "sample"
    cfg = as_config(config, SampleConfig, section="sample")
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
    done = {}
    for name, path in sample_stage(cache, cfg, out, ids, ray, workers, progress).items():
        wanted = set(ids[name])
        heads = [r for _, r in scan(path, SampleHead) if r.id.latent in wanted]
        skipped = [r for r in heads if r.status == "skipped"]
        done[name] = {
            "path": path,
            "sampled": len(heads) - len(skipped),
            "skipped": len(skipped),
            "skip_reasons": skip_reasons(skipped),
        }
    return done


def explain(
    cache_dir: str | Path,
    sample_dir: str | Path | None = None,
    out: str | Path | None = None,
    config: Config = None,
    coders: list[str] | None = None,
    latents: str | None = None,
    client: LLMClient | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Explain every sampled latent into OUT/<coder>.jsonl (OUT defaults to
    CACHE/../explanations); `config` holds `explain:` and `client:` (`ExplainStageConfig`, or a run
    config); `client`, any object with the client protocol, replaces the configured one (and judges
    best-of-k's pilot). Returns `coders` (per coder: path, explained, failed, mean_words) and
    `usage` (the LLM's work, best-of-k's pilot included)."""
    from autointerp.best_of import make_explainer
    from autointerp.cache import ActivationCache
    from autointerp.clients import make_client
    from autointerp.config import SubjectConfig
    from autointerp.explain import (
        ExplainStageConfig,
        effects_for,
        explain_coder,
        summarize,
    )
    from autointerp.sample import TokenDecoder
    from autointerp.score.stage import ScoreContext, ScoreStageConfig
    from autointerp.subject import load_tokenizer

    cache_dir = Path(cache_dir)
    sample_dir = Path(sample_dir) if sample_dir is not None else cache_dir.parent / "sample"
    out = Path(out) if out is not None else cache_dir.parent / "explanations"
    cfg = as_config(config, ExplainStageConfig)
    cache = ActivationCache(cache_dir)
    example_len = _example_len(sample_dir)
    if cfg.explain.best_of > 1:
        _check_best_of(cfg.explain, sample_dir)
    decode = TokenDecoder(load_tokenizer(SubjectConfig(**cache.manifest["config"]["subject"])))
    if cfg.explain.explainer == "token-stats":
        client = None
    elif client is None:
        client = make_client(cfg.client, out / "llm_cache.sqlite")
    steering = getattr(getattr(config, "score", None), "intervention", None)
    ctx = ScoreContext(cache, ScoreStageConfig(), example_len)  # the subject and coders, lazily
    effects = effects_for(cfg.explain, ctx, steering)
    ex = make_explainer(cache, cfg.explain, client, decode, example_len, effects=effects)
    done = {}
    for name in coders or [p.stem for p in sorted(sample_dir.glob("*.jsonl"))]:
        path = sample_dir / f"{name}.jsonl"
        if not path.exists():
            raise ConfigError(f"no samples for coder {name!r} in {sample_dir}")
        written = explain_coder(ex, path, out, _ids(cache, name, latents), progress)
        done[name] = {"path": written, **summarize(written)}
    return {"coders": done, "usage": ex.usage.model_dump()}


def score(
    cache_dir: str | Path,
    sample_dir: str | Path | None = None,
    explanations: str | Path | None = None,
    out: str | Path | None = None,
    config: Config = None,
    coders: list[str] | None = None,
    latents: str | None = None,
    client: LLMClient | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every explanation into OUT/<scorer>/<coder>.jsonl (OUT defaults to CACHE/../scores),
    then run the judge check (into OUT/../judge_check); `config` holds `score:` and `client:`
    (`ScoreStageConfig`, or a run config, whose `score_client` is used); `client` replaces the
    configured one. Returns `coders` (per coder and scorer: path, scored, failed, metric, mean),
    `usage` (the scorers' LLM work), `judge_check` (per scorer and coder, the check's verdict) and
    `judge_check_llm` (the check's LLM work now)."""
    from autointerp.cache import ActivationCache
    from autointerp.clients import make_client
    from autointerp.explain import read_explanations
    from autointerp.pipeline import RunConfig
    from autointerp.score.judge_check import folder_verdicts, load_from, run_checks
    from autointerp.score.stage import (
        SCORERS,
        ScoreContext,
        ScoreStageConfig,
        score_coder,
        summarize,
    )

    cache_dir = Path(cache_dir)
    root = cache_dir.parent
    sample_dir = Path(sample_dir) if sample_dir is not None else root / "sample"
    expl_dir = Path(explanations) if explanations is not None else root / "explanations"
    out = Path(out) if out is not None else root / "scores"
    if isinstance(config, RunConfig):
        config = config.score_stage()
    cfg = as_config(config, ScoreStageConfig)
    cache = ActivationCache(cache_dir)
    example_len = _example_len(sample_dir)

    def factory():
        return client if client is not None else make_client(cfg.client, out / "llm_cache.sqlite")

    ctx = ScoreContext(cache, cfg, example_len, factory)
    names = coders or [p.stem for p in sorted(expl_dir.glob("*.jsonl"))]
    if not names:
        raise ConfigError(f"no explanations in {expl_dir}; run `autointerp explain` first")
    done: dict[str, dict] = {}
    for name in names:
        expl_path, sample_path = expl_dir / f"{name}.jsonl", sample_dir / f"{name}.jsonl"
        if not expl_path.exists() or not sample_path.exists():
            raise ConfigError(f"no explanations or samples for coder {name!r} in {expl_dir.parent}")
        paths = score_coder(
            ctx,
            cfg.score.scorers,
            sample_path,
            read_explanations(expl_path),
            out,
            _ids(cache, name, latents),
            progress,
        )
        done[name] = {s: {"path": paths[s], **v} for s, v in summarize(paths).items()}
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
        progress,
    )
    return {
        "coders": done,
        "usage": dict(ctx.usage),
        "judge_check": folder_verdicts(out, check_dir, cfg.score.scorers, names),
        "judge_check_llm": used,
    }
