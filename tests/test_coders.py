"""Every coder format against a reference computed by hand (and sparsify's own code for its layout)."""

import json

import numpy as np
import pytest
import torch
from conftest import D_MODEL, write_gemmascope, write_saelens, write_sparsify
from safetensors.torch import load_file, save_file

from autointerp.coders import detect_format, load_coder
from autointerp.config import CoderConfig
from autointerp.errors import CoderError


def _dense(values, indices, n):
    out = torch.zeros(values.shape[0], n)
    return out.scatter_(1, indices.long(), values.float())


X = torch.randn(20, D_MODEL, generator=torch.Generator().manual_seed(3)) * 2


def test_sparsify_matches_sparsify_package(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    folder = write_sparsify(tmp_path / "ckpt" / "layers.15", k=8)
    coder = load_coder(CoderConfig(path=str(tmp_path / "ckpt"), hookpoint="layers.15"))
    assert coder.kind == "sparsify" and coder.k == 8 and coder.n_latents == 256
    ref = sparsify.SparseCoder.load_from_disk(folder).encode(X)
    v, i = coder.encode(X)
    torch.testing.assert_close(_dense(v, i, 256), _dense(ref.top_acts, ref.top_indices, 256))


def test_sparsify_transcoder_reads_module_input(tmp_path):
    folder = write_sparsify(tmp_path / "tc", transcode=True)
    coder = load_coder(CoderConfig(path=str(folder), hookpoint="layers.15.mlp"))
    assert coder.transcoder and str(coder.site) == "layers.15.mlp:input"
    w = load_file(folder / "sae.safetensors")
    pre = torch.relu(X @ w["encoder.weight"].T + w["encoder.bias"])  # no b_dec subtraction
    ref = torch.zeros_like(pre).scatter_(1, pre.topk(8).indices, pre.topk(8).values)
    v, i = coder.encode(X)
    torch.testing.assert_close(_dense(v, i, 256), ref)


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_saelens(tmp_path, arch):
    folder = write_saelens(tmp_path / arch, arch)
    coder = load_coder(CoderConfig(path=str(folder), hookpoint="layers.15"))
    assert detect_format(folder) == "saelens" and coder.n_latents == 192
    w = load_file(folder / "sae_weights.safetensors")
    x = X - w["b_dec"] if arch != "jumprelu" else X
    pre = x @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        ref = torch.relu(pre)
    elif arch == "jumprelu":
        ref = torch.relu(pre) * (pre > w["threshold"])
    else:
        top = torch.relu(pre).topk(16)
        ref = torch.zeros_like(pre).scatter_(1, top.indices, top.values)
    v, i = coder.encode(X)
    torch.testing.assert_close(_dense(v, i, 192), ref)


def test_gemmascope(tmp_path):
    folder = write_gemmascope(tmp_path / "gs")
    coder = load_coder(CoderConfig(path=str(folder / "params.npz"), hookpoint="layers.15"))
    with np.load(folder / "params.npz") as z:
        pre = X @ torch.from_numpy(z["W_enc"]) + torch.from_numpy(z["b_enc"])
        ref = torch.relu(pre) * (pre > torch.from_numpy(z["threshold"]))
    v, i = coder.encode(X)
    assert coder.kind == "gemmascope"
    torch.testing.assert_close(_dense(v, i, 160), ref)
    assert int((v > 0).sum()) == int((ref > 0).sum())


def test_neurons_keep_top_k_positive():
    coder = load_coder(
        CoderConfig(format="neurons", hookpoint="layers.15.mlp.down_proj:input", k=4), width=D_MODEL
    )
    v, i = coder.encode(X)
    assert v.shape == (20, 4)
    top = torch.relu(X).topk(4)
    torch.testing.assert_close(
        _dense(v, i, D_MODEL), torch.zeros_like(X).scatter_(1, top.indices, top.values)
    )


def test_width_mismatch_names_both_numbers(tmp_path):
    coder = load_coder(
        CoderConfig(path=str(write_sparsify(tmp_path / "s", d_in=512)), hookpoint="layers.15")
    )
    with pytest.raises(CoderError, match=r"width 512, but hookpoint layers\.15 of m has width 576"):
        coder.check_width(576, "m")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CoderError, match="coder path not found"):
        load_coder(CoderConfig(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoderError, match="no sparse coder found"):
        load_coder(CoderConfig(path=str(tmp_path / "empty")))
    folder = write_sparsify(tmp_path / "s")
    (folder / "sae.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CoderError, match=r"sae\.safetensors are corrupt"):
        load_coder(CoderConfig(path=str(folder)))
    folder = write_sparsify(tmp_path / "s2")
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(CoderError, match=r"cfg\.json is not valid JSON"):
        load_coder(CoderConfig(path=str(folder)))
    folder = write_saelens(tmp_path / "sl", "standard")
    w = load_file(folder / "sae_weights.safetensors")
    del w["b_enc"]
    save_file(w, folder / "sae_weights.safetensors")
    with pytest.raises(CoderError, match="lacks tensor.*b_enc"):
        load_coder(CoderConfig(path=str(folder)))
    folder = write_saelens(tmp_path / "sl2", "standard")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(CoderError, match="'gated'.*not supported"):
        load_coder(CoderConfig(path=str(folder)))


def test_embedded_coder_loads_in_sparsify_layout():
    coder = load_coder(CoderConfig())
    assert coder.kind == "sparsify" and coder.d_in == D_MODEL and coder.k == 32
    assert coder.W_dec is not None and coder.W_dec.shape == (coder.n_latents, D_MODEL)
