"""autointerp: explain and score the latents of sparse coders with LLMs.

Stages (each a module and a CLI command): cache -> sample -> explain -> score -> report/export.
"""

from autointerp.errors import AutointerpError

__version__ = "0.1.0"
__all__ = ["AutointerpError", "__version__"]
