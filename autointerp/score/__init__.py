"""Scoring: explanations + held-out examples -> per-example predictions and per-latent metrics.

Usage: `autointerp score RUN/cache --scorer detection --scorer fuzzing` (reads RUN/sample and
RUN/explanations, writes RUN/scores/<scorer>/<coder>.jsonl); Python: `score_coder(...)`.

Scorers (one module each; `SCORERS` maps names to builders):
- detection, fuzzing (`classifier.py`): an LLM judges examples; balanced accuracy, AUROC from logprobs;
- surprisal (`surprisal.py`): loss drop of a local LM given the explanation; AUROC;
- embedding (`embedding.py`): explanation-example similarity (MiniLM); AUROC;
- intervention (`intervention.py`): steer the latent (`scale` x its max activation), surprisal of the
  explanation after clean minus after steered continuations; mean drop (`score`);
- intervention-kl (`intervention.py`): the same, with each latent's steering strength searched so
  that the next-token KL(clean || steered) is `target_kl`; `kl_score` = mean drop / KL, the
  explanation's gain per nat of steering. Prefer it to compare latents or coders whose decoder norms
  or activation scales differ: a fixed `scale` moves their outputs by different amounts;
- simulation (`simulation.py`): predicted per-token activations; correlation;
- intruder (`intruder.py`): an LLM picks the one non-activating example among activating ones;
  accuracy (explanation-free);
- example-embedding (`example_embedding.py`): similarity of held-out examples to the latent's train
  examples (MiniLM); AUROC (explanation-free).

Each latent's score is appended to its file as soon as it is finished, so an interrupted run resumes
where it stopped. A latent whose explanation failed or is empty, or that has no test examples, gets a
failed score with the reason; it never counts as a wrong answer. The explanation-free scorers
(`EXPLANATION_FREE`) score every latent with test examples, whatever its explanation; the steering
scorers (`STEERING`) read no test examples.
"""

from __future__ import annotations

from importlib import import_module

# The names below are read from their modules on first use, so that importing a submodule
# (`autointerp.score.metrics`, `.base`) loads neither the driver nor any scorer.
_WHERE = {
    "names": ("ScorerName", "MAIN_METRIC", "LLM_SCORERS", "EXPLANATION_FREE", "STEERING"),
    "stage": (
        "ScoreConfig",
        "ScoreStageConfig",
        "ScoreContext",
        "SCORERS",
        "read_scores",
        "precheck",
        "score_coder",
        "score_latents",
        "write_scores",
        "summarize",
    ),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name: str):
    if name not in _MODULE:
        raise AttributeError(f"module 'autointerp.score' has no attribute {name!r}")
    return getattr(import_module(f"autointerp.score.{_MODULE[name]}"), name)


from autointerp._callable import make_callable  # noqa: E402 (see autointerp._callable)

make_callable(__name__)
