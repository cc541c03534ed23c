"""Plan a run's LLM cost before it runs: prompt, uncached prompt and generated tokens per latent and
in total for each stage that calls an LLM, GPU-hours on vLLM, and dollars at an editable price table.

Usage: `autointerp plan [CONFIG.yaml] --latents 1000000 [--out RUN] [--from RUN] [--pilot 4]
[--prices FILE] [--model-size 8B] [--gpu H100] [--json]`; Python: `make_plan(config, latents=...)`.
`autointerp run` saves the plan of its own folder as RUN/plan.json before its first LLM call and
compares it with the tokens the run recorded at the end (`compare_with_run`).

How it counts:
- The pilot: the run's own code builds the prompts of a few latents (`Explainer`, the LLM scorers
  built by `SCORERS` and driven by `score_latents`, the judge check's control scoring) with a client
  that records each chat and its generation parameters instead of sending it, and answers with an
  empty text. The planner's prompts are the run's prompts by construction; its counts could drift
  only through tokenization, which tests/test_plan.py checks against a real run.
- Pilot latents: where the run folder (`--out`) holds a cache and a sample made with the config's
  sample options, the first sampled latents of the run's selection, rendered as the run renders
  them; otherwise synthetic latents: windows of `example_len` tokens of the configured corpus (the
  bundled Wikipedia when the corpus is not local) cut by the subject's tokenizer (words where it
  cannot be loaded), one firing token per activating window at `context_before`, with the
  configured numbers of train, test and non-activating examples.
- Explanations (the scorers' prompts hold them): the run folder's, else those of `--from RUN`
  (cycled), else `PLACEHOLDER_EXPLANATIONS`, sentences of a typical explanation's length. With
  such stand-ins the plan notes how much longer each scorer's prompts get if the real explanations
  fill the explainer's answer budget (an explanation is part of that answer: an upper bound).
- Tokens: the explainer's prompts with the explainer's tokenizer and chat template, the judge's
  with the judge's, rendered as their backends render them (`transformers`, `vllm`, `openai`: the
  transformers tokenizer from local files only; `llamacpp`: llama.cpp's tokenizer and the GGUF's
  template, as `LlamaCppClient` renders), or `--tokenizer SPEC`; where none loads, 4 characters
  per token, and the plan says so. Each recorder's `inner` is a bare instance of its backend's
  client class, so that the stages choose prefills and examples per prompt as they will.
- Uncached prompt tokens: a token trie over the pilot's prompts in a run's order (explain, then
  each scorer, then the judge check): the tokens of a prompt after the longest prefix it shares
  with an earlier one, what a server with automatic prefix caching (vLLM) computes. The first pilot
  latent also pays for what every later latent shares (the instructions): that excess is counted
  once per run (`once_uncached`); per latent counts are the mean over the other pilot latents.
  A chat identical to an earlier one (with the client's response cache on) is answered from that
  cache: the run records its prompt and generated tokens, but it is no call and costs nothing.
- Generated tokens: 1 per call whose answer is read from the logprobs of one token; otherwise the
  call's `max_tokens`, an upper bound (shown as "<="), unless `--from RUN` gives the mean a
  finished run recorded.
- Scaling: each stage times the latents it handles: explain every sampled latent (the share of
  the selection the run folder's sample kept, else all), the scorers that read an explanation the
  share of explanations that succeeded in `--from RUN` (else all), the explanation-free ones every
  sampled latent, the judge check `min(n, max(min_latents, ceil(fraction * n)))` latents per coder
  and checked scorer (none under 4 latents: such a check makes no call).
- Costs: GPU-hours = (uncached prompt / prefill + generated / decode) / 3600 at the table's vLLM
  throughput for a model size and GPU (assumptions: see autointerp/data/prices.yaml); API dollars:
  the prompt tokens sent at the input price, but those the provider's cache serves (its caching
  rule: minimum prompt length, block size) at the cached-input price; generated at the output
  price.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from autointerp.clients.base import Chat, Completion, GenParams
from autointerp.config import ClientConfig, load_yaml
from autointerp.errors import ConfigError
from autointerp.score.base import LatentItem
from autointerp.score.stage import ScoreContext
from autointerp.types import Example, ExampleRef, Explanation, LatentId, SampledLatent

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
PRICES = Path(__file__).resolve().parent / "data" / "prices.yaml"
APPROX_CHARS = 4
"""Characters per token of the approximation used where no tokenizer of the model loads."""
PLACEHOLDER_EXPLANATIONS = (
    'the word "the" at the start of a noun phrase, mostly before the names of places and bodies',
    "numbers in dates, especially the year after a month name or the day before it",
    "verbs in the past tense that say where or when a person was born, lived or died",
    "names of sports teams and of the leagues, cups and seasons they play in",
)
"""Explanations of a typical length (13-16 words), for the scorers' prompts of a plan made before
any explanation exists."""
JUDGE = "judge check"


# --- counting ---------------------------------------------------------------------------------


class PrefixTrie:
    """Every token sequence seen so far; `insert` returns how many leading tokens of a new sequence
    some earlier sequence shares (what an automatic prefix cache would not recompute)."""

    def __init__(self) -> None:
        self.root: dict[int, dict] = {}

    def insert(self, ids: Sequence[int]) -> int:
        node, i = self.root, 0
        while i < len(ids) and ids[i] in node:
            node = node[ids[i]]
            i += 1
        shared = i
        for t in ids[i:]:
            node[t] = node = {}
        return shared


class ChatTokens(Protocol):
    """A chat's prompt tokens as a backend computes them."""

    label: str
    exact: bool

    def encode(self, chat: Chat) -> list[int]: ...


class HFTokens:
    """A transformers tokenizer, rendering a chat with `TransformersClient`'s own `_render` (chat
    template; a final assistant message continued) and tokenizing it as that client does."""

    def __init__(self, tokenizer, label: str, exact: bool = True):
        from autointerp.clients.local import TransformersClient

        self._client = TransformersClient.__new__(TransformersClient)  # a tokenizer-only view
        self._client.tok = tokenizer
        self.label, self.exact = label, exact

    def encode(self, chat: Chat) -> list[int]:
        return self._client.tok(self._client._render(chat), add_special_tokens=False).input_ids


class LlamaCppTokens:
    """llama.cpp's tokenizer of a GGUF file (its vocabulary only, no weights), rendering a chat
    with `LlamaCppClient`'s own `_ids` (the GGUF's chat template, a prefill continued)."""

    def __init__(self, path: Path):
        from llama_cpp import Llama

        from autointerp.clients.llamacpp import LlamaCppClient, _close

        client = LlamaCppClient.__new__(LlamaCppClient)  # a tokenizer-only view
        client.path = path
        with _quiet():  # a vocabulary-only model warns of its context on stderr
            client.llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        atexit.register(_close, weakref.ref(client.llm))
        client._template = client._chat_template()
        self._client = client
        self.label, self.exact = f"llama.cpp's tokenizer of {path.name}", True

    def encode(self, chat: Chat) -> list[int]:
        return self._client._ids(chat)


