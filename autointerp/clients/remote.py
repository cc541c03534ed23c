"""`openai` backend: any OpenAI-compatible server (vLLM, llama.cpp, OpenAI, OpenRouter).

Many requests in flight at once (`max_concurrency`), retries on 408, 409, 429, 5xx, timeouts and
dropped connections by the OpenAI SDK itself (exponential backoff with jitter, honouring the server's
`Retry-After`), logprobs, and token counts including the prompt tokens the server served from its
prefix cache. A server that returns no logprobs although they were asked for (some ignore the
parameter), or refuses them (llama.cpp's server without `logits_all`), still answers: the request is
sent again without them (once refused, they are no longer asked for), the completion has
`logprobs=None`, and the scorers note that AUROC could not be computed. The API key comes from a `SecretStr` or from the environment
variable named by `api_key_env`, read when the client is built; it is never logged or written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from pydantic import SecretStr

from autointerp.clients.base import Chat, Completion, GenParams, TokenLogprob
from autointerp.errors import ClientError

log = logging.getLogger(__name__)
_CHECK_RETRIES = 2
"""Retries of the start-up check (a server that is down fails in about 1.5 s, not after every retry)."""


_REFUSAL_STATUS = (400, 422, 500, 501)


def _refuses_logprobs(e: Exception) -> bool:
    """The server refuses logprobs (llama.cpp without logits_all: 500; vLLM above its
    --max-logprobs, models without logprobs: 400), rather than failing for another reason."""
    status = getattr(e, "status_code", None)
    return status in _REFUSAL_STATUS and "logprob" in str(e).lower()


async def _refusal_is_final(response) -> None:
    """HTTP response hook: a refusal of logprobs gets `x-should-retry: false`, which the SDK obeys,
    so that it is not retried (a 500 would be) but asked again at once without them; every other
    error goes through the SDK's retries, honouring `Retry-After`."""
    if response.status_code in _REFUSAL_STATUS and b'"logprobs"' in response.request.content:
        await response.aread()
        if "logprob" in response.text.lower():
            response.headers["x-should-retry"] = "false"


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
    ):
        import openai

        key = api_key.get_secret_value() if api_key else os.environ.get(api_key_env) or "not-needed"
        self.model = model
        self._openai = openai
        self._make = lambda: openai.AsyncOpenAI(
            base_url=base_url,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"response": [_refusal_is_final]}
            ),
        )
        self._max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_retries = max_retries
        self.base_url = base_url
        self._checked = False
        self._logprobs_refused: str | None = None
        """Why the server refused logprobs (then they are no longer asked for)."""

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
        try:
            client = self._client.with_options(max_retries=_CHECK_RETRIES)
            models = [m.id async for m in client.models.list()]
        except (self._openai.APIConnectionError, self._openai.APITimeoutError) as e:
            raise ClientError(f"no OpenAI-compatible server answers at {where}: {e}") from None
        except self._openai.APIStatusError:
            models = []  # some servers do not list models; requests will tell
        if models and self.model not in models:
            raise ClientError(
                f"{where} does not serve model {self.model!r} (it serves: {', '.join(models[:20])})"
            )
        self._checked = True

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
        lp = params.logprobs and self._logprobs_refused is None
        if lp:
            kwargs.update(logprobs=True, top_logprobs=params.top_logprobs or None)
        try:  # the SDK retries what is worth retrying (max_retries), honouring Retry-After
            try:
                response = await self._send(kwargs)
            except self._openai.APIStatusError as e:
                if not (lp and _refuses_logprobs(e)):
                    raise
                self._refuse_logprobs(e)  # not retried (`_refusal_is_final`): asked again at once
                del kwargs["logprobs"], kwargs["top_logprobs"]
                response = await self._send(kwargs)
            return self._parse(response, params)
        except (self._openai.NotFoundError, self._openai.AuthenticationError) as e:
            raise ClientError(
                f"{self.base_url or 'the OpenAI API'} refused model {self.model!r}: {e}"
            ) from None
        except Exception as e:  # after the SDK's retries: a recorded failure, never an answer
            return Completion(text=None, error=f"{type(e).__name__}: {e}"[:500])

    async def _send(self, kwargs: dict):
        async with self._limit:
            return await self._client.chat.completions.create(**kwargs)

    def _refuse_logprobs(self, e: Exception) -> None:
        if self._logprobs_refused is None:
            self._logprobs_refused = str(e)[:300]
            log.warning(
                "%s refuses logprobs (%s): asking without them; the answers count, AUROC is not "
                "computed",
                self.base_url or "the OpenAI API",
                self._logprobs_refused,
            )

    @staticmethod
    def _parse(response, params: GenParams) -> Completion:
        choice = response.choices[0]
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        logprobs = None
        if params.logprobs:
            content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
            if content:  # none although asked for: the answer counts, logprobs stay None
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
