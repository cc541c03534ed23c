"""`llamacpp` backend: a GGUF chat model run by llama.cpp inside this process.

On a CPU, llama.cpp runs a quantised model several times faster than transformers does: the packaged
Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) prefills ~67 tokens/s on 2 cores here, and judges one example in
well under a second once the instructions and the explanation are computed. That speed comes from the
prompt prefix: llama.cpp keeps one KV cache, and each prompt computes only the tokens after the
longest prefix it shares with the previous one. So the chats of a batch are run in sorted order
(those sharing instructions and explanation follow each other).

- `model`: a `.gguf` path, or a known model name (`autointerp models` lists them; a known name is
  assembled from its packages on first use), or `smollm2` (the embedded GGUF).
- One-token answers (the judges' `max_tokens: 1` at temperature 0) read the logits of the last prompt
  token: no sampling, logprobs of the top alternatives. Longer answers are generated token by token
  (greedy, or sampled at `temperature` with a generator seeded by the client's seed and the prompt,
  so an answer never depends on the other prompts of its batch), with logprobs when asked.
- Recurrent and hybrid models (llama.cpp's `_is_recurrent` / `_is_hybrid`) keep a state that cannot
  be cut back to a shared prefix: every prompt is computed from the start.
- `threads`: None picks the cores idle right now (sampled from /proc/stat over 0.3 s; at least one):
  on a loaded 2-core machine two threads ran far slower than one.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
import zlib
from pathlib import Path

import numpy as np

from autointerp.clients.base import BlockingClient, Chat, Completion, GenParams, TokenLogprob
from autointerp.errors import AutointerpError

log = logging.getLogger(__name__)


class LlamaCppError(AutointerpError):
    pass


def gguf_path(model: str, assemble: bool = True) -> Path:
    """The GGUF file of a model spec: a path, `smollm2` (embedded), or a known model's name
    (`assemble`: from its installed parts when it is not assembled yet; else it must be)."""
    from autointerp.config import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL:
        from autointerp.subject import embedded_gguf

        return embedded_gguf()
    p = Path(model).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise LlamaCppError(f"model file not found: {p}")
        return p
    if not assemble:
        from autointerp.models import model_path

        return model_path(model)
    try:
        from autointerp.models import resolve_gguf
    except ImportError:  # pragma: no cover - the models table ships with the package
        raise LlamaCppError(f"the llamacpp backend needs a .gguf file, got {model!r}") from None
    return Path(resolve_gguf(model))


def check(model: str) -> Path:
    """The model's GGUF file, after checking that llama-cpp-python is installed: a run that would
    use this backend fails here, before any work, when it cannot."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise LlamaCppError(
            "the llamacpp backend needs llama-cpp-python: `bash scripts/setup.sh` installs it, or "
            "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install llama-cpp-python"
        )
    return gguf_path(model)


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0.0), sum(fields[:8])


def idle_cores(seconds: float = 0.3) -> float | None:
    """How many of the machine's cores were idle over the last `seconds` (None without
    /proc/stat). Measured now, not averaged over a minute: the load average still counts the work
    this process itself has just finished (a run's cache stage right before its judge starts)."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (os.cpu_count() or 1) * (b[0] - a[0]) / (b[1] - a[1])


def default_threads() -> int:
    """The cores this process may use that are idle now (at least one); where that cannot be
    measured, the cores less the one-minute load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    idle = idle_cores()
    if idle is None:
        idle = cores - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(cores, int(round(idle))))


def _close(ref: weakref.ref) -> None:
    llm = ref()
    if llm is not None:
        llm.close()


