"""`autointerp run`: the whole job in one run folder: cache -> sample -> explain + score -> report.

Usage: `autointerp run [CONFIG.yaml] [--out RUN] [--max-latents N | --latents 0-99] [--hookpoint H]
[--ray ADDRESS]`; Python: `run_job(RunConfig(...), Path("runs/x"))`.

- One YAML file (`RunConfig`) holds every stage's options; without a file, the embedded default.
- The resolved config (no secrets) is saved as RUN/run_config.yaml. A later run into the same folder
  whose config would change finished results is refused, naming the keys; `force` moves the outputs
  of the affected stages aside into RUN/superseded-<time>/ (nothing is deleted) and redoes them.
  Selection (latents, coders, scorers) and speed settings (batch sizes, concurrency) may change freely.
- Latents flow through explain and score in chunks: while one chunk is scored, the next is explained.
  A chunk's explanations, then its scores, are appended as soon as it is done, so a killed run resumes
  at the first unfinished chunk and writes nothing twice. Chunks are fixed slices of the selected
  latents, so a resumed run sends the same batches to the LLM as an uninterrupted one.
- One progress bar: latents done, failures, LLM tokens, ETA.
- With Ray, chunks go to workers (Ray actors, each with its own clients); the driver alone writes
  the run folder, so the resume guarantees are the same (`autointerp.distributed`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from autointerp.aio import run_sync
from autointerp.best_of import make_explainer
from autointerp.cache import ActivationCache, build_cache
from autointerp.config import CacheConfig, ClientConfig
from autointerp.errors import ConfigError, RunError
from autointerp.explain import BEST_OF_OPTIONS, ExplainConfig, effects_for
from autointerp.jsonl import (
    ExplanationHead,
    LineIndex,
    SampleHead,
    ScoreHead,
    cut_torn_line,
    latest,
    scan,
)
from autointerp.locks import folder_lock
from autointerp.sample import SampleConfig, parse_latents, sample_coder, write_config
from autointerp.score.base import Scorer
from autointerp.score.names import MAIN_METRIC
from autointerp.score.stage import (
    SCORERS,
    ScoreConfig,
    ScoreContext,
    ScoreStageConfig,
    score_latents,
    write_scores,
)
from autointerp.types import Explanation, SampledLatent

log = logging.getLogger(__name__)

DEFAULT_LATENTS = 12
CONFIG_FILE = "run_config.yaml"
STAGES = {"cache": "cache", "sample": "sample", "explain": "explanations", "score": "scores"}


class RunConfig(CacheConfig):
    """Every stage's options (`autointerp run CONFIG.yaml`). The cache's keys (subject, corpus,
    coders, batch_size, shard_tokens) sit at the top level, so a cache config is a run config."""

    sample: SampleConfig = SampleConfig()
    explain: ExplainConfig = ExplainConfig()
    score: ScoreConfig = ScoreConfig()
    client: ClientConfig = ClientConfig()
    """The explainer's LLM, and the scorers' unless `score_client` is set."""
    score_client: ClientConfig | None = None
    """The scorers' LLM (None: the same as `client`)."""
    latents: str | None = None
    """Latents of each coder to explain and score, e.g. `0-99` or `3,17,42` (None: `max_latents`)."""
    max_latents: int | None = Field(DEFAULT_LATENTS, ge=1)
    """Without `latents`: N latents of each coder (None: every latent)."""
    pick: Literal["first", "random"] = "first"
    """Which `max_latents`: the first N indices, or N at random (seeded by `sample.seed`)."""
    hookpoints: list[str] | None = None
    """Explain and score only the coders at these hookpoints (every coder is cached)."""
    only_coders: list[str] | None = None
    """Explain and score only these coders, by name."""
    chunk_latents: int = Field(8, ge=1)
    """Latents explained and scored together; a chunk is the unit of resume."""
    chunks_in_flight: int = Field(2, ge=1)
    """Chunks under way at once per worker (one being explained while another is scored)."""
    report: bool = True
    """Write the HTML report at the end."""

    @model_validator(mode="after")
    def _best_of_fits_the_sample(self) -> RunConfig:
        from autointerp.best_of import config_problem

        bad = config_problem(self.explain, self.sample.n_train, self.sample.n_explain_negatives)
        if bad:
            raise ValueError(bad)
        return self

    def resolved(self) -> RunConfig:
        """The config as it runs: the scorers' client filled in."""
        return self.model_copy(update={"score_client": self.score_client or self.client})

    def cache_config(self) -> CacheConfig:
        return CacheConfig.model_validate(self.model_dump(include=set(CacheConfig.model_fields)))

    def score_stage(self) -> ScoreStageConfig:
        return ScoreStageConfig(score=self.score, client=self.score_client or self.client)


