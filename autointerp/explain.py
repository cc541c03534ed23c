"""Explainers: sampled latents -> one natural-language explanation per latent.

Usage: `autointerp explain RUN/cache --sample RUN/sample --out RUN/explanations`.

- `default`: the train examples with activating tokens marked `<<like this>>`; options add the
  activation strengths (0-10) and a chain-of-thought instruction. The answer's last
  `[EXPLANATION]:` line is the explanation.
- `contrastive`: the same, plus similar windows where the latent does not fire.
- `token-stats`: no LLM; the latent's most frequent activating tokens and the tokens before them, as
  the floor every LLM explainer must beat.
- `logits`: what the latent does, not what it reads: the tokens its decoder direction promotes and
  suppresses most through the final norm and unembedding (`autointerp.effects`).
- `mixed`: the `default` prompt plus those promoted and suppressed tokens.
- `intervention`: clean and steered continuations of a few cached prompts, steered as the
  intervention scorer steers, on prompts the scorer does not use (the paper's intervention explainer).

An answer without an explanation line is a failed explanation (text None, raw answer kept), never a
placeholder string that later stages would score. Explanations are appended per latent as they finish;
a re-run skips the latents already explained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from autointerp.aio import run_sync
from autointerp.cache import ActivationCache
from autointerp.clients.base import Chat, GenParams, LLMClient, Usage
from autointerp.config import ClientConfig, _Strict
from autointerp.effects import LatentEffects
from autointerp.errors import AutointerpError, ConfigError
from autointerp.jsonl import (
    ExplanationHead,
    LineIndex,
    cut_torn_line,
    ok_sample_lines,
    read_jsonl,
    scan,
)
from autointerp.sample import TokenDecoder, render
from autointerp.types import Example, Explanation, LatentId, SampledLatent

if TYPE_CHECKING:
    from autointerp.effects import Effects
    from autointerp.score.intervention import InterventionConfig
    from autointerp.score.stage import ScoreContext

log = logging.getLogger(__name__)


def _prompts_dir() -> Path:
    """The prompt templates: `autointerp/prompts` in an installed wheel, `prompts/` at the top of a
    source checkout (an editable install)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "prompts", here.parent / "prompts"):
        if (folder / "explain").is_dir():
            return folder
    return here / "prompts"


PROMPTS = _prompts_dir()
_LINE = re.compile(r"\[EXPLANATION\]\s*:\s*(.*)", re.IGNORECASE)


OUTPUT_EXPLAINERS = {"logits", "mixed", "intervention"}
"""Explainers that show what the latent does to the output (they need the subject model and coder)."""


