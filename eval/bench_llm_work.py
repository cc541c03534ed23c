"""Benchmark the LLM work per scored latent: autointerp against EleutherAI delphi.

Both systems explain and score (detection and fuzzing) the same latents of the embedded coder, on
the same examples, with the same local LLM (the packaged SmolLM2-135M-Instruct through autointerp's
`TransformersClient`, one model object shared by everything), in one process:

- autointerp: `explain_coder` then `score_coder` with the detection and fuzzing scorers (both
  scorers' prompts go to the client in one call, through the score stage's `CoalescingClient`), run
  four times with four classifier settings: its default for the local `transformers` backend (one
  example per prompt, the answer read from the logprobs of one generated token);
  `examples_per_prompt: 5` (a list of five answers per prompt, as delphi asks); and `layout: shared`
  with 5 and with 10 examples per prompt. In the shared layout both scorers have one system message
  and show the same plain examples in the same order and prompts; detection's user message ends
  with "Fires?", fuzzing's with the list of each example's marked tokens and "Marked?", so a
  prefix-caching server computes each example's text once for both scorers. Fuzzing's `n_wrong` is
  0 so that every system scores the same examples (delphi's default fuzzing adds no wrong-marked
  activating examples).
- autointerp's explainer alone with best-of-k (`ExplainConfig(best_of=4)`, built by
  `autointerp.best_of.make_explainer`): 4 candidate explanations per latent, each judged by a pilot
  detection scoring on held-out train examples; compared with the explain stage of the default
  system (best-of-1).
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
split by stage (explain, detection, fuzzing) by their system message, and in the shared layout,
where detection and fuzzing have the same one, by the question that ends the user message. The
trie is per system, so what fuzzing shares with detection in the shared layout (everything before
the question) counts as cached for fuzzing without anything special: its uncached tokens are its
marks and its question. The best-of explainer has its own counting client and trie; its pilot's
prompts (told apart by the pilot scorer's system message) count in the explainer's work, as they
do in the explanation's own token counts.

Wall time: each system's explain + score of a chunk of latents is timed in turns (chunk 1 with
autointerp, autointerp with 5 per prompt, autointerp shared with 5 and with 10 per prompt, delphi;
chunk 2 in the reverse order; ...), so that a change of the machine's speed during the run falls on
every system alike; latents/hour is computed from the sum of a system's chunk times (less the
wrapper's own counting time), and the per-chunk ratios are reported too. The CPU time other
processes used during each phase is recorded, as the machine's load. The best-of explainer runs
after the turns, on all the latents at once; its time is reported but not compared.

Adaptive scoring is measured by `python -m eval.adaptive` (adaptive against full scoring of the
same latents); its `results/adaptive.json` (`--adaptive-json`) is read when present, and its ratio
of scorer tokens, Spearman correlation, latents, judge and setting go into the report with the goal
(>= 2x fewer scorer tokens at Spearman >= 0.95 over >= 50 latents).

delphi hard-depends on vLLM, which this benchmark does not use. Install it without dependencies:
    pip install --no-deps eai-delphi
Its packages `delphi.clients`, `delphi.latents`, `delphi.scorers` and `delphi.explainers` import
vLLM, faiss and other heavy modules eagerly; the benchmark registers them as empty packages and
imports the submodules it needs. Light modules delphi imports but never calls on this path
(tiktoken, aiofiles, blobfile, orjson: token counting for its simulator, saving records and
explanations) are replaced by empty modules when they are not installed.

Usage:
    python -m eval.bench_llm_work [--run runs/bench_llm_work] [--tokens 200000] [--latents 10]
                                  [--chunk 5] [--delphi-explain-max-tokens 64] [--out results]
                                  [--adaptive-json results/adaptive.json] [--from-json]
The cache is built into RUN/cache when it is not there (`autointerp cache --out RUN/cache --tokens
N`); samples, explanations and scores go to a temporary folder that is deleted afterwards. Writes
OUT/bench_llm_work.md and OUT/bench_llm_work.json (`--from-json` only rewrites the report from the
JSON, reading the adaptive results afresh).
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

from autointerp.best_of import make_explainer
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
from autointerp.score.base import LatentScore
from autointerp.score.classifier import ClassifierConfig, ClassifierScorer
from autointerp.subject import load_tokenizer
from autointerp.types import SampledLatent
from eval.common import cpu_seconds

log = logging.getLogger("bench_llm_work")
REPO = Path(__file__).resolve().parents[1]
STAGES = ("explain", "detection", "fuzzing")
BEST_OF_STAGES = ("explain", "pilot")
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
    "autointerp_shared_5": "autointerp, `layout: shared`, `examples_per_prompt: 5` (detection "
    "and fuzzing show the same plain examples; only the question after them differs)",
    "autointerp_shared_10": "autointerp, `layout: shared`, `examples_per_prompt: 10`",
    "delphi": "delphi: DefaultExplainer, DetectionScorer + FuzzingScorer, 5 examples per prompt",
}
LABELS = {
    "autointerp": "autointerp (default: 1 per prompt, logprobs)",
    "autointerp_5_per_prompt": "autointerp (5 per prompt)",
    "autointerp_shared_5": "autointerp (shared prefix, 5 per prompt)",
    "autointerp_shared_10": "autointerp (shared prefix, 10 per prompt)",
    "delphi": "delphi (defaults, 5 per prompt)",
}
SHORT = {  # in the notes' lists
    "autointerp": "autointerp",
    "autointerp_5_per_prompt": "autointerp/5",
    "autointerp_shared_5": "shared/5",
    "autointerp_shared_10": "shared/10",
    "delphi": "delphi",
}
AUTOINTERP = {  # system -> (layout, examples per prompt; None: the backend's default)
    "autointerp": ("separate", None),
    "autointerp_5_per_prompt": ("separate", 5),
    "autointerp_shared_5": ("shared", 5),
    "autointerp_shared_10": ("shared", 10),
}
BEST_OF = 4
"""Candidates per latent of the best-of-k explainer measured alone (`ExplainConfig.best_of`)."""
ADAPTIVE_JSON = REPO / "results" / "adaptive.json"
"""Written by `python -m eval.adaptive`: adaptive against full scoring."""
ADAPTIVE_GOAL = {"tokens_ratio": 2.0, "spearman": 0.95, "n_latents": 50}
"""Adaptive scoring's goal: at least 2x fewer scorer tokens, Spearman >= 0.95, >= 50 latents."""
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


