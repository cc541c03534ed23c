"""Coders where users keep them (`hf:` repos, Gemma Scope folders, `saelens:` releases), without a
network: local folders laid out as the hub repos are stand in for the hub, and the real loading code
reads them.

- `fake_hub` replaces `huggingface_hub.snapshot_download` by one that serves those folders, keeping
  only the files `allow_patterns` select (huggingface_hub's own `filter_repo_objects` matches them),
  and `get_cached_repo_tree` by their listing.
- `test_offline_cache_*` run the real `snapshot_download` with `HF_HUB_OFFLINE` on a cache folder
  laid out as huggingface_hub lays out HF_HUB_CACHE (`models--OWNER--REPO/refs/main`,
  `snapshots/<commit>/...`).
- `fake_sae_lens` stands in for the `sae-lens` package: the module
  `sae_lens.loading.pretrained_saes_directory` with `get_pretrained_saes_directory()` returning
  `{release: PretrainedSAELookup}` and `get_norm_scaling_factor(release, sae_id)`, shaped as in
  sae_lens/loading/pretrained_saes_directory.py (sae-lens 6.54.12 on PyPI; jbloomAus/SAELens
  6.18.0 has the same fields less `norm_scaling_factor`).
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import D_MODEL, write_gemmascope, write_saelens, write_sparsify
from huggingface_hub import constants, errors
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file, save_file

from autointerp.coders import load_coder
from autointerp.coders.hub import parse_hf
from autointerp.config import CoderConfig
from autointerp.errors import CoderError

X = torch.randn(12, D_MODEL, generator=torch.Generator().manual_seed(7))

SPARSIFY_REPO = "EleutherAI/sae-smollm2-135m-test"
SAELENS_REPO = "jbloom/SmolLM2-135M-res-test"
GEMMA_SCOPE_REPO = "google/gemma-scope-test-res"
GS_FOLDER = "layer_15/width_16k/average_l0_71"


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _sparsify_repo(root: Path) -> Path:
    """As EleutherAI's sparsify repos: one folder per hookpoint, the training config at the root
    (sparsify's Trainer._checkpoint also leaves its training state there)."""
    for i, hook in enumerate(("layers.3", "layers.15", "layers.15.mlp")):
        write_sparsify(root / hook, seed=i, transcode=hook.endswith(".mlp"))
    (root / "config.json").write_text(json.dumps({"hookpoints": ["layers.3", "layers.15"]}))
    (root / "state.pt").write_bytes(b"not for autointerp")
    return root


def _saelens_repo(root: Path) -> Path:
    """As SAELens's repos: one folder per SAE with cfg.json, sae_weights.safetensors and
    sparsity.safetensors (sae_lens/constants.py names them)."""
    for arch, hook in (
        ("standard", "blocks.15.hook_resid_post"),
        ("topk", "blocks.3.hook_resid_post"),
    ):
        folder = write_saelens(root / hook, arch)
        save_file({"sparsity": torch.zeros(192)}, folder / "sparsity.safetensors")
    return root


def _gemma_scope_repo(root: Path) -> Path:
    """As Gemma Scope's repos: layer_N/width_W/average_l0_L/params.npz."""
    for i, folder in enumerate(
        (GS_FOLDER, "layer_15/width_16k/average_l0_20", "layer_3/width_16k/average_l0_50")
    ):
        write_gemmascope(root / folder, seed=i)
    return root


@dataclass
class FakeHub:
    root: Path
    repos: dict[str, Path] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "revision": revision, "patterns": allow_patterns})
        if repo_id not in self.repos:
            err = errors.RepositoryNotFoundError.__new__(errors.RepositoryNotFoundError)
            Exception.__init__(err, f"404 Client Error: Repository Not Found for {repo_id}")
            raise err
        remote = self.repos[repo_id]
        snapshot = self.root / repo_id.replace("/", "--") / "snapshots" / (revision or "main")
        for name in filter_repo_objects(_files(remote), allow_patterns=allow_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(remote / name, snapshot / name)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)

    def get_cached_repo_tree(self, repo_id, *, revision=None, **kwargs):
        return [types.SimpleNamespace(path=p) for p in _files(self.repos[repo_id])]

    def fetched(self, repo_id: str, revision: str = "main") -> list[str]:
        return _files(self.root / repo_id.replace("/", "--") / "snapshots" / revision)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    hub = FakeHub(tmp_path / "hf-cache")
    hub.repos = {
        SPARSIFY_REPO: _sparsify_repo(tmp_path / "remote" / "sparsify"),
        SAELENS_REPO: _saelens_repo(tmp_path / "remote" / "saelens"),
        GEMMA_SCOPE_REPO: _gemma_scope_repo(tmp_path / "remote" / "gemma-scope"),
    }
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "get_cached_repo_tree", hub.get_cached_repo_tree)
    return hub


