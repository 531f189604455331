"""Image decoding: 8-bit modes, 16-bit PNG/TIFF scaled (not clipped), bad files named;
EXIF orientation, frames and large images decided once for prepare and predict."""
import io
import os

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
  pixels, encoded, _ = _common.read_image(path, log, 'train')
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
  pixels, encoded, _ = _common.read_image(str(tmp_path / 'a.tif'))
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


# ------------------------------------------------ one rule for orientation, frames, large images


def _tagged(path, array, orientation, **kwargs):
  """Saves `array` with EXIF orientation `orientation` (as a camera tags a turned photo)."""
  exif = Image.Exif()
  exif[0x0112] = orientation  # EXIF orientation
  Image.fromarray(array).save(path, exif=exif, **kwargs)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
  rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  path = str(tmp_path / 'tagged.png')  # lossless, so pixels compare exactly
  _tagged(path, rgb, orientation)
  decoded = image_io.decode(path)
  from PIL import ImageOps  # pylint: disable=import-outside-toplevel
  shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert('RGB'))
  np.testing.assert_array_equal(decoded.pixels, shown)
  np.testing.assert_array_equal(image_io.orient(rgb[..., 0], orientation), shown[..., 0])
  assert image_io.oriented_shape(rgb.shape, orientation) == shown.shape[:2]
  assert decoded.notes() == ([] if orientation == 1 else
                             [f'EXIF orientation {orientation} applied'])


def test_jpeg_tagged_orientation_6_is_read_as_shown(tmp_path):
  """A phone photo stored 40 x 24 (W x H) and shown 24 x 40: read as shown."""
  path = str(tmp_path / 'photo.jpg')
  _tagged(path, np.zeros((24, 40, 3), np.uint8), 6)
  assert image_io.read_rgb(path).shape == (40, 24, 3)
  assert image_io.decode(path).orientation == 6


def test_animated_gif_first_frame_is_used_and_noted(tmp_path):
  frames = [Image.fromarray(np.full((6, 8, 3), v, np.uint8)) for v in (30, 120, 240)]
  frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
  decoded = image_io.decode(str(tmp_path / 'anim.gif'))
  assert decoded.frames == 3
  assert abs(int(decoded.pixels.mean()) - 30) <= 2   # palette rounding only
  assert decoded.notes() == ['first of 3 frames used']


def test_large_image_noted_in_our_words_not_pils_warning(tmp_path, monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)   # PIL's limit, lowered to stay cheap
  Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / 'big.png')     # 120 px
  Image.fromarray(np.zeros((15, 15, 3), np.uint8)).save(tmp_path / 'absurd.png')  # > 2 x 100
  import warnings  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    decoded = image_io.decode(str(tmp_path / 'big.png'))
  assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
  assert decoded.pixels.shape == (10, 12, 3)
  assert decoded.notes() == ['large: above 0.0001 Mpx, read (limit 0.0002 Mpx)']
  with pytest.raises(ValueError, match=r'image .*absurd\.png is too large to read \(0\.000225 '
                     r'Mpx; the limit is 0\.0002 Mpx, twice PIL\.Image\.MAX_IMAGE_PIXELS.*'
                     r'downscale it'):
    image_io.decode(str(tmp_path / 'absurd.png'))


def test_undecodable_file_names_are_shown_escaped(tmp_path):
  name = os.fsdecode(b'bad\xfe.png')
  assert image_io.shown_path(name) == 'bad\\xfe.png'
  (tmp_path / name).write_bytes(b'not an image')
  with pytest.raises(ValueError) as e:
    image_io.read_rgb(str(tmp_path / name))
  assert str(e.value).endswith('bad\\xfe.png: cannot identify image file'), str(e.value)
  str(e.value).encode('ascii')  # printable on any console


