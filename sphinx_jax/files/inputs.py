"""Input images: discovery, decoding and preprocessing to the generator's size.

Images are read with Pillow, any mode turned into RGB (grayscale
replicated; transparency composited on white) and brought to the generator's
square as `Preprocess` says: by default the EXIF orientation applied,
centre-cropped and resized with Lanczos; the official code's
`transforms.Resize((R, R))` is resize='squash', interpolation='bilinear',
exif_transpose=False (torchvision resizes a PIL image with Pillow's own
filter). Arrays are float32 (H, W, 3) in [-1, 1].
"""

import dataclasses
import glob
import os
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

from sphinx_jax.errors import SphinxError

# Pillow's filters by name (torchvision's InterpolationMode names them too).
INTERPOLATIONS = {'nearest': Image.NEAREST, 'box': Image.BOX,
                  'bilinear': Image.BILINEAR, 'hamming': Image.HAMMING,
                  'bicubic': Image.BICUBIC, 'lanczos': Image.LANCZOS}
RESIZES = ('crop', 'squash')
EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp',
              '.ppm', '.pgm')


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How a file becomes the generator's square (README, "Inputs").

  Attributes:
    resize: 'crop' (the centred square, then resized: no distortion) or
      'squash' (the whole image resized to a square, as the official code).
    interpolation: a key of INTERPOLATIONS.
    exif_transpose: turn the image as its EXIF orientation says (cameras
      store portraits sideways); the official code does not.
  """
  resize: str = 'crop'
  interpolation: str = 'lanczos'
  exif_transpose: bool = True


@dataclasses.dataclass(frozen=True)
class InputImage:
  """One input file and the name its outputs are written under."""
  path: str
  name: str

  @property
  def identity(self) -> int:
    """A 31-bit id from the name: seeds this image's random draws, so its
    result does not depend on which images share its batch."""
    return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


def group(name: str) -> str:
  """The first directory level of the image named `name` (e.g. in_domain),
  or 'all' for a file at the top."""
  return name.split('__')[0] if '__' in name else 'all'


def discover(inputs: str) -> list[InputImage]:
  """Lists image files from a file, a directory (recursively) or a glob.

  Names are the paths relative to the directory (or the file stem), without
  extension, '/' replaced by '__'; files differing only by extension keep it.
  """
  if os.path.isfile(inputs):
    paths, root = [inputs], os.path.dirname(inputs)
  elif os.path.isdir(inputs):
    paths = [os.path.join(d, f) for d, _, files in os.walk(inputs) for f in files
             if f.lower().endswith(EXTENSIONS)]
    root = inputs
  else:
    paths = [p for p in glob.glob(inputs, recursive=True) if os.path.isfile(p)]
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ''
  if not paths:
    raise SphinxError(f'inputs {inputs!r}: no image files found')
  paths = sorted(paths)
  stems = [os.path.splitext(os.path.relpath(p, root or '.'))[0] for p in paths]
  images = []
  for path, stem in zip(paths, stems):
    name = stem.replace(os.sep, '__')
    if stems.count(stem) > 1:
      name += '_' + os.path.splitext(path)[1].lstrip('.').lower()
    images.append(InputImage(path, name))
  return images


def _to_rgb(img: Image.Image) -> Image.Image:
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
    # 16/32-bit grayscale: scale the full range to 8 bits before RGB.
    arr = np.asarray(img, np.float64)
    hi = 65535.0 if img.mode.startswith('I;16') or arr.max() > 255 else 255.0
    img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
  if img.mode == 'P':
    img = img.convert('RGBA')
  if img.mode in ('RGBA', 'LA', 'PA'):
    background = Image.new('RGBA', img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, img.convert('RGBA'))
  return img.convert('RGB')


def load_image(path: str, resolution: int,
               preprocess: Preprocess = Preprocess()) -> np.ndarray:
  """Decodes `path` into a (resolution, resolution, 3) float32 array in [-1, 1]."""
  try:
    with warnings.catch_warnings():
      # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse
      # both, so a huge file never eats the machine's memory.
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as img:
        if preprocess.exif_transpose:
          img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise SphinxError(f'{path}: image too large ({e})') from None
  except (OSError, ValueError, SyntaxError) as e:
    raise SphinxError(f'{path}: not a readable image ({e})') from None
  if preprocess.resize == 'crop':
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
  img = img.resize((resolution, resolution),
                   INTERPOLATIONS[preprocess.interpolation])
  return np.asarray(img, np.float32) / 127.5 - 1.0
