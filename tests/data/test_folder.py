"""`folder` data sets: tiny folders in several layouts, prepared, read back by name, and every
error the brief names (unpaired, size mismatch, undecodable, unmapped mask values, ...)."""
import dataclasses
import json
import os
import subprocess
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before anything imports jax)
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.data import pipeline
from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import folder as folder_lib
from sgdc_jax.data.prepare import format_report
from sgdc_jax.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ISIC_LIKE = dict(images='{split}x/imgx{id}.jpg', masks='{split}y/imgy{id}.jpg')


def _save(array, path, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _pair(rng, h=20, w=24, k=0):
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  mask = np.zeros((h, w), np.uint8)
  mask[3 + k % 5:12 + k % 5, 4:15 + k % 7] = 255
  return image, mask


def write_plain(root, sizes, split_folders=True, seed=0):
  """`{split}/{images,masks}/<id>.png` (or `images/`, `masks/`); masks alternate {0,255} and
  {0,1}. Returns {id: (image, mask01)}."""
  rng = np.random.default_rng(seed)
  truth = {}
  k = 0
  for split, n in sizes.items():
    for i in range(n):
      example_id = f'{split[:2]}{i}'
      image, mask = _pair(rng, k=k)
      prefix = os.path.join(root, split) if split_folders else root
      _save(image, os.path.join(prefix, 'images', f'{example_id}.png'))
      _save(mask if k % 2 else mask // 255, os.path.join(prefix, 'masks', f'{example_id}.png'))
      truth[example_id] = (image, (mask > 0).astype(np.uint8))
      k += 1
  return truth


def write_isic_like(root, sizes, seed=0):
  """`{split}x/imgxN.jpg` <-> `{split}y/imgyN.jpg` with lossy JPEG masks, N = 1..n.

  Returns {split: {id: (decoded image, decoded raw mask values)}}."""
  rng = np.random.default_rng(seed)
  truth = {}
  for split, n in sizes.items():
    truth[split] = {}
    for i in range(1, n + 1):
      image, mask = _pair(rng, k=i)
      image_path = os.path.join(root, f'{split}x', f'imgx{i}.jpg')
      mask_path = os.path.join(root, f'{split}y', f'imgy{i}.jpg')
      _save(image, image_path, quality=90)
      _save(mask, mask_path, quality=60)
      truth[split][str(i)] = (np.asarray(Image.open(image_path)), np.asarray(Image.open(mask_path)))
  with open(os.path.join(root, 'LICENSE'), 'w') as f:
    f.write('licence text\n')
  return truth


def _source(name, data_dir, split):
  config = pipeline.default_data_config()
  config.name = name
  config.data_dir = str(data_dir)
  return pipeline.open_source(config, split)


def _read(name, data_dir, split):
  source = _source(name, data_dir, split)
  return [source[i] for i in range(len(source))]


def _options(**kwargs):
  return folder_lib.FolderOptions(**kwargs)


# ----------------------------------------------------------------------------- layouts


def test_plain_layout_without_options(tmp_path):
  truth = write_plain(str(tmp_path / 'm'), {'train': 3, 'validation': 2, 'test': 2})
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='mine')
  assert result['mine']['splits'] == {'test': 2, 'train': 3, 'validation': 2}
  assert result['mine']['metadata']['pairing']['images'] == '{split}/images/{id}.*'
  for split, prefix in (('train', 'tr'), ('validation', 'va'), ('test', 'te')):
    examples = _read('mine', tmp_path / 'd', split)
    assert [ex['id'] for ex in examples] == sorted(i for i in truth if i.startswith(prefix))
    for ex in examples:
      image, mask = truth[ex['id']]
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['mask'], mask)
      assert ex['mask'].dtype == np.uint8 and ex['mask'].max() == 1


def test_plain_layout_without_split_folders_uses_hashed_split(tmp_path):
  truth = write_plain(str(tmp_path / 'm'), {'all': 20}, split_folders=False)
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='pool')
  assert result['pool']['splits'] == {'test': 2, 'train': 16, 'validation': 2}
  # Independent recomputation of the documented rule: sha256 order, then 16 / 2 / 2.
  order = _common.hash_order(list(truth), folder_lib.SPLIT_SALT)
  expected = {'train': order[:16], 'validation': order[16:18], 'test': order[18:]}
  for split, ids in expected.items():
    got = [ex['id'] for ex in _read('pool', tmp_path / 'd', split)]
    assert got == sorted(ids, key=folder_lib.natural_key)