# Keys that may differ between runs into one folder: what to run and how fast, not what results mean.
_FREE = {
    "latents",
    "max_latents",
    "pick",
    "hookpoints",
    "only_coders",
    "chunk_latents",
    "chunks_in_flight",
    "report",
    "batch_size",
    "subject.device",
    "score.scorers",
    "score.latents_per_call",
    # the judge check's settings change only RUN/judge_check, never a finished score
    "score.judge_check.enabled",
    "score.judge_check.fraction",
    "score.judge_check.min_latents",
    "score.judge_check.seed",
    "explain.latents_per_call",
}
_FREE_CLIENT = {
    "device",
    "base_url",
    "base_urls",
    "max_concurrency",
    "timeout",
    "max_retries",
    "batch_size",
    "response_cache",
    "api_key",
    "api_key_env",
    "max_model_len",
    "n_ctx",
    "threads",
    "enforce_eager",
    "kv_cache_memory_bytes",
}


def config_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain data, without secrets."""
    secret = {"api_key": True}
    return _concrete_dtypes(cfg.resolved()).model_dump(
        mode="json", exclude={"client": secret, "score_client": secret}
    )


def _concrete_dtypes(cfg: RunConfig) -> RunConfig:
    """`dtype: auto` replaced by what it chose on this machine (as the cache records it), so that a
    folder made with an explicit bfloat16 and one made with auto on a bf16 machine agree. Only the
    local `transformers` client's dtype is resolved: vLLM resolves its own `auto`, and a server's
    (`openai`) dtype means nothing here (`_free` leaves it out of the comparison)."""
    from autointerp.subject import resolve_subject, resolved_dtype

    def client(c: ClientConfig | None) -> ClientConfig | None:
        if c is None or c.backend != "transformers":
            return c
        return c.model_copy(update={"dtype": resolved_dtype(c.dtype, c.device)})

    subject = cfg.subject.model_copy(update={"dtype": resolve_subject(cfg.subject).dtype})
    return cfg.model_copy(
        update={
            "subject": subject,
            "client": client(cfg.client),
            "score_client": client(cfg.score_client),
        }
    )


def _flat(d, prefix: str = "") -> dict[str, object]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _free(key: str, new: dict[str, object] | None = None) -> bool:
    """Whether `key` may differ between runs into one folder; `new` (this run's flat config) makes
    a client's dtype free where its backend is a server (`openai`), whose dtype means nothing."""
    head, _, rest = key.partition(".")
    if head not in ("client", "score_client"):
        return key in _FREE
    server = rest == "dtype" and (new or {}).get(f"{head}.backend") == "openai"
    return rest in _FREE_CLIENT or server


def _stage_of(key: str) -> str:
    head = key.split(".")[0]
    return {"sample": "sample", "explain": "explain", "client": "explain"}.get(
        head, "score" if head in ("score", "score_client") else "cache"
    )


class _Unrecorded:
    """A key the folder's saved config lacks: it was written before that option existed."""

    def __repr__(self) -> str:
        return "no value (saved by an older autointerp)"


_ADDED_COMPATIBLE = {
    "baseline": None,
    "baseline_seed": 0,
    "score.detection.calibrate": False,
    "score.fuzzing.calibrate": False,
    "score.detection.uninformative": "text",
    "score.fuzzing.uninformative": "text",
}
"""Keys added after folders were written whose value here gives the results the older version
gave: a folder saved without them is not refused for them."""
_ADDED_SECTIONS = ("score.intruder.", "score.example_embedding.")
"""Options of scorers added later: an older folder has no scores of theirs to contradict."""


def _unchanged_by_upgrade(key: str, a: dict, b: dict) -> bool:
    if key in a:
        return False
    if key.startswith(_ADDED_SECTIONS):
        return True
    if key.removeprefix("explain.") in BEST_OF_OPTIONS and b.get("explain.best_of") == 1:
        return True  # best-of-k's options, added later, mean nothing while it is off
    return key in _ADDED_COMPATIBLE and b.get(key) == _ADDED_COMPATIBLE[key]


def config_differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    a, b = _flat(old), _flat(new)
    keys = [
        k
        for k in dict.fromkeys([*a, *b])
        if not _free(k, b) and a.get(k) != b.get(k) and not _unchanged_by_upgrade(k, a, b)
    ]
    return [(k, a[k] if k in a else _Unrecorded(), b.get(k)) for k in keys]


def prepare_folder(cfg: RunConfig, out: Path, force: bool = False) -> None:
    """Refuse a run folder made by a config that gives other results (or, with `force`, move the
    outputs that config made aside); then save this run's resolved config."""
    path = out / CONFIG_FILE
    new = config_dict(cfg)
    if path.exists():
        diffs = config_differences(yaml.safe_load(path.read_text()) or {}, new)
        if diffs and not force:
            lines = "\n".join(f"  {k}: folder has {a!r}, this run has {b!r}" for k, a, b in diffs)
            raise RunError(
                f"{out} holds a run made with a different config:\n{lines}\n"
                "Use another --out, or --force to move the affected results aside and redo them."
            )
        if diffs:
            _supersede(out, {_stage_of(k) for k, _, _ in diffs})
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(new, sort_keys=False))
    tmp.replace(path)