def _same(a, b) -> None:
    assert (a.kind, a.activation, a.k, a.n_latents, a.transcoder, str(a.site)) == (
        b.kind,
        b.activation,
        b.k,
        b.n_latents,
        b.transcoder,
        str(b.site),
    )
    assert a.fingerprint == b.fingerprint
    for x, y in zip(a.encode(X), b.encode(X), strict=True):
        torch.testing.assert_close(x, y)


# ------------------------------------------------------------------------------------------------
# hf: repos with one folder per hookpoint (sparsify)


def test_hf_repo_hookpoint_picks_the_folder(fake_hub):
    remote = fake_hub.repos[SPARSIFY_REPO]
    coder = load_coder(CoderConfig(path=f"hf:{SPARSIFY_REPO}", hookpoint="layers.15"))
    _same(coder, load_coder(CoderConfig(path=str(remote / "layers.15"), hookpoint="layers.15")))
    assert coder.kind == "sparsify" and not coder.transcoder
    # only that folder's coder files were fetched: not the other hookpoints, not the training state
    assert fake_hub.fetched(SPARSIFY_REPO) == ["layers.15/cfg.json", "layers.15/sae.safetensors"]
    assert fake_hub.calls[-1]["revision"] is None

    tc = load_coder(CoderConfig(path=f"hf:{SPARSIFY_REPO}", hookpoint="layers.15.mlp"))
    assert tc.transcoder and str(tc.site) == "layers.15.mlp:input"
    _same(
        tc, load_coder(CoderConfig(path=str(remote / "layers.15.mlp"), hookpoint="layers.15.mlp"))
    )
    assert "layers.15.mlp/sae.safetensors" in fake_hub.fetched(SPARSIFY_REPO)
    assert "layers.3/sae.safetensors" not in fake_hub.fetched(SPARSIFY_REPO)


def test_hf_repo_missing_hookpoint_lists_the_folders(fake_hub):
    with pytest.raises(CoderError) as e:
        load_coder(CoderConfig(path=f"hf:{SPARSIFY_REPO}", hookpoint="layers.7"))
    msg = str(e.value)
    assert f"hub repo {SPARSIFY_REPO} has no coder in folder 'layers.7' (hookpoint layers.7)" in msg
    assert msg.endswith("folders with a coder: layers.3, layers.15, layers.15.mlp")


def test_hf_revision_and_repo_root(fake_hub, tmp_path):
    fake_hub.repos["acme/one-sae"] = write_saelens(tmp_path / "remote" / "one", "jumprelu")
    coder = load_coder(CoderConfig(path="hf:acme/one-sae@v1.0", hookpoint="layers.15"))
    assert coder.kind == "saelens" and coder.activation == "jumprelu"
    assert fake_hub.calls[-1]["revision"] == "v1.0"
    assert fake_hub.fetched("acme/one-sae", "v1.0") == ["cfg.json", "sae_weights.safetensors"]