def test_split_ratios_divide_train_when_splits_are_missing(tmp_path):
  write_plain(str(tmp_path / 'm'), {'train': 10, 'test': 3})
  options = folder_lib.folder_options_from_flags(str(tmp_path / 'm'), None, None,
                                                 'train=0.7,validation=0.3', None, None)
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='tv',
                   folder_options=options)
  assert result['tv']['splits'] == {'test': 3, 'train': 7, 'validation': 3}
  train = {ex['id'] for ex in _read('tv', tmp_path / 'd', 'train')}
  validation = {ex['id'] for ex in _read('tv', tmp_path / 'd', 'validation')}
  assert not train & validation and len(train | validation) == 10


def test_isic_like_layout_one_command_with_jpeg_masks(tmp_path):
  """The documented ISIC 2017 command shape, run as a subprocess: prints the split sizes and
  the ambiguous pixel counts, which match an independent count over the mask files."""
  manual, data_dir = tmp_path / 'isic', tmp_path / 'd'
  sizes = {'train': 4, 'validation': 2, 'test': 3}
  truth = write_isic_like(str(manual), sizes)
  cmd = [sys.executable, '-m', 'sgdc_jax.data.prepare', '--dataset=folder', '--name=isic_like',
         f'--manual_dir={manual}', f'--images={ISIC_LIKE["images"]}',
         f'--masks={ISIC_LIKE["masks"]}', '--mask_threshold=127', f'--data_dir={data_dir}']
  run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'isic_like: test=3, train=4, validation=2' in run.stdout
  ambiguous = {
      split: sum(int(((m > 30) & (m < 225)).sum()) for _, m in items.values())
      for split, items in truth.items()
  }
  assert all(n > 0 for n in ambiguous.values())  # JPEG edges really are ambiguous
  line = ', '.join(f'{s}={ambiguous[s]}' for s in sorted(ambiguous))
  shown = ', '.join(part.split(' (')[0] for part in
                    run.stdout.split('ambiguous mask pixels (30 < v < 225): ')[1].splitlines()[0]
                    .split('), '))
  assert shown == line, run.stdout
  assert 'ignored 1 non-image file(s)' in run.stdout  # the LICENSE file
  with open(data_dir / 'isic_like' / '1.0.0' / 'metadata.json') as f:
    metadata = json.load(f)
  assert metadata['ambiguous_mask_pixels'] == ambiguous
  assert metadata['mask_pixels'] == {s: 20 * 24 * n for s, n in sizes.items()}
  for split, items in truth.items():
    examples = _read('isic_like', data_dir, split)
    assert [ex['id'] for ex in examples] == [str(i) for i in range(1, sizes[split] + 1)]
    for ex in examples:
      image, raw = items[ex['id']]
      np.testing.assert_array_equal(ex['image'], image)  # JPEG stored as is
      np.testing.assert_array_equal(ex['mask'], (raw > 127).astype(np.uint8))


def test_multiclass_masks_through_value_map(tmp_path):
  rng = np.random.default_rng(3)
  labels = {}
  for i in range(4):
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    values = np.zeros((10, 12), np.uint8)
    values[2:5, :] = 100
    values[6:, 3:9] = 200
    _save(image, str(tmp_path / 'm' / 'train' / 'images' / f'c{i}.png'))
    _save(values, str(tmp_path / 'm' / 'train' / 'masks' / f'c{i}.png'))
    labels[f'c{i}'] = np.select([values == 100, values == 200], [1, 2], 0).astype(np.uint8)
  options = _options(images='{split}/images/{id}.png', masks='{split}/masks/{id}.png',
                     mask_classes=folder_lib.parse_mask_classes('0:0,100:1,200:2'))
  prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='classes',
          folder_options=options)
  for ex in _read('classes', tmp_path / 'd', 'train'):
    np.testing.assert_array_equal(ex['mask'], labels[ex['id']])


def test_16bit_image_is_scaled_and_counted(tmp_path):
  write_plain(str(tmp_path / 'm'), {'train': 2})
  gray16 = np.linspace(0, 65535, 20 * 24).astype(np.uint16).reshape(20, 24)
  Image.fromarray(gray16).save(tmp_path / 'm' / 'train' / 'images' / 'tr0.png')
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='deep')
  conversions = result['deep']['metadata']['conversions']
  assert conversions == {'train': {'image I;16->RGB (16-bit scaled to 8-bit)': 1}}
  assert 'I;16->RGB (16-bit scaled to 8-bit)' in format_report(result)
  image = _read('deep', tmp_path / 'd', 'train')[0]['image']
  np.testing.assert_array_equal(image[..., 0], np.round(gray16 * (255 / 65535)).astype(np.uint8))
  assert (image < 255).mean() > 0.9  # convert('RGB') would have made ~99 % of it white