class ExplainConfig(_Strict):
    explainer: Literal[
        "default", "contrastive", "token-stats", "logits", "mixed", "intervention"
    ] = "default"
    """What the explainer is shown: activating examples (`default`), plus similar non-activating
    ones (`contrastive`), the tokens the latent promotes and suppresses (`logits`), both (`mixed`),
    clean versus steered continuations (`intervention`); `token-stats` calls no LLM."""
    activations: bool = False
    """Show each example's firing tokens with their strength (0-10)."""
    cot: bool = False
    """Ask for step-by-step reasoning before the explanation."""
    mark_threshold: float = Field(0.0, ge=0.0, lt=1.0)
    """Mark tokens whose activation exceeds this fraction of the example's maximum."""
    max_tokens: int = Field(256, ge=8)
    """Generation budget of an answer (more with cot)."""
    prefill: bool | None = None
    """Start the answer with `[EXPLANATION]:` so that the model writes only the explanation (small
    models rarely follow the format otherwise). None: on for the local `transformers` backend."""
    latents_per_call: int = Field(16, ge=1)
    """Latents whose prompts go to the client together (and are written together)."""
    top_logits: int = Field(10, ge=1, le=100)
    """`logits` and `mixed`: promoted and suppressed tokens shown, each."""
    steer_prompts: int = Field(8, ge=1)
    """`intervention`: prompts continued clean and steered (the paper shows 10), cache rows that the
    intervention scorer does not use; steered as `score.intervention` says (scale, lengths)."""

    # best-of-k (autointerp.best_of): k candidates, the one a held-out pilot ranks best is kept
    best_of: int = Field(1, ge=1)
    """Candidate explanations per latent; the kept one scores best on the pilot (1: one answer,
    no pilot, as without best-of). Costs k explanations and k pilot scorings per latent."""
    candidates: Literal["subsets", "temperature"] = "subsets"
    """How candidates differ. `subsets` (default): each sees its own random `subset` of the train
    examples left after the pilot (spread over their activation range), at temperature 0: the
    candidates differ on any backend, greedy or seeded, a re-run gives the same ones, and a
    candidate must generalise beyond the examples it saw. `temperature`: each sees every one of
    those examples (in an order of its own), sampled at `temperature`."""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    """Sampling temperature of the candidates (`candidates: temperature`)."""
    subset: float = Field(0.5, gt=0.0, le=1.0)
    """Fraction of the train examples left after the pilot that each candidate sees
    (`candidates: subsets`)."""
    pilot: int = Field(10, ge=1)
    """Train examples held out from every candidate (spread over the activation range) to judge
    the candidates, with the latent's `explain_negatives` as negatives (at most half of a latent's
    train examples: a latent with fewer keeps the rest for the candidates)."""
    pilot_scorer: Literal["detection", "fuzzing"] = "detection"
    """The judgement of the pilot: the classifier scorer of that name (its default options), with
    the scoring client; its main metric (balanced accuracy) ranks the candidates."""

    @model_validator(mode="after")
    def _best_of_options(self) -> ExplainConfig:
        if self.best_of > 1 and self.explainer not in ("default", "contrastive"):
            raise ValueError(
                f"best_of > 1 works with the default and contrastive explainers, "
                f"not {self.explainer!r}"
            )
        if self.best_of > 1 and self.candidates == "temperature" and self.temperature == 0:
            raise ValueError(
                "candidates: temperature with temperature 0 gives k identical candidates; "
                "set temperature > 0 or use candidates: subsets"
            )
        if self.best_of > 1 and self.candidates == "subsets" and self.subset == 1.0:
            raise ValueError(
                "candidates: subsets with subset 1.0 shows every candidate the same examples; "
                "set subset < 1 or use candidates: temperature"
            )
        return self


BEST_OF_OPTIONS = {"best_of", "candidates", "temperature", "subset", "pilot", "pilot_scorer"}
"""The options of best-of-k, none of which counts while best_of is 1."""


class ExplainStageConfig(_Strict):
    """The YAML of `autointerp explain --config`: explainer options and the client."""

    explain: ExplainConfig = ExplainConfig()
    client: ClientConfig = ClientConfig()


def template(name: str) -> str:
    path = PROMPTS / name
    if not path.is_file():
        raise AutointerpError(
            f"prompt template {name} is missing from {PROMPTS}: the installation is incomplete"
        )
    return path.read_text()


def shown_tokens(example: Example) -> list[tuple[str, float]]:
    """(token, activation) as the text shows them: a token rendered as "" (part of a character that
    a later token completes) passes its activation on to that token (the larger one counts)."""
    out, carry = [], 0.0
    for tok, act in zip(example.tokens, example.activations, strict=True):
        if not tok:
            carry = max(carry, act)
            continue
        out.append((tok, max(act, carry)))
        carry = 0.0
    return out


def mark(example: Example, threshold: float = 0.0) -> str:
    """The example's text with each run of firing tokens wrapped in << >>."""
    peak = max(example.activations, default=0.0)
    out, inside = [], False
    for tok, act in shown_tokens(example):
        firing = act > 0 and act > threshold * peak
        if firing and not inside:
            out.append("<<")
        elif not firing and inside:
            out.append(">>")
        out.append(tok)
        inside = firing
    if inside:
        out.append(">>")
    return "".join(out)