def test_hf_repo_not_found(fake_hub):
    with pytest.raises(
        CoderError, match=r"hub repo acme/nothing not found, or it is private or gated"
    ):
        load_coder(CoderConfig(path="hf:acme/nothing"))


@pytest.mark.parametrize(
    "path", ["hf:acme", "hf:/x", "hf:acme/repo@", "hf:acme/repo/../other", "hf:acme//x"]
)
def test_hf_malformed_paths(path):
    with pytest.raises(CoderError, match=r"not of the form hf:OWNER/REPO\[@REVISION\]\[/FOLDER\]"):
        parse_hf(path)


def test_bare_repo_id_is_a_local_path_with_a_hint():
    with pytest.raises(
        CoderError,
        match=r"coder path not found: EleutherAI/sae-x \(a hub repo is written `hf:EleutherAI/sae-x`\)",
    ):
        load_coder(CoderConfig(path="EleutherAI/sae-x"))


def test_local_checkpoint_missing_hookpoint_lists_the_folders(tmp_path):
    root = _sparsify_repo(tmp_path / "ckpt")
    with pytest.raises(
        CoderError,
        match=r"has no folder 'layers.9' for hookpoint layers.9; it holds one folder per hookpoint: layers.3, layers.15, layers.15.mlp",
    ):
        load_coder(CoderConfig(path=str(root), hookpoint="layers.9"))


# ------------------------------------------------------------------------------------------------
# Gemma Scope: repo + path of the folder holding params.npz


@pytest.mark.parametrize("suffix", ["", "/params.npz"])
def test_gemma_scope_folder(fake_hub, suffix):
    coder = load_coder(
        CoderConfig(path=f"hf:{GEMMA_SCOPE_REPO}/{GS_FOLDER}{suffix}", hookpoint="layers.15")
    )
    local = fake_hub.repos[GEMMA_SCOPE_REPO] / GS_FOLDER / "params.npz"
    _same(coder, load_coder(CoderConfig(path=str(local), hookpoint="layers.15")))
    assert coder.kind == "gemmascope" and coder.n_latents == 160
    assert fake_hub.fetched(GEMMA_SCOPE_REPO) == [f"{GS_FOLDER}/params.npz"]


def test_gemma_scope_missing_folder_names_the_closest(fake_hub):
    with pytest.raises(CoderError) as e:
        load_coder(CoderConfig(path=f"hf:{GEMMA_SCOPE_REPO}/layer_15/width_16k/average_l0_70"))
    msg = str(e.value)
    assert (
        f"hub repo {GEMMA_SCOPE_REPO} has no coder in folder 'layer_15/width_16k/average_l0_70'"
        in msg
    )
    assert "layer_3/width_16k/average_l0_50, layer_15/width_16k/average_l0_20, " in msg
    assert GS_FOLDER in msg


# ------------------------------------------------------------------------------------------------
# The real snapshot_download, offline, on a cache laid out as huggingface_hub's


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    storage = cache / f"models--{SPARSIFY_REPO.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _sparsify_repo(storage / "snapshots" / commit)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return storage / "snapshots" / commit


def test_offline_cache_loads_without_network(offline_cache):
    coder = load_coder(CoderConfig(path=f"hf:{SPARSIFY_REPO}", hookpoint="layers.15"))
    _same(
        coder, load_coder(CoderConfig(path=str(offline_cache / "layers.15"), hookpoint="layers.15"))
    )


def test_offline_cache_missing_hookpoint_and_missing_repo(offline_cache):
    with pytest.raises(
        CoderError,
        match=r"no coder in folder 'layers.8' .*\(of the files in the local cache; the hub's listing is not cached\): layers.3, layers.15, layers.15.mlp",
    ):
        load_coder(CoderConfig(path=f"hf:{SPARSIFY_REPO}", hookpoint="layers.8"))
    with pytest.raises(
        CoderError,
        match=r"HF_HUB_OFFLINE is set, and hub repo acme/elsewhere, folder layers.15 is not \(completely\) in the cache",
    ):
        load_coder(CoderConfig(path="hf:acme/elsewhere"))


