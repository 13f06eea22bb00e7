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
