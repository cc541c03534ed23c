"""Benchmark the LLM work per scored latent: autointerp against EleutherAI delphi.

Both systems explain and score (detection and fuzzing) the same latents of the embedded coder, on
the same examples, with the same local LLM (the packaged SmolLM2-135M-Instruct through autointerp's
`TransformersClient`, one model object shared by everything), in one process:

- autointerp: `explain_coder` then `score_coder` with the detection and fuzzing scorers, run twice
  with two classifier settings: its default for the local `transformers` backend (one example per
  prompt, the answer read from the logprobs of one generated token), and `examples_per_prompt: 5` (a
  list of five answers per prompt, as delphi asks). Fuzzing's `n_wrong` is 0 so that both systems
  score the same examples (delphi's default fuzzing adds no wrong-marked activating examples).
- delphi: its `DefaultExplainer` (threshold 0.3, activation values shown: its defaults), then its
  `DetectionScorer` and `FuzzingScorer` (5 examples per prompt, no logprobs: its defaults), driven
  by delphi's own `Pipeline` as its `__main__` does. The client is a small
  `delphi.clients.client.Client` whose `generate` takes one prompt per call, as delphi sends them,
  and honours the generation kwargs delphi passes (`max_tokens`, `temperature`, `logprobs`); like
  delphi's offline vLLM client, it sends the requests that are waiting at the same time to the model
  as one batch. The scorers get `max_tokens` = 32 (a list of 5 answers needs ~11 tokens; without a
  cap delphi's offline client allows 500, and a small model's rambling would be counted against
  delphi); the explainer gets `--delphi-explain-max-tokens` (default 64, autointerp's own budget for
  an explanation line).

Same examples: autointerp samples each latent once (40 train examples; 50 activating test examples,
5 from each of 10 activation quantiles; 25 random and 25 similar non-activating ones), and delphi's
`LatentRecord`s are built from those very records (token ids, activations, normalized activations
0-10 as delphi's sampler computes them, quantiles), so each scorer of each system judges 50 + 50
examples per latent. Latents with fewer examples than that are passed over.

Counting: one counting wrapper around the shared `TransformersClient` serves every system (a
separate instance, with its own prefix trie, per system). It renders and tokenizes each chat as the
backend does (chat template, generation prompt or a prefilled final assistant message) and counts
per request: prompt tokens, "uncached" prompt tokens (those after the longest prefix shared with any
earlier prompt of the same system in the run, i.e. what a server with automatic prefix caching
computes), generated tokens (as the backend reports them) and calls (one per prompt). Requests are
split by stage (explain, detection, fuzzing) by their system message.

Wall time: each system's explain + score of a chunk of latents is timed in turns (chunk 1 with
autointerp, autointerp with 5 per prompt, delphi; chunk 2 in the reverse order; ...), so that a
change of the machine's speed during the run falls on every system alike; latents/hour is computed
from the sum of a system's chunk times (less the wrapper's own counting time), and the per-chunk
ratios are reported too. The CPU time other processes used during each phase is recorded, as the
machine's load.

delphi hard-depends on vLLM, which this benchmark does not use. Install it without dependencies:
    pip install --no-deps eai-delphi
Its packages `delphi.clients`, `delphi.latents`, `delphi.scorers` and `delphi.explainers` import
vLLM, faiss and other heavy modules eagerly; the benchmark registers them as empty packages and
imports the submodules it needs. Light modules delphi imports but never calls on this path
(tiktoken, aiofiles, blobfile, orjson: token counting for its simulator, saving records and
explanations) are replaced by empty modules when they are not installed.

Usage:
    python -m eval.bench_llm_work [--run runs/bench_llm_work] [--tokens 200000] [--latents 10]
                                  [--chunk 5] [--delphi-explain-max-tokens 64] [--from-json]
The cache is built into RUN/cache when it is not there (`autointerp cache --out RUN/cache --tokens
N`); samples, explanations and scores go to a temporary folder that is deleted afterwards. Writes
results/bench_llm_work.md and results/bench_llm_work.json (`--from-json` only rewrites the report
from the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from autointerp.cache import ActivationCache
from autointerp.clients.base import Chat, Completion, GenParams
from autointerp.clients.local import TransformersClient
from autointerp.config import SubjectConfig
from autointerp.errors import CacheError
from autointerp.explain import ExplainConfig, Explainer, explain_coder, read_explanations
from autointerp.plan import PrefixTrie
from autointerp.sample import (
    SampleConfig,
    TokenDecoder,
    read_records,
    render,
    sample_coder,
    write_config,
)
from autointerp.score import ScoreContext, ScoreStageConfig, read_scores, score_coder
from autointerp.score.classifier import ClassifierConfig, ClassifierScorer
from autointerp.subject import load_tokenizer
from autointerp.types import SampledLatent
from eval.common import cpu_seconds

log = logging.getLogger("bench_llm_work")
REPO = Path(__file__).resolve().parents[1]
STAGES = ("explain", "detection", "fuzzing")
SCORERS = ("detection", "fuzzing")
DELPHI_SCORER_MAX_TOKENS = 32
DELPHI_OFFLINE_MAX_TOKENS = 500  # delphi's Offline client: number_tokens_to_generate
DELPHI_OFFLINE_TEMPERATURE = 1.0  # delphi's Offline client when no temperature is passed
SAMPLE = dict(n_train=40, n_test=50, n_quantiles=10, n_random_negatives=25, n_similar_negatives=25)
SYSTEMS = {
    "autointerp": "autointerp, default for the local backend (1 example per prompt, answer read "
    "from the logprobs of one token)",
    "autointerp_5_per_prompt": "autointerp, `examples_per_prompt: 5` (a list of 5 answers per "
    "prompt)",
    "delphi": "delphi: DefaultExplainer, DetectionScorer + FuzzingScorer, 5 examples per prompt",
}
TARGETS = {  # metric, comparison, goal
    "prompt_tokens": ("prompt tokens per latent", "<=", 0.4),
    "uncached_plus_generated": ("uncached prompt + generated tokens per latent", "<=", 0.6),
    "latents_per_hour": ("scored latents per hour", ">=", 2.0),
}


# --- counting -------------------------------------------------------------------------------------
@dataclass
class Tally:
    calls: int = 0
    prompt_tokens: int = 0
    uncached_prompt_tokens: int = 0
    generated_tokens: int = 0
    failed_requests: int = 0
    count_mismatches: int = 0
    """Requests whose prompt length the backend reported differently from the wrapper's count."""

    def add(self, other: Tally) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


