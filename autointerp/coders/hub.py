"""Coders on the Hugging Face hub, downloaded by `huggingface_hub` into its standard cache.

A coder's `path` names a hub coder in one of these forms (the prefix keeps it apart from a local
path):
- `hf:OWNER/REPO`: a repo with one folder per hookpoint, as EleutherAI's sparsify repos are
  (`layers.15/cfg.json` + `sae.safetensors`): the coder's `hookpoint` picks the folder (`layers.15`,
  `layers.15.mlp`); a repo whose root holds the coder's files works too.
- `hf:OWNER/REPO/FOLDER`: the folder of the repo holding the coder, e.g. Gemma Scope's
  `hf:google/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71` (`params.npz`).
- `hf:OWNER/REPO@REVISION` or `hf:OWNER/REPO@REVISION/FOLDER`: at a branch, tag or commit.
- `saelens:RELEASE/SAE_ID`: an SAE of SAELens's table of pretrained SAEs, e.g.
  `saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical`; the table (in the
  `sae-lens` package, which autointerp does not depend on) gives the repo and the folder, and
  autointerp loads the files itself.

Only the coder's own files are fetched (never a repo's other folders, optimiser states or sparsity
files). The cache is huggingface_hub's (`HF_HOME`, `HF_HUB_CACHE`); with `HF_HUB_OFFLINE=1` a coder
already in the cache loads without the network, and one that is not fails with a message saying so.
"""

from __future__ import annotations

import difflib
import glob
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from autointerp.errors import CoderError

log = logging.getLogger(__name__)

HF = "hf:"
SAELENS = "saelens:"
SIDE_FILES = ("baseline.json",)  # read beside a coder's weights (see autointerp.coders.baseline)

# SAELens's `conversion_func` of a release -> the format autointerp reads its files as. None is
# SAELens's own layout (`cfg.json` + `sae_weights.safetensors`); `gemma_2` and `gemma_2_transcoder`
# are Gemma Scope's `params.npz` (sae_lens/loading/pretrained_sae_loaders.py,
# NAMED_PRETRAINED_SAE_LOADERS).
_CONVERSIONS: dict[str | None, str] = {
    None: "saelens",
    "sae_lens": "saelens",
    "sparsify": "sparsify",
    "gemma_2": "gemmascope",
    "gemma_2_transcoder": "gemmascope",
}
_LIST_LIMIT = 40


@dataclass(frozen=True)
class HubCoder:
    """Where a coder lives on the hub."""

    source: str
    """The coder's `path` as given (for messages)."""
    repo_id: str
    folder: str | None
    """The folder inside the repo; None: the hookpoint names it (or the repo's root holds the
    coder)."""
    revision: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """`cfg.json` keys the SAELens table sets for this SAE (its `config_overrides`, and
    `norm_scaling_factor` where it has one)."""


def is_hub_path(path: str | None) -> bool:
    return path is not None and path.startswith((HF, SAELENS))


def _check_parts(parts: list[str], source: str, form: str) -> None:
    if any(p in ("", ".", "..") for p in parts):
        raise CoderError(f"coder path {source!r} is not of the form {form}")


def parse_hf(source: str, file_names: Iterable[str] = ()) -> HubCoder:
    """`hf:OWNER/REPO[@REVISION][/FOLDER]`; a trailing coder file name (`.../params.npz`) is
    dropped."""
    form = "hf:OWNER/REPO[@REVISION][/FOLDER]"
    parts = source.removeprefix(HF).strip("/").split("/")
    _check_parts(parts, source, form)
    if len(parts) < 2:
        raise CoderError(f"coder path {source!r} is not of the form {form}")
    name, at, revision = parts[1].partition("@")
    if not name or (at and not revision):
        raise CoderError(f"coder path {source!r} is not of the form {form}")
    folder = parts[2:]
    if folder and folder[-1] in set(file_names):
        folder = folder[:-1]
    return HubCoder(source, f"{parts[0]}/{name}", "/".join(folder) or None, revision or None)


