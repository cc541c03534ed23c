"""Runs inside the vLLM virtual environment (`.venv-vllm`, made by `scripts/setup.sh --dev`): exercises
the `vllm` backend on the CPU with the packaged SmolLM2 and writes the completions as JSON to the
file named by its argument, for tests/test_vllm.py to check. Not collected by pytest (vLLM pins its own transformers version)."""

import asyncio
import json
import sys

SYSTEM = "You answer in one short sentence. " * 20  # a long shared prefix, for the prefix cache


def main() -> None:
    from autointerp.clients.base import GenParams
    from autointerp.clients.vllm import VLLMClient

    client = VLLMClient(
        "smollm2", enforce_eager=True, kv_cache_memory_bytes=1 << 30, max_model_len=2048
    )
    chats = [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}],
        [
            {"role": "user", "content": "Describe the sky."},
            {"role": "assistant", "content": "[EXPLANATION]:"},
        ],
    ]
    first = asyncio.run(
        client.complete(chats, GenParams(max_tokens=12, logprobs=True, top_logprobs=2))
    )
    again = asyncio.run(client.complete(chats[:1], GenParams(max_tokens=12)))
    too_long = [{"role": "user", "content": "word " * 3000}]  # beyond max_model_len=2048
    mixed = asyncio.run(client.complete([too_long, chats[1]], GenParams(max_tokens=12)))
    with open(sys.argv[1], "w") as f:  # vLLM itself prints to stdout
        json.dump([c.model_dump() for c in first + again + mixed], f)


if __name__ == "__main__":
    main()