class CountingClient:
    """An autointerp `LLMClient` around the shared `TransformersClient` that counts the work of each
    request. `inner` is the backend, so autointerp picks the same defaults as for the bare
    client."""

    def __init__(self, inner: TransformersClient, stage_of: Callable[[Chat], str]):
        self.inner, self.model, self.stage_of = inner, inner.model, stage_of
        self.trie = PrefixTrie()
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.overhead = 0.0
        """Seconds spent counting (subtracted from the system's wall time)."""

    def encode(self, chat: Chat) -> list[int]:
        """The prompt's token ids, rendered as `TransformersClient` renders it."""
        tok = self.inner.tok
        if chat and chat[-1]["role"] == "assistant":
            text = tok.apply_chat_template(chat, continue_final_message=True, tokenize=False)
        else:
            text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False).input_ids

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        t0 = time.perf_counter()
        ids = [self.encode(c) for c in chats]
        self.overhead += time.perf_counter() - t0
        out = await self.inner.complete(chats, params)
        t0 = time.perf_counter()
        for chat, x, c in zip(chats, ids, out, strict=True):
            t = self.tallies[self.stage_of(chat)]
            t.calls += 1
            t.prompt_tokens += len(x)
            t.uncached_prompt_tokens += len(x) - self.trie.insert(x)
            t.generated_tokens += c.completion_tokens
            t.failed_requests += not c.ok
            t.count_mismatches += c.prompt_tokens != len(x)
        self.overhead += time.perf_counter() - t0
        return out

    def total(self) -> Tally:
        out = Tally()
        for t in self.tallies.values():
            out.add(t)
        return out


def stage_classifier(system_prompts: dict[str, str]) -> Callable[[Chat], str]:
    """A chat's stage from its system message (`system_prompts`: text -> stage); else explain."""

    def stage_of(chat: Chat) -> str:
        first = chat[0] if chat else {}
        return system_prompts.get(first.get("content", ""), "explain")

    return stage_of


# --- delphi ---------------------------------------------------------------------------------------
def import_delphi() -> types.SimpleNamespace:
    """delphi's explainer, scorers, pipeline, records and client base, without the eager imports of
    its package `__init__`s (vLLM, faiss, ...) that this path never uses."""
    spec = importlib.util.find_spec("delphi")
    if spec is None or spec.origin is None:
        raise SystemExit("delphi is not installed; see the module docstring of eval.bench_llm_work")
    stubbed = []
    for name in ("tiktoken", "aiofiles", "blobfile", "orjson"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    root = Path(spec.origin).parent
    for sub in ("clients", "latents", "scorers", "explainers"):
        name = f"delphi.{sub}"
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(root / sub)]
            sys.modules[name] = stub
    import delphi.latents.latents as latents

    for name in ("ActivatingExample", "Example", "Latent", "LatentRecord", "NonActivatingExample"):
        setattr(sys.modules["delphi.latents"], name, getattr(latents, name))
    from delphi.clients.client import Client, Response
    from delphi.explainers.default.default import DefaultExplainer
    from delphi.pipeline import Pipe, Pipeline, process_wrapper
    from delphi.scorers.classifier.detection import DetectionScorer
    from delphi.scorers.classifier.fuzz import FuzzingScorer

    return types.SimpleNamespace(
        Client=Client,
        Response=Response,
        DefaultExplainer=DefaultExplainer,
        DetectionScorer=DetectionScorer,
        FuzzingScorer=FuzzingScorer,
        Pipe=Pipe,
        Pipeline=Pipeline,
        process_wrapper=process_wrapper,
        latents=latents,
        stubbed=stubbed,
    )


@dataclass
class _Top:
    token: str
    logprob: float