def test_template_regex_and_options_units():
  regex = folder_lib.template_regex('{split}x/imgx{id}.jpg', '--images')
  m = regex.fullmatch('trainx/imgx12.jpg')
  assert m and m.group('split') == 'train' and m.group('id') == '12'
  assert regex.fullmatch('trainy/imgy12.jpg') is None
  assert regex.fullmatch('trainx/sub/imgx12.jpg') is None  # {split} and * never cross '/'
  nested = folder_lib.template_regex('{split}/images/{id}.*', '--images').fullmatch(
      'train/images/benign/a.png')
  assert nested and nested.group('split') == 'train' and nested.group('id') == 'benign/a'
  repeat = folder_lib.template_regex('{split}/{split}_{id}.*', '--images')
  assert repeat.fullmatch('test/test_a.png') and not repeat.fullmatch('test/train_a.png')
  assert folder_lib.parse_split_ratios('train=0.9,validation=0.1') == (('train', 0.9),
                                                                       ('validation', 0.1))
  assert sorted(['img10', 'img2', 'img1'], key=folder_lib.natural_key) == ['img1', 'img2', 'img10']


# ----------------------------------------------------------------------------- errors


def _fails(tmp_path, match, options=None, name='bad'):
  with pytest.raises(ValueError, match=match):
    prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name=name,
            folder_options=options)
  assert not os.path.isdir(tmp_path / 'd' / name / '1.0.0')  # nothing half-prepared


@pytest.fixture
def plain(tmp_path):
  write_plain(str(tmp_path / 'm'), {'train': 3, 'test': 2})
  return tmp_path / 'm'


def test_image_without_mask(tmp_path, plain):
  os.remove(plain / 'train' / 'masks' / 'tr1.png')
  _fails(tmp_path, r'image .*train/images/tr1\.png has no mask: expected .*train/masks/tr1\.\*')


def test_mask_without_image(tmp_path, plain):
  os.remove(plain / 'test' / 'images' / 'te0.png')
  _fails(tmp_path, r'mask .*test/masks/te0\.png has no image')


def test_size_mismatch(tmp_path, plain):
  _save(np.zeros((20, 23), np.uint8), str(plain / 'train' / 'masks' / 'tr2.png'))
  _fails(tmp_path, r'mask .*tr2\.png has size 23x20 \(WxH\) but its image .*tr2\.png is 24x20')