# ------------------------------------------------------------------------------------------------
# saelens:RELEASE/SAE_ID through SAELens's table


@dataclass
class PretrainedSAELookup:  # sae_lens/loading/pretrained_saes_directory.py, field for field
    release: str
    repo_id: str
    model: str
    conversion_func: str | None
    saes_map: dict[str, str]
    expected_var_explained: dict[str, float]
    expected_l0: dict[str, float]
    neuronpedia_id: dict[str, str]
    config_overrides: dict | None
    norm_scaling_factor: dict[str, float]


def _lookup(release, repo_id, conversion, saes_map, overrides=None, scales=None):
    return PretrainedSAELookup(
        release=release,
        repo_id=repo_id,
        model="smollm2-135m",
        conversion_func=conversion,
        saes_map=saes_map,
        expected_var_explained=dict.fromkeys(saes_map, 1.0),
        expected_l0=dict.fromkeys(saes_map, 0.0),
        neuronpedia_id=dict.fromkeys(saes_map),
        config_overrides=overrides,
        norm_scaling_factor=scales or {},
    )


TABLE = {
    "smollm2-res-test": _lookup(
        "smollm2-res-test",
        SAELENS_REPO,
        None,
        {
            "blocks.15.hook_resid_post": "blocks.15.hook_resid_post",
            "blocks.3.hook_resid_post": "blocks.3.hook_resid_post",
        },
        {"dataset_path": "Skylion007/openwebtext"},
    ),
    "gemma-scope-test-res-canonical": _lookup(
        "gemma-scope-test-res-canonical",
        GEMMA_SCOPE_REPO,
        "gemma_2",
        {"layer_15/width_16k/canonical": GS_FOLDER},
    ),
    "llama-scope-test": _lookup("llama-scope-test", "fnlp/x", "llama_scope", {"l0r_8x": "L0R-8x"}),
    "gemma-scope-test-transcoders": _lookup(
        "gemma-scope-test-transcoders",
        GEMMA_SCOPE_REPO,
        "gemma_2_transcoder",
        {"layer_15": GS_FOLDER},
    ),
}


