"""Sparse coders behind one interface: activations in, (values, latent indices) out.

Formats on disk:
- `sparsify`: EleutherAI sparsify's TopK SAEs/transcoders (`cfg.json` + `sae.safetensors`, one folder
  per hookpoint);
- `saelens`: SAELens (`cfg.json` + `sae_weights.safetensors`; standard ReLU, JumpReLU, TopK);
- `gemmascope`: Gemma Scope JumpReLU parameters (`params.npz`);
- `neurons`: the hookpoint's own activations sparsified by top-k (the baseline of Paulo et al., 2024).

Where they are: a local folder, or the Hugging Face hub (`hf:OWNER/REPO[@REVISION][/FOLDER]`,
`saelens:RELEASE/SAE_ID`; see `autointerp.coders.hub`).
"""

from autointerp.coders.base import SparseCoder
from autointerp.coders.load import detect_format, embedded_coder_path, load_coder

__all__ = ["SparseCoder", "detect_format", "embedded_coder_path", "load_coder"]