def _saelens_table() -> Any:
    """SAELens's module holding its table of pretrained SAEs: `sae_lens.loading.
    pretrained_saes_directory` (sae-lens 6), `sae_lens.toolkit.pretrained_saes_directory` before.
    Importing it imports sae_lens as a whole (seconds)."""
    import importlib

    try:
        importlib.import_module("sae_lens")
    except ModuleNotFoundError as e:
        if e.name == "sae_lens":
            raise ImportError("sae_lens is not installed") from None
        raise
    for name in (
        "sae_lens.loading.pretrained_saes_directory",
        "sae_lens.toolkit.pretrained_saes_directory",
    ):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not e.name or not name.startswith(e.name):  # a dependency of sae_lens is missing
                raise
    raise ImportError("sae_lens has no pretrained_saes_directory module")


def _closest(wanted: str, names: Sequence[str], n: int = 8) -> str:
    close = difflib.get_close_matches(wanted, names, n=n, cutoff=0.5)
    if len(names) <= _LIST_LIMIT:
        return ", ".join(names) or "none"
    shown = close or list(names[:n])
    return f"{len(names)} in all; {'closest' if close else 'e.g.'}: {', '.join(shown)}"


def parse_saelens(source: str, transcoder: bool) -> HubCoder:
    """Resolve `saelens:RELEASE/SAE_ID` through SAELens's table to the SAE's repo and folder."""
    release, _, sae_id = source.removeprefix(SAELENS).partition("/")
    if not release or not sae_id:
        raise CoderError(f"coder path {source!r} is not of the form saelens:RELEASE/SAE_ID")
    try:
        table = _saelens_table()
        directory = table.get_pretrained_saes_directory()
    except ImportError as e:
        raise CoderError(
            f"coder path {source!r} needs SAELens's table of pretrained SAEs, and sae_lens cannot "
            f"be imported ({e}). Install it (`pip install sae-lens`; autointerp reads only its "
            "table), or give the repo and folder directly: `path: hf:REPO_ID/FOLDER`, with the "
            "release's `repo_id` and the SAE's `path` from sae_lens/pretrained_saes.yaml"
        ) from None
    entry = directory.get(release)
    if entry is None:
        raise CoderError(
            f"SAELens has no release {release!r} (coder path {source!r}); releases: "
            + _closest(release, sorted(directory))
        )
    if sae_id not in entry.saes_map:
        raise CoderError(
            f"SAELens release {release!r} has no SAE {sae_id!r}; its SAE ids: "
            + _closest(sae_id, list(entry.saes_map))
        )
    conversion = entry.conversion_func
    if conversion not in _CONVERSIONS:
        raise CoderError(
            f"SAELens release {release!r} is stored in the {conversion!r} layout, which autointerp "
            "does not read (it reads SAELens's own layout, sparsify's and Gemma Scope's params.npz)"
        )
    if conversion == "gemma_2_transcoder" and not transcoder:
        raise CoderError(
            f"SAELens release {release!r} holds transcoders: set `transcoder: true` on the coder "
            "(and a hookpoint such as `layers.N.mlp`, whose input it reads)"
        )
    overrides = dict(getattr(entry, "config_overrides", None) or {})
    if kwargs := overrides.get("model_from_pretrained_kwargs"):
        log.warning(
            "SAELens release %s was trained on TransformerLens activations processed with %s; a "
            "transformers model's activations are not, so its latents may fire differently",
            release,
            kwargs,
        )
    scale = getattr(table, "get_norm_scaling_factor", lambda *_: None)(release, sae_id)
    if scale is not None:
        overrides["norm_scaling_factor"] = scale
    log.info(
        "SAELens %s/%s: %s, folder %s (trained on %s)",
        release,
        sae_id,
        entry.repo_id,
        entry.saes_map[sae_id],
        getattr(entry, "model", "?"),
    )
    return HubCoder(source, entry.repo_id, str(entry.saes_map[sae_id]), None, overrides)


