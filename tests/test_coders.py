"""Every coder format against a reference computed by hand (and sparsify's own code for its layout)."""

import dataclasses
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


# ------------------------------------------------------------------------------------------------
# Encoding in steps of latents (bounded memory for wide coders)


def _pairs(values, indices):
    """Per token, its nonzeros as (value, index) pairs sorted by value then index."""
    out = []
    for v, i in zip(values.float().tolist(), indices.tolist(), strict=True):
        out.append(sorted((a, b) for a, b in zip(v, i, strict=True) if a > 0))
    return out


def _assert_same_up_to_ties(coder, x, got):
    """Equal values per token as the whole encode gives; each chosen index really holds its value
    (so a tie at the k-th value may pick another latent of that value); indices distinct per
    token, as top-k gives."""
    gv, gi = got
    assert [[a for a, _ in p] for p in _pairs(*coder.encode(x))] == [
        [a for a, _ in p] for p in _pairs(gv, gi)
    ]
    acts = torch.relu(coder.pre_activations(x))
    for row, (v, i) in enumerate(zip(gv, gi, strict=True)):
        assert len(set(i.tolist())) == len(i)
        assert torch.equal(acts[row, i[v > 0]], v[v > 0])


def _chunked(coder, budget):
    return dataclasses.replace(coder, encode_budget=budget)


def _neurons(k=4):
    return load_coder(
        CoderConfig(format="neurons", hookpoint="layers.15.mlp.down_proj:input", k=k), width=D_MODEL
    )


def _coders(tmp_path):
    """One real coder file per activation: topk, relu, jumprelu (two layouts), and neurons."""
    return {
        "sparsify-topk": load_coder(CoderConfig(path=str(write_sparsify(tmp_path / "sp", k=8)))),
        "saelens-topk": load_coder(CoderConfig(path=str(write_saelens(tmp_path / "t", "topk")))),
        "saelens-relu": load_coder(
            CoderConfig(path=str(write_saelens(tmp_path / "r", "standard")))
        ),
        "saelens-jumprelu": load_coder(
            CoderConfig(path=str(write_saelens(tmp_path / "j", "jumprelu")))
        ),
        "gemmascope": load_coder(
            CoderConfig(path=str(write_gemmascope(tmp_path / "g") / "params.npz"))
        ),
        "neurons": _neurons(),
    }


@pytest.mark.parametrize("cols", [64, 100])
def test_chunked_encode_equals_whole(tmp_path, cols):
    for name, coder in _coders(tmp_path).items():
        small = _chunked(coder, len(X) * cols * 4)  # every token at once, `cols` latents a step
        assert small.chunk_shape(len(X), 4) == (len(X), cols), name
        assert _pairs(*small.encode(X)) == _pairs(*coder.encode(X)), name
        v, i = small.encode(X)
        assert v.dtype == X.dtype and i.dtype == torch.int64
        if coder.activation in ("topk", "identity_topk"):
            assert v.shape == (len(X), coder.k), name
        else:  # as wide as the token with the most nonzeros, as before
            assert v.shape == coder.encode(X)[0].shape, name
            assert all(len(set(r)) == len(r) for r in i.tolist()), name  # padding never repeats


def test_chunked_encode_token_with_fewer_than_k_positive(tmp_path):
    folder = write_sparsify(tmp_path / "sp", n=256, k=8)
    w = load_file(folder / "sae.safetensors")
    bias = torch.full((256,), -100.0)
    bias[[3, 130, 250]] = 1.0  # three live latents, in different steps of 64 latents
    save_file({**w, "encoder.bias": bias}, folder / "sae.safetensors")
    coder = load_coder(CoderConfig(path=str(folder)))
    v, i = _chunked(coder, len(X) * 64 * 4).encode(X)
    assert v.shape == (len(X), 8)
    assert _pairs(v, i) == _pairs(*coder.encode(X))
    assert {b for p in _pairs(v, i) for _, b in p} <= {3, 130, 250}
    assert (v > 0).sum(1).max() <= 3
    x = X.clone()
    x[0] = torch.where(torch.arange(D_MODEL) < 2, 1.0, -1.0)  # neurons: two positive of k=4
    neurons = _neurons(4)
    v, i = _chunked(neurons, len(x) * 64 * 4).encode(x)
    assert _pairs(v, i)[0] == [(1.0, 0), (1.0, 1)]
    assert _pairs(v, i) == _pairs(*neurons.encode(x))