def _values(example: Example, scale: float) -> str:
    pairs = [
        f"{tok!r}: {max(1, int(10 * act / scale + 0.5))}"
        for tok, act in shown_tokens(example)
        if act > 0
    ]
    return "Strengths: " + ", ".join(pairs)


def format_examples(
    examples: Sequence[Example], cfg: ExplainConfig, scale: float | None = None
) -> str:
    scale = scale or max((max(e.activations) for e in examples), default=1.0) or 1.0
    blocks = []
    for i, ex in enumerate(examples, 1):
        text = mark(ex, cfg.mark_threshold).replace("\n", "\\n")
        blocks.append(f"Example {i}: {text}")
        if cfg.activations:
            blocks.append(_values(ex, scale))
    return "\n".join(blocks)


PREFILL = "[EXPLANATION]:"


def _rules(cfg: ExplainConfig) -> list[str]:
    """The optional rules inserted into the default system prompt, in order."""
    on = {
        "mixed_rule": cfg.explainer == "mixed",
        "values_rule": cfg.activations,
        "cot_rule": cfg.cot,
    }
    return [name for name, yes in on.items() if yes]


def templates(cfg: ExplainConfig) -> list[str]:
    """The template files an explainer's prompt is made of (system, user, rules)."""
    kind = cfg.explainer
    if kind == "token-stats":
        return []
    system = kind if kind in ("logits", "intervention") else "default"
    user = kind if kind in ("contrastive", "logits", "mixed", "intervention") else "default"
    rules = _rules(cfg) if system == "default" else []
    return [f"explain/{system}.system.txt", f"explain/{user}.user.txt"] + [
        f"explain/{r}.txt" for r in rules
    ]


def _oneline(text: str) -> str:
    return text.replace("\n", "\\n")


def format_continuations(effects: LatentEffects) -> str:
    return "\n\n".join(
        f"Text {i}: {_oneline(c.prompt)}\nClean: {_oneline(c.clean)}\nSteered: {_oneline(c.steered)}"
        for i, c in enumerate(effects.continuations, 1)
    )


def build_prompt(
    train: Sequence[Example],
    negatives: Sequence[Example],
    cfg: ExplainConfig,
    prefill: bool = False,
    effects: LatentEffects | None = None,
) -> Chat:
    """The chat sent to the explainer LLM (golden-tested); `effects` is the output-side evidence
    of the `logits`, `mixed` and `intervention` explainers."""
    if cfg.explainer in OUTPUT_EXPLAINERS and effects is None:
        raise ValueError(f"the {cfg.explainer!r} explainer's prompt needs the latent's effects")
    effects = effects or LatentEffects()
    system_name, user_name, *rule_names = templates(cfg)
    rules = "".join("\n" + template(name).strip() + "\n" for name in rule_names)
    system = template(system_name).format(values_rule=rules)
    user = template(user_name).format(
        examples=format_examples(train, cfg),
        negatives="\n".join(
            f"Example {i}: {_oneline(''.join(e.tokens))}" for i, e in enumerate(negatives, 1)
        ),
        promoted=", ".join(effects.promoted),
        suppressed=", ".join(effects.suppressed),
        continuations=format_continuations(effects),
    )
    chat = [
        {"role": "system", "content": system.strip()},
        {"role": "user", "content": user.strip()},
    ]
    if prefill and not cfg.cot:
        chat.append({"role": "assistant", "content": PREFILL})
    return chat


