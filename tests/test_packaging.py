"""What the wheel ships: every subpackage, the prompt templates and the embedded SAE.

The full check (build the wheel, install it into a fresh environment, run a job) is
`scripts/wheel_check.sh`, which CI runs after the tests.
"""

from __future__ import annotations

import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed():
    """The package list is explicit (prompts/ is mapped into the package): a new subpackage that is
    not listed would be missing from the wheel."""
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "autointerp").rglob("__init__.py")
    }
    listed = set(_setuptools()["packages"])
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


def test_templates_found_where_the_package_looks():
    from autointerp import explain

    names = {str(p.relative_to(ROOT / "prompts")) for p in (ROOT / "prompts").rglob("*.txt")}
    assert {"explain/default.system.txt", "score/detection.system.txt"} <= names
    for name in names:
        assert explain.template(name) == (ROOT / "prompts" / name).read_text()


def test_missing_template_is_a_clear_error():
    from autointerp import explain
    from autointerp.errors import AutointerpError

    with pytest.raises(AutointerpError, match="nope.txt is missing"):
        explain.template("explain/nope.txt")


def test_wheel_holds_prompts_and_sae(tmp_path):
    """Build the wheel (no dependencies, no network) and list what it holds."""
    import subprocess
    import sys

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip("setuptools too old to build the wheel")
    # Build from a copy of the files git knows: a stale build/ in the tree cannot leak into the wheel.
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    src = tmp_path / "src"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("autointerp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for p in (ROOT / "prompts").rglob("*.txt"):
        assert f"autointerp/prompts/{p.relative_to(ROOT / 'prompts')}" in names
    assert "autointerp/data/smollm2-135m-layers.15-topk/sae.safetensors" in names
    assert "autointerp/data/models.yaml" in names  # the known GGUF judge models
    assert "autointerp/data/default_run.yaml" in names  # `autointerp run` without a config
    assert "autointerp/score/classifier.py" in names
    sources = {n.replace("prompts/", "autointerp/prompts/", 1) for n in listed if n}
    shipped = {n for n in names if n.startswith("autointerp/")}
    assert shipped <= sources, (
        f"in the wheel but not in the source tree: {sorted(shipped - sources)}"
    )
