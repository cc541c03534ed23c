"""Loaders for each on-disk format, with checks that name the file and the numbers.

A coder's `path` is a local folder (or file), `embedded`, or a hub coder (`hf:...`, `saelens:...`,
fetched into the local cache by `autointerp.coders.hub`); each format's loader then reads a
folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from autointerp.coders import hub
from autointerp.coders.base import SparseCoder
from autointerp.coders.baseline import check_trained_for, random_coder
from autointerp.config import EMBEDDED_CODER, CoderConfig
from autointerp.errors import CoderError
from autointerp.paths import tree_fingerprint
from autointerp.subject import Site

_FILES = {
    "sparsify": ("cfg.json", "sae.safetensors"),
    "saelens": ("cfg.json", "sae_weights.safetensors"),
    "gemmascope": ("params.npz",),
}


# Lower-case names some Gemma Scope files use, as SAELens's gemma_2 loaders rename them
# (sae_lens/loading/pretrained_sae_loaders.py).
_GEMMA_KEYS = {"w_enc": "W_enc", "w_dec": "W_dec"}


def embedded_coder_path() -> Path:
    """The project's own TopK SAE for SmolLM2-135M layer 15 (sparsify layout), shipped in the package."""
    return Path(__file__).resolve().parent.parent / "data" / "smollm2-135m-layers.15-topk"


def _folder(cfg: CoderConfig) -> Path:
    if cfg.path == EMBEDDED_CODER:
        path = embedded_coder_path()
        if not (path / "sae.safetensors").exists():
            raise CoderError(
                f"the embedded coder is missing from {path}; make it with `autointerp train-sae`"
            )
        return path
    path = Path(cfg.path or "")
    if path.is_file():
        return path.parent
    if not path.exists():
        hint = ""
        if re.fullmatch(r"[\w.\-]+/[\w.\-]+(/.*)?", str(cfg.path)):
            hint = f" (a hub repo is written `hf:{cfg.path}`)"
        raise CoderError(f"coder path not found: {path}{hint}")
    # A sparsify checkpoint folder holds one subfolder per hookpoint.
    module = Site.parse(cfg.hookpoint).module
    sub = path / module
    if sub.is_dir():
        return sub
    weights = [f[-1] for f in _FILES.values()]
    if not any((path / w).exists() for w in weights):
        inner = [p.relative_to(path).as_posix() for p in path.glob("*/*")]
        if found := hub.coder_folders(inner, weights):
            raise CoderError(
                f"{path} has no folder {module!r} for hookpoint {cfg.hookpoint}; it holds one "
                f"folder per hookpoint: {', '.join(found)}"
            )
    return path


def _locate(cfg: CoderConfig) -> tuple[Path, dict]:
    """The local folder of the coder's files (downloading a hub coder), and the `cfg.json` keys a
    SAELens release sets for it."""
    if not hub.is_hub_path(cfg.path):
        return _folder(cfg), {}
    source = hub.parse(str(cfg.path), cfg.transcoder, {f for fs in _FILES.values() for f in fs})
    module = Site.parse(cfg.hookpoint).module
    return hub.fetch(source, module, cfg.hookpoint, list(_FILES.values())), source.overrides