def template_id(label: str, names: Sequence[str], options: dict) -> str:
    """`label@hash`: the hash covers the contents of the named template files and every option
    that shapes the prompt or the answer, so two results share an id only if made the same way."""
    blob = json.dumps(
        {"templates": {n: template(n) for n in names}, "options": options},
        sort_keys=True,
        default=str,
    )
    return f"{label}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def prompt_id(cfg: ExplainConfig, prefill: bool | None = None, steering: dict | None = None) -> str:
    """The explanation's prompt: explainer, `+values`, `+cot`, and a hash of every template used
    and every option that shaped the prompt or the answer (all but `latents_per_call`, and the
    options of other explainer types); `prefill` is the one in effect (the config's may be None:
    decided by the backend); `steering`, the intervention explainer's steering options."""
    label = f"{cfg.explainer}{'+values' if cfg.activations else ''}{'+cot' if cfg.cot else ''}"
    if cfg.explainer == "token-stats":
        return template_id(label, [], {})
    unused = {"latents_per_call"}
    unused |= set() if cfg.explainer in ("logits", "mixed") else {"top_logits"}
    unused |= set() if cfg.explainer == "intervention" else {"steer_prompts"}
    best_of = cfg.best_of > 1  # best-of-k's options count only when on (ids stay as they were)
    unused |= set() if best_of else BEST_OF_OPTIONS
    options = cfg.model_dump(mode="json", exclude=unused)
    names = templates(cfg)
    if best_of:
        label += f"+best{cfg.best_of}"
        names += [f"score/{cfg.pilot_scorer}.system.txt", f"score/{cfg.pilot_scorer}.user.txt"]
    if prefill is not None:
        options["prefill"] = prefill
    if steering is not None and cfg.explainer == "intervention":
        options["steering"] = steering
    return template_id(label, names, options)


def parse_explanation(raw: str) -> str | None:
    """The text of the last `[EXPLANATION]:` line, or None if there is none (or it is empty)."""
    found = None
    for line in raw.splitlines():
        m = _LINE.search(line)
        if m:
            found = m.group(1).strip().strip('"').strip()
    return found or None


def token_stats_explanation(train: Sequence[Example], top: int = 5) -> str:
    """A no-LLM explanation from the most frequent activating tokens and the tokens before them, as
    the text shows them (a character split across tokens counts once, whole: see shown_tokens)."""
    fired: Counter[str] = Counter()
    before: Counter[str] = Counter()
    for ex in train:
        shown = shown_tokens(ex)
        for i, (tok, act) in enumerate(shown):
            if act > 0:
                fired[tok.strip() or repr(tok)] += 1
                if i > 0:
                    before[shown[i - 1][0].strip() or repr(shown[i - 1][0])] += 1
    total = sum(fired.values()) or 1
    tokens = ", ".join(f'"{t}" ({100 * n / total:.0f}%)' for t, n in fired.most_common(top))
    ctx = ", ".join(f'"{t}"' for t, _ in before.most_common(3))
    return f"the tokens {tokens}" + (f", often after {ctx}" if ctx else "")