SHARED = "shared"
"""The stage `stage_classifier` is given for a system message that two scorers share."""


def stage_classifier(
    system_prompts: dict[str, str], questions: dict[str, str] | None = None
) -> Callable[[Chat], str]:
    """A chat's stage from its system message (`system_prompts`: text -> stage); else explain. A
    system message mapped to `SHARED` (the shared layout: detection and fuzzing have the same one)
    is told apart by the end of the last user message (`questions`: its last line -> stage)."""
    questions = questions or {}

    def stage_of(chat: Chat) -> str:
        first = chat[0] if chat else {}
        stage = system_prompts.get(first.get("content", ""), "explain")
        if stage != SHARED:
            return stage
        user = next(m["content"] for m in reversed(chat) if m["role"] == "user").rstrip()
        for question, name in questions.items():
            if user.endswith(question):
                return name
        raise ValueError(f"a shared-layout prompt ends with no known question: {user[-80:]!r}")

    return stage_of


def scorer_stages(cfg: ClassifierConfig, client: object) -> Callable[[Chat], str]:
    """The stage of each chat of an autointerp system whose detection and fuzzing use `cfg`, from
    the scorers' own prompts (their system message; in the shared layout, their question)."""
    systems, questions = {}, {}
    for name in SCORERS:
        scorer = ClassifierScorer(name, client, cfg)  # type: ignore[arg-type]
        if scorer.shared:
            systems[scorer.system] = SHARED
            questions[scorer.question.splitlines()[-1].strip()] = name
        else:
            systems[scorer.system] = name
    return stage_classifier(systems, questions)


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
    """Latents each scorer judged the examples of (autointerp does not score a latent whose
    explanation failed; a latent none of whose answers could be used counts: its examples were
    judged, though its score failed)."""
    balanced_accuracy: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, scorer: str, s: LatentScore) -> None:
        """Count one of autointerp's latent scores."""
        self.scored[scorer] += bool(s.predictions)
        self.examples[scorer] += len(s.predictions)
        answered = [p for p in s.predictions if p.error is None]
        self.answered[scorer] += len(answered)
        ba = balanced_accuracy([p.label for p in answered], [bool(p.prediction) for p in answered])
        if ba is not None:
            self.balanced_accuracy[scorer].append(ba)