class LlamaCppClient(BlockingClient):
    def __init__(
        self,
        model: str,
        n_ctx: int = 4096,
        threads: int | None = None,
        seed: int = 0,
    ):
        path = check(model)
        from llama_cpp import Llama

        self.model = model
        self.path = path
        self.threads = threads or default_threads()
        log.info("llama.cpp: %s with %d thread(s), context %d", path.name, self.threads, n_ctx)
        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=False,
            verbose=False,
            seed=seed,
        )
        # Freed before the interpreter tears its modules down (llama-cpp-python's own __del__
        # then fails with "'NoneType' object is not callable"); a weak reference, so that a
        # client dropped earlier frees its model at once.
        atexit.register(_close, weakref.ref(self.llm))
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()
        self.seed = seed
        self._template = self._chat_template()
        self._eos = {self.llm.token_eos()}
        eot = self._special_id("<|im_end|>")
        if eot is not None:
            self._eos.add(eot)

    # --- prompts -------------------------------------------------------------------------------

    def _chat_template(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LlamaCppError(f"{self.path.name} has no chat template in its GGUF metadata")

        def text(token_id: int) -> str:
            return self.llm.detokenize([token_id], special=True).decode("utf-8", "replace")

        bos = text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
        return Jinja2ChatFormatter(template, eos_token=text(self.llm.token_eos()), bos_token=bos)

    def _special_id(self, text: str) -> int | None:
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    def render(self, chat: Chat) -> str:
        """The prompt text; a final assistant message is continued (a prefilled answer)."""
        prefill = ""
        if chat and chat[-1]["role"] == "assistant":
            chat, prefill = chat[:-1], chat[-1]["content"]
        return self._template(messages=chat).prompt + prefill

    def _ids(self, chat: Chat) -> list[int]:
        text = self.render(chat)
        # The template writes the BOS itself where the model wants one.
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    # --- evaluation ----------------------------------------------------------------------------

    def _feed(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate `ids` after the longest prefix already in the KV cache; the log-softmax of the
        last position and how many prompt tokens were reused."""
        llm = self.llm
        reuse = 0
        if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            llm.reset()  # a recurrent state holds the whole past: no prefix to keep
        else:
            held = llm.input_ids[: llm.n_tokens]
            n = min(len(held), len(ids) - 1)
            while reuse < n and held[reuse] == ids[reuse]:
                reuse += 1
            llm.n_tokens = reuse
        llm.eval(ids[reuse:])
        return self._last_logprobs(), reuse

    def _last_logprobs(self) -> np.ndarray:
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
        x = logits.astype(np.float64)
        x -= x.max()
        return x - np.log(np.exp(x).sum())

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", "replace")

    def _logprob(self, logp: np.ndarray, token: int, top: int) -> TokenLogprob:
        tops = []
        if top:
            best = np.argpartition(-logp, top)[:top]
            best = best[np.argsort(-logp[best])]
            tops = [(self._piece(int(t)), float(logp[t])) for t in best]
        return TokenLogprob(token=self._piece(token), logprob=float(logp[token]), top=tops)

    def _complete(self, chats: list[Chat], params: GenParams) -> list[Completion]:
        ids = [self._ids(c) for c in chats]
        out: list[Completion | None] = [None] * len(chats)
        for i in sorted(range(len(ids)), key=lambda i: ids[i]):  # shared prefixes side by side
            if len(ids[i]) + params.max_tokens > self.n_ctx:
                out[i] = Completion(
                    text=None,
                    prompt_tokens=len(ids[i]),
                    error=f"prompt of {len(ids[i])} tokens + max_tokens {params.max_tokens} "
                    f"exceeds the llama.cpp context of {self.n_ctx} tokens (raise `n_ctx`)",
                )
                continue
            out[i] = self._generate(ids[i], params)
        return out  # type: ignore[return-value]

    def _generate(self, ids: list[int], params: GenParams) -> Completion:
        logp, reused = self._feed(ids)
        # seeded per prompt: the same answer alone or in any batch
        rng = np.random.default_rng([self.seed, zlib.crc32(np.asarray(ids, np.int32).tobytes())])
        tokens: list[int] = []
        lps: list[TokenLogprob] = []
        text = ""
        while True:
            if params.temperature > 0:
                p = np.exp(logp / params.temperature - (logp / params.temperature).max())
                token = int(rng.choice(len(p), p=p / p.sum()))
            else:
                token = int(logp.argmax())
            if token in self._eos:
                break
            tokens.append(token)
            if params.logprobs:
                lps.append(self._logprob(logp, token, params.top_logprobs))
            text = self.llm.detokenize(tokens).decode("utf-8", "replace")
            if any(s in text for s in params.stop) or len(tokens) >= params.max_tokens:
                break
            self.llm.eval([token])
            logp = self._last_logprobs()
        for s in params.stop:
            text = text.split(s)[0]
        return Completion(
            text=text,
            logprobs=lps if params.logprobs else None,
            prompt_tokens=len(ids),
            cached_tokens=reused,
            completion_tokens=len(tokens),
        )