def _supersede(out: Path, changed: set[str]) -> None:
    order = list(STAGES)
    first = min(order.index(s) for s in changed)
    aside = out / time.strftime("superseded-%Y%m%d-%H%M%S")
    for stage in [*order[first:], "judge_check", "report"]:
        folder = out / STAGES.get(stage, stage)
        if folder.exists():
            aside.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(aside / folder.name))
            if (out / CONFIG_FILE).exists() and not (aside / CONFIG_FILE).exists():
                shutil.copy(out / CONFIG_FILE, aside / CONFIG_FILE)
    log.warning("moved the results this config changes into %s", aside)


def select_coders(cache: ActivationCache, cfg: RunConfig) -> list[str]:
    names = list(cache.coders)
    if cfg.hookpoints:
        known = {m["hookpoint"] for m in cache.coders.values()}
        unknown = [h for h in cfg.hookpoints if h not in known]
        if unknown:
            raise ConfigError(
                f"no coder at hookpoint(s) {unknown} (the cache has: {', '.join(sorted(known))})"
            )
        names = [n for n in names if cache.coders[n]["hookpoint"] in cfg.hookpoints]
    if cfg.only_coders:
        unknown = [c for c in cfg.only_coders if c not in cache.coders]
        if unknown:
            raise ConfigError(f"no coder(s) {unknown} (the cache has: {', '.join(cache.coders)})")
        names = [n for n in names if n in cfg.only_coders]
    return names


def latent_ids(cfg: RunConfig, n_latents: int) -> list[int]:
    if cfg.latents:
        return parse_latents(cfg.latents, n_latents)
    n = min(n_latents, cfg.max_latents or n_latents)
    if cfg.pick == "random":
        return sorted(
            np.random.default_rng(cfg.sample.seed).choice(n_latents, n, replace=False).tolist()
        )
    return list(range(n))