def balanced_accuracy(labels: list[bool], preds: list[bool]) -> float | None:
    pos = [p for lab, p in zip(labels, preds, strict=True) if lab]
    neg = [not p for lab, p in zip(labels, preds, strict=True) if not lab]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


class AutointerpSystem:
    """autointerp's explain + score (detection and fuzzing, both with `cfg_cls`), through a
    counting client of its own; the score stage sends both scorers' prompts in one call."""

    def __init__(self, name, inner, cache, sample_path, example_len, decode, cfg_cls, workdir):
        self.name, self.sample_path = name, sample_path
        self.score_cfg = ScoreStageConfig.model_validate(
            {
                "score": {
                    "scorers": ["detection", "fuzzing"],
                    "detection": cfg_cls,
                    "fuzzing": cfg_cls,
                }
            }
        )
        probe = CountingClient(inner, lambda chat: "explain")  # a local client, as the real one
        self.client = CountingClient(inner, scorer_stages(cfg_cls, probe))
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
        for scorer in SCORERS:
            for s in read_scores(self.score_dir / scorer / self.sample_path.name).values():
                q.add(scorer, s)


class BestOfSystem:
    """autointerp's explain stage alone with best-of-k (`make_explainer`), through a counting
    client of its own; the pilot's detection prompts (the candidates' judgement) count as the
    `pilot` stage, the candidates' prompts as `explain`."""

    def __init__(self, inner, cache, sample_path, example_len, decode, best_of, workdir):
        self.sample_path, self.best_of = sample_path, best_of
        cfg = ExplainConfig(best_of=best_of)
        probe = CountingClient(inner, lambda chat: "explain")
        # the pilot's scorer as `autointerp.best_of` builds it (its default options)
        pilot = ClassifierScorer(cfg.pilot_scorer, probe, ClassifierConfig())
        self.client = CountingClient(inner, stage_classifier({pilot.system: "pilot"}))
        self.explainer = make_explainer(cache, cfg, self.client, decode, example_len)
        self.out = workdir / "explanations"
        self.seconds = 0.0

    def run(self, latents: list[int]) -> None:
        t0 = time.perf_counter()
        explain_coder(self.explainer, self.sample_path, self.out, set(latents), progress=False)
        self.seconds += time.perf_counter() - t0

    def raw(self, n: int) -> dict:
        """The raw totals (what `explainer_work` turns into figures per latent)."""
        expl = read_explanations(self.out / self.sample_path.name).values()
        return {
            "best_of": self.best_of,
            "latents": n,
            "seconds": self.seconds - self.client.overhead,
            "stages": {s: asdict(self.client.tallies.get(s, Tally())) for s in BEST_OF_STAGES},
            "explanations": {
                "ok": sum(e.text is not None for e in expl),
                "failed": sum(e.text is None for e in expl),
            },
            "explanation_tokens": {  # as the explanations record their work (cross-check)
                "prompt_tokens": sum(e.prompt_tokens for e in expl),
                "completion_tokens": sum(e.completion_tokens for e in expl),
            },
        }


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


