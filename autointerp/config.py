"""Configuration of every stage as pydantic models, loadable from YAML.

Unknown keys are errors (`extra="forbid"`), so a typo in a config names the key instead of being ignored.
Field docstrings are the reference for each option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from autointerp.errors import ConfigError

EMBEDDED_MODEL = "smollm2"
EMBEDDED_CODER = "embedded"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Strict):
    source: str = "wiki"
    """Text source: `wiki` (bundled Wikipedia leads), a local .txt/.jsonl/.parquet file, a folder or glob
    of such files, or `hf:<dataset>` for a Hugging Face dataset (e.g. `hf:json` with `data_files`)."""
    text_field: str = "text"
    """Field or column holding the text in .jsonl, .parquet and Hugging Face sources."""
    hf_config: str | None = None
    """Hugging Face dataset configuration name."""
    split: str = "train"
    """Hugging Face dataset split."""
    data_files: list[str] | None = None
    """`data_files` passed to `datasets.load_dataset` (for the generic json/parquet/text builders)."""
    streaming: bool = True
    """Stream Hugging Face datasets instead of downloading them whole."""
    ctx_len: int = Field(256, ge=8)
    """Tokens per window (sequence) fed to the subject model."""
    n_tokens: int | None = Field(200_000, ge=1)
    """Stop after this many tokens (rounded down to whole windows); None reads the whole source."""
    bos: Literal["auto", "always", "never"] = "auto"
    """Start every window with the BOS token: `auto` does so when the tokenizer adds BOS itself."""
    doc_separator: Literal["eos", "none"] = "eos"
    """Token placed between concatenated documents."""
    shuffle_seed: int | None = 0
    """Shuffle the documents of in-memory sources (wiki, local files) with this seed; None keeps order."""


class SubjectConfig(_Strict):
    model: str = EMBEDDED_MODEL
    """`smollm2` (the packaged SmolLM2-135M-Instruct), a model folder, a hub id, or a .gguf file."""
    gguf_file: str | None = None
    """GGUF file name inside `model` when `model` is a folder or hub id holding GGUF files."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Compute dtype. `auto`: bfloat16 where the device computes it natively (a CPU with avx512_bf16
    or amx_bf16, a CUDA GPU of compute capability 8.0+), else float32 (bf16 runs several times slower
    than fp32 on a CPU without it). Caches record the dtype `auto` chose."""
    device: str = "auto"
    """Torch device of the subject model: `auto` (the first CUDA GPU when present, else the CPU),
    `cpu`, `cuda`, `cuda:1`, ..."""


class CoderConfig(_Strict):
    hookpoint: str = "layers.15"
    """Module name (relative to the base model, e.g. `layers.15`, `layers.15.mlp`) whose output is
    encoded; append `:input` to encode the module's input instead. Transcoders read the input."""
    format: Literal["auto", "sparsify", "saelens", "gemmascope", "neurons"] = "auto"
    """On-disk layout; `auto` detects it from the files in `path`."""
    path: str | None = EMBEDDED_CODER
    """Folder of the coder (or `params.npz` for Gemma Scope); `embedded` is the project's own TopK SAE
    for SmolLM2 layer 15; or on the Hugging Face hub: `hf:OWNER/REPO` (one folder per hookpoint, as
    EleutherAI's sparsify repos: `hookpoint` picks the folder), `hf:OWNER/REPO/FOLDER` (e.g. Gemma
    Scope's `hf:google/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71`), `@REVISION` after
    REPO, or `saelens:RELEASE/SAE_ID` (SAELens's pretrained table; needs `pip install sae-lens`).
    Hub files go to huggingface_hub's cache (HF_HOME); HF_HUB_OFFLINE=1 uses only the cache.
    Unused for `neurons`."""
    transcoder: bool = False
    """The coder reads the module's input and reconstructs its output (sparsify sets this itself)."""
    k: int = Field(32, ge=1)
    """Top-k for `neurons`: keep each token's k largest positive activations."""
    name: str | None = None
    """Name of the coder in the cache and reports; defaults to the hookpoint."""

    @model_validator(mode="after")
    def _check(self) -> CoderConfig:
        if self.format != "neurons" and not self.path:
            raise ValueError("`path` is required for every format except `neurons`")
        name = self.name or self.hookpoint
        if not re.fullmatch(r"[\w.:\-]+", name):
            raise ValueError(
                f"coder name {name!r} may hold only letters, digits and . : _ - (it names a folder)"
            )
        return self