def test_chunked_encode_ties():
    x = torch.round(X)  # a few distinct values per token: ties at the k-th value everywhere
    for k in (4, 40):
        top = x.topk(k + 1).values
        assert (top[:, k - 1] == top[:, k]).sum() > len(x) // 2  # the k-th value ties the next
        coder = _neurons(k)
        _assert_same_up_to_ties(coder, x, _chunked(coder, len(x) * 64 * 4).encode(x))


def test_chunked_encode_bf16(tmp_path):
    x = X.to(torch.bfloat16)
    for name, coder in _coders(tmp_path).items():
        coder = coder.to(torch.bfloat16)
        small = _chunked(coder, len(x) * 64 * 2)
        assert small.chunk_shape(len(x), 2) == (len(x), 64), name
        got = small.encode(x)
        assert got[0].dtype == torch.bfloat16
        _assert_same_up_to_ties(coder, x, got)


def test_chunked_encode_steps_of_tokens(tmp_path):
    """A batch too long for even 64 latents at once is split into steps of tokens as well."""
    coder = load_coder(CoderConfig(path=str(write_sparsify(tmp_path / "sp", k=8))))
    x = torch.randn(100, D_MODEL, generator=torch.Generator().manual_seed(5))
    small = _chunked(coder, 16 * 64 * 4)
    assert small.chunk_shape(100, 4) == (16, 64)
    v, i = small.encode(x)
    rv, ri = coder.encode(x)
    torch.testing.assert_close(_dense(v, i, 256), _dense(rv, ri, 256))
    relu = load_coder(CoderConfig(path=str(write_saelens(tmp_path / "r", "standard"))))
    v, i = _chunked(relu, 16 * 64 * 4).encode(x)
    rv, ri = relu.encode(x)
    torch.testing.assert_close(_dense(v, i, 192), _dense(rv, ri, 192))


def test_chunked_encode_stays_within_budget(tmp_path, monkeypatch):
    """No pre-activation tensor the encoder makes is larger than its budget."""
    sizes = []
    linear = torch.nn.functional.linear

    def recording(*args, **kwargs):
        out = linear(*args, **kwargs)
        sizes.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", recording)
    x = torch.randn(64, D_MODEL, generator=torch.Generator().manual_seed(6))
    for arch in ("topk", "standard", "jumprelu"):
        coder = load_coder(CoderConfig(path=str(write_saelens(tmp_path / arch, arch, n=1000))))
        budget = 64 * 4 * 300  # 300 latents a step of 64 tokens; 1000 latents would need 3.3x
        sizes.clear()
        _chunked(coder, budget).encode(x)
        assert len(sizes) == 4 and max(sizes) <= budget, (arch, sizes)
        sizes.clear()
        coder.encode(x)  # the default budget holds this small coder whole: one product
        assert sizes == [64 * 1000 * 4]


def test_embedded_coder_chunked_on_real_activations(subject):
    """The embedded SAE on the real model's layers.15 activations: steps of 512 latents give the
    same nonzeros as the whole 4,608 at once."""
    coder = load_coder(CoderConfig()).to(subject.dtype)
    ids = subject.tokenizer(["The cat sat on the mat. " * 12, "Paris is in France. " * 12])
    ids = torch.tensor([row[:48] for row in ids["input_ids"]])
    x = subject.activations(ids, [coder.site])[coder.site].reshape(-1, coder.d_in)
    small = _chunked(coder, len(x) * 512 * x.element_size())
    assert small.chunk_shape(len(x), x.element_size())[1] == 512
    _assert_same_up_to_ties(coder, x, small.encode(x))