def explainer_work(raw: dict | None, res: dict) -> dict | None:
    """The explainer's work per latent: best-of-1 (the explain stage of the default system) and
    best-of-k measured alone (its candidates, its pilot and both), from the raw totals."""
    if raw is None:
        return None
    n = raw["latents"]
    parts = {s: per_latent(Tally(**raw["stages"][s]), n) for s in BEST_OF_STAGES}
    total = Tally()
    for s in BEST_OF_STAGES:
        total.add(Tally(**raw["stages"][s]))
    one = res["autointerp"]["per_stage"]["explain"]
    k = {
        **per_latent(total, n),
        "candidates": parts["explain"],
        "pilot": parts["pilot"],
        "seconds_per_latent": raw["seconds"] / n,
        "explanations": raw["explanations"],
        "failed_requests": total.failed_requests,
        "prompt_count_mismatches": total.count_mismatches,
    }
    key = "uncached_plus_generated_per_latent"
    return {
        "best_of_1": one,
        f"best_of_{raw['best_of']}": k,
        "best_of": raw["best_of"],
        "ratio_uncached_plus_generated": k[key] / one[key] if one[key] else None,
        "raw": raw,
    }


def read_adaptive(path: Path) -> dict:
    """The adaptive-scoring keys of the report from `eval.adaptive`'s JSON (None each when the
    file is not there)."""
    keys = ("tokens_ratio", "spearman", "spearman_ci95", "n_latents", "judge", "setting")
    extra = ("command", "date")
    if not path.is_file():
        return {f"adaptive_{k}": None for k in keys + extra} | {"adaptive_goal_met": None}
    src = json.loads(path.read_text())
    out = {f"adaptive_{k}": src.get(k) for k in keys + extra}
    ratio, rho, n = (out[f"adaptive_{k}"] for k in ("tokens_ratio", "spearman", "n_latents"))
    g = ADAPTIVE_GOAL
    out["adaptive_goal_met"] = (
        None
        if None in (ratio, rho, n)
        else bool(ratio >= g["tokens_ratio"] and rho >= g["spearman"] and n >= g["n_latents"])
    )
    return out


def _met(v: float, op: str, goal: float) -> bool:
    return v <= goal if op == "<=" else v >= goal


def _f(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _work(p: dict) -> str:
    return (
        f"{_f(p['prompt_tokens_per_latent'])} / {_f(p['uncached_prompt_tokens_per_latent'])} / "
        f"{_f(p['generated_tokens_per_latent'])} / {_f(p['calls_per_latent'], 1)}"
    )


def write_markdown(path: Path, data: dict) -> None:
    lines = _head(data) + _targets(data) + _stages(data) + _quality(data)
    lines += _explainer(data) + _adaptive(data)
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in data["notes"]]
    path.write_text("\n".join(lines) + "\n")


