import pytest
import torch

from autointerp.errors import SubjectError
from autointerp.subject import Site


def _ids(subject, text="The cat sat on the mat because it was warm."):
    return torch.tensor([subject.tokenizer(text).input_ids])


def test_residual_hookpoint_matches_hidden_states(subject):
    ids = _ids(subject)
    acts = subject.activations(ids, [Site.parse("layers.15")])[Site.parse("layers.15")]
    with torch.inference_mode():
        hidden = subject.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts, hidden[16])
    assert acts.shape == (1, ids.shape[1], 576)


def test_forward_stops_at_the_deepest_hookpoint(subject):
    ran = []
    handle = subject.modules["layers.16"].register_forward_hook(lambda *a: ran.append(16))
    try:
        subject.activations(_ids(subject), [Site.parse("layers.3"), Site.parse("layers.15")])
        assert ran == []
        subject.activations(_ids(subject), [Site.parse("layers.20")])
        assert ran == [16]
    finally:
        handle.remove()


def test_mlp_input_output_and_attention_sites(subject):
    sites = [
        Site.parse(h)
        for h in (
            "layers.5.mlp:input",
            "layers.5.mlp",
            "layers.5.self_attn",
            "layers.5.post_attention_layernorm",
            "layers.5.mlp.down_proj:input",
        )
    ]
    acts = subject.activations(_ids(subject), sites)
    torch.testing.assert_close(acts[sites[0]], acts[sites[3]])  # MLP input = its pre-norm output
    assert acts[sites[1]].shape[-1] == 576 and acts[sites[2]].shape[-1] == 576
    assert acts[sites[4]].shape[-1] == 1536
    assert subject.width(sites[4]) == 1536


def test_unknown_hookpoint_lists_valid_names(subject):
    with pytest.raises(SubjectError) as e:
        subject.activations(_ids(subject), [Site.parse("layers.99")])
    msg = str(e.value)
    assert "unknown hookpoint 'layers.99'" in msg
    assert "layers.{0..29}" in msg and "layers.{0..29}.mlp" in msg


def test_site_names():
    assert str(Site.parse("model.layers.3")) == "layers.3"
    assert Site.parse("layers.3.mlp", transcoder=True) == Site("layers.3.mlp", "input")
    assert str(Site.parse("layers.3.mlp:input")) == "layers.3.mlp:input"
    with pytest.raises(SubjectError, match="suffix"):
        Site.parse("layers.3:inputs")


def test_folder_and_gguf_file_load_the_same_model(subject):
    from autointerp.config import SubjectConfig
    from autointerp.paths import cache_home
    from autointerp.subject import embedded_gguf, load_subject

    folder = next((cache_home() / "models").glob("SmolLM2-135M-Instruct.Q4_1-*"))
    site = Site.parse("layers.2")
    ids = _ids(subject)
    want = subject.activations(ids, [site])[site]
    for spec in (str(folder), str(embedded_gguf())):
        other = load_subject(SubjectConfig(model=spec))
        torch.testing.assert_close(other.activations(ids, [site])[site], want)
    with pytest.raises(SubjectError, match="model file not found"):
        load_subject(SubjectConfig(model="/nonexistent/model.gguf"))
    with pytest.raises(SubjectError, match="cannot load model"):
        load_subject(SubjectConfig(model=str(folder / "no-such-folder")))
