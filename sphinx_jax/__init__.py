"""sphinx_jax: SPHInX StyleGAN2 inversion in JAX/Flax."""

from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.inversion.engine import Inverter, Settings
from sphinx_jax.models.generator import Generator
from sphinx_jax.models.stylegan2 import Architecture

__all__ = ['Architecture', 'Generator', 'Inverter', 'Settings', 'SphinxError',
           'load_generator']
__version__ = '0.1.0'