def parse(source: str, transcoder: bool, file_names: Iterable[str]) -> HubCoder:
    if source.startswith(SAELENS):
        return parse_saelens(source, transcoder)
    return parse_hf(source, file_names)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def coder_folders(paths: Iterable[str], weight_names: Iterable[str]) -> list[str]:
    """The folders (relative to the repo, `.` for its root) holding a coder's weights file."""
    names = set(weight_names)
    found = {str(PurePosixPath(p).parent) for p in paths if PurePosixPath(p).name in names}
    return sorted(found, key=_natural)


def _download(src: HubCoder, patterns: list[str], wanted: str) -> Path:
    import huggingface_hub
    from huggingface_hub import constants, errors

    where = f"hub repo {src.repo_id}" + (f" (revision {src.revision})" if src.revision else "")
    log.info("fetching coder %s from %s (cache %s)", src.source, where, constants.HF_HUB_CACHE)
    try:
        return Path(
            huggingface_hub.snapshot_download(
                src.repo_id, revision=src.revision, allow_patterns=patterns
            )
        )
    except errors.RevisionNotFoundError:
        raise CoderError(f"{where} has no revision {src.revision!r} (coder {src.source})") from None
    except errors.RepositoryNotFoundError:
        raise CoderError(
            f"{where} not found, or it is private or gated and no accepted token was sent "
            f"(`hf auth login` or HF_TOKEN) (coder {src.source})"
        ) from None
    except errors.LocalEntryNotFoundError as e:
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else "the hub cannot be reached from here"
        )
        raise CoderError(
            f"coder {src.source}: {why}, and {where}, folder {wanted} is "
            f"not (completely) in the cache {constants.HF_HUB_CACHE}; download it where the hub "
            f"is reachable (same HF_HOME), or use a local folder ({e})"
        ) from None
    except Exception as e:  # the network's failures come in many types
        raise CoderError(
            f"coder {src.source}: download from {where} failed: {type(e).__name__}: {e}"
        ) from None


def _repo_files(src: HubCoder, snapshot: Path) -> tuple[list[str], bool]:
    """Every file of the repo from huggingface_hub's cached listing (written by the download);
    else the files of the local snapshot. Also whether the listing is the whole repo's."""
    import huggingface_hub

    try:
        tree = huggingface_hub.get_cached_repo_tree(src.repo_id, revision=src.revision)
        return [f.path for f in tree], True
    except Exception:  # no cached listing (offline, older huggingface_hub): what is on disk
        files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        return files, False


def _has(folder: Path, weight_names: Iterable[str]) -> bool:
    return any((folder / w).is_file() for w in weight_names)


def fetch(src: HubCoder, module: str, hookpoint: str, files: Sequence[Sequence[str]]) -> Path:
    """Download the coder's files and return the local folder holding them.

    `files`: the file names of each format (the last one of each holds the weights); `module`: the
    hookpoint's module, which names the folder when `src.folder` is None."""
    names = sorted({f for fmt in files for f in fmt} | set(SIDE_FILES))
    weights = [fmt[-1] for fmt in files]
    wanted = src.folder or module
    # exact paths, with the folder's glob characters escaped (allow_patterns are fnmatch patterns)
    patterns = [f"{glob.escape(wanted)}/{f}" for f in names] + ([] if src.folder else names)
    snapshot = _download(src, patterns, wanted)
    if _has(snapshot / wanted, weights):
        return snapshot / wanted
    if src.folder is None and _has(snapshot, weights):
        return snapshot
    paths, whole = _repo_files(src, snapshot)
    found = coder_folders(paths, weights)
    what = f"folder {wanted!r}" + ("" if src.folder else f" (hookpoint {hookpoint})")
    scope = "" if whole else " (of the files in the local cache; the hub's listing is not cached)"
    listing = _closest(wanted, found) if found else "none"
    raise CoderError(
        f"hub repo {src.repo_id} has no coder in {what} (coder {src.source}); folders with a "
        f"coder{scope}: {listing}"
    )