def detect_format(folder: Path) -> str:
    for fmt, files in _FILES.items():
        if all((folder / f).exists() for f in files):
            return fmt
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CoderError(
        f"no sparse coder found in {folder} (files: {', '.join(present) or 'none'}); expected "
        + " or ".join(" + ".join(f) for f in _FILES.values())
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CoderError(f"coder config missing: {path}") from None
    except json.JSONDecodeError as e:
        raise CoderError(f"coder config {path} is not valid JSON: {e}") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CoderError(f"coder weights missing: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CoderError(f"coder weights {path} are corrupt or unreadable: {e}") from None


def _need(tensors: dict, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise CoderError(
            f"{path} lacks tensor(s) {', '.join(missing)} (has: {', '.join(sorted(tensors))})"
        )


def _shape(t: torch.Tensor, shape: tuple[int, ...], what: str, path: Path) -> None:
    if tuple(t.shape) != shape:
        raise CoderError(f"{path}: {what} has shape {tuple(t.shape)}, expected {shape}")


def _load_sparsify(cfg: CoderConfig, folder: Path, name: str, overrides: dict) -> SparseCoder:
    meta = {**_read_json(folder / "cfg.json"), **overrides}
    path = folder / "sae.safetensors"
    w = _read_tensors(path)
    _need(w, ("encoder.weight", "encoder.bias", "b_dec"), path)
    n, d = w["encoder.weight"].shape
    if "d_in" in meta and meta["d_in"] != d:
        raise CoderError(
            f"{folder}/cfg.json says d_in={meta['d_in']} but the encoder has width {d}"
        )
    if meta.get("activation", "topk") != "topk":
        raise CoderError(
            f"{folder}: sparsify activation {meta['activation']!r} is not supported (only topk)"
        )
    transcoder = bool(meta.get("transcode", False)) or cfg.transcoder
    _shape(w["encoder.bias"], (n,), "encoder.bias", path)
    return SparseCoder(
        name=name,
        site=Site.parse(cfg.hookpoint, transcoder),
        kind="sparsify",
        activation="topk",
        d_in=d,
        n_latents=n,
        fingerprint=tree_fingerprint([folder / "cfg.json", path]),
        W_enc=w["encoder.weight"],
        b_enc=w["encoder.bias"],
        input_bias=None if transcoder else w["b_dec"],
        k=int(meta.get("k", 32)),
        W_dec=w.get("W_dec"),
        b_dec=w["b_dec"],
        transcoder=transcoder,
    )


def _saelens_activation(meta: dict, folder: Path) -> tuple[str, int | None]:
    arch = meta.get("architecture") or "standard"
    fn = meta.get("activation_fn") or meta.get("activation_fn_str") or "relu"
    kwargs = meta.get("activation_fn_kwargs") or {}
    if arch == "topk" or fn == "topk":
        k = meta.get("k") or kwargs.get("k")
        if not k:
            raise CoderError(f"{folder}/cfg.json: TopK SAE without k")
        return "topk", int(k)
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "standard" and fn == "relu":
        return "relu", None
    raise CoderError(
        f"{folder}/cfg.json: SAELens architecture {arch!r} / activation {fn!r} is not supported"
    )


def _norm_scale(meta: dict, folder: Path) -> float:
    """The factor SAELens folds into an SAE trained on activations scaled to a fixed mean norm
    (`normalize_activations: expected_average_only_in`): its table's `norm_scaling_factor`,
    as `SAE.fold_activation_norm_scaling_factor` does (sae_lens/saes/sae.py); 1 when unscaled."""
    norm = meta.get("normalize_activations")
    if norm is True:  # written by SAELens before 6.0 (sae_lens handle_pre_6_0_config)
        norm = "expected_average_only_in"
    if norm in (False, None, "", "none"):
        return 1.0
    if norm == "expected_average_only_in" and meta.get("norm_scaling_factor"):
        return float(meta["norm_scaling_factor"])
    why = " without a norm_scaling_factor" if norm == "expected_average_only_in" else ""
    raise CoderError(f"{folder}/cfg.json: normalize_activations={norm!r}{why} is not supported")


def _load_saelens(cfg: CoderConfig, folder: Path, name: str, overrides: dict) -> SparseCoder:
    meta = {**_read_json(folder / "cfg.json"), **overrides}
    path = folder / "sae_weights.safetensors"
    w = _read_tensors(path)
    _need(w, ("W_enc", "b_enc", "W_dec", "b_dec"), path)
    scale = _norm_scale(meta, folder)
    if scale != 1.0:  # the SAE then reads x * scale: fold it into the weights (in place)
        w["W_enc"].mul_(scale)
        w["W_dec"].div_(scale)
        w["b_dec"].div_(scale)
    activation, k = _saelens_activation(meta, folder)
    d, n = w["W_enc"].shape
    for key in ("d_in", "d_sae"):
        want = d if key == "d_in" else n
        if key in meta and meta[key] != want:
            raise CoderError(
                f"{folder}/cfg.json says {key}={meta[key]} but W_enc has shape {(d, n)}"
            )
    _shape(w["b_enc"], (n,), "b_enc", path)
    threshold = None
    if activation == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"]
        elif "log_threshold" in w:
            threshold = w["log_threshold"].exp()
        else:
            raise CoderError(f"{path}: JumpReLU SAE without threshold")
        _shape(threshold, (n,), "threshold", path)
    apply_b_dec = meta.get("apply_b_dec_to_input", activation != "jumprelu")
    return SparseCoder(
        name=name,
        site=Site.parse(cfg.hookpoint, cfg.transcoder),
        kind="saelens",
        activation=activation,
        d_in=d,
        n_latents=n,
        fingerprint=tree_fingerprint([folder / "cfg.json", path])
        + ("" if scale == 1.0 else f"-x{scale:.6g}"),
        W_enc=w["W_enc"].T.contiguous(),
        b_enc=w["b_enc"],
        input_bias=w["b_dec"] if apply_b_dec and not cfg.transcoder else None,
        threshold=threshold,
        k=k,
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        transcoder=cfg.transcoder,
    )


def _load_gemmascope(cfg: CoderConfig, folder: Path, name: str, overrides: dict) -> SparseCoder:
    given = Path(cfg.path or "")
    path = given if not hub.is_hub_path(cfg.path) and given.is_file() else folder / "params.npz"
    try:
        with np.load(path) as z:
            w = {
                _GEMMA_KEYS.get(k, k): torch.from_numpy(np.asarray(z[k], dtype=np.float32))
                for k in z.files
            }
    except FileNotFoundError:
        raise CoderError(f"coder weights missing: {path}") from None
    except Exception as e:
        raise CoderError(f"coder weights {path} are corrupt or unreadable: {e}") from None
    _need(w, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), path)
    d, n = w["W_enc"].shape
    _shape(w["threshold"], (n,), "threshold", path)
    _shape(w["W_dec"], (n, w["W_dec"].shape[1]), "W_dec", path)
    return SparseCoder(
        name=name,
        site=Site.parse(cfg.hookpoint, cfg.transcoder),
        kind="gemmascope",
        activation="jumprelu",
        d_in=d,
        n_latents=n,
        fingerprint=tree_fingerprint([path]),
        W_enc=w["W_enc"].T.contiguous(),
        b_enc=w["b_enc"],
        threshold=w["threshold"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        transcoder=cfg.transcoder,
    )


def load_coder(
    cfg: CoderConfig, width: int | None = None, baseline: str | None = None, seed: int = 0
) -> SparseCoder:
    """Load a coder; `width` (the hookpoint's width, for neurons) is required for `neurons`.

    `baseline`, `seed`: the cache config's `baseline` and `baseline_seed` (see
    `autointerp.coders.baseline`): `random-coder` returns a coder of the same shape with random
    weights (refused for `neurons`); `random-model` refuses a coder not trained on that random
    model; without a baseline, a coder trained on a random model is refused."""
    name = cfg.name or cfg.hookpoint
    if cfg.format == "neurons" and baseline == "random-coder":
        raise CoderError(
            f"coder {name!r} is a `neurons` coder: it has no weights to randomise under "
            "`baseline: random-coder` (use `baseline: random-model` for neurons)"
        )
    if cfg.format == "neurons":
        if width is None:
            raise CoderError("the neurons coder needs the hookpoint width")
        return SparseCoder(
            name=name,
            site=Site.parse(cfg.hookpoint, cfg.transcoder),
            kind="neurons",
            activation="identity_topk",
            d_in=width,
            n_latents=width,
            fingerprint=f"neurons-k{cfg.k}",
            k=cfg.k,
        )
    folder, overrides = _locate(cfg)
    fmt = detect_format(folder) if cfg.format == "auto" else cfg.format
    loader = {"sparsify": _load_sparsify, "saelens": _load_saelens, "gemmascope": _load_gemmascope}[
        fmt
    ]
    coder = loader(cfg, folder, name, overrides)
    if baseline == "random-coder":
        return random_coder(coder, seed)
    what = "the embedded SAE, made for the trained model" if cfg.path == EMBEDDED_CODER else fmt
    check_trained_for(name, folder, seed if baseline == "random-model" else None, what)
    return coder
