"""Nothing dropped, nothing misread (issue 19): symbolic links, pairs in subfolders, masks with
an alpha channel or transparency, 16-bit and floating-point masks."""
import io
import json
import os
import shutil

import sgdc_jax  # noqa: F401  (sets XLA flags before anything imports jax)
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import folder as folder_lib
from sgdc_jax.data.prepare import format_report
from sgdc_jax.data.prepare import prepare
from test_folder import _read, _save, write_plain

H, W = 20, 24


def _ids(name, data_dir, split):
  return [ex['id'] for ex in _read(name, data_dir, split)]


# ----------------------------------------------------------------------------- links


def test_linked_split_folder_is_read_and_fingerprinted(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  truth = write_plain(str(manual), {'train': 3, 'test': 2})
  shutil.move(manual / 'test', tmp_path / 'elsewhere')
  os.symlink(tmp_path / 'elsewhere', manual / 'test')
  result = prepare('folder', str(manual), data_dir, name='linked')
  assert result['linked']['splits'] == {'test': 2, 'train': 3}
  for ex in _read('linked', data_dir, 'test'):
    np.testing.assert_array_equal(ex['image'], truth[ex['id']][0])
    np.testing.assert_array_equal(ex['mask'], truth[ex['id']][1])
  assert result['linked']['metadata']['manual_dir_fingerprint']['num_files'] == 10
  # A change behind the link is a change of the manual dir.
  shutil.copy(tmp_path / 'elsewhere' / 'images' / 'te0.png',
              tmp_path / 'elsewhere' / 'images' / 'te9.png')
  shutil.copy(tmp_path / 'elsewhere' / 'masks' / 'te0.png',
              tmp_path / 'elsewhere' / 'masks' / 'te9.png')
  with pytest.raises(ValueError, match='prepared from 10 files .* now holds 12 files'):
    prepare('folder', str(manual), data_dir, name='linked')


def test_linked_images_folder_without_split_folders(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  truth = write_plain(str(manual), {'all': 10}, split_folders=False)
  shutil.move(manual / 'images', tmp_path / 'pictures')
  os.symlink(tmp_path / 'pictures', manual / 'images')
  result = prepare('folder', str(manual), data_dir, name='pool')
  assert sum(result['pool']['splits'].values()) == 10
  assert sorted(i for s in ('train', 'validation', 'test') for i in _ids('pool', data_dir, s)) == (
      sorted(truth))


def _tree(root):
  write_plain(str(root), {'train': 2, 'test': 1})
  return root


@pytest.mark.parametrize('make,match', [
    (lambda r: os.symlink(r / 'nowhere.png', r / 'train' / 'images' / 'tr9.png'),
     r'train/images/tr9\.png is a broken symbolic link \(to .*nowhere\.png\)'),
    (lambda r: os.symlink(r / 'gone', r / 'train' / 'extra'),
     r'train/extra is a broken symbolic link'),
    (lambda r: os.symlink(r / 'train', r / 'train' / 'images' / 'up'),
     r'symbolic link .*train/images/up points to .*train, a folder above it \(a loop\)'),
    (lambda r: os.symlink(r, r / 'test' / 'root'),
     r'symbolic link .*test/root points to .*, a folder above it \(a loop\)'),
    (lambda r: os.symlink(r / 'train', r / 'validation'),
     r'validation and .*train are the same folder .*read twice'),
], ids=['broken-file', 'broken-folder', 'loop-to-parent', 'loop-to-root', 'folder-twice'])
def test_bad_links_are_refused_by_name(tmp_path, make, match):
  root = _tree(tmp_path / 'm')
  make(root)
  with pytest.raises(ValueError, match=match):
    _common.list_files(str(root))
  with pytest.raises(ValueError, match=match):  # the rerun check walks the same way
    _common.fingerprint(str(root))
  with pytest.raises(ValueError, match=match):
    prepare('folder', str(root), str(tmp_path / 'd'), name='bad')


def test_linked_file_is_read(tmp_path):
  root = _tree(tmp_path / 'm')
  shutil.move(root / 'train' / 'masks' / 'tr0.png', tmp_path / 'mask.png')
  os.symlink(tmp_path / 'mask.png', root / 'train' / 'masks' / 'tr0.png')
  assert 'train/masks/tr0.png' in _common.list_files(str(root))
  result = prepare('folder', str(root), str(tmp_path / 'd'), name='filelink')
  assert result['filelink']['splits'] == {'test': 1, 'train': 2}


# ----------------------------------------------------------------------------- subfolders


def test_pairs_in_subfolders_are_read_and_strays_named(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  truth = write_plain(str(manual), {'train': 3, 'test': 2})
  for sub in ('images', 'masks'):
    os.makedirs(manual / 'train' / sub / 'benign')
    shutil.move(manual / 'train' / sub / 'tr0.png', manual / 'train' / sub / 'benign' / 'tr0.png')
  _save(truth['tr1'][0], str(manual / 'train' / 'images' / 'extra' / 'x.png'))  # no mask
  (manual / 'train' / 'images' / 'benign' / 'notes.doc').write_text('a note')
  result = prepare('folder', str(manual), data_dir, name='nested')
  assert result['nested']['splits'] == {'test': 2, 'train': 3}
  examples = {ex['id']: ex for ex in _read('nested', data_dir, 'train')}
  assert sorted(examples) == ['benign/tr0', 'tr1', 'tr2']
  np.testing.assert_array_equal(examples['benign/tr0']['image'], truth['tr0'][0])
  np.testing.assert_array_equal(examples['benign/tr0']['mask'], truth['tr0'][1])
  report = format_report(result)
  assert ('skipped 1 image file(s) that pair with nothing: '
          f'{manual / "train" / "images" / "extra" / "x.png"}') in report, report
  assert 'ignored 1 non-image file(s), e.g. ' in report and 'notes.doc' in report


def test_rerun_notices_data_prepared_without_the_subfolder_pairs(tmp_path):
  """A data set prepared by the version that skipped subfolders (same files, same options)
  is not reused as if complete."""
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_plain(str(manual), {'train': 3})
  for sub in ('images', 'masks'):
    os.makedirs(manual / 'train' / sub / 'benign')
    shutil.move(manual / 'train' / sub / 'tr0.png', manual / 'train' / sub / 'benign' / 'tr0.png')
  prepare('folder', str(manual), data_dir, name='older')
  assert prepare('folder', str(manual), data_dir, name='older')['older']['status'].startswith(
      'reused')
  info = tmp_path / 'd' / 'older' / '1.0.0' / 'metadata.json'
  metadata = json.loads(info.read_text())
  assert metadata['ignored_files'] == []
  metadata['ignored_files'] = [str(manual / 'train' / s / 'benign' / 'tr0.png')
                               for s in ('images', 'masks')]  # what the old version stored
  info.write_text(json.dumps(metadata))
  with pytest.raises(ValueError, match=r'left out 2 file\(s\) .* now leave out 0 .*--rebuild'):
    prepare('folder', str(manual), data_dir, name='older')


def test_flat_match_wins_over_a_match_into_a_subfolder(tmp_path):
  """`--images='{id}.*' --masks='masks/{id}.*'`: masks/a.png also fits the image template
  (id 'masks/a'), but is the mask of a.png."""
  rng = np.random.default_rng(0)
  for i in range(4):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    _save(image, str(tmp_path / 'm' / f'a{i}.png'))
    _save(np.zeros((H, W), np.uint8), str(tmp_path / 'm' / 'masks' / f'a{i}.png'))
  options = folder_lib.FolderOptions(images='{id}.*', masks='masks/{id}.*',
                                     split_ratios=(('train', 0.5), ('test', 0.5)))
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='flat',
                   folder_options=options)
  assert result['flat']['splits'] == {'test': 2, 'train': 2}


# ----------------------------------------------------------------------------- alpha masks


def _png(tmp_path, array, mode=None, **save):
  path = str(tmp_path / f'mask_{len(os.listdir(tmp_path))}.png')
  Image.fromarray(array, mode).save(path, **save)
  return path


def _lesion():
  inside = np.zeros((H, W), bool)
  inside[4:12, 5:15] = True
  return inside


def test_white_paint_on_transparency_uses_alpha(tmp_path):
  inside = _lesion()
  la = np.stack([np.full((H, W), 255, np.uint8), np.where(inside, 255, 0).astype(np.uint8)], -1)
  log = _common.ConversionLog()
  values = _common.read_mask_values(_png(tmp_path, la, 'LA'), log, 'train')
  np.testing.assert_array_equal(_common.binarize_mask(values, 'm'), inside)
  assert log.counts['train'] == {'mask LA->alpha (colour constant: alpha holds the mask)': 1}


def test_coloured_paint_on_transparent_black_uses_alpha(tmp_path):
  inside = _lesion()
  rgba = np.zeros((H, W, 4), np.uint8)
  rgba[inside] = (255, 0, 0, 255)  # red paint; transparent pixels are (0, 0, 0, 0)
  log = _common.ConversionLog()
  values = _common.read_mask_values(_png(tmp_path, rgba), log, 'train')
  np.testing.assert_array_equal(values, np.where(inside, 255, 0))
  assert sum(log.counts['train'].values()) == 1


def test_opaque_alpha_keeps_the_gray_values_and_is_counted(tmp_path):
  inside = _lesion()
  gray = np.where(inside, 255, 0).astype(np.uint8)
  rgba = np.stack([gray, gray, gray, np.full((H, W), 255, np.uint8)], -1)
  log = _common.ConversionLog()
  np.testing.assert_array_equal(_common.read_mask_values(_png(tmp_path, rgba), log, 's'), gray)
  la = np.stack([gray, np.full((H, W), 255, np.uint8)], -1)
  np.testing.assert_array_equal(_common.read_mask_values(_png(tmp_path, la, 'LA'), log, 's'), gray)
  assert log.counts['s'] == {'mask RGBA->L (alpha 255 everywhere, dropped)': 1,
                             'mask LA->L (alpha 255 everywhere, dropped)': 1}


def test_gray_equal_to_alpha_is_the_mask(tmp_path):
  gray = np.where(_lesion(), 255, 0).astype(np.uint8)
  gray[4, 5] = 128  # an anti-aliased edge pixel, as painted
  path = _png(tmp_path, np.stack([gray, gray], -1), 'LA')
  np.testing.assert_array_equal(_common.read_mask_values(path), gray)


def test_colour_and_alpha_with_different_content_are_refused(tmp_path):
  inside = _lesion()
  gray = np.where(inside, 255, 0).astype(np.uint8)
  alpha = np.where(np.roll(inside, 3, axis=1), 255, 0).astype(np.uint8)
  path = _png(tmp_path, np.stack([gray, alpha], -1), 'LA')
  with pytest.raises(ValueError, match=r'mask .*\.png \(LA\) carries content in both its colour '
                     r'and its alpha channel: colour \{0, 255\}, alpha \{0, 255\}'):
    _common.read_mask_values(path)


def test_fully_transparent_mask(tmp_path):
  white = np.stack([np.full((H, W), 255, np.uint8), np.zeros((H, W), np.uint8)], -1)
  assert not _common.read_mask_values(_png(tmp_path, white, 'LA')).any()  # nothing painted
  drawn = white.copy()
  drawn[_lesion(), 0] = 0  # colour content under full transparency: which one is meant?
  with pytest.raises(ValueError, match='carries content in both'):
    _common.read_mask_values(_png(tmp_path, drawn, 'LA'))


def test_palette_mask_with_a_transparent_index(tmp_path):
  """Index 0 transparent white, index 1 opaque white: drawn on a viewer's background the
  lesion shows; `convert('RGB')` alone gives an all-white (all-lesion) mask."""
  inside = _lesion()
  img = Image.fromarray(inside.astype(np.uint8), 'P')
  img.putpalette([255, 255, 255] * 2 + [0] * (256 * 3 - 6))
  buf = io.BytesIO()
  img.save(buf, 'PNG', transparency=0)
  path = tmp_path / 'palette.png'
  path.write_bytes(buf.getvalue())
  log = _common.ConversionLog()
  np.testing.assert_array_equal(_common.read_mask(str(path), log, 'train'), inside)
  assert log.counts['train'] == {'mask P->alpha (colour constant: alpha holds the mask)': 1}


def test_gray_mask_with_a_transparent_value(tmp_path):
  inside = _lesion()
  values = np.where(inside, 255, 0).astype(np.uint8)
  path = _png(tmp_path, values, transparency=0)  # PNG tRNS: value 0 transparent
  assert Image.open(path).info.get('transparency') == 0
  np.testing.assert_array_equal(_common.read_mask(path), inside)


def test_alpha_mask_through_prepare_is_stored_and_counted(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_plain(str(manual), {'train': 3})
  inside = _lesion()
  la = np.stack([np.full((H, W), 255, np.uint8), np.where(inside, 255, 0).astype(np.uint8)], -1)
  Image.fromarray(la, 'LA').save(manual / 'train' / 'masks' / 'tr1.png')
  result = prepare('folder', str(manual), data_dir, name='painted')
  what = 'mask LA->alpha (colour constant: alpha holds the mask)'
  assert result['painted']['metadata']['conversions'] == {'train': {what: 1}}
  assert what in format_report(result)
  stored = {ex['id']: ex['mask'] for ex in _read('painted', data_dir, 'train')}
  np.testing.assert_array_equal(stored['tr1'], inside)
  assert stored['tr1'].mean() < 0.5  # not the 100 % lesion of the gray channel


# ----------------------------------------------------------------------------- 16-bit, float


def test_16bit_binary_mask(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_plain(str(manual), {'train': 2})
  inside = _lesion()
  Image.fromarray(np.where(inside, 65535, 0).astype(np.uint16)).save(
      manual / 'train' / 'masks' / 'tr0.png')
  assert Image.open(manual / 'train' / 'masks' / 'tr0.png').mode == 'I;16'
  prepare('folder', str(manual), data_dir, name='deep_masks')
  stored = {ex['id']: ex['mask'] for ex in _read('deep_masks', data_dir, 'train')}
  np.testing.assert_array_equal(stored['tr0'], inside)


def test_16bit_mask_with_other_values_is_refused(tmp_path):
  path = tmp_path / 'm.png'
  Image.fromarray(np.array([[0, 65535, 300]], np.uint16)).save(path)
  with pytest.raises(ValueError, match=r'holds values \{0, 300, 65535\}.*\{0, 65535\}'):
    _common.read_mask(str(path))


def test_float_masks(tmp_path):
  whole = np.where(_lesion(), 1.0, 0.0).astype(np.float32)
  Image.fromarray(whole).save(tmp_path / 'whole.tif')
  log = _common.ConversionLog()
  np.testing.assert_array_equal(_common.read_mask(str(tmp_path / 'whole.tif'), log, 's'),
                                _lesion())
  assert log.counts['s'] == {'mask F->integer': 1}
  soft = whole * 0.7  # a probability map, not labels: rounding it would invent a mask
  Image.fromarray(soft).save(tmp_path / 'soft.tif')
  with pytest.raises(ValueError, match=r'soft\.tif is a floating-point image with values that '
                     r'are not whole numbers .*0\.7'):
    _common.read_mask(str(tmp_path / 'soft.tif'))


def test_broken_image_link_is_named(tmp_path):
  os.symlink(tmp_path / 'gone.jpg', tmp_path / 'a.jpg')
  with pytest.raises(ValueError, match=r'a\.jpg is a broken symbolic link \(to .*gone\.jpg\)'):
    image_io.read_rgb(str(tmp_path / 'a.jpg'))


# ----------------------------------------------------------------------------- more hostile files


def test_macosx_litter_is_not_taken_for_a_split(tmp_path):
  """Unzipped on a Mac: `__MACOSX/images/._x.png` beside the real `images/`, `masks/`."""
  manual = tmp_path / 'm'
  truth = write_plain(str(manual), {'all': 10}, split_folders=False)
  for sub in ('images', 'masks'):
    (manual / '__MACOSX' / sub).mkdir(parents=True)
    for name in os.listdir(manual / sub):
      (manual / '__MACOSX' / sub / f'._{name}').write_bytes(b'\x00\x05\x16\x07')
  result = prepare('folder', str(manual), str(tmp_path / 'd'), name='mac')
  assert result['mac']['metadata']['pairing']['images'] == 'images/{id}.*'
  assert sum(result['mac']['splits'].values()) == len(truth)


def test_multi_frame_mask_is_refused_and_image_counted(tmp_path):
  frames = [Image.fromarray(np.full((H, W), v, np.uint8)) for v in (0, 255)]
  frames[0].save(tmp_path / 'mask.tif', save_all=True, append_images=frames[1:])
  with pytest.raises(ValueError, match=r'mask .*mask\.tif has 2 frames \(pages\)'):
    _common.read_mask(str(tmp_path / 'mask.tif'))
  rgb = [Image.fromarray(np.full((H, W, 3), v, np.uint8)) for v in (10, 200)]
  rgb[0].save(tmp_path / 'image.tif', save_all=True, append_images=rgb[1:])
  log = _common.ConversionLog()
  pixels, _, _ = _common.read_image(str(tmp_path / 'image.tif'), log, 'train')
  assert (pixels == 10).all()
  assert log.counts['train'] == {'image: first of 2 frames used': 1}


def test_exif_rotation_is_counted_and_named_in_a_size_mismatch(tmp_path):
  image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
  exif = Image.Exif()
  exif[0x0112] = 6  # shown turned by 90 degrees
  image.save(tmp_path / 'photo.jpg', exif=exif)
  log = _common.ConversionLog()
  pixels, encoded, _ = _common.read_image(str(tmp_path / 'photo.jpg'), log, 'train')
  assert pixels.shape == (W, H, 3)  # as shown (image_io: EXIF orientation applied)
  assert encoded.startswith(b'\x89PNG')  # the upright pixels, not the stored JPEG
  assert log.counts['train'] == {'image: EXIF orientation 6 applied': 1}
  with pytest.raises(ValueError, match=r'size 20x24 .* is 24x20 \(width and height swapped.*EXIF'):
    _common.check_same_size(np.zeros((H, W)), np.zeros((W, H), np.uint8), 'photo.jpg', 'mask.png')
