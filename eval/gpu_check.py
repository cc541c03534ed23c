"""Check that cache, surprisal and intervention give the same results on a CUDA GPU as on the CPU.

No weights travel: the subject is a randomly initialised model of SmolLM2-135M's architecture (its
Llama config, fewer layers) with a small byte-level BPE tokenizer trained on the check's own text,
and the coder a random TopK SAE of matching width written as sparsify files. Everything is written
to a temporary folder. For each device (CUDA first when there is one, then the CPU) the check
builds an activation cache, scores surprisal losses and intervenes on a few latents, timing each;
then it prints the tokens/s of each stage per device and the largest difference between devices
(activations over every cached latent, losses, intervention scores and how many steered
continuations came out word for word the same). Exit status 1 when the activations or losses differ
by more than `--atol` (greedy continuations of a random model can part where two logits nearly tie,
so the intervention scores are shown, not held to it).

It imports only what those stages need: torch, transformers, tokenizers, numpy, safetensors, pydantic,
pyyaml, tqdm (not datasets, openai, gguf or sentence-transformers). `scripts/gpu_check.sh` installs
what is missing from wheels it is given, for machines that reach no package registry.

Usage:
    python -m eval.gpu_check [--cpu-only] [--layers 4] [--tokens 16384] [--latents 8]
                             [--dtype float32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# SmolLM2-135M's architecture (its config.json), the subject model of the embedded default.
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
# packages the model-bound stages must not import (the GPU machines may not have them)
OPTIONAL = ("datasets", "openai", "gguf", "sentence_transformers", "pandas", "matplotlib", "ray")
SPECIAL = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if not loop.last or m['role'] != 'assistant' %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
WORDS = (
    "the a of to and in is was for on with as by at from that this it its an are were be has had "
    "city river king war music science water light house school market garden engine ocean "
    "mountain language history paper energy village station bridge forest island theory "
    "painted built wrote discovered grew moved opened measured crossed sold carried named "
    "old new large small early late northern southern famous quiet bright ancient modern "
    "one two three four five 1850 1920 1999 2010 first second"
).split()


def corpus_text(path: Path, n_docs: int = 400, seed: int = 0) -> Path:
    """A text file of random sentences (one document per line)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(3, 8))):
            words = rng.choice(WORDS, size=int(rng.integers(6, 16)))
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    path.write_text("\n".join(docs) + "\n")
    return path


def tiny_model(
    folder: Path,
    text: Path,
    layers: int = 4,
    vocab_size: int = SMOLLM2_135M["vocab_size"],
    seed: int = 0,
) -> Path:
    """A random model of SmolLM2-135M's architecture with `layers` layers, and a byte-level BPE
    tokenizer trained on `text`, saved as a transformers model folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(2048, vocab_size),
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(text)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL
    )
    fast.chat_template = CHAT_TEMPLATE  # so that the local LLM client can run it too
    special = fast.convert_tokens_to_ids(SPECIAL)
    config = LlamaConfig(
        **{**SMOLLM2_135M, "num_hidden_layers": layers, "vocab_size": vocab_size},
        bos_token_id=special,
        eos_token_id=special,
        pad_token_id=special,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def random_sae(
    folder: Path, d_in: int = SMOLLM2_135M["hidden_size"], n: int = 1024, k: int = 16, seed: int = 0
) -> Path:
    """A random TopK SAE in EleutherAI sparsify's layout (`sae.safetensors` + `cfg.json`)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dec = torch.randn(n, d_in, generator=g)
    w = {
        "encoder.weight": torch.randn(n, d_in, generator=g) / d_in**0.5,
        "encoder.bias": torch.randn(n, generator=g) * 0.01,
        "W_dec": dec / dec.norm(dim=1, keepdim=True),
        "b_dec": torch.zeros(d_in),
    }
    save_file(w, folder / "sae.safetensors")
    cfg = {"activation": "topk", "num_latents": n, "k": k, "transcode": False, "d_in": d_in}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@dataclass
