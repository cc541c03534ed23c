"""`openai` backend: any OpenAI-compatible server (vLLM, llama.cpp, OpenAI, OpenRouter).

Many requests in flight at once (`max_concurrency`), retries with exponential backoff and jitter on
429, 5xx, timeouts and dropped connections, logprobs, and token counts including the prompt tokens the
server served from its prefix cache. The API key comes from a `SecretStr` or from the environment
variable named by `api_key_env`, read when the client is built; it is never logged or written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Sequence

from pydantic import SecretStr

from autointerp.clients.base import Chat, Completion, GenParams, TokenLogprob
from autointerp.errors import ClientError

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIClient:
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ):
        import openai

        key = api_key.get_secret_value() if api_key else os.environ.get(api_key_env) or "not-needed"
        self.model = model
        self._openai = openai
        self._make = lambda: openai.AsyncOpenAI(
            base_url=base_url, api_key=key, timeout=timeout, max_retries=0
        )
        self._max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.base_url = base_url
        self._checked = False

    def _bind(self) -> None:
        """The HTTP client and the concurrency limit belong to one event loop; a caller may run
        several loops one after another (one `asyncio.run` per stage), so rebuild them per loop."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._client = self._make()
            self._limit = asyncio.Semaphore(self._max_concurrency)

    async def complete(self, chats: Sequence[Chat], params: GenParams) -> list[Completion]:
        self._bind()
        if not self._checked:
            await self.check()
        return list(await asyncio.gather(*(self._one(chat, params) for chat in chats)))

    async def check(self) -> None:
        """Fail early, with the URL, if no server answers or it does not serve the model."""
        where = self.base_url or "the OpenAI API"
        for attempt in range(3):
            try:
                models = [m.id async for m in self._client.models.list()]
                break
            except (self._openai.APIConnectionError, self._openai.APITimeoutError) as e:
                if attempt == 2:
                    raise ClientError(
                        f"no OpenAI-compatible server answers at {where}: {e}"
                    ) from None
                await asyncio.sleep(self.backoff * 2**attempt)
            except self._openai.APIStatusError:
                models = []  # some servers do not list models; requests will tell
                break
        if models and self.model not in models:
            raise ClientError(
                f"{where} does not serve model {self.model!r} (it serves: {', '.join(models[:20])})"
            )
        self._checked = True

    def _retryable(self, e: Exception) -> bool:
        o = self._openai
        if isinstance(e, o.APITimeoutError | o.APIConnectionError):
            return True
        return isinstance(e, o.APIStatusError) and e.status_code in _RETRY_STATUS

    async def _one(self, chat: Chat, params: GenParams) -> Completion:
        kwargs: dict = dict(
            model=self.model,
            messages=chat,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
        )
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if (
            chat and chat[-1]["role"] == "assistant"
        ):  # continue a prefilled answer (vLLM's extension)
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        if params.logprobs:
            kwargs.update(logprobs=True, top_logprobs=params.top_logprobs or None)
        for attempt in range(self.max_retries + 1):
            try:
                async with self._limit:
                    response = await self._client.chat.completions.create(**kwargs)
                return self._parse(response, params)
            except Exception as e:
                if isinstance(e, self._openai.NotFoundError | self._openai.AuthenticationError):
                    raise ClientError(
                        f"{self.base_url or 'the OpenAI API'} refused model {self.model!r}: {e}"
                    ) from None
                if not self._retryable(e) or attempt == self.max_retries:
                    return Completion(text=None, error=f"{type(e).__name__}: {e}"[:500])
                delay = min(self.max_backoff, self.backoff * 2**attempt) * (
                    0.5 + random.random() / 2
                )
                log.debug(
                    "retrying after %s (attempt %d, %.1f s)", type(e).__name__, attempt + 1, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _parse(response, params: GenParams) -> Completion:
        choice = response.choices[0]
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        logprobs = None
        if params.logprobs:
            content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
            if content is None:
                return Completion(
                    text=choice.message.content,
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0,
                    error="the server returned no logprobs although they were requested",
                )
            logprobs = [
                TokenLogprob(
                    token=t.token,
                    logprob=t.logprob,
                    top=[(x.token, x.logprob) for x in (t.top_logprobs or [])],
                )
                for t in content
            ]
        return Completion(
            text=choice.message.content or "",
            logprobs=logprobs,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
