"""`transformers` backend: a local chat model (the embedded SmolLM2-135M-Instruct by default).

Batched greedy or sampled generation, token logprobs from the raw logits, prompt-length checks. It runs
on the CPU or a GPU (`device: auto` takes CUDA when present; `dtype: auto` is bf16 where the device has
it natively, else fp32); chats of similar length are batched together to waste little padding.
"""

from __future__ import annotations

import logging

import torch

from autointerp.clients.base import BlockingClient, Chat, Completion, GenParams, TokenLogprob
from autointerp.config import SubjectConfig
from autointerp.subject import load_subject

log = logging.getLogger(__name__)


class TransformersClient(BlockingClient):
    def __init__(
        self,
        model: str = "smollm2",
        dtype: str = "auto",
        batch_size: int = 8,
        device: str = "auto",
    ):
        subject = load_subject(SubjectConfig(model=model, dtype=dtype, device=device))  # type: ignore[arg-type]
        self.model = model
        self.lm = subject.model
        self.device = subject.device
        self.tok = subject.tokenizer
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.batch_size = batch_size
        self.context = int(getattr(self.lm.config, "max_position_embeddings", 0) or 1 << 30)

    def _complete(self, chats: list[Chat], params: GenParams) -> list[Completion]:
        prompts = [self._render(c) for c in chats]
        ids = [self.tok(p, add_special_tokens=False).input_ids for p in prompts]
        out: list[Completion | None] = [None] * len(chats)
        ok = []
        for i, x in enumerate(ids):
            if len(x) + params.max_tokens > self.context:
                out[i] = Completion(
                    text=None,
                    prompt_tokens=len(x),
                    error=f"prompt of {len(x)} tokens + max_tokens {params.max_tokens} exceeds the "
                    f"model's context of {self.context} tokens",
                )
            else:
                ok.append(i)
        if params.max_tokens == 1 and params.temperature == 0:
            for i, c in zip(ok, self._one_token([ids[i] for i in ok], params), strict=True):
                out[i] = c
            return out  # type: ignore[return-value]
        ok.sort(key=lambda i: len(ids[i]))
        for start in range(0, len(ok), self.batch_size):
            batch = ok[start : start + self.batch_size]
            for i, c in zip(batch, self._generate([ids[i] for i in batch], params), strict=True):
                out[i] = c
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _one_token(self, ids: list[list[int]], params: GenParams) -> list[Completion]:
        """One greedy token per prompt, with prefix sharing: prompts are sorted so that those with a
        common prefix (same instructions, same explanation) sit together; each batch computes its
        common prefix once and only the rest of each prompt per row. Rows are right-padded, which a
        causal model never attends to, and read at their own last token."""
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        out: list[Completion | None] = [None] * len(ids)
        pad = self.tok.pad_token_id
        step = 4 * self.batch_size
        for s in range(0, len(order), step):
            batch = order[s : s + step]
            rows = [ids[i] for i in batch]
            shared = min(_common_prefix(rows), min(len(r) for r in rows) - 1)
            past = None
            if shared > 0:
                prefix = torch.tensor([rows[0][:shared]], device=self.device)
                past = self.lm(input_ids=prefix, use_cache=True).past_key_values
                past.batch_repeat_interleave(len(rows))
            width = max(len(r) for r in rows) - shared
            suffix = torch.full((len(rows), width), pad)
            for j, r in enumerate(rows):
                suffix[j, : len(r) - shared] = torch.tensor(r[shared:])
            suffix = suffix.to(self.device)
            logits = self.lm(
                input_ids=suffix, past_key_values=past, use_cache=past is not None
            ).logits
            for j, (i, r) in enumerate(zip(batch, rows, strict=True)):
                logp = logits[j, len(r) - shared - 1].float().log_softmax(-1)
                token = int(logp.argmax())
                end = token in (self.tok.eos_token_id, pad)
                lp = (
                    [self._token_logprob(logp, token, params.top_logprobs)]
                    if params.logprobs
                    else None
                )
                out[i] = Completion(
                    text="" if end else self.tok.decode([token]),
                    logprobs=None if end else lp,
                    prompt_tokens=len(r),
                    cached_tokens=shared if j > 0 else 0,
                    completion_tokens=0 if end else 1,
                )
        return out  # type: ignore[return-value]

    def _render(self, chat: Chat) -> str:
        """The prompt text; a final assistant message is continued (a prefilled answer)."""
        if chat and chat[-1]["role"] == "assistant":
            return self.tok.apply_chat_template(chat, continue_final_message=True, tokenize=False)
        return self.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

    @torch.inference_mode()
    def _generate(self, ids: list[list[int]], params: GenParams) -> list[Completion]:
        enc = self.tok.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        sampling = params.temperature > 0
        # nn.Module.__getattr__ is typed Tensor | Module; the subject's model is a causal LM
        gen = self.lm.generate(  # type: ignore[operator]
            **enc,
            max_new_tokens=params.max_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=None,
            top_k=None,
            output_logits=params.logprobs,
            return_dict_in_generate=True,
            pad_token_id=self.tok.pad_token_id,
            **({"stop_strings": list(params.stop), "tokenizer": self.tok} if params.stop else {}),
        )
        new = gen.sequences[:, enc["input_ids"].shape[1] :]
        logits = torch.stack(gen.logits, dim=1).float().log_softmax(-1) if params.logprobs else None
        stops = {self.tok.eos_token_id, self.tok.pad_token_id}
        result = []
        for row, (prompt, tokens) in enumerate(zip(ids, new.tolist(), strict=True)):
            n = next((j for j, t in enumerate(tokens) if t in stops), len(tokens))
            text = self.tok.decode(tokens[:n], skip_special_tokens=True)
            for s in params.stop:
                text = text.split(s)[0]
            lp = None
            if logits is not None:
                lp = [
                    self._token_logprob(logits[row, j], tokens[j], params.top_logprobs)
                    for j in range(n)
                ]
            result.append(
                Completion(text=text, logprobs=lp, prompt_tokens=len(prompt), completion_tokens=n)
            )
        return result

    def _token_logprob(self, logp: torch.Tensor, token: int, top: int) -> TokenLogprob:
        tops = []
        if top:
            values, indices = logp.topk(top)
            tops = [
                (self.tok.decode([int(t)]), float(v)) for v, t in zip(values, indices, strict=True)
            ]
        return TokenLogprob(token=self.tok.decode([token]), logprob=float(logp[token]), top=tops)


def _common_prefix(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for k in range(n):
        if any(r[k] != first[k] for r in rows[1:]):
            return k
    return n
