"""StyleGAN2 checkpoints -> converted generator directories, torch-free.

Every pickle goes through `safe_pickle`'s restricted unpickler: nothing in
a source file is executed.
"""

from sphinx_jax.convert.checkpoint import convert, read_source, sha256

__all__ = ['convert', 'read_source', 'sha256']