class Result:
    device: str
    seconds: dict[str, float]
    tokens: dict[str, int]
    acts: np.ndarray  # (n_latents, n_tokens) dense activations of the cache
    losses: list[float]
    scores: list[float | None]
    steered: list[list[str]]

    def rate(self, stage: str) -> float:
        return self.tokens[stage] / max(self.seconds[stage], 1e-9)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_device(
    device: str,
    work: Path,
    model: Path,
    sae: Path,
    text: Path,
    args: argparse.Namespace,
    latents: list[int] | None = None,
) -> Result:
    """Cache, surprisal and intervention on one device; each timed (model loading excluded)."""
    from autointerp.cache import ActivationCache, _load_coders, build_cache
    from autointerp.config import CacheConfig, CoderConfig, CorpusConfig, SubjectConfig
    from autointerp.score.base import LatentItem
    from autointerp.score.intervention import InterventionConfig, InterventionScorer
    from autointerp.score.surprisal import LossModel
    from autointerp.subject import Site, load_subject
    from autointerp.types import Explanation, LatentId, SampledLatent

    cfg = CacheConfig(
        subject=SubjectConfig(model=str(model), device=device, dtype=args.dtype),
        corpus=CorpusConfig(source=str(text), ctx_len=args.ctx_len, n_tokens=args.tokens),
        coders=[CoderConfig(hookpoint=args.hookpoint, path=str(sae))],
        batch_size=args.batch_size,
    )
    subject = load_subject(cfg.subject)
    ids = torch.ones((args.batch_size, args.ctx_len), dtype=torch.long)
    subject.activations(ids, [Site.parse(args.hookpoint)])  # warm-up (CUDA context, kernels)
    _sync(device)
    seconds, tokens = {}, {}

    t = time.perf_counter()
    root = build_cache(cfg, work / f"cache-{device.replace(':', '-')}", progress=False)
    seconds["cache"] = time.perf_counter() - t
    cache = ActivationCache(root)
    coder_name = next(iter(cache.coders))
    tokens["cache"] = cache.n_tokens
    n_latents = cache.coders[coder_name]["n_latents"]
    acts = np.zeros((n_latents, cache.n_tokens), dtype=np.float32)
    for lat in range(n_latents):
        where, values = cache.latent(coder_name, lat)
        acts[lat, where] = values

    windows = cache.tokens()[: args.texts]
    texts = subject.tokenizer.batch_decode(windows[:, : args.ctx_len // 2])
    prefix = "The following text is an example of {}.\n\n"
    pairs = [(prefix.format(e), t) for t in texts for e in ("text", "rivers and bridges")]
    lm = LossModel.wrap(subject, args.batch_size)
    t = time.perf_counter()
    losses = lm.losses(pairs)
    _sync(device)
    seconds["surprisal"] = time.perf_counter() - t
    tokens["surprisal"] = sum(len(lm._ids(p, x)[0]) for p, x in pairs)

    stats = cache.stats(coder_name)
    if latents is None:
        latents = [int(i) for i in np.argsort(-stats["count"], kind="stable")[: args.latents]]
    coder = _load_coders(cfg, subject)[0]
    icfg = InterventionConfig(n_prompts=args.prompts, prompt_len=16, new_tokens=16, batch_size=16)
    scorer = InterventionScorer(icfg, subject, coder, cache.tokens(), lm)
    items = []
    for lat in latents:
        lid = LatentId(coder=coder_name, latent=lat)
        record = SampledLatent(
            id=lid,
            status="ok",
            density=float(stats["density"][lat]),
            max_activation=float(stats["max"][lat]),
            n_activating_windows=int(stats["count"][lat]),
        )
        text = "rivers, bridges and water"
        expl = Explanation(latent=lid, text=text, raw=text, model="gpu_check", prompt="gpu_check")
        items.append(LatentItem(record=record, explanation=expl, test=[], negatives=[]))
    steered: list[list[str]] = []
    t = time.perf_counter()
    scores = []
    for item in items:
        [s] = asyncio.run(scorer.score([item]))
        scores.append(s.metrics.get("score") if s.status == "ok" else None)
        strength = icfg.scale * item.record.max_activation
        steered.append(
            scorer.continue_prompts(strength * scorer.direction(item.record.id.latent))[0]
        )
    _sync(device)
    seconds["intervention"] = time.perf_counter() - t
    n_prompts = len(scorer.prompts)
    # generated tokens: clean once, steered twice per latent (the score's and the comparison's)
    tokens["intervention"] = n_prompts * icfg.new_tokens * (1 + 2 * len(items))
    args.chosen = latents
    return Result(device, seconds, tokens, acts, losses, scores, steered)


def _max_diff(a, b) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    if (np.isfinite(x) != np.isfinite(y)).any():
        return float("inf")
    return float(np.abs(x[both] - y[both]).max()) if both.any() else 0.0


def compare(a: Result, b: Result) -> dict[str, float]:
    """Largest differences of b from a: activations, losses, intervention scores; and the share of
    steered continuations that are the same text."""
    scores_a = [np.nan if s is None else s for s in a.scores]
    scores_b = [np.nan if s is None else s for s in b.scores]
    same = [
        x == y
        for sa, sb in zip(a.steered, b.steered, strict=True)
        for x, y in zip(sa, sb, strict=True)
    ]
    return {
        "cache activation": _max_diff(a.acts, b.acts),
        "surprisal loss": _max_diff(a.losses, b.losses),
        "intervention score": _max_diff(scores_a, scores_b),
        "same steered continuations": float(np.mean(same)) if same else 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-only", action="store_true", help="skip CUDA even when it is present")
    ap.add_argument("--layers", type=int, default=4, help="layers of the random model")
    ap.add_argument("--hookpoint", help="default: the middle layer, layers.{layers // 2}")
    ap.add_argument("--tokens", type=int, default=16384, help="tokens to cache per device")
    ap.add_argument("--ctx-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--texts", type=int, default=32, help="texts for surprisal (x2 prefixes)")
    ap.add_argument("--latents", type=int, default=4, help="latents to intervene on")
    ap.add_argument("--prompts", type=int, default=8, help="intervention prompts per latent")
    ap.add_argument(
        "--dtype", default="float32", choices=["auto", "bfloat16", "float16", "float32"]
    )
    ap.add_argument("--atol", type=float, default=1e-2, help="largest difference allowed")
    ap.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (default: temporary)"
    )
    args = ap.parse_args(argv)
    args.hookpoint = args.hookpoint or f"layers.{args.layers // 2}"

    devices = ["cpu"]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.insert(0, "cuda")
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print(f"{'--cpu-only' if args.cpu_only else 'no CUDA device'}: the CPU only")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        text = corpus_text(work / "corpus.txt")
        model = tiny_model(work / "model", text, layers=args.layers)
        sae = random_sae(work / "sae" / args.hookpoint)
        results: list[Result] = []
        for device in devices:
            chosen = args.chosen if results else None  # the first device's latents
            results.append(run_device(device, work, model, sae, text, args, chosen))

    print(f"\n{'device':<8}" + "".join(f"{s + ' tok/s':>20}" for s in results[0].seconds))
    for r in results:
        print(f"{r.device:<8}" + "".join(f"{r.rate(s):>20,.0f}" for s in r.seconds))
    print(f"\nlatents intervened on: {args.chosen}")
    imported = [m for m in OPTIONAL if m in sys.modules]
    print(f"optional packages imported: {' '.join(imported) or 'none'}")
    if len(results) < 2:
        print("one device: nothing to compare")
        return 0
    diffs = compare(results[-1], results[0])
    # greedy continuations of a random model may part where two logits nearly tie, so intervention
    # scores are shown, not held to the tolerance; activations and losses are
    worst = max(diffs["cache activation"], diffs["surprisal loss"])
    print(f"largest difference {results[0].device} vs {results[-1].device} ({args.dtype}):")
    for k, v in diffs.items():
        print(f"  {k:<28} {v:.3g}")
    ok = worst <= args.atol
    print("OK" if ok else f"FAILED: a difference exceeds --atol {args.atol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