@pytest.mark.parametrize('which', ['images', 'masks'])
def test_undecodable_file(tmp_path, plain, which):
  (plain / 'train' / which / 'tr0.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
  _fails(tmp_path, rf'cannot decode image file .*train/{which}/tr0\.png')


def test_unmapped_mask_value(tmp_path, plain):
  values = np.zeros((20, 24), np.uint8)
  values[0, 0] = 7
  _save(values, str(plain / 'train' / 'masks' / 'tr0.png'))
  options = _options(images='{split}/images/{id}.png', masks='{split}/masks/{id}.png',
                     mask_classes=((0, 0), (1, 1), (255, 1)))
  _fails(tmp_path, r'mask .*tr0\.png holds value\(s\) 7 that --mask_classes', options)


def test_non_binary_mask_without_threshold_hints_at_the_flags(tmp_path, plain):
  _save(np.full((20, 24), 128, np.uint8), str(plain / 'train' / 'masks' / 'tr0.png'))
  _fails(tmp_path, r'mask .*tr0\.png holds values \{128\}.*--mask_threshold=127')


def test_two_images_for_one_id(tmp_path, plain):
  _save(np.zeros((20, 24, 3), np.uint8), str(plain / 'train' / 'images' / 'tr0.jpg'))
  _fails(tmp_path, r"two images for id 'tr0': .*tr0\.jpg and .*tr0\.png")


def test_non_image_file_matching_a_template(tmp_path, plain):
  (plain / 'train' / 'images' / 'tr9.exe').write_bytes(b'MZ')
  _fails(tmp_path, r'tr9\.exe matches --images but is not an image')


def test_file_matching_both_templates(tmp_path, plain):
  options = _options(images='{split}/{id}s/tr0.png', masks='{split}/masks/{id}.png')
  _fails(tmp_path, r'tr0\.png matches both --images', options)


def test_nothing_matches(tmp_path, plain):
  options = _options(images='{split}/pictures/{id}.png', masks='{split}/masks/{id}.png')
  _fails(tmp_path, r"no file under .* matches --images='\{split\}/pictures/\{id\}\.png'", options)


def test_no_plain_layout(tmp_path):
  (tmp_path / 'm' / 'pictures').mkdir(parents=True)
  _fails(tmp_path, r'holds pictures, not a plain layout(.|\n)*images/<id>\.<ext>(.|\n)*--images=')
  with pytest.raises(ValueError, match='manual dir .*nowhere does not exist'):
    prepare('folder', str(tmp_path / 'nowhere'), str(tmp_path / 'd'), name='bad')


def test_threshold_on_16bit_mask(tmp_path, plain):
  Image.fromarray(np.full((20, 24), 40000, np.uint16)).save(plain / 'train' / 'masks' / 'tr0.png')
  options = _options(images='{split}/images/{id}.png', masks='{split}/masks/{id}.png',
                     mask_threshold=127)
  _fails(tmp_path, r'mask .*tr0\.png has values up to 40000', options)


@pytest.mark.parametrize('kwargs,match', [
    (dict(images='{split}/images/x.png', masks='{split}/masks/{id}.png'), r'must contain \{id\}'),
    (dict(images='{split}/images/{name}.png', masks='{split}/masks/{id}.png'),
     r'unknown placeholder \{name\}'),
    (dict(images='{split}/images/{id}.png', masks='masks/{id}.png'),
     r'\{split\} must be in both templates'),
    (dict(images='/abs/{id}.png', masks='m/{id}.png'), 'relative to the manual dir'),
])
def test_bad_templates(tmp_path, plain, kwargs, match):
  _fails(tmp_path, match, _options(**kwargs))


@pytest.mark.parametrize('kwargs,match', [
    (dict(mask_threshold=127, mask_classes=((0, 0),)), 'exclude each other'),
    (dict(mask_threshold=255), r'--mask_threshold must be in 0\.\.254'),
    (dict(split_ratios=(('train', 0.5), ('test', 0.4))), 'sum to 1'),
    (dict(split_ratios=(('train', 0.5), ('all', 0.5))), "other than 'all'"),
    (dict(mask_classes=((0, 0), (0, 1))), 'maps a value twice'),
])
def test_bad_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _options(images='{id}.png', masks='m/{id}.png', **kwargs)


@pytest.mark.parametrize('text,parser', [('train:0.8', folder_lib.parse_split_ratios),
                                         ('0=0,255=1', folder_lib.parse_mask_classes),
                                         ('a:1', folder_lib.parse_mask_classes)])
def test_bad_option_strings(text, parser):
  with pytest.raises(ValueError, match='expected'):
    parser(text)


@pytest.mark.parametrize('name,match', [(None, 'needs --name'), ('My-Set', 'lower-case'),
                                        ('ph2', 'ours'), ('mnist', 'TFDS catalogue')])
def test_bad_names(tmp_path, plain, name, match):
  with pytest.raises(ValueError, match=match):
    prepare('folder', str(plain), str(tmp_path / 'd'), name=name)


def test_unknown_name_lists_ours_and_the_prepared_ones(tmp_path):
  write_plain(str(tmp_path / 'm'), {'train': 2})
  prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='mine')
  with pytest.raises(ValueError) as info:
    _source('yours', tmp_path / 'd', 'train')
  message = str(info.value)
  assert 'isic2018' in message and 'synthetic_lesions' in message
  assert 'prepared there: mine' in message
  assert len(message) < 600  # not the TFDS catalogue
  with pytest.raises(ValueError, match="has no split 'validation'"):
    _source('mine', tmp_path / 'd', 'validation')


# ----------------------------------------------------------------------------- split folders