class Explainer:
    """Turns sampled latents into explanations with one client."""

    def __init__(
        self,
        cache: ActivationCache | None,
        cfg: ExplainConfig,
        client: LLMClient | None,
        decode: TokenDecoder | None,
        example_len: int,
        effects: Effects | None = None,
        pilot_client: LLMClient | None = None,
    ):
        """`cache` and `decode` render sampled latents (`explain`); without them the explainer
        takes examples already rendered (`explain_examples`, the Python API's path). `effects`
        gives the output-side evidence of the `logits`, `mixed` and `intervention` explainers;
        `pilot_client` judges best-of-k's candidates (None: `client`)."""
        if cfg.explainer != "token-stats" and client is None:
            raise ValueError(f"the {cfg.explainer!r} explainer needs an LLM client")
        self.effects = effects
        self.cache, self.cfg, self.client, self.decode, self.example_len = (
            cache,
            cfg,
            client,
            decode,
            example_len,
        )
        self.tokens = cache.tokens() if cache is not None else None
        self.usage = Usage()
        self.pilot_client = pilot_client
        from autointerp.clients import is_local

        auto = client is not None and is_local(client)
        self.prefill = (cfg.prefill if cfg.prefill is not None else auto) and not cfg.cot
        steering = effects.steer.model_dump(mode="json") if effects is not None else None
        self.prompt = prompt_id(cfg, self.prefill, steering)

    def examples(self, record: SampledLatent) -> tuple[list[Example], list[Example]]:
        def r(refs):
            return [render(x, self.tokens, self.decode, self.example_len) for x in refs]

        return r(record.train), r(
            record.explain_negatives
            if self.cfg.explainer == "contrastive" or self.cfg.best_of > 1  # best-of: the pilot's
            else []
        )

    async def explain(self, records: Sequence[SampledLatent]) -> list[Explanation]:
        effects = None
        if self.cfg.explainer in OUTPUT_EXPLAINERS:
            if self.effects is None:
                raise ConfigError(
                    f"the {self.cfg.explainer!r} explainer reads the latent's effect on the "
                    "model's output: it needs the subject model and coder of an activation cache"
                )
            kind = self.cfg.explainer
            effects = await self.effects.of(
                records, logits=kind in ("logits", "mixed"), steer=kind == "intervention"
            )
        return await self.explain_examples(
            [r.id for r in records], map(self.examples, records), effects
        )

    async def explain_examples(
        self,
        ids: Sequence[LatentId],
        rendered: Iterable[tuple[list[Example], list[Example]]],
        effects: Sequence[LatentEffects | str] | None = None,
    ) -> list[Explanation]:
        """Explanations of latents given as rendered (train, contrastive negatives) examples
        (with best_of > 1 the negatives are the pilot's, shown only to a contrastive explainer),
        and for the output-side explainers each latent's effects (or why they could not be had:
        that latent's explanation fails with the reason, and no LLM call is made for it)."""
        if self.cfg.best_of > 1:
            raise ConfigError(
                "best_of > 1 needs the best-of explainer: build it with "
                "autointerp.best_of.make_explainer"
            )
        model = "token-stats" if self.client is None else self.client.model
        rendered = list(rendered)
        if self.cfg.explainer in OUTPUT_EXPLAINERS:
            if effects is None:
                raise ValueError(f"the {self.cfg.explainer!r} explainer needs the latents' effects")
            return await self._with_effects(ids, rendered, list(effects), model)
        if self.cfg.explainer == "token-stats":
            return [
                Explanation(
                    latent=r,
                    text=token_stats_explanation(train),
                    raw="",
                    model=model,
                    prompt=self.prompt,
                )
                for r, (train, _) in zip(ids, rendered, strict=True)
            ]
        return await self._ask(ids, rendered, [None] * len(rendered), model)

    async def _with_effects(
        self,
        ids: Sequence[LatentId],
        rendered: list[tuple[list[Example], list[Example]]],
        effects: list[LatentEffects | str],
        model: str,
    ) -> list[Explanation]:
        ok = {i: e for i, e in enumerate(effects) if isinstance(e, LatentEffects)}
        asked = await self._ask(
            [ids[i] for i in ok], [rendered[i] for i in ok], list(ok.values()), model
        )
        answers = dict(zip(ok, asked, strict=True))
        return [
            answers[i]
            if i in answers
            else Explanation(
                latent=ids[i], text=None, raw="", model=model, prompt=self.prompt, error=str(e)
            )
            for i, e in enumerate(effects)
        ]

    async def _ask(
        self,
        ids: Sequence[LatentId],
        rendered: list[tuple[list[Example], list[Example]]],
        effects: Sequence[LatentEffects | None],
        model: str,
    ) -> list[Explanation]:
        if not ids:
            return []
        prefill = self.prefill
        chats = [
            build_prompt(train, neg, self.cfg, prefill, ev)
            for (train, neg), ev in zip(rendered, effects, strict=True)
        ]
        if prefill:  # the answer is the rest of one line
            params = GenParams(max_tokens=min(self.cfg.max_tokens, 64), stop=("\n",))
        else:
            params = GenParams(max_tokens=self.cfg.max_tokens * (3 if self.cfg.cot else 1))
        answers = await self.client.complete(chats, params)  # type: ignore[union-attr]
        out = []
        for r, a in zip(ids, answers, strict=True):
            self.usage.add(a)
            raw = a.text or ""
            if (
                prefill and a.ok
            ):  # the answer continues the prefilled line; it ends at the first newline
                raw = PREFILL + raw.split("\n")[0]
            text = parse_explanation(raw) if a.ok else None
            error = (
                a.error if not a.ok else (None if text else "no [EXPLANATION]: line in the answer")
            )
            out.append(
                Explanation(
                    latent=r,
                    text=text,
                    raw=a.text or "",
                    model=model,
                    prompt=self.prompt,
                    error=error,
                    prompt_tokens=a.prompt_tokens,
                    completion_tokens=a.completion_tokens,
                )
            )
        return out