@dataclass
class _Logprobs:  # the shape delphi's classifier reads (`token`, `top_logprobs`)
    token: str
    top_logprobs: list[_Top] = field(default_factory=list)


def delphi_client_class(d: types.SimpleNamespace) -> type:
    class CountedDelphiClient(d.Client):
        """delphi's client interface over the counting wrapper. One prompt per `generate`, as delphi
        sends them; the requests waiting together go to the model as one batch (as delphi's offline
        vLLM client does), grouped by generation parameters."""

        def __init__(self, counting: CountingClient):
            super().__init__(counting.model)
            self.counting = counting
            self.pending: list[tuple[Chat, GenParams, asyncio.Future]] = []
            self.worker: asyncio.Task | None = None

        async def generate(self, prompt, **kwargs):
            logprobs = bool(kwargs.get("logprobs", False))
            params = GenParams(
                max_tokens=int(kwargs.get("max_tokens", DELPHI_OFFLINE_MAX_TOKENS)),
                temperature=float(kwargs.get("temperature", DELPHI_OFFLINE_TEMPERATURE)),
                logprobs=logprobs,
                top_logprobs=int(kwargs.get("top_logprobs", 5)) if logprobs else 0,
            )
            chat = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            future = asyncio.get_running_loop().create_future()
            self.pending.append((chat, params, future))
            if self.worker is None or self.worker.done():
                self.worker = asyncio.create_task(self._drain())
            c: Completion = await future
            if not c.ok:
                raise RuntimeError(c.error)
            lp = None
            if c.logprobs is not None:
                lp = [_Logprobs(t.token, [_Top(tok, v) for tok, v in t.top]) for t in c.logprobs]
            return d.Response(text=c.text or "", logprobs=lp)

        async def _drain(self) -> None:
            while self.pending:
                seen = -1
                while seen != len(self.pending):  # let every ready coroutine queue its request
                    seen = len(self.pending)
                    await asyncio.sleep(0)
                batch, self.pending = self.pending, []
                groups: dict[GenParams, list] = defaultdict(list)
                for item in batch:
                    groups[item[1]].append(item)
                for params, items in groups.items():
                    try:
                        out = await self.counting.complete([c for c, _, _ in items], params)
                    except Exception as e:  # noqa: BLE001 - handed to every waiting request
                        for _, _, f in items:
                            f.set_exception(e)
                        continue
                    for (_, _, f), c in zip(items, out, strict=True):
                        f.set_result(c)

    return CountedDelphiClient


def delphi_record(d, record: SampledLatent, tokens: np.ndarray, decode, example_len: int):
    """delphi's `LatentRecord` holding the same train, test and non-activating examples."""
    L = d.latents
    peak = max(record.max_activation, 1e-6)

    def activating(ref):
        e = render(ref, tokens, decode, example_len)
        acts = torch.tensor(e.activations, dtype=torch.float32)
        return L.ActivatingExample(
            tokens=torch.from_numpy(tokens[ref.seq, ref.start : ref.start + example_len].copy()),
            activations=acts,
            normalized_activations=(acts * 10 / peak).ceil().clamp(0, 10),
            str_tokens=e.tokens,
            quantile=int(ref.quantile or 0),
        )

    def quiet(ref):
        e = render(ref, tokens, decode, example_len)
        return L.NonActivatingExample(
            tokens=torch.from_numpy(tokens[ref.seq, ref.start : ref.start + example_len].copy()),
            activations=torch.zeros(example_len),
            str_tokens=e.tokens,
            distance=-1.0 if ref.kind == "random" else 0.0,
        )

    train = [activating(r) for r in record.train]
    test = [activating(r) for r in record.test]
    return L.LatentRecord(
        latent=L.Latent(module_name=record.id.coder, latent_index=record.id.latent),
        examples=sorted(train + test, key=lambda e: -e.max_activation),
        train=train,
        test=test,
        not_active=[quiet(r) for r in record.negatives],
    )


# --- the systems ----------------------------------------------------------------------------------
@dataclass
class Phase:
    system: str
    chunk: int
    latents: list[int]
    seconds: float
    cpu_seconds: float
    other_cpu_cores: float
    load_before: float
    load_after: float