def sample_stage(
    cache: ActivationCache,
    cfg: SampleConfig,
    folder: Path,
    ids: Mapping[str, list[int] | None],
    ray: str | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Path]:
    """Sample the given latents of each coder (None: all) into `folder`; resumes. With `ray`, on
    `workers` Ray actors (the driver writes)."""
    write_config(folder, cfg)
    embeddings = None
    if cfg.similar_by == "embedding":
        from autointerp.embed import block_embeddings
        from autointerp.subject import load_tokenizer

        tok = load_tokenizer(CacheConfig.model_validate(cache.manifest["config"]).subject)
        embeddings = block_embeddings(cache, tok.batch_decode, cfg.example_len, folder)
    return {
        name: sample_coder(
            cache,
            name,
            cfg,
            folder,
            latents,
            embeddings=embeddings,
            ray=ray,
            workers=workers,
            progress=progress,
        )
        for name, latents in ids.items()
    }


@dataclass(frozen=True)
class Chunk:
    """Latents of one coder to explain (those without an explanation) and score (per scorer)."""

    coder: str
    records: dict[int, SampledLatent]
    explanations: dict[int, Explanation]
    wanted: dict[str, set[int]]
    refresh: bool = False
    """`--retry-failed`: ask the LLM again instead of replaying answers from the response cache
    (an answer that arrived but could not be parsed is cached like any other)."""

    @property
    def to_explain(self) -> list[int]:
        return [i for i in self.records if i not in self.explanations]


@dataclass
class ChunkResult:
    coder: str
    latents: list[int]
    explanations: list[Explanation]
    scores: dict[str, list]
    worker: str = "local"
    explain_calls: int = 0
    """LLM calls of the explainer (answers from the response cache are not calls)."""
    explain_tokens: int = 0


@dataclass(frozen=True)
class PlannedChunk:
    """A chunk still to do, as latent ids: its records and explanations are read from their files
    (`load`) only when it is about to be processed, so a run holds the chunks in flight, not every
    latent's record."""

    coder: str
    latents: list[int]
    explained: list[int]
    """Those of `latents` whose explanation is kept (read by `load`)."""
    wanted: dict[str, set[int]]
    refresh: bool
    samples: LineIndex = field(repr=False, compare=False)
    explanation_lines: LineIndex = field(repr=False, compare=False)

    def load(self) -> Chunk:
        records = self.samples.read(self.latents, SampledLatent)
        explanations = self.explanation_lines.read(self.explained, Explanation)
        return Chunk(self.coder, records, explanations, self.wanted, self.refresh)


def plan(
    out: Path, cfg: RunConfig, coders: list[str], cache: ActivationCache, retry: bool = False
) -> list[PlannedChunk]:
    """The chunks still to do, in latent order; torn last lines are cut first. With `retry`, failed
    explanations and scores count as not done (their new lines are appended; readers keep a
    latent's last line), and only chunks holding such a failure bypass the response cache. Each
    file is read once, through heads (`autointerp.jsonl`): no full record is built here."""
    chunks = []
    for coder in coders:
        wanted = set(latent_ids(cfg, cache.coders[coder]["n_latents"]))
        sample_path = out / "sample" / f"{coder}.jsonl"
        lines = latest(sample_path, SampleHead, lambda h: h.id.latent, lambda h: h.status == "ok")
        records = LineIndex(
            sample_path, {i: at for i, (at, ok) in lines.items() if ok and i in wanted}
        )
        del lines
        expl_path = out / "explanations" / f"{coder}.jsonl"
        cut_torn_line(expl_path)
        heads = latest(expl_path, ExplanationHead, _key, _no_text)
        failed = {i for i, (_, none) in heads.items() if retry and none}
        explained = LineIndex(
            expl_path, {i: at for i, (at, _) in heads.items() if i not in failed and i in records}
        )
        del heads
        done: dict[str, set[int]] = {}
        for name in cfg.score.scorers:
            path = out / "scores" / name / f"{coder}.jsonl"
            cut_torn_line(path)
            scores = latest(path, ScoreHead, _key, lambda h: h.status)
            redo = {i for i, (_, status) in scores.items() if retry and status == "failed"}
            failed |= redo
            done[name] = set(scores) - redo
        ids = list(records)
        for k in range(0, len(ids), cfg.chunk_latents):
            part = ids[k : k + cfg.chunk_latents]
            todo = {name: {i for i in part if i not in done[name]} for name in done}
            kept = [i for i in part if i in explained]
            if len(kept) < len(part) or any(todo.values()):
                chunks.append(
                    PlannedChunk(
                        coder,
                        part,
                        kept,
                        todo,
                        any(i in failed for i in part),
                        records,
                        explained,
                    )
                )
    return chunks