def effects_for(
    cfg: ExplainConfig, ctx: ScoreContext, steering: InterventionConfig | None = None
) -> Effects | None:
    """The output-side evidence an explainer needs (None for those that read only examples), from
    the subject model and coders of `ctx`, steered as `steering` (a run's `score.intervention`)
    says."""
    if cfg.explainer not in OUTPUT_EXPLAINERS:
        return None
    from autointerp.effects import Effects
    from autointerp.score.intervention import InterventionConfig

    return Effects(ctx, cfg.top_logits, cfg.steer_prompts, steering or InterventionConfig())


def read_explanations(path: Path) -> dict[int, Explanation]:
    return {e.latent.latent: e for e in read_jsonl(path, Explanation)}


def explain_coder(
    explainer: Explainer,
    sample_path: Path,
    out: Path,
    latents: set[int] | None = None,
    progress: bool = True,
) -> Path:
    """Explain every sampled (not skipped) latent of one coder into `out/<coder>.jsonl`; resumes."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / sample_path.name
    done = {h.latent.latent for _, h in scan(path, ExplanationHead)}
    cut_torn_line(path)
    lines = {
        i: at
        for i, at in ok_sample_lines(sample_path).items()
        if i not in done and (latents is None or i in latents)
    }
    todo = _Todo(list(lines), LineIndex(sample_path, lines))  # records read a call at a time
    del lines
    run_sync(_explain_all(explainer, todo, path, sample_path.stem, progress))
    return path


class _Todo:
    """Latents to explain, in the order of the sample file; slicing reads their records."""

    def __init__(self, latents: list[int], index: LineIndex):
        self.latents, self.index = latents, index

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, part: slice) -> list[SampledLatent]:
        return list(self.index.read(self.latents[part], SampledLatent).values())


async def _explain_all(
    explainer: Explainer,
    todo: list[SampledLatent] | _Todo,
    path: Path,
    name: str,
    progress: bool,
) -> None:
    step = explainer.cfg.latents_per_call
    usage = explainer.usage
    with (
        open(path, "a") as f,
        tqdm(total=len(todo), desc=f"explain {name}", unit="latent", disable=not progress) as bar,
    ):
        for i in range(0, len(todo), step):
            chunk = todo[i : i + step]
            for e in await explainer.explain(chunk):
                f.write(e.model_dump_json() + "\n")
            f.flush()
            bar.update(len(chunk))
            bar.set_postfix(
                calls=usage.calls,
                failed=usage.failures,
                tokens=usage.prompt_tokens + usage.completion_tokens,
            )


def summarize(path: Path) -> dict:
    ex = list(read_explanations(path).values())
    failed = [e for e in ex if e.text is None]
    return {
        "explained": len(ex) - len(failed),
        "failed": len(failed),
        "mean_words": float(np.mean([len(e.text.split()) for e in ex if e.text]))
        if len(ex) > len(failed)
        else 0.0,
    }


from autointerp._callable import make_callable  # noqa: E402 (see autointerp._callable)

make_callable(__name__)
