"""Input discovery and decoding."""

import numpy as np
import pytest
from PIL import Image

from sphinx_jax.files import inputs
from sphinx_jax.errors import SphinxError


def test_discover_names(tmp_path):
  (tmp_path / 'sub').mkdir()
  for name in ('b.png', 'a.jpg', 'a.png', 'sub/c.png'):
    Image.new('RGB', (8, 8)).save(tmp_path / name)
  (tmp_path / 'notes.txt').write_text('not an image')
  items = inputs.discover(str(tmp_path))
  assert [i.name for i in items] == ['a_jpg', 'a_png', 'b', 'sub__c']
  assert len({i.identity for i in items}) == 4
  glob_items = inputs.discover(str(tmp_path / '*.png'))
  assert [i.name for i in glob_items] == ['a', 'b']
  assert [i.name for i in inputs.discover(str(tmp_path / 'b.png'))] == ['b']
  with pytest.raises(SphinxError, match='no image files'):
    inputs.discover(str(tmp_path / 'nothing*'))


def test_centre_crop_and_resize(tmp_path):
  img = np.zeros((20, 40, 3), np.uint8)
  img[:, 10:30] = 255  # the centre square is white, the sides black
  Image.fromarray(img).save(tmp_path / 'wide.png')
  x = inputs.load_image(str(tmp_path / 'wide.png'), 16)
  assert x.shape == (16, 16, 3) and x.dtype == np.float32
  np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_modes_become_rgb(tmp_path):
  Image.new('L', (8, 8), 51).save(tmp_path / 'gray.png')
  np.testing.assert_allclose(inputs.load_image(str(tmp_path / 'gray.png'), 8),
                             51 / 127.5 - 1, atol=1e-6)
  Image.new('RGBA', (8, 8), (0, 0, 0, 0)).save(tmp_path / 'clear.png')
  np.testing.assert_allclose(inputs.load_image(str(tmp_path / 'clear.png'), 8), 1.0)
  Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / 'deep.png')
  np.testing.assert_allclose(inputs.load_image(str(tmp_path / 'deep.png'), 8), 1.0)
  Image.new('RGB', (8, 8), (255, 0, 0)).convert('P').save(tmp_path / 'pal.png')
  np.testing.assert_allclose(inputs.load_image(str(tmp_path / 'pal.png'), 8)[0, 0],
                             [1, -1, -1])


def test_exif_orientation_is_applied(tmp_path):
  img = np.zeros((8, 16, 3), np.uint8)
  img[:, :8] = 255  # left half white
  pic = Image.fromarray(img)
  exif = pic.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  pic.save(tmp_path / 'rot.jpg', exif=exif, quality=100)
  x = inputs.load_image(str(tmp_path / 'rot.jpg'), 8)
  # After rotation the white half is on top.
  assert x[:3].mean() > 0.8 and x[-3:].mean() < -0.8


def test_unreadable_file(tmp_path):
  (tmp_path / 'bad.png').write_bytes(b'not an image')
  with pytest.raises(SphinxError, match='bad.png: not a readable image'):
    inputs.load_image(str(tmp_path / 'bad.png'), 8)


def test_more_modes_and_sizes(tmp_path):
  Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save(tmp_path / 'cmyk.jpg')
  red = inputs.load_image(str(tmp_path / 'cmyk.jpg'), 8)
  assert red[..., 0].mean() > 0.8 and red[..., 1].mean() < -0.8
  Image.new('LA', (8, 8), (0, 0)).save(tmp_path / 'la.png')  # transparent -> white
  np.testing.assert_allclose(inputs.load_image(str(tmp_path / 'la.png'), 8), 1.0)
  Image.new('RGB', (1, 1), (0, 0, 0)).save(tmp_path / 'tiny.png')
  assert inputs.load_image(str(tmp_path / 'tiny.png'), 32).shape == (32, 32, 3)


@pytest.mark.parametrize('content', [b'', b'GIF89a', b'\xff\xd8\xff\xe0 half a jpeg'])
def test_empty_or_truncated_files(tmp_path, content):
  (tmp_path / 'x.jpg').write_bytes(content)
  with pytest.raises(SphinxError, match='x.jpg: not a readable image'):
    inputs.load_image(str(tmp_path / 'x.jpg'), 8)