def _no_text(e: ExplanationHead) -> bool:
    return e.text is None


def _key(line: ExplanationHead | ScoreHead) -> int:
    return line.latent.latent


def _status_and(metric: str, line: ScoreHead) -> tuple[str, float | int | None]:
    return line.status, line.metrics.get(metric)


class Worker:
    """Explains and scores chunks with its own clients: one per process, or per Ray actor."""

    def __init__(self, out: Path, cfg: RunConfig, tag: str = "", index: int = 0):
        from autointerp.clients import BACKENDS, make_client

        cfg = cfg.model_copy(
            update={
                "client": _server(cfg.client, index),
                "score_client": _server(cfg.score_client, index),
            }
        )
        self.cfg = cfg
        cache = ActivationCache(out / "cache")
        suffix = f".{tag}" if tag else ""
        self.tag = tag or "local"
        stage = cfg.score_stage()
        self.ctx = ScoreContext(cache, stage, cfg.sample.example_len, self._score_client)
        client = None
        inner = None
        if cfg.explain.explainer != "token-stats":
            inner = BACKENDS[cfg.client.backend](cfg.client)
            client = make_client(
                cfg.client, out / "explanations" / f"llm_cache{suffix}.sqlite", inner
            )
        same = inner is not None and _same_model(cfg.client, stage.client)
        self._shared = inner if same else None
        self._score_cache = out / "scores" / f"llm_cache{suffix}.sqlite"
        # best-of-k's pilot is judged by the scorers' client (built now only for it)
        pilot = self.ctx.client if cfg.explain.best_of > 1 else None
        self.explainer = make_explainer(
            cache,
            cfg.explain,
            client,
            self.ctx.decode,
            cfg.sample.example_len,
            effects=effects_for(cfg.explain, self.ctx, cfg.score.intervention),
            pilot_client=pilot,
        )
        self._scorers: dict[tuple[str, str], Scorer] = {}

    def _score_client(self):
        from autointerp.clients import make_client

        stage = self.cfg.score_stage()
        return make_client(stage.client, self._score_cache, self._shared)

    def scorers(self, coder: str) -> dict[str, Scorer]:
        for name in self.cfg.score.scorers:
            if (coder, name) not in self._scorers:
                self._scorers[coder, name] = SCORERS[name](self.ctx, coder)
        return {n: self._scorers[coder, n] for n in self.cfg.score.scorers}

    async def process(self, chunk: Chunk) -> ChunkResult:
        if chunk.refresh:
            from autointerp.clients import bypass_cache

            with bypass_cache():
                return await self._process(chunk)
        return await self._process(chunk)

    async def _process(self, chunk: Chunk) -> ChunkResult:
        todo = chunk.to_explain
        u = self.explainer.usage
        before = (u.calls, u.prompt_tokens + u.completion_tokens)
        new = await self.explainer.explain([chunk.records[i] for i in todo]) if todo else []
        explanations = {**chunk.explanations, **{e.latent.latent: e for e in new}}
        scores = await score_latents(
            self.ctx,
            self.scorers(chunk.coder),
            list(chunk.records),
            chunk.records,
            explanations,
            chunk.wanted,
        )
        calls, tokens = u.calls - before[0], u.prompt_tokens + u.completion_tokens - before[1]
        return ChunkResult(chunk.coder, list(chunk.records), new, scores, self.tag, calls, tokens)