def test_split_folders_rename_and_carve_validation_from_train(tmp_path):
  write_plain(str(tmp_path / 'm'), {'training': 10, 'testing': 2})
  options = folder_lib.folder_options_from_flags(
      str(tmp_path / 'm'), None, None, None, None, None,
      split_folders='training:train,testing:test')
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='renamed',
                   folder_options=options)
  # No validation folder: the hash rule carves max(1, round(0.1 * 10)) = 1 out of train.
  assert result['renamed']['splits'] == {'test': 2, 'train': 9, 'validation': 1}
  assert result['renamed']['metadata']['pairing']['split_folders'] == [['training', 'train'],
                                                                       ['testing', 'test']]
  assert '--split_folders=training:train,testing:test' in format_report(result)
  order = _common.hash_order([f'tr{i}' for i in range(10)], folder_lib.SPLIT_SALT)
  assert [ex['id'] for ex in _read('renamed', tmp_path / 'd', 'validation')] == order[9:]
  assert [ex['id'] for ex in _read('renamed', tmp_path / 'd', 'test')] == ['te0', 'te1']


def test_split_folders_keep_a_validation_folder_and_train_1_keeps_train_whole(tmp_path):
  write_plain(str(tmp_path / 'm'), {'a': 3, 'b': 2, 'c': 1})
  mapped = _options(images='{split}/images/{id}.png', masks='{split}/masks/{id}.png',
                    split_folders=(('a', 'train'), ('b', 'validation'), ('c', 'test')))
  pairs, _ = folder_lib.find_pairs(str(tmp_path / 'm'), mapped)
  assert {s: [p[0] for p in v] for s, v in pairs.items()} == {
      'test': ['c0'], 'train': ['a0', 'a1', 'a2'], 'validation': ['b0', 'b1']}
  whole = dataclasses.replace(mapped, split_folders=(('a', 'train'), ('c', 'test')),
                              split_ratios=(('train', 1.0),))
  os.rename(tmp_path / 'm' / 'b', tmp_path / 'b')
  pairs, _ = folder_lib.find_pairs(str(tmp_path / 'm'), whole)
  assert sorted(pairs) == ['test', 'train'] and len(pairs['train']) == 3


@pytest.mark.parametrize('mapping,match', [
    ('a:train,c:test', r"b/images/b0\.png: its split folder 'b' is not in "
                       r'--split_folders=a:train,c:test; add b:SPLIT'),
    ('a:train,b:validation,c:test,d:test2', r"'test2' is no split"),
    ('a:train,b:validation,c:test,x:test', r"maps two folders to 'test'"),
    ('a:train,b:validation,c:test,a:test', r"maps the folder 'a' twice"),
    ('a:train,b:validation,c:test,x/y:test', 'without /'),
])
def test_bad_split_folders_are_named(tmp_path, mapping, match):
  write_plain(str(tmp_path / 'm'), {'a': 2, 'b': 1, 'c': 1})
  with pytest.raises(ValueError, match=match):
    options = folder_lib.folder_options_from_flags(str(tmp_path / 'm'), None, None, None, None,
                                                   None, split_folders=mapping)
    folder_lib.find_pairs(str(tmp_path / 'm'), options)


def test_split_folders_naming_a_folder_that_is_not_there(tmp_path):
  write_plain(str(tmp_path / 'm'), {'a': 2, 'c': 1})
  options = _options(images='{split}/images/{id}.png', masks='{split}/masks/{id}.png',
                     split_folders=(('a', 'train'), ('validaton', 'validation'), ('c', 'test')))
  _fails(tmp_path, r"names the folder 'validaton', but no file .*\(split folders found: a, c\)",
         options)
  no_split = _options(images='images/{id}.png', masks='masks/{id}.png',
                      split_folders=(('a', 'train'),))
  _fails(tmp_path, r'--split_folders=a:train renames the folders \{split\} stands for', no_split)
  with pytest.raises(ValueError, match='expected FOLDER:SPLIT'):
    folder_lib.parse_split_folders('training=train')


# ----------------------------------------------------------------------------- regions of interest


def write_with_rois(root, sizes, seed=0):
  """`{split}/img/<id>.png`, `{split}/gt/<id>.png`, `{split}/fov/<id>_fov.gif` (ROI {0, 255}).

  Returns {id: (image, mask01, roi01)}."""
  rng = np.random.default_rng(seed)
  truth = {}
  for split, n in sizes.items():
    for i in range(n):
      example_id = f'{split[:2]}{i}'
      image, mask = _pair(rng, k=i)
      roi = np.zeros(mask.shape, np.uint8)
      roi[1:-1 - i, 2:] = 255
      _save(image, os.path.join(root, split, 'img', f'{example_id}.png'))
      _save(mask, os.path.join(root, split, 'gt', f'{example_id}.png'))
      _save(roi, os.path.join(root, split, 'fov', f'{example_id}_fov.gif'))
      truth[example_id] = (image, (mask > 0).astype(np.uint8), (roi > 0).astype(np.uint8))
  return truth