def _quiet():
    """llama.cpp's own stderr silenced (its C logging ignores `verbose=False` in places)."""
    try:
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:  # pragma: no cover - a llama-cpp-python without it: its warnings show
        import contextlib

        return contextlib.nullcontext()
    return suppress_stdout_stderr(disable=False)


class ApproxTokens:
    """No tokenizer: the chat's text (role markers and contents) in pieces of APPROX_CHARS
    characters, each piece one token (equal pieces share an id, so the prefix trie still works)."""

    def __init__(self, why: str):
        self.label = f"approximate: {APPROX_CHARS} characters per token ({why})"
        self.exact = False
        self._ids: dict[str, int] = {}

    def encode(self, chat: Chat) -> list[int]:
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in chat)
        pieces = (text[i : i + APPROX_CHARS] for i in range(0, len(text), APPROX_CHARS))
        return [self._ids.setdefault(p, len(self._ids)) for p in pieces]


def _hf_tokenizer(spec: str):
    """A transformers tokenizer from local files only: the embedded model, a GGUF file, a folder,
    or a hub id already in the local cache."""
    from autointerp.config import EMBEDDED_MODEL, SubjectConfig
    from autointerp.subject import load_tokenizer

    if spec == EMBEDDED_MODEL or spec.endswith(".gguf") or Path(spec).exists():
        return load_tokenizer(SubjectConfig(model=spec))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec, local_files_only=True)