def _server(cfg: ClientConfig | None, index: int) -> ClientConfig | None:
    """The client config of worker `index`: its own server when several are given."""
    if cfg is None or not cfg.base_urls:
        return cfg
    return cfg.model_copy(update={"base_url": cfg.base_urls[index % len(cfg.base_urls)]})


def _same_model(a: ClientConfig, b: ClientConfig) -> bool:
    keys = ("backend", "model", "base_url", "dtype", "device")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


@dataclass
class Progress:
    """The run's one progress bar, and the running totals it shows."""

    total: int
    by_worker: dict[str, int] = field(default_factory=dict)
    """Chunks each worker finished."""
    explained: int = 0
    failed: int = 0
    tokens: int = 0
    calls: int = 0
    bar: tqdm | None = field(default=None, repr=False)

    def start(self, enabled: bool) -> None:
        self.bar = tqdm(total=self.total, desc="explain+score", unit="latent", disable=not enabled)

    def add(self, r: ChunkResult) -> None:
        self.by_worker[r.worker] = self.by_worker.get(r.worker, 0) + 1
        self.calls += r.explain_calls
        self.tokens += r.explain_tokens
        for e in r.explanations:
            self.explained += e.text is not None
            self.failed += e.text is None
        for scores in r.scores.values():
            for s in scores:
                self.failed += s.status == "failed"
                self.tokens += s.prompt_tokens + s.completion_tokens
                self.calls += s.calls
        if self.bar is not None:
            self.bar.update(len(r.latents))
            self.bar.set_postfix(explained=self.explained, failed=self.failed, tokens=self.tokens)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_chunk(out: Path, r: ChunkResult) -> None:
    """Append a finished chunk to the run folder: explanations first, then scores."""
    if r.explanations:
        path = out / "explanations" / f"{r.coder}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(e.model_dump_json() + "\n" for e in r.explanations)
    for name, scores in r.scores.items():
        path = out / "scores" / name / f"{r.coder}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            write_scores(f, scores)


async def run_local(worker: Worker, chunks: list[PlannedChunk], sink, in_flight: int) -> None:
    """Process chunks with up to `in_flight` under way, each read from its files as it starts;
    `sink` gets each result as it finishes."""
    queue: asyncio.Queue[PlannedChunk] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def lane() -> None:
        while not queue.empty():
            sink(await worker.process(queue.get_nowait().load()))

    await asyncio.gather(*(lane() for _ in range(in_flight)))


def run_job(
    cfg: RunConfig,
    out: Path,
    force: bool = False,
    ray: str | None = None,
    workers: int = 2,
    progress: bool = True,
    gpus_per_worker: float = 0.0,
    retry_failed: bool = False,
) -> dict:
    """Run every stage into `out`, resuming what it holds; returns the summary (also saved as
    RUN/summary.json). One process at a time: another one on `out` is refused, naming its PID."""
    if ray:
        from autointerp.distributed import check_address

        check_address(ray)  # before any work: a wrong address fails in seconds
    from autointerp.distributed import ray_session

    with folder_lock(out, "run folder"), ray_session(ray, workers):
        return _run_job(cfg, out, force, ray, workers, progress, gpus_per_worker, retry_failed)


def check_clients(cfg: RunConfig) -> None:
    """Fail before any work when a local LLM client of the run cannot start (llama.cpp not
    installed, its model neither a file nor assembled)."""
    from autointerp.score.names import LLM_SCORERS

    uses = [
        (cfg.client, cfg.explain.explainer != "token-stats"),
        (
            cfg.score_client or cfg.client,
            bool(LLM_SCORERS & set(cfg.score.scorers)) or cfg.explain.best_of > 1,
        ),
    ]
    for client, used in uses:
        if used and client.backend == "llamacpp":
            from autointerp.clients.llamacpp import check

            check(client.model)


