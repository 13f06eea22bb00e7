"""Writes the demo's input images (run once; the PNGs are committed).

  python demo/make_images.py

in_domain/: five of scikit-learn's handwritten digits (load_digits, the
held-out odd-indexed half of the prior's classifier split), upscaled to
32x32 exactly as the prior's training data (digits_score.load_digits).
out_of_domain/: capital letters drawn with Pillow's built-in font, two
shapes, and two photographs from samples/ scaled down to 32x32: white on
black where the digits are, so only the content is foreign to the prior.
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sphinx_jax.files import inputs, images
from sphinx_jax.training import digits_score

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 32


def _save(array01: np.ndarray, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.rint(array01 * 255).astype(np.uint8)).save(path)


def _letter(char: str) -> np.ndarray:
  img = Image.new('L', (SIZE, SIZE), 0)
  draw = ImageDraw.Draw(img)
  font = ImageFont.load_default(size=26)
  box = draw.textbbox((0, 0), char, font=font)
  x = (SIZE - (box[2] - box[0])) / 2 - box[0]
  y = (SIZE - (box[3] - box[1])) / 2 - box[1]
  draw.text((x, y), char, fill=255, font=font)
  return np.asarray(img, np.float32) / 255


def _shape(kind: str) -> np.ndarray:
  img = Image.new('L', (SIZE, SIZE), 0)
  draw = ImageDraw.Draw(img)
  if kind == 'ring':
    draw.ellipse((6, 6, 25, 25), outline=255, width=4)
  else:  # a filled triangle
    draw.polygon([(16, 5), (27, 26), (5, 26)], fill=255)
  return np.asarray(img, np.float32) / 255


def main() -> None:
  digits, labels = digits_score.load_digits(SIZE)
  for i in (1, 3, 5, 7, 9):  # odd indices: the held-out half, classes 1..9
    _save((digits[i] + 1) / 2, os.path.join(HERE, 'in_domain',
                                            f'digit{labels[i]}.png'))
  for char in 'AKS':
    _save(_letter(char), os.path.join(HERE, 'out_of_domain', f'letter{char}.png'))
  for kind in ('ring', 'triangle'):
    _save(_shape(kind), os.path.join(HERE, 'out_of_domain', f'{kind}.png'))
  samples = os.path.join(HERE, '..', 'samples')
  for name in ('cameraman.png', 'astronaut.jpg'):
    photo = inputs.load_image(os.path.join(samples, name), SIZE)
    out = os.path.join(HERE, 'out_of_domain', f'photo_{name.split(".")[0]}.png')
    Image.fromarray(images.to_uint8(photo)).save(out)


if __name__ == '__main__':
  main()
