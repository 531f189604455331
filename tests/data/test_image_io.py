"""Image decoding: 8-bit modes, 16-bit PNG/TIFF scaled (not clipped), bad files named."""
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _common

# 16-bit values spread over the whole range: all but 0..255 would turn white under
# PIL's convert('RGB') (the old behaviour).
VALUES16 = np.array([[0, 128, 255, 256], [1000, 20000, 32768, 40000], [50000, 60000, 65534, 65535]],
                    np.uint16)


def _reference_scale(v):
  """Independent reference: round(v * 255 / 65535) in floating point."""
  return np.floor(v.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize('ext', ['png', 'tif'])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, ext):
  path = str(tmp_path / f'gray16.{ext}')
  Image.fromarray(VALUES16).save(path)
  assert Image.open(path).mode == 'I;16'  # really a 16-bit file
  clipped = np.asarray(Image.open(path).convert('RGB'))
  assert (clipped[VALUES16 > 255] == 255).all()  # what convert('RGB') does to it
  pixels = image_io.read_rgb(path)
  assert pixels.dtype == np.uint8 and pixels.shape == VALUES16.shape + (3,)
  assert not (pixels[VALUES16 > 255] == 255).all()
  for c in range(3):
    np.testing.assert_array_equal(pixels[..., c], _reference_scale(VALUES16))
  assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255 and pixels[1, 2, 0] == 128


def test_16bit_big_endian_tiff(tmp_path):
  path = str(tmp_path / 'gray16b.tif')
  Image.frombytes('I;16B', VALUES16.shape[::-1], VALUES16.astype('>u2').tobytes()).save(path)
  img = image_io.open_image(path)
  assert img.mode == 'I;16B'
  pixels, conversion = image_io.to_rgb_uint8(img, path)
  np.testing.assert_array_equal(pixels[..., 1], _reference_scale(VALUES16))
  assert conversion == 'I;16B->RGB (16-bit scaled to 8-bit)'


def test_32bit_integer_image(tmp_path):
  path = str(tmp_path / 'int32.tif')
  Image.fromarray(VALUES16.astype(np.int32)).save(path)
  np.testing.assert_array_equal(image_io.read_rgb(path)[..., 2], _reference_scale(VALUES16))
  Image.fromarray(np.array([[0, 70000]], np.int32)).save(path)
  with pytest.raises(ValueError, match=r'int32\.tif is a 32-bit integer image .*\[0, 70000\]'):
    image_io.read_rgb(path)


def test_float_image_is_refused(tmp_path):
  path = str(tmp_path / 'float.tif')
  Image.fromarray(np.full((3, 4), 0.5, np.float32)).save(path)
  with pytest.raises(ValueError, match=r"float\.tif has PIL mode 'F'"):
    image_io.read_rgb(path)


def test_8bit_modes(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'rgb.png')
  np.testing.assert_array_equal(image_io.read_rgb(str(tmp_path / 'rgb.png')), rgb)
  gray = rgb[..., 0]
  Image.fromarray(gray).save(tmp_path / 'gray.png')
  pixels, conversion = image_io.to_rgb_uint8(image_io.open_image(str(tmp_path / 'gray.png')), 'g')
  np.testing.assert_array_equal(pixels, np.repeat(gray[..., None], 3, -1))
  assert conversion == 'L->RGB'
  rgba = np.concatenate([rgb, np.zeros((5, 6, 1), np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / 'rgba.png')
  np.testing.assert_array_equal(image_io.read_rgb(str(tmp_path / 'rgba.png')), rgb)


def test_undecodable_and_missing_files_are_named(tmp_path):
  bad = tmp_path / 'broken.png'
  bad.write_bytes(b'\x89PNG\r\n not really')
  with pytest.raises(ValueError, match=r'cannot decode image file .*broken\.png'):
    image_io.read_rgb(str(bad))
  with pytest.raises(ValueError, match=r'file not found: .*absent\.jpg'):
    image_io.read_rgb(str(tmp_path / 'absent.jpg'))


def test_builders_use_the_scaling_and_count_it(tmp_path):
  path = str(tmp_path / 'gray16.png')
  Image.fromarray(VALUES16).save(path)
  log = _common.ConversionLog()
  pixels, encoded = _common.read_image(path, log, 'train')
  np.testing.assert_array_equal(pixels[..., 0], _reference_scale(VALUES16))
  assert log.counts['train'] == {'image I;16->RGB (16-bit scaled to 8-bit)': 1}
  assert encoded.startswith(b'\x89PNG')  # re-encoded losslessly as 8-bit PNG


def test_one_extension_list():
  assert not hasattr(_common, 'IMAGE_EXTENSIONS')
  assert all(e == e.lower() and e.startswith('.') for e in image_io.IMAGE_EXTENSIONS)


def test_rgb_tiff_and_palette_gif_as_drive_ships_them(tmp_path):
  """DRIVE's files: LZW-compressed RGB TIFF images, GIF masks with a {0, 255} palette."""
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a.tif', compression='tiff_lzw')
  pixels, encoded = _common.read_image(str(tmp_path / 'a.tif'))
  np.testing.assert_array_equal(pixels, rgb)
  assert encoded.startswith(b'\x89PNG')  # TIFF is stored as lossless PNG
  values = np.zeros((7, 5), np.uint8)
  values[2:5, 1:4] = 255
  palette = Image.fromarray((values // 255).astype(np.uint8), mode='P')
  palette.putpalette([0, 0, 0, 255, 255, 255])
  palette.save(tmp_path / 'm.gif')
  log = _common.ConversionLog()
  raw = _common.read_mask_values(str(tmp_path / 'm.gif'), log, 'train', kind='roi')
  np.testing.assert_array_equal(raw, values)
  np.testing.assert_array_equal(_common.binarize_mask(raw, 'm.gif', kind='roi'), values // 255)
  # PIL reads a gray-palette GIF as 'L' (nothing to count) or 'P' (counted as an roi one).
  assert set(log.counts.get('train', {})) <= {'roi P->L'}