def _llamacpp_tokens(model: str) -> ChatTokens:
    import importlib.util

    from autointerp.clients.llamacpp import gguf_path

    path = gguf_path(model, assemble=False)
    if importlib.util.find_spec("llama_cpp") is not None:
        return LlamaCppTokens(path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    label = f"transformers' reading of {path.name} (llama-cpp-python is not installed; llama.cpp may count a few tokens otherwise)"
    return HFTokens(tok, label, exact=False)


def chat_tokens(client: ClientConfig, spec: str | None = None) -> ChatTokens:
    """How the configured client's backend tokenizes a chat (`spec`: a transformers tokenizer to
    use instead); the approximation, with the reason, where nothing can be loaded here."""
    try:
        if spec:
            return HFTokens(_hf_tokenizer(spec), f"{spec}'s tokenizer and chat template")
        if client.backend == "llamacpp":
            return _llamacpp_tokens(client.model)
        label = f"{client.model}'s tokenizer and chat template"
        return HFTokens(_hf_tokenizer(client.model), label)
    except Exception as e:  # noqa: BLE001 - any failure to load a tokenizer means: approximate
        name = spec or client.model
        why = f"no tokenizer of {name!r} could be loaded here: {str(e).splitlines()[0][:200]}"
        log.warning("plan: %s; counting %d characters as a token", why, APPROX_CHARS)
        return ApproxTokens(why)


# --- the recording client ----------------------------------------------------------------------


@dataclass
class Call:
    """One chat the pilot would send: its stage, latent, prompt tokens, answer budget and
    generation parameters; after `run_pilot`, the tokens it shares with an earlier prompt and
    whether autointerp's response cache would answer it (an identical earlier chat)."""

    stage: str
    latent: tuple[str, int]
    ids: list[int]
    max_tokens: int
    params: str
    holds_explanation: bool = False
    """The chat holds the latent's explanation (a scorer's, or the judge check's control)."""
    client: str = ""
    """The client it goes to (`backend:model`): prefixes are shared within one model's server."""
    shared: int = 0
    reused: bool = False


def _backend_stub(backend: str) -> object:
    """A bare instance of the backend's client class (no model loaded): `is_local`, which decides
    prefills and one-example judge prompts, reads the class of a client's `inner`."""
    if backend == "transformers":
        from autointerp.clients.local import TransformersClient

        return TransformersClient.__new__(TransformersClient)
    if backend == "llamacpp":
        from autointerp.clients.llamacpp import LlamaCppClient

        return LlamaCppClient.__new__(LlamaCppClient)
    return object()


class Recorder:
    """An LLM client that records each chat instead of sending it and answers with an empty text
    (which every stage records as a failed answer: nothing downstream needs more)."""

    def __init__(self, client: ClientConfig, tokens: ChatTokens, calls: list[Call]):
        """`calls`: the list each recorded chat is appended to (shared by the explainer's and
        the judge's recorders, in the order of the run)."""
        self.model, self.inner, self.tokens = client.model, _backend_stub(client.backend), tokens
        self.key = _client_label(client)
        self.stage, self.latent = "", ("", -1)
        self.explanation: str | None = None
        """The explanation the current latent is scored with (None: explain)."""
        self.calls = calls

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        out = []
        for chat in chats:
            ids = self.tokens.encode(chat)
            text = self.explanation
            holds = bool(text) and any(text in m["content"] for m in chat)  # type: ignore[operator]
            self.calls.append(
                Call(
                    self.stage,
                    self.latent,
                    ids,
                    params.max_tokens,
                    params.model_dump_json(),
                    holds,
                    self.key,
                )
            )
            out.append(Completion(text="", prompt_tokens=len(ids)))
        return out


# --- pilot latents -----------------------------------------------------------------------------


@dataclass
class PilotLatent:
    """A latent of the pilot: its record, explanation, the explainer's input and a scorer context
    that renders it."""

    record: SampledLatent
    explanation: Explanation
    explain_input: tuple[list[Example], list[Example]]
    ctx: ScoreContext

    @property
    def key(self) -> tuple[str, int]:
        return self.record.id.coder, self.record.id.latent


@dataclass
class Pilot:
    latents: list[PilotLatent]
    source: str
    sampled_share: float = 1.0
    """The share of selected latents the sample kept (skipped ones cost no LLM call)."""
    notes: list[str] = field(default_factory=list)


def _placeholder(key: tuple[str, int], i: int, texts: Sequence[str]) -> Explanation:
    return Explanation(
        latent=LatentId(coder=key[0], latent=key[1]),
        text=texts[i % len(texts)],
        raw="",
        model="plan",
        prompt="plan",
    )


class SyntheticContext(ScoreContext):
    """A ScoreContext without a cache whose `item` serves the examples a synthetic pilot made up:
    (coder, latent) -> (train, test, negatives)."""

    def __init__(self, cfg, example_len: int, recorder: Recorder, examples: dict):
        super().__init__(None, cfg, example_len, lambda: recorder)
        self.examples = examples

    def item(self, record: SampledLatent, explanation: Explanation, train: bool = False):
        shown, test, negatives = self.examples[record.id.coder, record.id.latent]
        return LatentItem(record, explanation, test, negatives, shown if train else [])


def _windows(cfg, n: int) -> list[list[str]]:
    """`n` token windows of `example_len` (as the LLMs are shown them) of the configured corpus
    (the bundled Wikipedia when it is not local), cut by the subject's tokenizer; by words where
    that tokenizer cannot be loaded here."""
    from autointerp.config import CorpusConfig

    length = cfg.sample.example_len
    source = cfg.corpus if not cfg.corpus.source.startswith("hf:") else CorpusConfig()
    corpus = source.model_copy(update={"ctx_len": length, "n_tokens": length * n, "bos": "never"})
    try:
        from autointerp.corpus import iter_windows
        from autointerp.sample import TokenDecoder
        from autointerp.subject import load_tokenizer

        tok = load_tokenizer(cfg.subject)
        decode = TokenDecoder(tok)
        out = [decode.window(w, 0, length) for w in iter_windows(corpus, tok)]
    except Exception as e:  # noqa: BLE001 - a subject that cannot load here: words instead
        log.warning("plan: synthetic examples cut by words (%s)", str(e).splitlines()[0][:200])
        out = _word_windows(corpus, length, n)
    return [out[i % len(out)] for i in range(n)]


def _word_windows(corpus, length: int, n: int) -> list[list[str]]:
    from autointerp.corpus import iter_documents

    words: list[str] = []
    for doc in iter_documents(corpus):
        words += [" " + w for w in doc.split()]
        if len(words) >= length * n:
            break
    return [words[i : i + length] for i in range(0, len(words) - length + 1, length)][:n] or [
        [" word"] * length
    ]


def _synthetic_latent(cfg, coder: str, latent: int, windows: Iterable[list[str]]):
    """A made-up sampled latent: its record and its rendered train, test, negatives and contrastive
    negatives. Activating windows fire on one token (`context_before`), test ones spread over the
    quantiles; the negatives are random and similar ones in the configured numbers."""
    s = cfg.sample
    at = min(s.context_before, s.example_len - 1)
    it = iter(windows)

    def make(n: int, kind: str, firing: bool, quantile: Callable[[int], int | None]):
        refs, shown = [], []
        for i in range(n):
            tokens = next(it)
            q = quantile(i)
            value = float(1 + (q or 0)) if firing else 0.0
            acts = [(at, value)] if firing else []
            refs.append(ExampleRef(seq=latent, start=i, quantile=q, kind=kind, acts=acts))  # type: ignore[arg-type]
            dense = [value if firing and j == at else 0.0 for j in range(len(tokens))]
            shown.append(
                Example(
                    tokens=tokens, activations=dense, seq=latent, start=i, quantile=q, kind=kind
                )
            )
        return refs, shown

    q = s.n_quantiles
    train = make(s.n_train, "activating", True, lambda i: i % q)
    test = make(s.n_test, "activating", True, lambda i: i % q)
    random_neg = make(s.n_random_negatives, "random", False, lambda i: None)
    similar = make(s.n_similar_negatives, "similar", False, lambda i: None)
    explain_neg = make(s.n_explain_negatives, "similar", False, lambda i: None)
    record = SampledLatent(
        id=LatentId(coder=coder, latent=latent),
        status="ok",
        density=0.001,
        max_activation=float(q),
        n_activating_windows=s.n_train + s.n_test,
        train=train[0],
        test=test[0],
        negatives=random_neg[0] + similar[0],
        explain_negatives=explain_neg[0],
    )
    return record, (train[1], test[1], random_neg[1] + similar[1], explain_neg[1])


def synthetic_pilot(
    cfg, coders: list[str], k: int, recorder: Recorder, texts: Sequence[str]
) -> Pilot:
    s = cfg.sample
    per = (
        s.n_train + s.n_test + s.n_random_negatives + s.n_similar_negatives + s.n_explain_negatives
    )
    windows = iter(_windows(cfg, per * k))
    examples: dict = {}
    made = []
    for i in range(k):
        key = (coders[i % len(coders)], i)
        record, (train, test, negatives, explain_neg) = _synthetic_latent(cfg, *key, windows)
        examples[key] = (train, test, negatives)
        made.append((record, train, explain_neg))
    ctx = SyntheticContext(cfg.score_stage(), s.example_len, recorder, examples)
    contrastive = cfg.explain.explainer == "contrastive"
    latents = [
        PilotLatent(
            r, _placeholder((r.id.coder, r.id.latent), i, texts), (t, n if contrastive else []), ctx
        )
        for i, (r, t, n) in enumerate(made)
    ]
    source = (
        f"{k} synthetic latents ({s.n_train} train, {s.n_test} test, "
        f"{s.n_random_negatives} + {s.n_similar_negatives} non-activating windows of "
        f"{s.example_len} tokens)"
    )
    return Pilot(latents, source)


def _folder_sample_matches(out: Path, cfg) -> str | None:
    """Why the run folder cannot give the pilot (None when it can)."""
    if not (out / "cache" / "cache.json").exists():
        return f"{out} holds no cache"
    saved = out / "sample" / "sample_config.json"
    if not saved.exists():
        return f"{out} holds no sample"
    if json.loads(saved.read_text()) != cfg.sample.model_dump(mode="json"):
        return f"{out}'s sample was made with other sample options"
    return None


def folder_pilot(
    cfg,
    out: Path,
    k: int,
    recorder: Recorder,
    texts: Sequence[str],
    selection: Mapping[str, Sequence[int]] | None = None,
) -> Pilot:
    """The first `k` sampled latents in `out` (coder by coder; of `selection`, coder -> latents,
    when given: a run's own), rendered as the run renders them, with the folder's explanations
    where it has them."""
    from autointerp.cache import ActivationCache
    from autointerp.explain import Explainer
    from autointerp.jsonl import LineIndex, SampleHead, latest
    from autointerp.score.judge_check import load_from

    cache = ActivationCache(out / "cache")
    ctx = ScoreContext(cache, cfg.score_stage(), cfg.sample.example_len, lambda: recorder)
    explainer = Explainer(cache, cfg.explain, recorder, ctx.decode, cfg.sample.example_len)
    load = load_from(out / "sample", out / "explanations")
    chosen: list[PilotLatent] = []
    sampled = kept = 0
    coders = list(selection) if selection is not None else config_coders(cfg)
    for coder in [c for c in coders if c in cache.coders]:
        path = out / "sample" / f"{coder}.jsonl"
        heads = latest(path, SampleHead, _sample_latent, _sample_ok)
        wanted = sorted(heads) if selection is None else selection[coder]
        ids = [i for i in wanted if i in heads]
        ok = [i for i in ids if heads[i][1]]
        sampled, kept = sampled + len(ids), kept + len(ok)
        take = ok[: k - len(chosen)]
        if not take:
            continue
        records = LineIndex(path, {i: heads[i][0] for i in take}).read(take, SampledLatent)
        _, explanations = load(coder, set(take))
        for i in take:
            e = explanations.get(i) or _placeholder((coder, i), len(chosen), texts)
            chosen.append(PilotLatent(records[i], e, explainer.examples(records[i]), ctx))
    if not chosen:
        raise ConfigError(f"{out} holds no sampled latent of the config's coders to plan from")
    source = f"{len(chosen)} sampled latents of {out}"
    notes = [f"sampling kept {kept} of the {sampled} latents sampled in {out}"]
    return Pilot(
        chosen, source, kept / sampled if sampled else 1.0, notes if kept < sampled else []
    )


def _sample_latent(h) -> int:
    return h.id.latent


def _sample_ok(h) -> bool:
    return h.status == "ok"


# --- measuring the pilot -----------------------------------------------------------------------


class StageWork(BaseModel):
    """One stage's LLM work: per latent it handles, and how many latents of the run it handles."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    """explain, a scorer's name, or `judge check: <scorer>`."""
    latents: float
    """Latents of the run the stage handles (expected; see the module docstring)."""
    calls: float
    prompt_tokens: float
    uncached_prompt_tokens: float
    generated_tokens: float
    generated: Literal["exact", "at most", "recorded"]
    """`exact`: one token per call read from logprobs; `at most`: the calls' max_tokens; `recorded`:
    the mean of a finished run (`--from`)."""
    once_uncached: float = 0.0
    """Uncached prompt tokens paid once per run (the prefixes every latent shares)."""
    reused_prompt_tokens: float = 0.0
    """Per latent, prompt tokens of chats autointerp's response cache answers (an identical chat
    was sent before, e.g. the calibrated judge check's uninformative prompts): the run records
    them (in `prompt_tokens`), but no LLM sees them."""
    reused_generated_tokens: float = 0.0
    """Per latent, generated tokens of those answers (in `generated_tokens`, as the run records
    them; no LLM generates them)."""
    pilot_latents: int = 0
    explanation_prompts: float = 0.0
    """Per latent, prompts that hold the latent's explanation (each of its tokens is in them)."""
    prompts: list[list[tuple[int, int]]] = []
    """Per pilot latent (all but the first): (prompt tokens, tokens shared with an earlier prompt)
    of each prompt, for the caching rules of API providers."""

    def total(self, key: str) -> float:
        value = self.latents * getattr(self, key)
        return value + (self.once_uncached if key == "uncached_prompt_tokens" else 0.0)

    def sent(self, key: str) -> float:
        """The total of `prompt_tokens` or `generated_tokens` an LLM sees or writes (less the
        response cache's answers)."""
        return self.total(key) - self.total(f"reused_{key}")


def _stage_work(stage: str, calls: list[Call], keys: list[tuple[str, int]]) -> StageWork:
    """A stage's per-latent work from its pilot calls (in order; `shared` and `reused` set);
    `keys`: the pilot latents in order. The first latent's excess uncached tokens count once per
    run. A reused chat (answered from the response cache) counts its prompt and generated tokens,
    as the run records them (and in `reused_*`), but no call and no uncached token."""
    rows = [r for r in ([c for c in calls if c.latent == k] for k in keys) if r]
    if not rows:
        return StageWork(
            stage=stage,
            latents=0,
            calls=0,
            prompt_tokens=0,
            uncached_prompt_tokens=0,
            generated_tokens=0,
            generated="exact",
        )

    def mean(f: Callable[[Call], float], part: list[list[Call]]) -> float:
        return sum(sum(f(c) for c in r) for r in part) / len(part)

    def uncached(c: Call) -> float:
        return 0 if c.reused else len(c.ids) - c.shared

    steady = rows[1:] or rows
    per_latent = mean(uncached, steady)
    first = sum(uncached(c) for c in rows[0])
    return StageWork(
        stage=stage,
        latents=0,
        calls=mean(lambda c: not c.reused, rows),
        prompt_tokens=mean(lambda c: len(c.ids), rows),
        reused_prompt_tokens=mean(lambda c: len(c.ids) if c.reused else 0, rows),
        uncached_prompt_tokens=per_latent,
        generated_tokens=mean(lambda c: c.max_tokens, rows),
        reused_generated_tokens=mean(lambda c: c.max_tokens if c.reused else 0, rows),
        generated="exact" if all(c.max_tokens == 1 for r in rows for c in r) else "at most",
        once_uncached=max(0.0, first - per_latent) if len(rows) > 1 else 0.0,
        pilot_latents=len(rows),
        explanation_prompts=mean(lambda c: c.holds_explanation, rows),
        prompts=[[(len(c.ids), c.shared) for c in r if not c.reused] for r in steady],
    )


def _llm_scorers(cfg) -> list[str]:
    from autointerp.score.names import LLM_SCORERS

    return [s for s in cfg.score.scorers if s in LLM_SCORERS]


def _checked_scorers(cfg) -> list[str]:
    from autointerp.score.judge_check import CHECKED

    return [s for s in _llm_scorers(cfg) if s in CHECKED] if cfg.score.judge_check.enabled else []


def run_pilot(cfg, pilot: Pilot, explainer: Recorder, judge: Recorder) -> list[StageWork]:
    """Every LLM stage of the config on the pilot's latents, one latent at a time (so that each
    recorded call belongs to one latent), in the order of a run, with the explainer's and the
    judge's recorders (the pilot's contexts hand out `judge`); per-stage work per latent."""
    from autointerp.aio import run_sync

    stages: list[str] = []
    if cfg.explain.explainer != "token-stats":
        stages.append("explain")
        _explain(cfg, pilot, explainer)
    scorers = _llm_scorers(cfg)
    stages += scorers
    for name in scorers:
        _score(name, pilot, judge, run_sync)
    for name in _checked_scorers(cfg):
        stages.append(f"{JUDGE}: {name}")
        _control(name, pilot, judge, run_sync)
    _share(judge.calls, cfg)
    keys = [p.key for p in pilot.latents]
    return [_stage_work(s, [c for c in judge.calls if c.stage == s], keys) for s in stages]


def _share(calls: list[Call], cfg) -> None:
    """Each call's tokens shared with an earlier prompt to the same model (a token trie per model
    over the prompts in order), and whether the response cache of its client (when on) holds an
    identical earlier chat."""
    tries: dict[str, PrefixTrie] = {}
    seen: set = set()
    judge = (cfg.score_client or cfg.client).response_cache
    for c in calls:
        c.shared = tries.setdefault(c.client, PrefixTrie()).insert(c.ids)
        key = (c.stage == "explain", c.client, tuple(c.ids), c.params)
        on = cfg.client.response_cache if c.stage == "explain" else judge
        c.reused = on and key in seen
        seen.add(key)


def _explain(cfg, pilot: Pilot, recorder: Recorder) -> None:
    from autointerp.aio import run_sync
    from autointerp.explain import Explainer

    explainer = Explainer(None, cfg.explain, recorder, None, cfg.sample.example_len)
    recorder.stage, recorder.explanation = "explain", None
    for p in pilot.latents:
        recorder.latent = p.key
        run_sync(explainer.explain_examples([p.record.id], [p.explain_input]))


def _scorer(name: str, p: PilotLatent, built: dict):
    from autointerp.score.stage import SCORERS

    if (id(p.ctx), name) not in built:
        built[id(p.ctx), name] = SCORERS[name](p.ctx, p.key[0])
    return built[id(p.ctx), name]


def _score(name: str, pilot: Pilot, recorder: Recorder, run_sync) -> None:
    """The scorer on each pilot latent as a run scores it (`score_latents`: the check that the
    latent can be scored, its rendering, the scorer's prompts)."""
    from autointerp.score.stage import score_latents

    built: dict = {}
    recorder.stage = name
    for p in pilot.latents:
        recorder.latent, recorder.explanation = p.key, p.explanation.text
        scorer = _scorer(name, p, built)
        i = p.key[1]
        run_sync(score_latents(p.ctx, {name: scorer}, [i], {i: p.record}, {i: p.explanation}))


def _control(name: str, pilot: Pilot, recorder: Recorder, run_sync) -> None:
    """The judge check's control scoring: each pilot latent scored with the next one's explanation
    (as `check_coder` does, with another latent's)."""
    built: dict = {}
    recorder.stage = f"{JUDGE}: {name}"
    texts = [p.explanation.text or "" for p in pilot.latents]
    for j, p in enumerate(pilot.latents):
        if not p.explanation.text:
            continue  # a latent whose explanation failed has no true score to check
        other = next(
            (t for t in texts[j + 1 :] + texts[:j] if t and t != p.explanation.text),
            PLACEHOLDER_EXPLANATIONS[j % len(PLACEHOLDER_EXPLANATIONS)],
        )
        recorder.latent, recorder.explanation = p.key, other
        item = p.ctx.item(p.record, p.explanation.model_copy(update={"text": other}))
        run_sync(_scorer(name, p, built).score([item]))


# --- recorded runs -----------------------------------------------------------------------------

_LATENT = re.compile(rb'"latent":\s*(\d+)')
_USAGE = re.compile(rb'"prompt_tokens":\s*(\d+),\s*"completion_tokens":\s*(\d+)')
_CALLS = re.compile(rb'"calls":\s*(\d+),\s*"prompt_tokens"')


def _usage_lines(path: Path) -> dict[int, tuple[int, int, int]]:
    """Latent -> (calls, prompt tokens, generated tokens) of its last line in a results file
    (explanations, scores, judge-check controls), read from the line's own keys near its end
    (a record's usage fields follow its predictions; a key inside a string has escaped quotes)."""
    out: dict[int, tuple[int, int, int]] = {}
    with open(path, "rb") as f:
        for line in f:
            m = _LATENT.search(line, 0, 400)
            tail = line[-400:]
            u = list(_USAGE.finditer(tail))
            if m is None or not u:
                continue
            c = list(_CALLS.finditer(tail))
            prompt, gen = int(u[-1].group(1)), int(u[-1].group(2))
            out[int(m.group(1))] = (int(c[-1].group(1)) if c else int(prompt > 0), prompt, gen)
    return out


def _stage_files(run: Path) -> dict[str, list[Path]]:
    from autointerp.score.names import LLM_SCORERS

    out: dict[str, list[Path]] = {"explain": sorted((run / "explanations").glob("*.jsonl"))}
    for name in sorted(LLM_SCORERS):
        out[name] = sorted((run / "scores" / name).glob("*.jsonl"))
        out[f"{JUDGE}: {name}"] = sorted((run / "judge_check" / name).glob("*.jsonl"))
    return {k: v for k, v in out.items() if v}


def recorded_usage(run: Path) -> dict[str, dict[str, float]]:
    """What a run folder recorded, per LLM stage: the latents that made LLM calls (or were
    answered from the response cache), and per such latent the mean calls, prompt tokens and
    generated tokens."""
    out = {}
    for stage, files in _stage_files(run).items():
        rows = [u for f in files for u in _usage_lines(f).values() if u[1] > 0]
        if rows:
            n = len(rows)
            out[stage] = {
                "latents": n,
                "calls": sum(r[0] for r in rows) / n,
                "prompt_tokens": sum(r[1] for r in rows) / n,
                "generated_tokens": sum(r[2] for r in rows) / n,
            }
    return out


def _recorded_texts(run: Path) -> list[str]:
    from autointerp.jsonl import ExplanationHead, scan

    texts = []
    for f in sorted((run / "explanations").glob("*.jsonl")):
        texts += [h.text for _, h in scan(f, ExplanationHead) if h.text]
        if len(texts) >= 64:
            break
    return texts


def _explained_share(run: Path) -> float | None:
    from autointerp.jsonl import ExplanationHead, scan

    heads = [
        h
        for f in sorted((run / "explanations").glob("*.jsonl"))
        for _, h in scan(f, ExplanationHead)
    ]
    return sum(h.text is not None for h in heads) / len(heads) if heads else None


# --- prices ------------------------------------------------------------------------------------


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiPrice(_Table):
    input: float = Field(ge=0)
    """Dollars per million prompt tokens."""
    output: float = Field(ge=0)
    """Dollars per million generated tokens."""
    cached_input: float | None = Field(None, ge=0)
    """Dollars per million prompt tokens served from the provider's prefix cache (None: no discount)."""
    cache_min_tokens: int = Field(0, ge=0)
    """Prompts shorter than this are never cached."""
    cache_block: int = Field(1, ge=1)
    """The cached prefix counts in whole blocks of this many tokens."""
    source: str


class GpuPrice(_Table):
    hourly: float = Field(gt=0)
    """Dollars per GPU-hour."""
    source: str


class Throughput(_Table):
    prefill: float = Field(gt=0)
    """Prompt tokens computed per second (those after the cached prefix), per server."""
    decode: float = Field(gt=0)
    """Tokens generated per second, per server."""
    gpus: int = Field(1, ge=1)
    """GPUs of one server (tensor parallelism)."""


class PriceTable(_Table):
    date: date
    """The day the prices were last checked against their sources."""
    currency: str = "USD"
    apis: dict[str, ApiPrice] = {}
    gpus: dict[str, GpuPrice] = {}
    throughput: dict[str, dict[str, Throughput]] = {}
    """Model size -> GPU -> vLLM's throughput."""
    throughput_source: str


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table (`autointerp/data/prices.yaml` by default); a malformed one fails with an
    error naming the file and each bad key."""
    return load_yaml(path or PRICES, PriceTable)


class GpuCost(BaseModel):
    size: str
    gpu: str
    prefill: float
    decode: float
    gpus: int
    gpu_hours: float
    usd: float | None
    hourly: float | None


class ApiCost(BaseModel):
    name: str
    usd: float
    input_usd: float
    cached_usd: float
    output_usd: float


def _cached(rule: ApiPrice, prompts: list[list[tuple[int, int]]]) -> float:
    """Per latent: prompt tokens the provider's cache serves under its rule (minimum length, blocks)."""
    if rule.cached_input is None or not prompts:
        return 0.0
    per = [
        sum(
            0 if n < rule.cache_min_tokens else (s // rule.cache_block) * rule.cache_block
            for n, s in r
        )
        for r in prompts
    ]
    return sum(per) / len(per)


def api_cost(name: str, rule: ApiPrice, stages: Sequence[StageWork]) -> ApiCost:
    """Dollars at an API: the prompt tokens sent (less those the response cache answers) at the
    input price, but those the provider's cache serves at the cached-input price; generated
    tokens at the output price."""
    cached = sum(s.latents * _cached(rule, s.prompts) for s in stages)
    prompt = sum(s.sent("prompt_tokens") for s in stages)
    gen = sum(s.sent("generated_tokens") for s in stages)
    input_usd = (prompt - cached) * rule.input / 1e6
    cached_usd = cached * (rule.cached_input or 0.0) / 1e6
    output_usd = gen * rule.output / 1e6
    return ApiCost(
        name=name,
        usd=input_usd + cached_usd + output_usd,
        input_usd=input_usd,
        cached_usd=cached_usd,
        output_usd=output_usd,
    )


def throughput_rows(
    table: PriceTable, size: str | None = None, gpu: str | None = None
) -> list[tuple[str, str, Throughput]]:
    """The table's (model size, GPU, throughput) rows, those of `size` and `gpu` when given; an
    error listing the rows when none matches."""
    rows = [(s, g, t) for s, by in table.throughput.items() for g, t in by.items()]
    chosen = [(s, g, t) for s, g, t in rows if size in (None, s) and gpu in (None, g)]
    if (size or gpu) and not chosen:
        known = ", ".join(f"{s} on {g}" for s, g, _ in rows) or "none"
        raise ConfigError(
            f"the price table has no throughput for {size or 'any size'} on "
            f"{gpu or 'any GPU'} (it has: {known})"
        )
    return chosen


def gpu_costs(
    table: PriceTable, stages: Sequence[StageWork], size: str | None, gpu: str | None
) -> list[GpuCost]:
    """GPU-hours (and dollars where the table prices the GPU) of each throughput row."""
    chosen = throughput_rows(table, size, gpu)
    uncached = sum(s.total("uncached_prompt_tokens") for s in stages)
    gen = sum(s.sent("generated_tokens") for s in stages)
    out = []
    for s, g, t in chosen:
        hours = (uncached / t.prefill + gen / t.decode) / 3600 * t.gpus
        price = table.gpus.get(g)
        out.append(
            GpuCost(
                size=s,
                gpu=g,
                prefill=t.prefill,
                decode=t.decode,
                gpus=t.gpus,
                gpu_hours=hours,
                usd=hours * price.hourly if price else None,
                hourly=price.hourly if price else None,
            )
        )
    return out


# --- the plan ----------------------------------------------------------------------------------


class Plan(BaseModel):
    """What `autointerp plan` prints and RUN/plan.json holds."""

    latents: int
    """Latents of each coder planned for."""
    coders: list[str]
    explainer: str
    judge: str
    pilot: str
    tokenizer: str
    exact_tokens: bool
    stages: list[StageWork]
    gpu: list[GpuCost]
    api: list[ApiCost]
    prices: str
    prices_date: str
    throughput_source: str
    notes: list[str] = []
    config_hash: str = ""

    def total(self, key: str) -> float:
        return sum(s.total(key) for s in self.stages)


def config_hash(cfg) -> str:
    """A hash of the options that shape the LLM work (sample, explain, score, clients, coders)."""
    keys = {"sample", "explain", "score", "client", "score_client", "coders"}
    blob = json.dumps(cfg.resolved().model_dump(mode="json", include=keys), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_coders(cfg) -> list[str]:
    """The coders a run of the config explains (its `hookpoints` and `only_coders` applied)."""
    names = [(c.name or c.hookpoint, c.hookpoint) for c in cfg.coders]
    names = [(n, h) for n, h in names if not cfg.hookpoints or h in cfg.hookpoints]
    return [n for n, _ in names if not cfg.only_coders or n in cfg.only_coders]


def _selection(cfg) -> int:
    if cfg.latents:
        from autointerp.sample import parse_latents

        return len(parse_latents(cfg.latents, 1 << 62))
    if cfg.max_latents is None:
        raise ConfigError(
            "the config selects every latent (max_latents: null): say how many with --latents"
        )
    return cfg.max_latents


def _client_label(c: ClientConfig) -> str:
    return f"{c.backend}:{c.model}"


def _scale(
    cfg, stages: list[StageWork], per_coder: int, n_coders: int, sampled: float, explained: float
) -> None:
    """Each stage's latents (see the module docstring), in place."""
    from autointerp.score.judge_check import MIN_PAIRS
    from autointerp.score.names import EXPLANATION_FREE

    n = per_coder * n_coders * sampled
    jc = cfg.score.judge_check
    for s in stages:
        if s.stage == "explain" or s.stage in EXPLANATION_FREE:
            s.latents = n
        elif s.stage.startswith(JUDGE):
            m = per_coder * sampled * explained
            checked = min(m, max(jc.min_latents, math.ceil(jc.fraction * m)))
            s.latents = checked * n_coders if checked >= MIN_PAIRS else 0.0
        else:
            s.latents = n * explained


def _apply_recorded(stages: list[StageWork], recorded: dict[str, dict[str, float]]) -> list[str]:
    notes = []
    for s in stages:
        r = recorded.get(s.stage)
        if r and s.generated != "exact":
            s.generated_tokens, s.generated = r["generated_tokens"], "recorded"
        elif s.generated == "at most" and not r:
            notes.append(
                f"{s.stage}: the recorded run has no {s.stage} calls; generated tokens stay the max_tokens bound"
            )
    return notes


def _check_explainer(explain) -> None:
    """The planner renders the default, contrastive and token-stats explainers' prompts; it does
    not yet model best-of-k (k candidates and their pilot) or the output-side explainers (whose
    prompts need the subject model's effects): refused by name rather than predicted wrong."""
    if explain.best_of > 1:
        raise ConfigError(
            f"autointerp plan does not yet predict best-of-k (explain.best_of = {explain.best_of}):"
            " plan with best_of: 1 and multiply the explain stage's tokens by about 10 for"
            " best_of: 4 (results/explainers.md measured ~9,900 tokens per latent against ~1,030)"
        )
    if explain.explainer in ("logits", "mixed", "intervention"):
        raise ConfigError(
            f"autointerp plan does not yet predict the {explain.explainer!r} explainer's prompts"
            " (they need the subject model's effects); plan with the default explainer"
        )


def make_plan(
    cfg,
    latents: int | None = None,
    out: str | Path | None = None,
    recorded: str | Path | None = None,
    pilot: int = 4,
    prices: str | Path | None = None,
    tokenizer: str | None = None,
    model_size: str | None = None,
    gpu: str | None = None,
    selection: Mapping[str, Sequence[int]] | None = None,
) -> Plan:
    """The plan of a run of `cfg` (a RunConfig: `autointerp.api.run_config(path or dict)`; the
    embedded default with None) with `latents` latents of each coder (None: the config's
    selection). `out`: the config's run folder (its sampled latents, of `selection` when given,
    make the pilot when they can); `recorded`: a finished run folder
    whose recorded generated tokens per latent replace the max_tokens bounds; `pilot`: latents
    whose prompts are rendered and counted (at least 2); `prices`: the price table; `tokenizer`: a
    transformers tokenizer spec to count with; `model_size`, `gpu`: the throughput rows to cost."""
    _check_explainer(cfg.explain)
    adaptive, asked = cfg.score.adaptive.enabled, cfg
    if adaptive:  # the pilot's stand-in answers cannot say where a latent would stop
        score = cfg.score.model_copy(
            update={"adaptive": cfg.score.adaptive.model_copy(update={"enabled": False})}
        )
        cfg = cfg.model_copy(update={"score": score})
    table = load_prices(prices)
    per_coder = latents if latents is not None else _selection(cfg)
    rec_dir = Path(recorded) if recorded is not None else None
    _check_options(pilot, per_coder, rec_dir)
    throughput_rows(table, model_size, gpu)  # a size or GPU the table lacks fails before the pilot
    texts = (_recorded_texts(rec_dir) if rec_dir else []) or list(PLACEHOLDER_EXPLANATIONS)
    folder = Path(out) if out else None
    stages, pilot_run, tokens = _measure(cfg, folder, pilot, texts, tokenizer, selection)
    coders = config_coders(cfg)
    explained = (_explained_share(rec_dir) if rec_dir else None) or 1.0
    _scale(cfg, stages, per_coder, len(coders), pilot_run.sampled_share, explained)
    notes = list(pilot_run.notes)
    if rec_dir:
        notes += _apply_recorded(stages, recorded_usage(rec_dir))
        notes.append(
            f"generated tokens and the share of latents explained ({explained:.0%}) recorded in {rec_dir}"
        )
    if not tokens.exact:
        notes.append(f"token counts are {tokens.label}")
    notes += _explanation_notes(stages, pilot_run, tokens, texts, rec_dir)
    if adaptive:
        notes.append(
            "adaptive scoring is on: detection and fuzzing are planned on every example (an upper "
            "bound; where a latent stops depends on the judge's answers, see results/adaptive.md)"
        )
    explains = cfg.explain.explainer != "token-stats"
    return Plan(
        latents=per_coder,
        coders=coders,
        explainer=_client_label(cfg.client) if explains else "token-stats (no LLM)",
        judge=_client_label(cfg.score_client or cfg.client)
        if _llm_scorers(cfg)
        else "none (no LLM scorer)",
        pilot=pilot_run.source,
        tokenizer=tokens.label,
        exact_tokens=tokens.exact,
        stages=stages,
        gpu=gpu_costs(table, stages, model_size, gpu),
        api=[api_cost(name, rule, stages) for name, rule in table.apis.items()],
        prices=str(prices) if prices else "autointerp/data/prices.yaml",
        prices_date=table.date.isoformat(),
        throughput_source=table.throughput_source,
        notes=notes,
        config_hash=config_hash(asked),
    )


def _check_options(pilot: int, latents: int, recorded: Path | None) -> None:
    if pilot < 2:
        raise ConfigError(
            f"--pilot must be at least 2 (one latent cannot tell per-latent from per-run work), "
            f"not {pilot}"
        )
    if latents < 1:
        raise ConfigError(f"--latents must be at least 1, not {latents}")
    if recorded is not None and not (recorded / "explanations").is_dir():
        raise ConfigError(f"--from {recorded}: not a run folder (no explanations/ in it)")


def _explanation_notes(
    stages: list[StageWork],
    pilot: Pilot,
    tokens: ChatTokens,
    texts: Sequence[str],
    rec_dir: Path | None,
) -> list[str]:
    """Where the scorers' prompts hold stand-in explanations: what they are, and how much longer
    the prompts get if the real ones fill the explainer's answer budget (an explanation is part of
    the explainer's answer, so that is an upper bound)."""
    stand_ins = [p.explanation.text or "" for p in pilot.latents if p.explanation.model == "plan"]
    scoring = [s for s in stages if s.explanation_prompts > 0]
    if not stand_ins or not scoring:
        return []
    made = "placeholder sentences" if rec_dir is None else f"explanations of {rec_dir}"
    empty = len(tokens.encode([{"role": "user", "content": ""}]))
    lengths = [len(tokens.encode([{"role": "user", "content": t}])) - empty for t in stand_ins]
    size = sum(lengths) / len(lengths)
    out = [
        f"{len(stand_ins)} of {len(pilot.latents)} pilot latents have no explanation yet: the "
        f"scorers' prompts hold {made} of {size:.0f} tokens on average"
    ]
    explain = next((s for s in stages if s.stage == "explain"), None)
    if explain is not None and explain.generated == "at most" and explain.generated_tokens > size:
        more = explain.generated_tokens - size
        out += [
            f"{s.stage}: explanations as long as the explainer's budget ({explain.generated_tokens:.0f} "
            f"tokens) would add up to {more * s.explanation_prompts:,.0f} prompt tokens per latent "
            f"(+{more * s.explanation_prompts / s.prompt_tokens:.0%})"
            for s in scoring
        ]
    return out


def _measure(cfg, out: Path | None, k: int, texts: Sequence[str], spec: str | None, selection):
    """The pilot's per-latent work of every LLM stage (none when the config calls no LLM), and
    the pilot and tokenizers it was counted with."""
    explains, judges = cfg.explain.explainer != "token-stats", bool(_llm_scorers(cfg))
    if not explains and not judges:
        return [], Pilot([], "none: the config calls no LLM"), ApproxTokens("nothing to count")
    judge_cfg = cfg.score_client or cfg.client
    same = judge_cfg.backend == cfg.client.backend and judge_cfg.model == cfg.client.model
    first = chat_tokens(cfg.client if explains else judge_cfg, spec)
    second = first if same or not (explains and judges) else chat_tokens(judge_cfg, spec)
    calls: list[Call] = []
    explainer = Recorder(cfg.client, first, calls)
    judge = Recorder(judge_cfg, second, calls)
    why = _folder_sample_matches(out, cfg) if out is not None else "no run folder given"
    if why is None:
        pilot = folder_pilot(cfg, out, k, judge, texts, selection)  # type: ignore[arg-type]
    else:
        pilot = synthetic_pilot(cfg, config_coders(cfg), k, judge, texts)
        if out is not None:
            pilot.notes.append(f"synthetic pilot: {why}")
    return run_pilot(cfg, pilot, explainer, judge), pilot, _both(first, second)


def _both(a: ChatTokens, b: ChatTokens) -> ChatTokens:
    """One description of the explainer's and the judge's tokenizers."""
    if a is b:
        return a
    both = ApproxTokens("")
    both.label = f"explainer: {a.label}; judge: {b.label}"
    both.exact = a.exact and b.exact
    return both


# --- run folders -------------------------------------------------------------------------------


def save_plan(plan: Plan, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / PLAN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(plan.model_dump_json(indent=2) + "\n")
    tmp.replace(path)
    return path


def read_plan(out: Path) -> Plan | None:
    path = out / PLAN_FILE
    if not path.exists():
        return None
    try:
        return Plan.model_validate_json(path.read_text())
    except ValueError as e:
        log.warning("ignoring %s: %s", path, str(e).splitlines()[0])
        return None


def plan_for_run(cfg, out: Path, selection: Mapping[str, Sequence[int]]) -> Plan | None:
    """RUN/plan.json before a run's first LLM call, from its own sample of its `selection` (coder
    -> latents; no LLM is called); kept when one made with the same LLM options is there. None
    when the config calls no LLM."""
    if cfg.explain.explainer == "token-stats" and not _llm_scorers(cfg):
        return None
    old = read_plan(out)
    if old is not None and old.config_hash == config_hash(cfg):
        return old
    per_coder = max((len(v) for v in selection.values()), default=1)
    plan = make_plan(cfg, max(1, per_coder), out=out, selection=selection)
    save_plan(plan, out)
    return plan


def _change(predicted: float, actual: float) -> float | None:
    return (actual - predicted) / predicted if predicted else None


def compare_with_run(out: Path) -> dict | None:
    """RUN/plan.json against the tokens the run recorded: per stage, the predicted and actual
    prompt and generated tokens per latent (over the latents that made LLM calls) and the
    change ((actual - predicted) / predicted); `all`: per explained latent, every stage's work
    weighted by the latents it handled. None without a plan or recorded LLM work."""
    plan = read_plan(out)
    if plan is None:
        return None
    actual = recorded_usage(out)
    rows: list[dict] = []
    for s in plan.stages:
        a = actual.get(s.stage)
        if a is None:
            continue
        rows.append(
            {
                "stage": s.stage,
                "latents": a["latents"],
                "predicted_prompt_tokens": s.prompt_tokens,
                "actual_prompt_tokens": a["prompt_tokens"],
                "prompt_change": _change(s.prompt_tokens, a["prompt_tokens"]),
                "predicted_generated_tokens": s.generated_tokens,
                "generated": s.generated,
                "actual_generated_tokens": a["generated_tokens"],
                "generated_change": _change(s.generated_tokens, a["generated_tokens"]),
                "predicted_calls": s.calls,
                "actual_calls": a["calls"],
            }
        )
    if not rows:
        return None
    base = next((r["latents"] for r in rows if r["stage"] == "explain"), rows[0]["latents"])
    pred = sum(r["predicted_prompt_tokens"] * r["latents"] for r in rows) / base
    act = sum(r["actual_prompt_tokens"] * r["latents"] for r in rows) / base
    return {
        "stages": rows,
        "all": {
            "predicted_prompt_tokens": pred,
            "actual_prompt_tokens": act,
            "prompt_change": _change(pred, act),
        },
        "tokenizer": plan.tokenizer,
        "pilot": plan.pilot,
    }


def _k(x: float) -> str:
    """A token count in short form: 950, 12.3k, 4.56M, 1.20B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}" if x / div < 100 else f"{x / div:.0f}{unit}"
    return f"{x:.0f}" if x >= 10 or x == int(x) else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.0%}"


def describe_comparison(c: dict) -> list[str]:
    """Lines such as "plan: detection: predicted 12.3k prompt tokens per latent, actual 11.9k (-3%)"."""
    out = []
    for r in c["stages"]:
        bound = "<=" if r["generated"] == "at most" else ""
        out.append(
            f"plan: {r['stage']}: predicted {_k(r['predicted_prompt_tokens'])} prompt tokens per "
            f"latent, actual {_k(r['actual_prompt_tokens'])} ({_pct(r['prompt_change'])}); generated "
            f"{bound}{_k(r['predicted_generated_tokens'])}, actual {_k(r['actual_generated_tokens'])} "
            f"({r['latents']} latents)"
        )
    a = c["all"]
    out.append(
        f"plan: all stages: predicted {_k(a['predicted_prompt_tokens'])} prompt tokens per explained "
        f"latent, actual {_k(a['actual_prompt_tokens'])} ({_pct(a['prompt_change'])})"
    )
    return out


# --- printing ----------------------------------------------------------------------------------


def _gen(s: StageWork, x: float) -> str:
    return ("<=" if s.generated == "at most" else "") + _k(x)


def render(plan: Plan) -> str:
    """The plan as the terminal shows it: a table of stages, then GPU and API costs, then notes."""
    lines = [
        f"plan for {plan.latents:,} latents of each of {len(plan.coders)} coder(s) ({', '.join(plan.coders)}); "
        f"explainer {plan.explainer}, judge {plan.judge}",
        f"pilot: {plan.pilot}; tokens: {plan.tokenizer}",
        "",
    ]
    head = (
        "stage",
        "latents",
        "calls",
        "prompt",
        "uncached",
        "generated",
        "prompt",
        "uncached",
        "generated",
    )
    rows = [head, ("", "", "per latent", "", "", "", "total", "", "")]
    for s in plan.stages:
        rows.append(
            (
                s.stage,
                f"{s.latents:,.0f}",
                f"{s.calls:.1f}",
                _k(s.prompt_tokens),
                _k(s.uncached_prompt_tokens),
                _gen(s, s.generated_tokens),
                _k(s.total("prompt_tokens")),
                _k(s.total("uncached_prompt_tokens")),
                _gen(s, s.total("generated_tokens")),
            )
        )
    bound = any(s.generated == "at most" for s in plan.stages)
    rows.append(
        (
            "total",
            "",
            "",
            "",
            "",
            "",
            _k(plan.total("prompt_tokens")),
            _k(plan.total("uncached_prompt_tokens")),
            ("<=" if bound else "") + _k(plan.total("generated_tokens")),
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    lines += ["", "GPU time on vLLM, prefix caching on (throughput ASSUMED: see the last note):"]
    for g in plan.gpu:
        usd = f", {_usd(g.usd)} at ${g.hourly:.2f} per GPU-hour" if g.usd is not None else ""
        lines.append(
            f"  {g.size} model on {g.gpus} x {g.gpu} (prefill {g.prefill:,.0f}, decode "
            f"{g.decode:,.0f} tokens/s): {_num(g.gpu_hours)} GPU-hours{usd}"
        )
    lines += ["", f"API prices ({plan.prices}, checked {plan.prices_date}):"]
    for a in plan.api:
        lines.append(
            f"  {a.name}: {_usd(a.usd)} (input {_usd(a.input_usd)}, cached input "
            f"{_usd(a.cached_usd)}, output {_usd(a.output_usd)})"
        )
    if bound:
        lines += [
            "",
            "<=: generated tokens are the max_tokens bound (--from RUN uses a finished run's)",
        ]
    lines += [f"note: {n}" for n in plan.notes]
    lines.append(f"note: vLLM throughput from {plan.prices}: {plan.throughput_source}")
    return "\n".join(lines)


def _num(x: float) -> str:
    """A count with 2 decimals, or 3 significant digits below 1 (0.000412)."""
    return f"{x:,.2f}" if x >= 1 or x == 0 else f"{x:.3g}"


def _usd(x: float) -> str:
    return f"${_num(x)}"