def test_prepare_reads_a_tagged_image_upright_and_turns_its_mask(tmp_path):
  """The predict rule in `prepare`: the image as shown, its mask (drawn on the stored pixels)
  turned with it, both counted; the stored bytes are the upright pixels."""
  rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
  path = str(tmp_path / 'photo.png')
  _tagged(path, rgb, 6)
  log = _common.ConversionLog()
  pixels, encoded, orientation = _common.read_image(path, log, 'train')
  assert orientation == 6
  np.testing.assert_array_equal(pixels, image_io.orient(rgb, 6))
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded))), pixels)
  stored_mask = np.zeros((24, 40), np.uint8)
  stored_mask[2:5, 30:38] = 1   # not symmetric: a wrong turn would not match
  mask = _common.align_mask(stored_mask, pixels.shape, 6, path, 'm.png', log, 'train')
  np.testing.assert_array_equal(mask, image_io.orient(stored_mask, 6))
  upright_mask = image_io.orient(stored_mask, 6)   # drawn on the picture as shown
  np.testing.assert_array_equal(
      _common.align_mask(upright_mask, pixels.shape, 6, path, 'm.png', log, 'train'), upright_mask)
  assert log.counts['train'] == {
      'image: EXIF orientation 6 applied': 1,
      'mask: turned with its image (EXIF orientation 6)': 1,
      'mask: drawn on the upright view (EXIF orientation 6 of its image), used as is': 1}
  with pytest.raises(ValueError, match=r'mask m\.png has size 41x24 \(WxH\) but its image '
                     r'.*photo\.png is 40x24 as stored, 24x40 as shown \(EXIF orientation 6\)'):
    _common.align_mask(np.zeros((24, 41), np.uint8), pixels.shape, 6, path, 'm.png')
  jpeg = str(tmp_path / 'photo.jpg')
  _tagged(jpeg, rgb, 6)
  _, encoded, _ = _common.read_image(jpeg)
  assert encoded.startswith(b'\x89PNG')  # not the stored JPEG: it would decode turned back


def test_prepare_folder_applies_the_rule_and_reports_it(tmp_path):
  """`prepare` end to end: the tagged photo is stored as shown with its mask turned, the
  animated GIF's first frame is used; both are in the report."""
  # pylint: disable=import-outside-toplevel
  from sgdc_jax.data.prepare import format_report, prepare
  from test_folder import _read, write_plain
  manual = tmp_path / 'm'
  write_plain(str(manual), {'train': 2}, split_folders=False)
  rng = np.random.default_rng(3)
  photo = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
  _tagged(str(manual / 'images' / 'photo.png'), photo, 6)
  mask = np.zeros((20, 24), np.uint8)
  mask[1:6, 15:22] = 255                       # drawn on the stored pixels
  Image.fromarray(mask).save(manual / 'masks' / 'photo.png')
  frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (60, 200)]
  frames[0].save(manual / 'images' / 'anim.gif', save_all=True, append_images=frames[1:])
  Image.fromarray(mask).save(manual / 'masks' / 'anim.png')
  result = prepare('folder', str(manual), str(tmp_path / 'd'), name='tagged',
                   folder_options=_folder_options(split_ratios=(('train', 1.0),)))
  conversions = result['tagged']['metadata']['conversions']['train']
  assert conversions['image: EXIF orientation 6 applied'] == 1
  assert conversions['mask: turned with its image (EXIF orientation 6)'] == 1
  assert conversions['image: first of 2 frames used'] == 1
  assert 'image: EXIF orientation 6 applied' in format_report(result)
  examples = {ex['id']: ex for ex in _read('tagged', tmp_path / 'd', 'train')}
  np.testing.assert_array_equal(examples['photo']['image'], image_io.orient(photo, 6))
  np.testing.assert_array_equal(examples['photo']['mask'], image_io.orient(mask // 255, 6))
  assert abs(int(np.asarray(examples['anim']['image']).mean()) - 60) <= 2


def _folder_options(**kwargs):
  from sgdc_jax.data.builders import folder  # pylint: disable=import-outside-toplevel
  return folder.FolderOptions(images='images/{id}.*', masks='masks/{id}.*', **kwargs)