def _head(data: dict) -> list[str]:
    res, m, cfg = data["results"], data["machine"], data["config"]
    lines = [
        "# LLM work per scored latent: autointerp vs delphi",
        "",
        f"{cfg['latents']} latents of the embedded coder (`{cfg['coder']}`, latents "
        f"{', '.join(map(str, cfg['latent_ids']))}), cache of "
        f"{cfg['cache_tokens']:,} tokens of the default corpus; explainer and scorers: "
        f"the packaged SmolLM2-135M-Instruct (bf16) through `TransformersClient` (batch size "
        f"{cfg['batch_size']}), one model shared by all systems; {m['cpu']}, "
        f"{m['cores']} cores, {m['torch_threads']} torch threads; {data['date']}.",
        "",
        f"Command: `{data['command']}`",
        "",
        "Examples per latent, for every system: 40 for the explainer; per scorer 50 activating "
        "(5 per activation decile) + 50 non-activating (25 random, 25 similar); per prompt: 5 "
        "for delphi, `autointerp (5 per prompt)` and `autointerp (shared prefix, 5 per prompt)`, "
        "10 for `autointerp (shared prefix, 10 per prompt)`, 1 for `autointerp (default)`. The "
        "shared-prefix rows show detection and fuzzing the same plain examples in the same "
        "prompts; only the question after the examples differs.",
        "",
        "| system | prompt tokens | uncached prompt | generated | uncached + generated | LLM calls "
        "| s / latent | CPU s / latent | latents / hour | examples scored (det + fuzz) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res.items():
        ex = r["examples_scored_per_latent"]
        lines.append(
            f"| {LABELS[name]} | {_f(r['prompt_tokens_per_latent'])} | "
            f"{_f(r['uncached_prompt_tokens_per_latent'])} | "
            f"{_f(r['generated_tokens_per_latent'])} | "
            f"{_f(r['uncached_plus_generated_per_latent'])} | {_f(r['calls_per_latent'], 1)} | "
            f"{_f(r['seconds_per_latent'], 1)} | {_f(r['cpu_seconds_per_latent'], 1)} | "
            f"{_f(r['latents_per_hour'])} | {_f(ex['detection'])} + {_f(ex['fuzzing'])} |"
        )
    return lines + ["", "All figures are per scored latent (explain + detection + fuzzing).", ""]


def _targets(data: dict) -> list[str]:
    head = " | ".join(f"{label} (goal {op} {goal}x)" for label, op, goal in TARGETS.values())
    lines = [
        "Targets, autointerp / delphi:",
        "",
        f"| system | {head} |",
        "|---|" + "---:|" * len(TARGETS),
    ]
    for name, r in data["ratios"].items():
        cells = [
            f"{t['measured']:.2f}x {'met' if t['met'] else '**not met**'}"
            for t in (r["targets"][k] for k in TARGETS)
        ]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def _stages(data: dict) -> list[str]:
    lines = [
        "",
        "Per stage (per latent): prompt tokens / uncached prompt tokens / generated tokens / "
        "calls. In the shared-prefix rows fuzzing's uncached tokens are those after the examples "
        "detection already sent: the marked tokens and the question.",
        "",
        "| system | explain | detection | fuzzing |",
        "|---|---|---|---|",
    ]
    for name, r in data["results"].items():
        cells = [_work(r["per_stage"][s]) for s in STAGES]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def _quality(data: dict) -> list[str]:
    lines = [
        "",
        "Quality (not a target here; shows what the work bought): mean balanced accuracy over the "
        "latents, and examples that got a usable answer.",
        "",
        "| system | explanations parsed | detection bal. acc. | fuzzing bal. acc. | answered "
        "(det + fuzz, per latent) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in data["results"].items():
        ba, an, ex = (
            r["mean_balanced_accuracy"],
            r["examples_answered_per_latent"],
            r["explanations"],
        )
        lines.append(
            f"| {LABELS[name]} | {ex['ok']} of {ex['ok'] + ex['failed']} | "
            f"{_f(ba['detection'], 3)} | {_f(ba['fuzzing'], 3)} | "
            f"{_f(an['detection'], 1)} + {_f(an['fuzzing'], 1)} |"
        )
    return lines


def _explainer(data: dict) -> list[str]:
    lines = ["", "## Explainer work per latent", ""]
    e = data.get("explainer_best_of")
    if e is None:
        return lines + [
            "Not in this JSON (written before the benchmark measured best-of-k); a run of "
            "`python -m eval.bench_llm_work` measures it."
        ]
    k = e["best_of"]
    kk = e[f"best_of_{k}"]
    lines += [
        f"autointerp's explainer with `best_of: 1` (the explain stage of `autointerp (default)`) "
        f"and `best_of: {k}` (measured alone on the same latents, through a counting client of "
        f"its own: {k} candidates per latent, each judged by the pilot's detection scoring on "
        f"held-out train examples). Explanations parsed with best-of-{k}: "
        f"{kk['explanations']['ok']} of {kk['explanations']['ok'] + kk['explanations']['failed']}."
        " Per latent:",
        "",
        "| explainer | prompt tokens | uncached prompt | generated | uncached + generated | "
        "LLM calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("best-of-1", e["best_of_1"]),
        (f"best-of-{k}: candidates", kk["candidates"]),
        (f"best-of-{k}: pilot (detection of the candidates)", kk["pilot"]),
        (f"best-of-{k}: total", kk),
    ]
    for label, p in rows:
        lines.append(
            f"| {label} | {_f(p['prompt_tokens_per_latent'])} | "
            f"{_f(p['uncached_prompt_tokens_per_latent'])} | "
            f"{_f(p['generated_tokens_per_latent'])} | "
            f"{_f(p['uncached_plus_generated_per_latent'])} | {_f(p['calls_per_latent'], 1)} |"
        )
    r = e["ratio_uncached_plus_generated"]
    if r is not None:
        lines += ["", f"Uncached + generated tokens, best-of-{k} / best-of-1: {r:.2f}x."]
    return lines


def _adaptive(data: dict) -> list[str]:
    g = ADAPTIVE_GOAL
    goal = (
        f"goal: >= {g['tokens_ratio']:g}x fewer scorer tokens at Spearman >= {g['spearman']} "
        f"over >= {g['n_latents']} latents"
    )
    lines = ["", "## Adaptive scoring", ""]
    if data.get("adaptive_tokens_ratio") is None:
        return lines + [
            f"Not measured: no `{data.get('adaptive_source') or 'results/adaptive.json'}`; "
            f"`python -m eval.adaptive` measures it ({goal})."
        ]
    met = {True: "met", False: "**not met**", None: "-"}[data["adaptive_goal_met"]]
    ci = data["adaptive_spearman_ci95"]
    ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    return lines + [
        f"From `{data['adaptive_source']}` (`{data['adaptive_command']}`, "
        f"{data['adaptive_date']}): {data['adaptive_setting']}; judge {data['adaptive_judge']}.",
        "",
        "| scorer tokens, full / adaptive | Spearman (adaptive vs full) | latents | goal |",
        "|---:|---:|---:|---|",
        f"| {data['adaptive_tokens_ratio']:.2f}x | {_f(data['adaptive_spearman'], 3)}{ci_text} | "
        f"{data['adaptive_n_latents']} | {met} ({goal}) |",
    ]


def notes(data: dict) -> list[str]:
    res, cfg = data["results"], data["config"]
    phases = data["phases"]
    mine = [n for n in AUTOINTERP if n in res]
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
        "instructions, then the explanation, so everything but the example is a shared prefix. "
        "autointerp (5 per prompt) generates the list (`max_tokens` 19, stop at `]`, answer "
        "prefilled with `[`). All autointerp rows use `n_wrong: 0` so that fuzzing scores the "
        "same 100 examples as delphi's.",
        "autointerp (shared prefix): `layout: shared` for detection and fuzzing, 5 or 10 "
        "examples per prompt (`max_tokens` 19 or 34). Both scorers have one system message and "
        "show the same plain examples in the same order and prompts; detection's user message "
        "ends with `Fires?`, fuzzing's with the list of each example's marked tokens and "
        "`Marked?`. The score stage sends both scorers' prompts to the client in one call "
        "(`CoalescingClient`), detection's first, so fuzzing's prompts repeat detection's up to "
        "the question: the system's token trie counts that sharing, and fuzzing's uncached "
        "tokens are its marks and question. Requests are split by stage by their system message, "
        "and in the shared layout by the question that ends the user message.",
        f"delphi: `DefaultExplainer(threshold=0.3)` (activation values shown, no chain of "
        f"thought), `max_tokens` {cfg['delphi_explain_max_tokens']} for the explanation; "
        f"`DetectionScorer`/`FuzzingScorer(n_examples_shown=5, log_prob=False)` with `max_tokens` "
        f"{DELPHI_SCORER_MAX_TOKENS}, temperature 0, run by delphi's `Pipeline` "
        "(max_concurrent 10, the explanation then both scorers at once). Its records are built "
        "from autointerp's samples (same token windows, activations, quantiles; normalized "
        "activations as delphi's sampler computes them from the latent's maximum).",
        "Per scored latent: each stage's work is divided by the latents it handled (the "
        "explainer: all latents; a scorer: the latents whose examples it judged, whether or "
        "not their answers could be used), i.e. the cost of one "
        "explanation plus 100 + 100 scored examples; time and CPU time are divided by the latents "
        "both scorers scored (so autointerp also pays here for explaining latents it did not "
        "score). Latents scored (detection, fuzzing) of "
        f"{cfg['latents']}: "
        + "; ".join(
            f"{SHORT[k]} {v['latents_scored']['detection']}, {v['latents_scored']['fuzzing']} "
            f"(explanations parsed {v['explanations']['ok']})"
            for k, v in res.items()
        )
        + ". autointerp records a failed score, with the reason, for a latent whose explanation "
        "failed, and spends no scoring work on it; delphi scores its placeholder explanation "
        "'Explanation could not be parsed.' like any other. A latent none of whose answers "
        "could be used (a list of the wrong length in every prompt) gets a failed score too, "
        "after its work was spent: it counts as scored here.",
        f"Wall time: each system's explain + score of {cfg['chunk']} latents at a time, in turns "
        f"({', '.join(SHORT[k] for k in res)}; order reversed every chunk), in one process, "
        "sharing one model; the time the counting wrapper spends tokenizing and counting is "
        "subtracted. The best-of explainer runs after the turns, alone, and is not timed "
        "against delphi. Per-chunk delphi/autointerp time ratios (same latents attempted): "
        + "; ".join(
            f"{SHORT[name]}: "
            + ", ".join(f"{x:.2f}" for x in data["ratios"][name]["latents_per_hour_per_chunk"])
            for name in mine
        )
        + ".",
        "Load of the machine (whatever else ran beside the benchmark): 1-min load "
        "average "
        + ", ".join(f"{p['load_before']:.1f}" for p in phases)
        + " at the start of each phase; CPU cores used by other processes during each phase: "
        + ", ".join(f"{SHORT[p['system']]} {p['other_cpu_cores']:.2f}" for p in phases)
        + ". CPU seconds per latent (this process only) are less sensitive to that load than "
        "wall time.",
        "Requests that failed: "
        + ", ".join(f"{SHORT[k]} {v['failed_requests']}" for k, v in res.items())
        + "; prompts whose length the backend counted differently from the wrapper: "
        + ", ".join(f"{SHORT[k]} {v['prompt_count_mismatches']}" for k, v in res.items())
        + ".",
        f"Latents: the first {cfg['latents']} of latents 0-{cfg['scan'] - 1} whose sample holds "
        "every example asked for (40 train, 50 test, 25 + 25 non-activating).",
    ]
    smp = SampleConfig(**cfg["sample"])
    floor = smp.example_len * (
        smp.n_train + 2 * (smp.n_test + smp.n_random_negatives + smp.n_similar_negatives)
    )
    shared_floor = smp.example_len * (
        smp.n_train + smp.n_test + smp.n_random_negatives + smp.n_similar_negatives
    )
    dl = res["delphi"]["uncached_plus_generated_per_latent"]
    out.append(
        f"A floor for uncached tokens at these example counts: the text of the examples "
        f"themselves, {smp.n_train} for the explainer + 2 x "
        f"{smp.n_test + smp.n_random_negatives + smp.n_similar_negatives} for the scorers, "
        f"{smp.example_len} tokens each = {floor:,} tokens per latent, which no layout that "
        f"shows each scorer its examples apart avoids (each latent's examples are new text); "
        f"that is {floor / dl:.2f}x delphi's uncached prompt + generated tokens here. The "
        f"shared layout shows the scorers' examples once for both: its floor is "
        f"{shared_floor:,} tokens ({shared_floor / dl:.2f}x delphi's)."
    )
    e = data.get("explainer_best_of")
    if e is not None:
        kk = e[f"best_of_{e['best_of']}"]
        tok = e["raw"]["explanation_tokens"]
        counted = sum(e["raw"]["stages"][s]["prompt_tokens"] for s in BEST_OF_STAGES)
        out.append(
            f"Best-of-{e['best_of']}: `ExplainConfig(best_of={e['best_of']})` through "
            "`make_explainer` (candidates from subsets of the train examples left after a pilot "
            "of 10, at temperature 0; the pilot judged by detection with its default options, 1 "
            "example per prompt on this backend), on the same latents after the timed turns, "
            "with a token trie of its own; the pilot's prompts are told apart by their system "
            f"message. {_f(kk['seconds_per_latent'], 1)} s per latent. The explanations record "
            f"{tok['prompt_tokens']:,} prompt tokens (the counting client: {counted:,}); failed "
            f"requests {kk['failed_requests']}, prompts counted differently from the backend "
            f"{kk['prompt_count_mismatches']}."
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


def finish(data: dict, phases: list[Phase], adaptive: Path = ADAPTIVE_JSON) -> None:
    """Figures per latent, ratios and notes from the raw totals of `data` (in place), and the
    adaptive-scoring figures read afresh from `adaptive` (`eval.adaptive`'s JSON)."""
    res = data["results"] = {k: derive(k, v["raw"]) for k, v in data["results"].items()}
    data.update({k: res[k] for k in ("autointerp", "delphi")})
    data["ratios"] = {name: ratios(res, name, phases) for name in AUTOINTERP if name in res}
    old = data.get("explainer_best_of")
    data["explainer_best_of"] = explainer_work(old and old["raw"], res)
    data.update(read_adaptive(adaptive))
    data["adaptive_source"] = _shown_path(adaptive)
    data["notes"] = notes(data)


def _shown_path(path: Path) -> str:
    """`path` relative to the repository when inside it, else its file name."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


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
        "--adaptive-json",
        type=Path,
        default=ADAPTIVE_JSON,
        help="adaptive scoring's results (`python -m eval.adaptive`), read when present",
    )
    ap.add_argument(
        "--from-json",
        action="store_true",
        help="only rewrite the report from OUT's JSON (and a fresh --adaptive-json)",
    )
    args = ap.parse_args()
    if args.from_json:
        data = json.loads((args.out / "bench_llm_work.json").read_text())
        finish(data, [Phase(**p) for p in data["phases"]], args.adaptive_json)
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
        systems: dict = {
            name: AutointerpSystem(
                name,
                inner,
                cache,
                sample_path,
                example_len,
                decode,
                ClassifierConfig(layout=layout, examples_per_prompt=k, n_wrong=0),
                work / name,
            )
            for name, (layout, k) in AUTOINTERP.items()
        }
        systems["delphi"] = DelphiSystem(
            d, inner, records, tokens, decode, example_len, args.delphi_explain_max_tokens
        )
        best_of = BestOfSystem(
            inner, cache, sample_path, example_len, decode, BEST_OF, work / "best_of"
        )
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
        log.info("best-of-%d explainer alone", BEST_OF)
        best_of.run(latents)
        log.info("best-of-%d: %.1f s", BEST_OF, best_of.seconds)
        for s in systems.values():
            s.collect()
        best_of_raw = best_of.raw(len(latents))

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
        "explainer_best_of": {"raw": best_of_raw},
        "phases": [asdict(p) for p in phases],
        "delphi_stubbed_modules": d.stubbed,
        "versions": versions,
    }
    finish(data, phases, args.adaptive_json)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_llm_work.json").write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(args.out / "bench_llm_work.md", data)
    print((args.out / "bench_llm_work.md").read_text())


if __name__ == "__main__":
    main()
