"""A small OpenAI-compatible HTTP server of the tests' own, on 127.0.0.1, that fails on purpose
(429, 500, slow) and records what it was sent and when."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """Serves /v1/models and /v1/chat/completions; `script` lists what the next requests get:
    an int status code (429, 500, ...; sent with `error_headers`, by default a 10 ms
    `retry-after-ms` so that the SDK's retries are quick), (status, {header: value}),
    ("slow", seconds) or "ok"; when it runs out, "ok". `times` holds each request's arrival."""

    def __init__(self, models=("fake-model",), logprobs: bool | str = True):
        """`logprobs`: True (given when asked), False (left out), "refuse" (HTTP 500 naming them)."""
        self.script: list = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.times: list[float] = []
        self.error_headers = {"retry-after-ms": "10"}
        self.reply = None
        """A function of the request body giving the answer's text (None: echo the last message)."""
        self.models = list(models)
        self.logprobs = logprobs
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(
                    200,
                    {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]},
                )

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.times.append(time.monotonic())
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    action = fake.script.pop(0) if fake.script else "ok"
                headers = fake.error_headers
                if isinstance(action, tuple) and action[0] == "slow":
                    time.sleep(action[1])
                    action = "ok"
                elif isinstance(action, tuple):
                    action, headers = action
                message = f"scripted {action}"
                if action == "ok" and body.get("logprobs") and fake.logprobs == "refuse":
                    action, headers = 500, {}  # as llama.cpp's server without logits_all
                    message = "logprobs is not supported for models created with logits_all=False"
                if isinstance(action, int):
                    return self._send(action, {"error": {"message": message, "type": "x"}}, headers)
                self._send(200, fake.answer(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: dict) -> dict:
        text = self.reply(body) if self.reply else "echo: " + body["messages"][-1]["content"][:20]
        choice = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
        }
        if body.get("logprobs") and self.logprobs:
            choice["logprobs"] = {
                "content": [
                    {
                        "token": "echo",
                        "logprob": -0.1,
                        "bytes": None,
                        "top_logprobs": [
                            {"token": "echo", "logprob": -0.1, "bytes": None},
                            {"token": "no", "logprob": -2.5, "bytes": None},
                        ],
                    }
                ]
            }
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": 3,
                "total_tokens": 14,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        }

    def close(self):
        self.server.shutdown()
        self.server.server_close()