def test_truncated_real_jpeg(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / 'a.jpg')
  raw = (tmp_path / 'a.jpg').read_bytes()
  (tmp_path / 'cut.jpg').write_bytes(raw[:len(raw) // 2])
  with pytest.raises(SphinxError, match='cut.jpg: not a readable image'):
    inputs.load_image(str(tmp_path / 'cut.jpg'), 8)


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
  Image.new('RGB', (100, 100)).save(tmp_path / 'big.png')
  for limit in (4000, 9000):  # over twice the limit (error), just over (warning)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', limit)
    with pytest.raises(SphinxError, match='big.png: image too large'):
      inputs.load_image(str(tmp_path / 'big.png'), 8)


# A 4x6 (height x width) gray image; its values avoid half-level ties in
# the sums below, so Pillow's fixed-point arithmetic cannot round otherwise.
_PIXELS = np.array([[121, 131, 193, 243, 8, 36],
                    [210, 242, 63, 79, 222, 108],
                    [69, 211, 65, 104, 164, 140],
                    [21, 7, 221, 192, 214, 137]], np.float64)


def _bilinear_pass(x: np.ndarray, weights: list[dict[int, float]]) -> np.ndarray:
  """One separable pass along axis 0, rounded to 8 bits as Pillow stores it."""
  out = np.stack([sum(w * x[i] for i, w in row.items()) for row in weights])
  assert np.all(np.abs(out - np.floor(out) - 0.5) > 0.02)  # no ties
  return np.floor(out + 0.5)


def test_squash_is_torchvisions_resize_of_a_pil_image(tmp_path):
  """The official `transforms.Resize((2, 2))` of this 4x6 PIL image:
  torchvision resizes a PIL image with Pillow's bilinear filter, whose
  triangle is stretched by the scale when shrinking (antialiased), edge
  weights renormalised; horizontal pass first, each pass rounded.

  Width 6 -> 2 (scale 3, support 3): output column 0 centred at 1.5 reads
  columns 0..4 with weights 2/3, 1, 2/3, 1/3, 0 (normalised by 8/3), column
  1 centred at 4.5 reads 2..5 with 1/3, 2/3, 1, 2/3. Height 4 -> 2 (scale 2,
  support 2): row 0 centred at 1 reads rows 0..2 with 3/4, 3/4, 1/4
  (normalised by 7/4), row 1 reads rows 1..3 with 1/4, 3/4, 3/4."""
  Image.fromarray(_PIXELS.astype(np.uint8), 'L').save(tmp_path / 'x.png')
  columns = [{0: 2 / 8, 1: 3 / 8, 2: 2 / 8, 3: 1 / 8},
             {2: 1 / 8, 3: 2 / 8, 4: 3 / 8, 5: 2 / 8}]
  rows = [{0: 3 / 7, 1: 3 / 7, 2: 1 / 7}, {1: 1 / 7, 2: 3 / 7, 3: 3 / 7}]
  expected = _bilinear_pass(_bilinear_pass(_PIXELS.T, columns).T, rows)

  official = inputs.Preprocess(resize='squash', interpolation='bilinear',
                               exif_transpose=False)
  x = inputs.load_image(str(tmp_path / 'x.png'), 2, official)
  np.testing.assert_array_equal((x + 1.0) * 127.5, np.repeat(
      expected[..., None], 3, axis=-1))
  # The default crops the centred 4x4 square first: another image.
  cropped = inputs.load_image(str(tmp_path / 'x.png'), 2,
                              inputs.Preprocess(interpolation='bilinear'))
  columns = [{1: 3 / 7, 2: 3 / 7, 3: 1 / 7}, {2: 1 / 7, 3: 3 / 7, 4: 3 / 7}]
  np.testing.assert_array_equal((cropped[..., 0] + 1.0) * 127.5,
                                _bilinear_pass(_bilinear_pass(
                                    _PIXELS.T, columns).T, rows))


def test_exif_orientation_can_be_ignored_as_the_official_code(tmp_path):
  img = np.zeros((8, 16, 3), np.uint8)
  img[:, :8] = 255  # left half white
  pic = Image.fromarray(img)
  exif = pic.getexif()
  exif[0x0112] = 6
  pic.save(tmp_path / 'rot.jpg', exif=exif, quality=100)
  x = inputs.load_image(str(tmp_path / 'rot.jpg'), 8, inputs.Preprocess(
      resize='squash', exif_transpose=False))
  # As stored: the white half on the left.
  assert x[:, :3].mean() > 0.8 and x[:, -3:].mean() < -0.8