class CacheConfig(_Strict):
    subject: SubjectConfig = SubjectConfig()
    corpus: CorpusConfig = CorpusConfig()
    coders: list[CoderConfig] = Field(default_factory=lambda: [CoderConfig()], min_length=1)
    batch_size: int = Field(16, ge=1)
    """Sequences per forward pass."""
    shard_tokens: int = Field(65_536, ge=256, le=65_536)
    """Tokens per shard (at most 65,536 so that a token's offset in its shard fits 16 bits)."""
    baseline: Literal["random-model", "random-coder"] | None = None
    """A baseline to compare trained results with (Heap et al., 2025): `random-model` re-initialises
    the subject's weights (its architecture's own init, same tokenizer); `random-coder` replaces
    each coder by one of the same shape with random weights. None: the trained model and coders."""
    baseline_seed: int = 0
    """Seed of the baseline's random weights."""

    @property
    def random_model_seed(self) -> int | None:
        """The seed of the re-initialised subject under `baseline: random-model`, else None."""
        return self.baseline_seed if self.baseline == "random-model" else None


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into `model`, with errors that name the file and the offending key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds {type(data).__name__}, not a mapping of options")
    return validate(data, model, source=str(path))


def validate(data: dict, model: type[M], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None


def as_config(
    value: str | Path | dict | BaseModel | None, model: type[M], section: str | None = None
) -> M:
    """A config from what a Python caller has at hand: None (the defaults), a YAML path, a dict
    (as the YAML would hold it), or a config object already built: returned as is, or, when it is
    another config class, its `section` when that is a `model` (a run config's `sample`), else the
    sections `model` has (a `RunConfig` where a stage's config is wanted)."""
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    if section is not None and isinstance(getattr(value, section, None), model):
        return getattr(value, section)  # the section of a stage or run config
    if isinstance(value, BaseModel):
        data = {k: v for k, v in value.model_dump().items() if k in model.model_fields}
        return validate(data, model, source=type(value).__name__)
    if isinstance(value, dict):
        return validate(value, model)
    if isinstance(value, str | Path):
        return load_yaml(value, model)
    raise ConfigError(
        f"a config is a YAML path, a dict or a {model.__name__}, not {type(value).__name__}"
    )


class ClientConfig(_Strict):
    backend: Literal["transformers", "llamacpp", "openai", "vllm"] = "transformers"
    """`transformers` (a local model; the default runs on the CPU), `llamacpp` (a GGUF model run by
    llama.cpp in this process: the fastest on a CPU), `openai` (any OpenAI-compatible server: vLLM,
    llama.cpp, OpenAI, OpenRouter) or `vllm` (vLLM's offline engine, prefix caching)."""
    model: str = EMBEDDED_MODEL
    """Model name: a local model spec for `transformers`, the server's model id for `openai`."""
    base_url: str | None = None
    """Server URL for `openai`, e.g. http://127.0.0.1:8000/v1 (None: OpenAI's API)."""
    base_urls: list[str] | None = None
    """Several servers of the same model (`openai`): Ray worker i talks to base_urls[i % n]; a run
    without Ray uses the first."""
    api_key: SecretStr | None = None
    """API key; prefer `api_key_env`. Never written to any file or log."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (read when the client is built)."""
    max_concurrency: int = Field(32, ge=1)
    """Requests in flight at once (`openai`)."""
    timeout: float = Field(120.0, gt=0)
    """Seconds before a request is abandoned and retried (`openai`)."""
    max_retries: int = Field(6, ge=0)
    batch_size: int = Field(8, ge=1)
    """Chats generated together (`transformers`)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Compute dtype (`transformers`, `vllm`). `auto`: for `transformers` as `subject.dtype` (bf16
    where the device has it natively, else fp32); for `vllm`, vLLM's own choice from the model."""
    device: str = "auto"
    """Torch device of the `transformers` backend: `auto` (CUDA when present, else the CPU), `cpu`,
    `cuda`, `cuda:1`, ..."""
    n_ctx: int = Field(4096, ge=256)
    """Context length llama.cpp reserves (`llamacpp`)."""
    threads: int | None = Field(None, ge=1)
    """CPU threads of llama.cpp (`llamacpp`); None: the cores not already busy (load average)."""
    max_model_len: int = Field(4096, ge=256)
    """Context length the vLLM engine reserves (`vllm`)."""
    enforce_eager: bool = False
    """Skip vLLM's graph compilation: faster start, slower generation (`vllm`)."""
    kv_cache_memory_bytes: int | None = None
    """KV-cache size for vLLM (on CPUs, e.g. 1073741824; else vLLM's default) (`vllm`)."""
    response_cache: bool = True
    """Keep answers on disk so that a re-run of a finished stage costs no LLM calls."""