@pytest.fixture
def fake_sae_lens(monkeypatch) -> dict:
    """The three modules `import sae_lens.loading.pretrained_saes_directory` needs, the last with
    the two functions autointerp reads."""
    table = dict(TABLE)
    module = types.ModuleType("sae_lens.loading.pretrained_saes_directory")
    module.PretrainedSAELookup = PretrainedSAELookup
    module.get_pretrained_saes_directory = lambda: table
    module.get_norm_scaling_factor = lambda release, sae_id: (
        table[release].norm_scaling_factor.get(sae_id) if release in table else None
    )
    for name in ("sae_lens", "sae_lens.loading"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return table


def test_saelens_release_resolves_to_repo_and_folder(fake_hub, fake_sae_lens):
    coder = load_coder(
        CoderConfig(
            path="saelens:smollm2-res-test/blocks.15.hook_resid_post", hookpoint="layers.15"
        )
    )
    local = fake_hub.repos[SAELENS_REPO] / "blocks.15.hook_resid_post"
    _same(coder, load_coder(CoderConfig(path=str(local), hookpoint="layers.15")))
    assert fake_hub.calls[-1]["repo_id"] == SAELENS_REPO
    assert fake_hub.fetched(SAELENS_REPO) == [
        "blocks.15.hook_resid_post/cfg.json",
        "blocks.15.hook_resid_post/sae_weights.safetensors",
    ]  # not sparsity.safetensors, not the other SAE
    topk = load_coder(
        CoderConfig(path="saelens:smollm2-res-test/blocks.3.hook_resid_post", hookpoint="layers.3")
    )
    assert topk.activation == "topk" and topk.k == 16


def test_saelens_gemma_scope_canonical_id(fake_hub, fake_sae_lens):
    coder = load_coder(
        CoderConfig(path="saelens:gemma-scope-test-res-canonical/layer_15/width_16k/canonical")
    )
    local = fake_hub.repos[GEMMA_SCOPE_REPO] / GS_FOLDER / "params.npz"
    _same(coder, load_coder(CoderConfig(path=str(local))))
    assert fake_hub.fetched(GEMMA_SCOPE_REPO) == [f"{GS_FOLDER}/params.npz"]


def test_saelens_norm_scaling_factor_is_folded(fake_hub, fake_sae_lens):
    """An SAE trained on activations times f (`normalize_activations: expected_average_only_in`)
    encodes x as the raw SAE encodes x * f, as SAELens's `fold_activation_norm_scaling_factor`."""
    folder = fake_hub.repos[SAELENS_REPO] / "blocks.15.hook_resid_post"
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(
        json.dumps({**cfg, "normalize_activations": "expected_average_only_in"})
    )
    fake_sae_lens["smollm2-res-test"].norm_scaling_factor["blocks.15.hook_resid_post"] = 0.25
    coder = load_coder(CoderConfig(path="saelens:smollm2-res-test/blocks.15.hook_resid_post"))
    w = load_file(folder / "sae_weights.safetensors")
    ref = torch.relu((X * 0.25 - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    v, i = coder.encode(X)
    torch.testing.assert_close(torch.zeros_like(ref).scatter_(1, i, v), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(
        CoderError, match="expected_average_only_in' without a norm_scaling_factor is not supported"
    ):
        load_coder(CoderConfig(path=str(folder)))  # the same files, local: no factor known


def test_saelens_config_overrides_apply(fake_hub, fake_sae_lens):
    fake_sae_lens["smollm2-res-test"].config_overrides = {
        "normalize_activations": "constant_norm_rescale"
    }
    with pytest.raises(
        CoderError, match="normalize_activations='constant_norm_rescale' is not supported"
    ):
        load_coder(CoderConfig(path="saelens:smollm2-res-test/blocks.15.hook_resid_post"))


def test_saelens_unknown_release_and_sae_id(fake_sae_lens):
    with pytest.raises(
        CoderError, match=r"SAELens has no release 'smollm2-res-tset'.*releases: .*smollm2-res-test"
    ):
        load_coder(CoderConfig(path="saelens:smollm2-res-tset/blocks.15.hook_resid_post"))
    with pytest.raises(
        CoderError,
        match=r"release 'smollm2-res-test' has no SAE 'blocks.16.hook_resid_post'; its SAE ids: blocks.15.hook_resid_post, blocks.3.hook_resid_post",
    ):
        load_coder(CoderConfig(path="saelens:smollm2-res-test/blocks.16.hook_resid_post"))
    with pytest.raises(CoderError, match="not of the form saelens:RELEASE/SAE_ID"):
        load_coder(CoderConfig(path="saelens:smollm2-res-test"))


def test_saelens_layouts_autointerp_does_not_read(fake_sae_lens):
    with pytest.raises(
        CoderError, match=r"release 'llama-scope-test' is stored in the 'llama_scope' layout"
    ):
        load_coder(CoderConfig(path="saelens:llama-scope-test/l0r_8x"))
    with pytest.raises(CoderError, match="holds transcoders: set `transcoder: true`"):
        load_coder(CoderConfig(path="saelens:gemma-scope-test-transcoders/layer_15"))


def test_saelens_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # import sae_lens raises ModuleNotFoundError
    with pytest.raises(CoderError) as e:
        load_coder(
            CoderConfig(path="saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical")
        )
    msg = str(e.value)
    assert "sae_lens is not installed" in msg and "`pip install sae-lens`" in msg
    assert "`path: hf:REPO_ID/FOLDER`" in msg and "pretrained_saes.yaml" in msg
