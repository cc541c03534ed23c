"""Every script under eval/ imports (its optional dependencies, such as delphi, only when it runs)
and answers --help; the helpers they share live once, in eval/common.py."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "eval").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_eval_script_imports(name):
    module = importlib.import_module(f"eval.{name}")
    assert module.__doc__, f"eval/{name}.py has no docstring saying what it measures"
    if hasattr(module, "main"):
        r = subprocess.run(
            [sys.executable, "-m", f"eval.{name}", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-2000:]


def test_no_helper_is_defined_twice_in_eval():
    """A top-level function of the same name and body in two eval scripts belongs in common.py."""
    seen: dict[str, str] = {}
    twice = []
    for path in sorted((ROOT / "eval").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name not in ("main", "parse_args"):
                body = ast.dump(ast.Module(body=node.body, type_ignores=[]))
                key = f"{node.name}:{body}"
                if key in seen:
                    twice.append(f"{node.name} in {seen[key]} and {path.name}")
                seen.setdefault(key, path.name)
    assert not twice, twice