ROI_TEMPLATES = dict(images='{split}/img/{id}.png', masks='{split}/gt/{id}.png',
                     rois='{split}/fov/{id}_fov.gif')


def test_three_templates_roi_read_back_and_missing_or_unpaired_rois_named(tmp_path):
  manual = tmp_path / 'm'
  truth = write_with_rois(str(manual), {'train': 3, 'test': 2})
  os.remove(manual / 'train' / 'fov' / 'tr1_fov.gif')  # an image without its ROI
  _save(np.zeros((20, 24), np.uint8), str(manual / 'test' / 'fov' / 'te7_fov.gif'))  # no image
  result = prepare('folder', str(manual), str(tmp_path / 'd'), name='fov',
                   folder_options=_options(**ROI_TEMPLATES))
  metadata = result['fov']['metadata']
  assert result['fov']['splits'] == {'test': 2, 'train': 3}
  assert metadata['roi_files'] == {'test': 2, 'train': 2}
  assert metadata['missing_rois'] == {'train': [str(manual / 'train' / 'img' / 'tr1.png')]}
  assert metadata['ignored_files'] == [str(manual / 'test' / 'fov' / 'te7_fov.gif')]
  report = format_report(result)
  assert "--rois='{split}/fov/{id}_fov.gif'" in report
  assert 'region-of-interest files: test=2, train=2' in report
  assert '1 image(s) without a region-of-interest file (whole image used): ' in report
  assert 'train/img/tr1.png' in report and 'skipped 1 image file(s)' in report
  assert 'te7_fov.gif' in report
  for split in ('train', 'test'):
    for ex in _read('fov', tmp_path / 'd', split):
      image, mask, roi = truth[ex['id']]
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['mask'], mask)
      expected = np.ones_like(roi) if ex['id'] == 'tr1' else roi
      np.testing.assert_array_equal(ex['roi'], expected)
      assert ex['roi'].dtype == np.uint8


def test_data_sets_without_rois_are_unchanged(tmp_path):
  write_plain(str(tmp_path / 'm'), {'train': 2})
  result = prepare('folder', str(tmp_path / 'm'), str(tmp_path / 'd'), name='plain')
  metadata = result['plain']['metadata']
  assert set(metadata['pairing']) == {'images', 'masks', 'split_ratios', 'mask_threshold',
                                      'mask_classes'}
  assert 'roi_files' not in metadata and 'missing_rois' not in metadata
  assert set(_read('plain', tmp_path / 'd', 'train')[0]) == {'image', 'mask', 'id'}
  with open(tmp_path / 'd' / 'plain' / '1.0.0' / 'features.json') as f:
    assert '"roi"' not in f.read()


@pytest.mark.parametrize('change,match', [
    ('size', r'roi .*tr0_fov\.gif has size 23x20 \(WxH\) but its image .*tr0\.png is 24x20'),
    ('values', r'roi .*tr0_fov\.gif holds values \{0, 7\}; expected a binary roi'),
    ('none', r"no file under .* matching --rois='\{split\}/fov/\{id\}_fov\.gif' pairs with an "
             'image'),
])
def test_bad_rois_are_named(tmp_path, change, match):
  write_with_rois(str(tmp_path / 'm'), {'train': 2})
  roi = tmp_path / 'm' / 'train' / 'fov' / 'tr0_fov.gif'
  if change == 'size':
    _save(np.zeros((20, 23), np.uint8), str(roi))
  elif change == 'values':
    _save(np.where(np.eye(20, 24) > 0, 7, 0).astype(np.uint8), str(roi))
  else:
    for name in os.listdir(roi.parent):
      os.rename(roi.parent / name, roi.parent / name.replace('_fov', '_x'))
  _fails(tmp_path, match, _options(**ROI_TEMPLATES))


def test_roi_template_needs_split_like_the_others(tmp_path):
  write_with_rois(str(tmp_path / 'm'), {'train': 1})
  options = _options(**dict(ROI_TEMPLATES, rois='fov/{id}_fov.gif'))
  _fails(tmp_path, r'\{split\} must be in all templates or in none', options)
  clash = _options(**dict(ROI_TEMPLATES, rois='{split}/gt/{id}.png'))
  _fails(tmp_path, r'tr0\.png matches both --masks=.* and --rois=', clash)