def _run_job(cfg, out, force, ray, workers, progress, gpus_per_worker, retry_failed) -> dict:
    t0 = time.time()
    check_clients(cfg)
    prepare_folder(cfg, out, force)
    cache = ActivationCache(build_cache(cfg.cache_config(), out / "cache", progress))
    coders = select_coders(cache, cfg)
    ids = {name: latent_ids(cfg, cache.coders[name]["n_latents"]) for name in coders}
    sample_stage(cache, cfg.sample, out / "sample", ids, ray, workers, progress)
    _save_plan(out, cfg, ids)
    chunks = plan(out, cfg, coders, cache, retry_failed)
    bar = Progress(total=sum(len(c.latents) for c in chunks))
    workers_here: list[Worker] = []

    def local_worker() -> Worker:  # built once, and only when there is work for it
        if not workers_here:
            workers_here.append(Worker(out, cfg))
        return workers_here[0]

    def sink(r: ChunkResult) -> None:
        write_chunk(out, r)
        bar.add(r)

    if chunks:
        bar.start(progress)
        try:
            if ray:
                from autointerp.distributed import run_ray

                run_ray(ray, workers, out, cfg, chunks, sink, Worker, gpus_per_worker)
            else:
                run_sync(run_local(local_worker(), chunks, sink, cfg.chunks_in_flight))
        finally:
            bar.close()
    checked = judge_stage(out, cfg, coders, local_worker, progress, retry_failed)
    summary = summarize_run(out, cfg, coders, cache)
    summary.update(
        wall_s=round(time.time() - t0, 1),
        llm_calls=bar.calls + sum(u["calls"] for u in checked.values()),
        llm_tokens=bar.tokens + sum(u["tokens"] for u in checked.values()),
        judge_check_llm=checked,
        chunks_by_worker=bar.by_worker,
    )
    summary["plan"] = _compare_plan(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def judge_stage(
    out: Path, cfg: RunConfig, coders: list[str], get_worker, progress: bool, retry_failed=False
) -> dict:
    """The judge check after every chunk is done (`autointerp.score.judge_check`), with the
    scorers of a local worker (`get_worker`, built only when there is work; after a Ray run too).
    Only the checked latents' records and explanations are read; with `retry_failed`, failed
    controls are scored again. Returns each checked scorer's LLM work done now."""
    from autointerp.score.judge_check import load_from, run_checks

    return run_checks(
        out / "scores",
        out / "judge_check",
        cfg.score.judge_check,
        cfg.score.scorers,
        coders,
        load_from(out / "sample", out / "explanations"),
        lambda name, coder: SCORERS[name](get_worker().ctx, coder),
        lambda record, explanation: get_worker().ctx.item(record, explanation),
        cfg.score.latents_per_call,
        progress,
        retry_failed,
    )


def summarize_run(out: Path, cfg: RunConfig, coders: list[str], cache: ActivationCache) -> dict:
    """Counts and each scorer's mean main metric over the selected latents of every coder, with
    the judge check's verdict per LLM scorer and coder (`judge_check`) and a flag per scorer
    (`trusted`: its judge discriminates for every coder)."""
    from autointerp.score.judge_check import folder_verdicts, trusted

    per_coder = {}
    values: dict[str, list[float]] = {name: [] for name in cfg.score.scorers}
    totals = dict(n_latents=0, n_skipped=0, n_explained=0, n_scored=0, n_failed=0)
    skipped: Counter[str] = Counter()
    for coder in coders:
        c = _coder_summary(out, cfg, coder, cache, values)
        per_coder[coder] = c
        skipped.update(c["skipped"])
        for k in totals:
            totals[k] += c[k]
    means: dict[str, dict[str, object]] = {
        name: {"metric": MAIN_METRIC[name], "mean": float(np.mean(v)) if v else None}
        for name, v in values.items()
    }
    judged = folder_verdicts(out / "scores", out / "judge_check", cfg.score.scorers, coders)
    for name, by_coder in judged.items():
        means[name]["judge_check"] = {c: v["verdict"] for c, v in by_coder.items()}
        means[name]["trusted"] = bool(by_coder) and all(trusted(v) for v in by_coder.values())
    return {
        **totals,
        "skipped": dict(skipped),
        "scorers": means,
        "judge_check": judged,
        "coders": per_coder,
    }


_SETTING = re.compile(r"\((\w+) is [^)]*\)")
"""A configured threshold named in a skip reason: "(min_train is 10)"."""


def _reason_kind(reason: str) -> str:
    """`reason` with every number that varies between latents shown as N; the configured
    thresholds stay."""
    return re.sub(
        rf"{_SETTING.pattern}|\d[\d,.]*",
        lambda m: m.group() if m.group().startswith("(") else "N",
        reason,
    )


def skip_reasons(records: list[SampledLatent] | list[SampleHead]) -> dict[str, int]:
    """How many latents were skipped for each reason (numbers that vary shown as N)."""
    return dict(
        Counter(_reason_kind(r.reason or "no reason given") for r in records if r.status != "ok")
    )


def skip_settings(reasons: dict[str, int]) -> list[str]:
    """The options named by skip reasons (`min_examples`, `min_train`), those that skipped the
    most latents first."""
    skipped: Counter[str] = Counter()
    for reason, n in reasons.items():
        skipped.update({m.group(1): n for m in _SETTING.finditer(reason)})
    return [option for option, _ in skipped.most_common()]


def _coder_summary(out, cfg, coder, cache, values) -> dict:
    """One coder's counts, from the heads of its files (each read once); the main metric values
    of its good scores are added to `values`."""
    wanted = set(latent_ids(cfg, cache.coders[coder]["n_latents"]))
    n_records, ok, skipped = 0, set(), []
    for _, r in scan(out / "sample" / f"{coder}.jsonl", SampleHead):
        if r.id.latent in wanted:
            n_records += 1
            if r.status == "ok":
                ok.add(r.id.latent)
            else:
                skipped.append(r)
    heads = latest(out / "explanations" / f"{coder}.jsonl", ExplanationHead, _key, _no_text)
    expl = {i: none for i, (_, none) in heads.items() if i in ok}
    failed = {i for i, none in expl.items() if none}
    n_explained = len(expl) - len(failed)
    scored = ok - failed
    for name in cfg.score.scorers:
        metric = MAIN_METRIC[name]
        scores = {
            i: v
            for i, (_, v) in latest(
                out / "scores" / name / f"{coder}.jsonl",
                ScoreHead,
                _key,
                partial(_status_and, metric),
            ).items()
        }
        good = {i for i, s in scores.items() if i in ok and s[0] == "ok"}
        failed |= {i for i, s in scores.items() if i in ok and s[0] == "failed"}
        scored &= good
        values[name] += [scores[i][1] for i in good if scores[i][1] is not None]
    return dict(
        n_latents=n_records,
        n_skipped=n_records - len(ok),
        skipped=skip_reasons(skipped),
        n_explained=n_explained,
        n_scored=len(scored),
        n_failed=len(failed),
    )


# --- the cost planner's prediction against the run (autointerp.plan) ---------------------------


def _save_plan(out: Path, cfg: RunConfig, ids: Mapping[str, list[int]]) -> None:
    """RUN/plan.json: the planner's prediction of this run's LLM work, from its own sample, before
    the first LLM call (making it calls no LLM). Advisory: a failure is a warning, never the run's."""
    from autointerp.plan import plan_for_run

    try:
        plan_for_run(cfg, out, ids)
    except Exception as e:  # noqa: BLE001 - the run goes on without a plan
        log.warning("could not plan this run's LLM work: %s", e)


def _compare_plan(out: Path) -> dict | None:
    """RUN/plan.json against the tokens the run recorded, logged a line per stage (summary's
    `plan`; None without a plan)."""
    from autointerp.plan import compare_with_run, describe_comparison

    try:
        found = compare_with_run(out)
    except Exception as e:  # noqa: BLE001 - the summary goes on without the comparison
        log.warning("could not compare the plan with this run: %s", e)
        return None
    for line in describe_comparison(found) if found else []:
        log.info(line)
    return found