@dataclass
class Quality:
    explained: int = 0
    explanations_failed: int = 0
    examples: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    answered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scored: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Latents each scorer scored (autointerp does not score a latent whose explanation failed)."""
    balanced_accuracy: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def balanced_accuracy(labels: list[bool], preds: list[bool]) -> float | None:
    pos = [p for lab, p in zip(labels, preds, strict=True) if lab]
    neg = [not p for lab, p in zip(labels, preds, strict=True) if not lab]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


class AutointerpSystem:
    def __init__(self, name, inner, cache, sample_path, example_len, decode, per_prompt, workdir):
        self.name, self.sample_path = name, sample_path
        cfg_cls = ClassifierConfig(examples_per_prompt=per_prompt, n_wrong=0)
        self.score_cfg = ScoreStageConfig.model_validate(
            {
                "score": {
                    "scorers": ["detection", "fuzzing"],
                    "detection": cfg_cls,
                    "fuzzing": cfg_cls,
                }
            }
        )
        probe = CountingClient(inner, lambda chat: "explain")
        systems = {ClassifierScorer(n, probe, cfg_cls).system: n for n in ("detection", "fuzzing")}
        self.client = CountingClient(inner, stage_classifier(systems))
        self.explainer = Explainer(cache, ExplainConfig(), self.client, decode, example_len)
        self.ctx = ScoreContext(cache, self.score_cfg, example_len, lambda: self.client)
        self.expl_dir, self.score_dir = workdir / "explanations", workdir / "scores"
        self.quality = Quality()

    def run(self, latents: list[int]) -> None:
        wanted = set(latents)
        path = explain_coder(
            self.explainer, self.sample_path, self.expl_dir, wanted, progress=False
        )
        explanations = read_explanations(path)
        score_coder(
            self.ctx,
            ["detection", "fuzzing"],
            self.sample_path,
            explanations,
            self.score_dir,
            wanted,
            progress=False,
        )

    def collect(self) -> None:
        q = self.quality
        expl = read_explanations(self.expl_dir / self.sample_path.name)
        q.explained = sum(e.text is not None for e in expl.values())
        q.explanations_failed = sum(e.text is None for e in expl.values())
        for scorer in ("detection", "fuzzing"):
            for s in read_scores(self.score_dir / scorer / self.sample_path.name).values():
                q.scored[scorer] += s.status == "ok"
                q.examples[scorer] += len(s.predictions)
                q.answered[scorer] += sum(p.error is None for p in s.predictions)
                answered = [p for p in s.predictions if p.error is None]
                ba = balanced_accuracy(
                    [p.label for p in answered], [bool(p.prediction) for p in answered]
                )
                if ba is not None:
                    q.balanced_accuracy[scorer].append(ba)


class DelphiSystem:
    def __init__(self, d, inner, records, tokens, decode, example_len, explain_max_tokens):
        self.d, self.records, self.tokens = d, records, tokens
        self.decode, self.example_len = decode, example_len
        det_system = d.DetectionScorer.prompt(None, examples="", explanation="")[0]["content"]
        fuzz_system = d.FuzzingScorer.prompt(None, examples="", explanation="")[0]["content"]
        self.client = CountingClient(
            inner, stage_classifier({det_system: "detection", fuzz_system: "fuzzing"})
        )
        self.dclient = delphi_client_class(d)(self.client)
        # as delphi's __main__ builds them, with its RunConfig defaults
        self.explainer = d.DefaultExplainer(
            self.dclient, threshold=0.3, generation_kwargs={"max_tokens": explain_max_tokens}
        )
        kw = dict(n_examples_shown=5, log_prob=False, max_tokens=DELPHI_SCORER_MAX_TOKENS)
        self.scorers = {
            "detection": d.DetectionScorer(self.dclient, **kw),
            "fuzzing": d.FuzzingScorer(self.dclient, fuzz_type="default", **kw),
        }
        self.quality = Quality()
        self.results: list = []

    def run(self, latents: list[int]) -> None:
        d = self.d
        recs = [
            delphi_record(d, self.records[i], self.tokens, self.decode, self.example_len)
            for i in latents
        ]
        explained = []

        def keep(result):
            explained.append(result)
            return result

        def scorer_preprocess(result):  # delphi's __main__
            if isinstance(result, list):
                result = result[0]
            record = result.record
            record.explanation = result.explanation
            record.extra_examples = record.not_active
            return record

        pipeline = d.Pipeline(
            lambda: recs,
            d.Pipe(d.process_wrapper(self.explainer, postprocess=keep)),
            d.Pipe(
                *(d.process_wrapper(s, preprocess=scorer_preprocess) for s in self.scorers.values())
            ),
        )
        out = asyncio.run(pipeline.run(max_concurrent=10))
        self.results += [(r, explained) for r in out]

    def collect(self) -> None:
        q = self.quality
        bad = "Explanation could not be parsed."
        seen = {}
        for results, explained in self.results:
            for e in explained:
                seen[e.record.latent.latent_index] = e.explanation
            for name, res in zip(self.scorers, results, strict=True):
                outputs = res.score
                q.scored[name] += 1
                q.examples[name] += len(outputs)
                answered = [o for o in outputs if o.prediction is not None]
                q.answered[name] += len(answered)
                ba = balanced_accuracy(
                    [o.activating for o in answered], [bool(o.prediction) for o in answered]
                )
                if ba is not None:
                    q.balanced_accuracy[name].append(ba)
        q.explained = sum(v != bad for v in seen.values())
        q.explanations_failed = sum(v == bad for v in seen.values())


# --- setup ----------------------------------------------------------------------------------------
def ensure_cache(run: Path, n_tokens: int) -> Path:
    cache_dir = run / "cache"
    try:
        ActivationCache(cache_dir)
        return cache_dir
    except CacheError:  # missing or unfinished: build it (`autointerp cache` resumes)
        pass
    log.info("building the cache in %s (%d tokens)", cache_dir, n_tokens)
    subprocess.run(
        [sys.executable, "-c", "from autointerp.cli import app; app()", "cache",
         "--out", str(cache_dir), "--tokens", str(n_tokens)],
        check=True,
    )  # fmt: skip
    return cache_dir


def choose_latents(cache, coder, out: Path, n: int, scan: int) -> tuple[Path, list[int], int]:
    """Sample the first `scan` latents; the first n that got every example asked for."""
    cfg = SampleConfig(**SAMPLE)
    write_config(out, cfg)
    path = sample_coder(cache, coder, cfg, out, list(range(scan)), progress=False)
    full = [
        r.id.latent
        for r in read_records(path)
        if r.status == "ok"
        and len(r.train) == cfg.n_train
        and len(r.test) == cfg.n_test
        and len(r.negatives) == cfg.n_random_negatives + cfg.n_similar_negatives
    ]
    if len(full) < n:
        raise SystemExit(f"only {len(full)} of the first {scan} latents have every example")
    return path, sorted(full)[:n], scan


def warm_up(inner: TransformersClient) -> None:
    chats = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": "["}]
             for w in ("yes", "no")]  # fmt: skip
    asyncio.run(inner.complete(chats, GenParams(max_tokens=1, logprobs=True, top_logprobs=5)))
    asyncio.run(inner.complete(chats, GenParams(max_tokens=4)))


# --- report ---------------------------------------------------------------------------------------
def per_latent(tally: Tally, n: int) -> dict[str, float]:
    return {
        "prompt_tokens_per_latent": tally.prompt_tokens / n,
        "uncached_prompt_tokens_per_latent": tally.uncached_prompt_tokens / n,
        "generated_tokens_per_latent": tally.generated_tokens / n,
        "uncached_plus_generated_per_latent": (
            tally.uncached_prompt_tokens + tally.generated_tokens
        )
        / n,
        "calls_per_latent": tally.calls / n,
    }


def summarize(name, system, phases: list[Phase], n: int) -> dict:
    """The raw totals of one system (what `derive` turns into figures per latent)."""
    client, q = system.client, system.quality
    mine = [p for p in phases if p.system == name]
    return {
        "latents": n,
        "latents_scored": {s: q.scored[s] for s in SCORERS},
        "seconds": sum(p.seconds for p in mine),
        "cpu_seconds": sum(p.cpu_seconds for p in mine),
        "counting_overhead_seconds": client.overhead,
        "stages": {s: asdict(client.tallies.get(s, Tally())) for s in STAGES},
        "explanations": {"ok": q.explained, "failed": q.explanations_failed},
        "examples_scored": {s: q.examples[s] for s in SCORERS},
        "examples_answered": {s: q.answered[s] for s in SCORERS},
        "mean_balanced_accuracy": {
            s: (float(np.mean(v)) if (v := q.balanced_accuracy[s]) else None) for s in SCORERS
        },
    }


def derive(name: str, raw: dict) -> dict:
    """Figures per scored latent: each stage's work divided by the latents that stage handled (the
    explainer: every latent; a scorer: the latents it scored), so that every system is charged for
    one explanation and 100 + 100 scored examples; time divided by the latents both scorers
    scored."""
    n, scored = raw["latents"], raw["latents_scored"]
    per_stage = {
        s: per_latent(Tally(**raw["stages"][s]), n if s == "explain" else max(scored[s], 1))
        for s in STAGES
    }
    total = {k: sum(per_stage[s][k] for s in STAGES) for k in per_stage["explain"]}
    done = max(min(scored.values()), 1)
    seconds = raw["seconds"] - raw["counting_overhead_seconds"]
    stages = [Tally(**raw["stages"][s]) for s in STAGES]
    return {
        "description": SYSTEMS[name],
        "latents": n,
        "latents_scored": scored,
        **total,
        "seconds_per_latent": seconds / done,
        "cpu_seconds_per_latent": raw["cpu_seconds"] / done,
        "latents_per_hour": 3600 * done / seconds,
        "failed_requests": sum(t.failed_requests for t in stages),
        "prompt_count_mismatches": sum(t.count_mismatches for t in stages),
        "per_stage": per_stage,
        "explanations": raw["explanations"],
        "examples_scored_per_latent": {
            s: raw["examples_scored"][s] / max(scored[s], 1) for s in SCORERS
        },
        "examples_answered_per_latent": {
            s: raw["examples_answered"][s] / max(scored[s], 1) for s in SCORERS
        },
        "mean_balanced_accuracy": raw["mean_balanced_accuracy"],
        "raw": raw,
    }


def ratios(res: dict, name: str, phases: list[Phase]) -> dict:
    a, d = res[name], res["delphi"]
    by_chunk = defaultdict(dict)
    for p in phases:
        by_chunk[p.chunk][p.system] = p.seconds
    chunk_ratios = [c["delphi"] / c[name] for c in by_chunk.values() if name in c and "delphi" in c]
    out = {
        "prompt_tokens": a["prompt_tokens_per_latent"] / d["prompt_tokens_per_latent"],
        "uncached_plus_generated": a["uncached_plus_generated_per_latent"]
        / d["uncached_plus_generated_per_latent"],
        "latents_per_hour": a["latents_per_hour"] / d["latents_per_hour"],
        "latents_per_hour_per_chunk": chunk_ratios,
        "latents_per_hour_median_of_chunks": statistics.median(chunk_ratios),
        "calls": a["calls_per_latent"] / d["calls_per_latent"],
        "cpu_seconds": a["cpu_seconds_per_latent"] / d["cpu_seconds_per_latent"],
    }
    out["targets"] = {
        k: {"goal": f"{op} {goal}x", "measured": out[k], "met": _met(out[k], op, goal)}
        for k, (_, op, goal) in TARGETS.items()
    }
    return out


def _met(v: float, op: str, goal: float) -> bool:
    return v <= goal if op == "<=" else v >= goal


def _f(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def write_markdown(path: Path, data: dict) -> None:
    res, m = data["results"], data["machine"]
    n = data["config"]["latents"]
    lines = [
        "# LLM work per scored latent: autointerp vs delphi",
        "",
        f"{n} latents of the embedded coder (`{data['config']['coder']}`, latents "
        f"{', '.join(map(str, data['config']['latent_ids']))}), cache of "
        f"{data['config']['cache_tokens']:,} tokens of the default corpus; explainer and scorers: "
        f"the packaged SmolLM2-135M-Instruct (bf16) through `TransformersClient` (batch size "
        f"{data['config']['batch_size']}), one model shared by all systems; {m['cpu']}, "
        f"{m['cores']} cores, {m['torch_threads']} torch threads; {data['date']}.",
        "",
        f"Command: `{data['command']}`",
        "",
        "Examples per latent, for every system: 40 for the explainer; per scorer 50 activating "
        "(5 per activation decile) + 50 non-activating (25 random, 25 similar), 5 per prompt for "
        "delphi and for `autointerp (5 per prompt)`, 1 per prompt for `autointerp (default)`.",
        "",
        "| system | prompt tokens | uncached prompt | generated | uncached + generated | LLM calls "
        "| s / latent | CPU s / latent | latents / hour | examples scored (det + fuzz) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "autointerp": "autointerp (default: 1 per prompt, logprobs)",
        "autointerp_5_per_prompt": "autointerp (5 per prompt)",
        "delphi": "delphi (defaults, 5 per prompt)",
    }
    for name, r in res.items():
        ex = r["examples_scored_per_latent"]
        lines.append(
            f"| {labels[name]} | {_f(r['prompt_tokens_per_latent'])} | "
            f"{_f(r['uncached_prompt_tokens_per_latent'])} | "
            f"{_f(r['generated_tokens_per_latent'])} | "
            f"{_f(r['uncached_plus_generated_per_latent'])} | {_f(r['calls_per_latent'], 1)} | "
            f"{_f(r['seconds_per_latent'], 1)} | {_f(r['cpu_seconds_per_latent'], 1)} | "
            f"{_f(r['latents_per_hour'])} | {_f(ex['detection'])} + {_f(ex['fuzzing'])} |"
        )
    lines += ["", "All figures are per scored latent (explain + detection + fuzzing).", ""]
    lines += [
        "| target (autointerp / delphi) | goal | autointerp (default) | | autointerp (5 per "
        "prompt) | |",
        "|---|---|---:|---|---:|---|",
    ]
    for k, (label, op, goal) in TARGETS.items():
        row = f"| {label} | {op} {goal}x"
        for name in ("autointerp", "autointerp_5_per_prompt"):
            t = data["ratios"][name]["targets"][k]
            row += f" | {t['measured']:.2f}x | {'met' if t['met'] else '**not met**'}"
        lines.append(row + " |")
    lines += [
        "",
        "Per stage (per latent): prompt tokens / uncached prompt tokens / generated tokens / "
        "calls.",
        "",
        "| system | explain | detection | fuzzing |",
        "|---|---|---|---|",
    ]
    for name, r in res.items():
        cells = []
        for s in STAGES:
            p = r["per_stage"][s]
            cells.append(
                f"{_f(p['prompt_tokens_per_latent'])} / "
                f"{_f(p['uncached_prompt_tokens_per_latent'])} / "
                f"{_f(p['generated_tokens_per_latent'])} / {_f(p['calls_per_latent'], 1)}"
            )
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Quality (not a target here; shows what the work bought): mean balanced accuracy over the "
        "latents, and examples that got a usable answer.",
        "",
        "| system | explanations parsed | detection bal. acc. | fuzzing bal. acc. | answered "
        "(det + fuzz, per latent) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in res.items():
        ba, an, ex = (
            r["mean_balanced_accuracy"],
            r["examples_answered_per_latent"],
            r["explanations"],
        )
        lines.append(
            f"| {labels[name]} | {ex['ok']} of {ex['ok'] + ex['failed']} | "
            f"{_f(ba['detection'], 3)} | {_f(ba['fuzzing'], 3)} | "
            f"{_f(an['detection'], 1)} + {_f(an['fuzzing'], 1)} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in data["notes"]]
    path.write_text("\n".join(lines) + "\n")


def notes(data: dict) -> list[str]:
    res, cfg = data["results"], data["config"]
    phases = data["phases"]
    out = [
        "Uncached prompt tokens: the tokens of a prompt after the longest prefix it shares with "
        "any earlier prompt of the same system in this run (a token trie per system), which is "
        "what a server with automatic prefix caching (vLLM) computes; counted the same way for "
        "every system, from the chat rendered with the model's chat template as the backend "
        "renders it (a prefilled assistant message is continued). Calls: one per prompt. "
        "Generated tokens: as the backend reports them (up to the end-of-turn token or a stop "
        "string).",
        "autointerp (default) reads each answer from the logprobs of one token (`max_tokens` 1, "
        "through the backend's prefix-sharing path); its prompts start with the fixed "
        "instructions, "
        "then the explanation, so everything but the example is a shared prefix. autointerp "
        "(5 per prompt) generates the list (`max_tokens` 19, stop at `]`, answer prefilled with "
        "`[`). Both use `n_wrong: 0` so that fuzzing scores the same 100 examples as delphi's.",
        f"delphi: `DefaultExplainer(threshold=0.3)` (activation values shown, no chain of "
        f"thought), `max_tokens` {cfg['delphi_explain_max_tokens']} for the explanation; "
        f"`DetectionScorer`/`FuzzingScorer(n_examples_shown=5, log_prob=False)` with `max_tokens` "
        f"{DELPHI_SCORER_MAX_TOKENS}, temperature 0, run by delphi's `Pipeline` "
        "(max_concurrent 10, the explanation then both scorers at once). Its records are built "
        "from autointerp's samples (same token windows, activations, quantiles; normalized "
        "activations as delphi's sampler computes them from the latent's maximum).",
        "Per scored latent: each stage's work is divided by the latents it handled (the "
        "explainer: all latents; a scorer: the latents it scored), i.e. the cost of one "
        "explanation plus 100 + 100 scored examples; time and CPU time are divided by the latents "
        "both scorers scored (so autointerp also pays here for explaining latents it did not "
        "score). Latents scored (detection, fuzzing) of "
        f"{cfg['latents']}: "
        + "; ".join(
            f"{k} {v['latents_scored']['detection']}, {v['latents_scored']['fuzzing']} "
            f"(explanations parsed {v['explanations']['ok']})"
            for k, v in res.items()
        )
        + ". autointerp records a failed score, with the reason, for a latent whose explanation "
        "failed, and spends no scoring work on it; delphi scores its placeholder explanation "
        "'Explanation could not be parsed.' like any other.",
        f"Wall time: each system's explain + score of {cfg['chunk']} latents at a time, in turns "
        "(order reversed every chunk), in one process, sharing one model; the time the counting "
        "wrapper spends tokenizing and counting is subtracted. Per-chunk delphi/autointerp time "
        "ratios (same latents attempted): "
        + "; ".join(
            f"{name}: "
            + ", ".join(f"{x:.2f}" for x in data["ratios"][name]["latents_per_hour_per_chunk"])
            for name in ("autointerp", "autointerp_5_per_prompt")
        )
        + ".",
        "Load of the machine (another developer's tests ran at the same time): 1-min load "
        "average "
        + ", ".join(f"{p['load_before']:.1f}" for p in phases)
        + " at the start of each phase; CPU cores used by other processes during each phase: "
        + ", ".join(
            f"{p['system'][:5]}{'/5' if '5' in p['system'] else ''} {p['other_cpu_cores']:.2f}"
            for p in phases
        )
        + ". CPU seconds per latent (this process only) are less sensitive to that load than "
        "wall time.",
        "Requests that failed: "
        + ", ".join(f"{k} {v['failed_requests']}" for k, v in res.items())
        + "; prompts whose length the backend counted differently from the wrapper: "
        + ", ".join(f"{k} {v['prompt_count_mismatches']}" for k, v in res.items())
        + ".",
        f"Latents: the first {cfg['latents']} of latents 0-{cfg['scan'] - 1} whose sample holds "
        "every example asked for (40 train, 50 test, 25 + 25 non-activating).",
    ]
    smp = SampleConfig(**cfg["sample"])
    floor = smp.example_len * (
        smp.n_train + 2 * (smp.n_test + smp.n_random_negatives + smp.n_similar_negatives)
    )
    dl = res["delphi"]["uncached_plus_generated_per_latent"]
    out.append(
        f"A floor for uncached tokens at these example counts: the text of the examples "
        f"themselves, {smp.n_train} for the explainer + 2 x "
        f"{smp.n_test + smp.n_random_negatives + smp.n_similar_negatives} for the scorers, "
        f"{smp.example_len} tokens each = {floor:,} tokens per latent, which no prompt layout "
        f"avoids (each latent's examples are new text); that is {floor / dl:.2f}x delphi's "
        "uncached prompt + generated tokens here."
    )
    if data["delphi_stubbed_modules"]:
        out.append(
            "Modules delphi imports but does not call on this path, replaced by empty modules "
            "because they are not installed here: "
            + ", ".join(data["delphi_stubbed_modules"])
            + "."
        )
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".")
    return out


def finish(data: dict, phases: list[Phase]) -> None:
    """Figures per latent, ratios and notes from the raw totals of `data` (in place)."""
    res = data["results"] = {k: derive(k, v["raw"]) for k, v in data["results"].items()}
    data.update({k: res[k] for k in ("autointerp", "delphi")})
    data["ratios"] = {
        name: ratios(res, name, phases) for name in ("autointerp", "autointerp_5_per_prompt")
    }
    data["notes"] = notes(data)


# --- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "bench_llm_work")
    ap.add_argument("--tokens", type=int, default=200_000, help="tokens to cache if no cache")
    ap.add_argument("--latents", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=5, help="latents per timed phase")
    ap.add_argument("--scan", type=int, default=40, help="latents sampled to find --latents")
    ap.add_argument("--batch-size", type=int, default=8, help="TransformersClient batch size")
    ap.add_argument("--delphi-explain-max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=REPO / "results")
    ap.add_argument(
        "--from-json", action="store_true", help="only rewrite the report from OUT's JSON"
    )
    args = ap.parse_args()
    if args.from_json:
        data = json.loads((args.out / "bench_llm_work.json").read_text())
        finish(data, [Phase(**p) for p in data["phases"]])
        (args.out / "bench_llm_work.json").write_text(json.dumps(data, indent=2) + "\n")
        write_markdown(args.out / "bench_llm_work.md", data)
        print((args.out / "bench_llm_work.md").read_text())
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "delphi", "autointerp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    d = import_delphi()
    cache_dir = ensure_cache(args.run, args.tokens)
    cache = ActivationCache(cache_dir)
    coder = next(iter(cache.coders))
    tok = load_tokenizer(SubjectConfig(**cache.manifest["config"]["subject"]))
    decode = TokenDecoder(tok)
    tokens = cache.tokens()

    with tempfile.TemporaryDirectory(prefix="bench_llm_work_") as tmp:
        work = Path(tmp)
        sample_path, latents, scan = choose_latents(
            cache, coder, work / "sample", args.latents, args.scan
        )
        log.info("latents %s", latents)
        example_len = SampleConfig(**SAMPLE).example_len
        records = {r.id.latent: r for r in read_records(sample_path)}
        inner = TransformersClient(batch_size=args.batch_size)
        warm_up(inner)
        systems = {
            "autointerp": AutointerpSystem(
                "autointerp", inner, cache, sample_path, example_len, decode, None, work / "ai1"
            ),
            "autointerp_5_per_prompt": AutointerpSystem(
                "autointerp_5_per_prompt",
                inner,
                cache,
                sample_path,
                example_len,
                decode,
                5,
                work / "ai5",
            ),  # fmt: skip
            "delphi": DelphiSystem(
                d, inner, records, tokens, decode, example_len, args.delphi_explain_max_tokens
            ),
        }
        phases: list[Phase] = []
        chunks = [latents[i : i + args.chunk] for i in range(0, len(latents), args.chunk)]
        for k, chunk in enumerate(chunks):
            order = list(systems) if k % 2 == 0 else list(reversed(systems))
            for name in order:
                load0 = os.getloadavg()[0]
                busy0, own0 = cpu_seconds()
                t0 = time.perf_counter()
                systems[name].run(chunk)
                seconds = time.perf_counter() - t0
                busy, own = cpu_seconds()
                phases.append(
                    Phase(
                        system=name,
                        chunk=k,
                        latents=chunk,
                        seconds=seconds,
                        cpu_seconds=own - own0,
                        other_cpu_cores=max(0.0, (busy - busy0) - (own - own0)) / seconds,
                        load_before=load0,
                        load_after=os.getloadavg()[0],
                    )
                )
                log.info(
                    "chunk %d %s: %.1f s (%.1f s/latent), other processes %.2f cores",
                    k, name, seconds, seconds / len(chunk), phases[-1].other_cpu_cores,
                )  # fmt: skip
        for s in systems.values():
            s.collect()

    n = len(latents)
    results = {name: {"raw": summarize(name, s, phases, n)} for name, s in systems.items()}
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("transformers", "numpy", "autointerp", "eai-delphi"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cmd = "python -m eval.bench_llm_work"
    for flag, default in (("latents", 10), ("chunk", 5), ("delphi_explain_max_tokens", 64)):
        if getattr(args, flag) != default:
            cmd += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
    data = {
        "date": datetime.now(UTC).date().isoformat(),
        "command": cmd,
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "config": {
            "coder": coder,
            "latents": n,
            "latent_ids": latents,
            "scan": scan,
            "chunk": args.chunk,
            "cache_tokens": cache.n_tokens,
            "batch_size": args.batch_size,
            "sample": SAMPLE,
            "delphi_explain_max_tokens": args.delphi_explain_max_tokens,
            "delphi_scorer_max_tokens": DELPHI_SCORER_MAX_TOKENS,
        },
        "results": results,
        "phases": [asdict(p) for p in phases],
        "delphi_stubbed_modules": d.stubbed,
        "versions": versions,
    }
    finish(data, phases)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_llm_work.json").write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(args.out / "bench_llm_work.md", data)
    print((args.out / "bench_llm_work.md").read_text())


if __name__ == "__main__":
    main()
