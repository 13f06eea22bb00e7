"""Writes a PNG grid of random samples from a converted generator.

  python -m sphinx_jax.sample --generator DIR --out samples.png [--num 16]
"""


from absl import flags
import jax

from sphinx_jax import cli
from sphinx_jax.files import images
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.models.generator import Generator

_GENERATOR = flags.DEFINE_string('generator', None, 'converted generator directory',
                                 required=True)
_OUT = flags.DEFINE_string('out', 'samples.png', 'PNG file to write')
_NUM = flags.DEFINE_integer('num', 16, 'number of samples', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'random seed')
_PSI = flags.DEFINE_float('truncation_psi', 1.0, 'truncation towards w_avg')
_NOISE = flags.DEFINE_enum('noise', 'const', ['const', 'zero'],
                           'stored constant noise maps, or none')


def sample(g: Generator, num: int, seed: int = 0, truncation_psi: float = 1.0,
           noise: str = 'const') -> jax.Array:
  """(num, H, W, 3) images in [-1, 1] for z drawn from `seed`."""
  z = jax.random.normal(jax.random.key(seed), (num, g.z_dim))

  @jax.jit
  def run(g, z):
    w = g.mapping(z, truncation_psi)
    wplus = jax.numpy.repeat(w[:, None], g.n_latent, axis=1)
    return g.synthesize(wplus, None if noise == 'const' else 'zero')

  return run(g, z)


def main() -> int:
  g = load_generator(_GENERATOR.value)
  imgs = sample(g, _NUM.value, _SEED.value, _PSI.value, _NOISE.value)
  images.save_png(images.grid(images.to_uint8(imgs)), _OUT.value)
  print(f'wrote {_OUT.value}: {_NUM.value} samples at {g.resolution}x{g.resolution}')
  return 0


if __name__ == '__main__':
  cli.run(main)
