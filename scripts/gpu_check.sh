#!/usr/bin/env bash
# Check cache, surprisal and intervention on a CUDA GPU against the CPU (python -m eval.gpu_check:
# a small random model of the subject's architecture, so no weights travel). Without CUDA it runs on
# the CPU alone. It needs torch, transformers, numpy, safetensors, pydantic, pyyaml and tqdm; those of
# the last three that are missing are installed from wheels into .gpu-check-deps/ (no registry needed).
#
# Usage: bash scripts/gpu_check.sh [--wheels DIR] [eval.gpu_check options, e.g. --cpu-only]
#        bash scripts/gpu_check.sh --download [DIR]
#   --wheels DIR    where the wheels are (default shared/wheels)
#   --download DIR  on a machine with a package registry: fetch those wheels (manylinux x86_64,
#                   CPython 3.10-3.13, a few MB) into DIR (default shared/wheels), then carry DIR along
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
wheels=shared/wheels
PACKAGES=(pydantic pyyaml tqdm)

if [ "${1:-}" = "--download" ]; then
  dest=${2:-$wheels}
  mkdir -p "$dest"
  for v in 3.10 3.11 3.12 3.13; do
    "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --dest "$dest" \
      --implementation cp --python-version "$v" \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
      "${PACKAGES[@]}"
  done
  echo "wheels in $dest ($(du -sh "$dest" | cut -f1))"
  exit 0
fi
if [ "${1:-}" = "--wheels" ]; then wheels=$2; shift 2; fi

# The import name of each package, and which are missing here.
missing=$("$PY" - <<'EOF'
import importlib.util
names = {"pydantic": "pydantic", "pyyaml": "yaml", "tqdm": "tqdm"}
print(" ".join(p for p, m in names.items() if importlib.util.find_spec(m) is None))
EOF
)
deps=$PWD/.gpu-check-deps
if [ -n "$missing" ]; then
  [ -d "$wheels" ] || { echo "missing $missing and no wheels in $wheels: run 'bash scripts/gpu_check.sh --download $wheels' where a registry is reachable" >&2; exit 1; }
  echo "installing $missing from $wheels into $deps"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --no-index --find-links "$wheels" --target "$deps" $missing
fi
PYTHONPATH="$deps:$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m eval.gpu_check "$@"
