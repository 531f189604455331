"""TFDS builders: tiny fixtures in the real layouts, prepared and read back via tfds.data_source."""
import os
import subprocess
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before anything imports jax)
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from sgdc_jax.data import builders
from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import conic as conic_lib
from sgdc_jax.data.builders import ph2 as ph2_lib
from sgdc_jax.data.prepare import format_report
from sgdc_jax.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ----------------------------------------------------------------------------- fixture writers


def _rgb(rng, h, w):
  return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _blob(h, w, cy, cx, r, high=255):
  yy, xx = np.mgrid[:h, :w]
  return np.where((yy - cy)**2 + (xx - cx)**2 <= r * r, high, 0).astype(np.uint8)


def _save(array, path, fmt=None, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.fromarray(array)
  if mode:
    img = img.convert(mode)
  img.save(path, format=fmt)


def _write_isic(root, split_folders, suffix, specs, rng):
  """specs: {split: [(id, h, w, image_mode, mask_kind)]}; returns {split: {id: (image, mask01)}}.

  image_mode: 'RGB' or 'L' (JPEG), mask_kind: '255' ({0,255} L PNG), '01' ({0,1} L PNG),
  'rgb' ({0,255} equal-channel RGB PNG), 'pal' (paletted PNG), 'empty' (all 0).
  """
  truth = {}
  for split, items in specs.items():
    image_folder, mask_folder = split_folders[split]
    truth[split] = {}
    for example_id, h, w, mode, kind in items:
      image = _rgb(rng, h, w)
      if mode == 'L':
        image = np.asarray(Image.fromarray(image).convert('L'))
      _save(image, os.path.join(root, image_folder, f'{example_id}.jpg'), 'JPEG')
      mask255 = _blob(h, w, h // 2, w // 3,
                      min(h, w) // 4) if kind != 'empty' else np.zeros((h, w), np.uint8)
      mask_path = os.path.join(root, mask_folder, f'{example_id}{suffix}.png')
      if kind == '01':
        _save(mask255 // 255, mask_path, 'PNG')
      elif kind == 'rgb':
        _save(np.stack([mask255] * 3, -1), mask_path, 'PNG')
      elif kind == 'pal':
        _save(mask255, mask_path, 'PNG', mode='P')
      else:
        _save(mask255, mask_path, 'PNG')
      decoded = np.asarray(
          Image.open(os.path.join(root, image_folder, f'{example_id}.jpg')).convert('RGB'))
      truth[split][example_id] = (decoded, (mask255 > 0).astype(np.uint8))
  return truth


ISIC2016_SPECS = {
    'train': [('ISIC_0000000', 40, 56, 'RGB', '255'), ('ISIC_0000001', 48, 32, 'L', 'empty'),
              ('ISIC_0000002', 40, 56, 'RGB', '01')],
    'test': [('ISIC_0000003', 36, 44, 'RGB', '255'), ('ISIC_0000004', 40, 56, 'RGB', 'rgb')],
}
ISIC2018_SPECS = {
    'train': [('ISIC_0000010', 40, 56, 'RGB', '255'), ('ISIC_0000011', 32, 48, 'RGB', 'rgb'),
              ('ISIC_0000012', 40, 56, 'L', '255')],
    'validation': [('ISIC_0000020', 40, 56, 'RGB', '01'), ('ISIC_0000021', 40, 40, 'RGB', 'pal')],
    'test': [('ISIC_0000030', 40, 56, 'RGB', '255'), ('ISIC_0000031', 44, 56, 'RGB', 'empty')],
}
PH2_IDS = ['IMD002', 'IMD003', 'IMD004', 'IMD006', 'IMD008']


def write_isic2016(root, rng):
  return _write_isic(root, builders.Isic2016.SPLIT_FOLDERS, '_Segmentation', ISIC2016_SPECS, rng)


def write_isic2018(root, rng):
  truth = _write_isic(root, builders.Isic2018.SPLIT_FOLDERS, '_segmentation', ISIC2018_SPECS, rng)
  for folder in ('ISIC2018_Task1-2_Training_Input', 'ISIC2018_Task1_Training_GroundTruth'):
    with open(os.path.join(root, folder, 'LICENSE.txt'), 'w') as f:
      f.write('CC-BY-NC\n')
  # Some unzip tools leave a doubly nested folder X/X: the builder must look inside.
  folder = os.path.join(root, 'ISIC2018_Task1-2_Test_Input')
  os.rename(folder, folder + '_tmp')
  os.makedirs(folder)
  os.rename(folder + '_tmp', os.path.join(folder, 'ISIC2018_Task1-2_Test_Input'))
  return truth


def write_ph2(root, rng):
  """PH2 layout in BMP; IMD003's image is grayscale (converted); masks 1-bit or {0,255} L."""
  base = os.path.join(root, 'PH2Dataset', 'PH2 Dataset images')
  truth = {}
  for k, case in enumerate(PH2_IDS):
    h, w = 40 + 4 * k, 56
    image = _rgb(rng, h, w)
    mask255 = _blob(h, w, h // 2, w // 2, 10 + k)
    image_path = os.path.join(base, case, f'{case}_Dermoscopic_Image', f'{case}.bmp')
    _save(image, image_path, 'BMP', mode='L' if case == 'IMD003' else None)
    image = np.asarray(Image.open(image_path).convert('RGB'))
    _save(mask255,
          os.path.join(base, case, f'{case}_lesion', f'{case}_lesion.bmp'),
          'BMP',
          mode='1' if k % 2 else None)
    os.makedirs(os.path.join(base, case, f'{case}_roi'), exist_ok=True)
    truth[case] = (image, (mask255 > 0).astype(np.uint8))
  with open(os.path.join(root, 'PH2Dataset', 'PH2_dataset.txt'), 'w') as f:
    f.write('PH2 meta\n')
  return truth


CONIC_SOURCES = ['consep_1', 'consep_2', 'crag_1', 'dpath_3', 'glas_7', 'pannuke_2']


def write_conic(root, rng, size=24):
  """6 source images x 2 patches, labels int32 with instance ids and classes 0..6."""
  names = [f'{s}-{p:04d}' for s in CONIC_SOURCES for p in range(2)]
  n = len(names)
  images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
  labels = np.zeros((n, size, size, 2), np.int32)
  for i in range(n):
    for j in range(3):
      cls = (i + j) % 7
      y, x = 3 + 7 * j, 4 + 5 * j
      labels[i, y:y + 4, x:x + 4, 0] = j + 1
      labels[i, y:y + 4, x:x + 4, 1] = cls
  os.makedirs(root, exist_ok=True)
  np.save(os.path.join(root, 'images.npy'), images)
  np.save(os.path.join(root, 'labels.npy'), labels)
  with open(os.path.join(root, 'patch_info.csv'), 'w') as f:
    f.write('patch_info\n' + ''.join(f'{name}\n' for name in names))
  return images, labels, names


# ----------------------------------------------------------------------------- prepared datasets


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """Prepares every builder once from fixtures; returns {name: (data_dir, truth, result)}."""
  rng = np.random.default_rng(0)
  out = {}
  for name, writer in (('isic2016', write_isic2016), ('isic2018', write_isic2018),
                       ('ph2', write_ph2), ('conic', write_conic)):
    manual = str(tmp_path_factory.mktemp(f'{name}_manual'))
    data_dir = str(tmp_path_factory.mktemp(f'{name}_data'))
    truth = writer(manual, rng)
    out[name] = (data_dir, truth, prepare(name, manual, data_dir), manual)
  return out


def _read_all(name, split, data_dir):
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  return [source[i] for i in range(len(source))]


def _check_example(ex):
  assert set(ex) == {'image', 'mask', 'id'}
  assert isinstance(ex['id'], str)
  assert isinstance(ex['image'], np.ndarray) and ex['image'].dtype == np.uint8
  assert ex['image'].ndim == 3 and ex['image'].shape[2] == 3
  assert isinstance(ex['mask'], np.ndarray) and ex['mask'].dtype == np.uint8
  assert ex['mask'].shape == ex['image'].shape[:2]


@pytest.mark.parametrize('name,specs', [('isic2016', ISIC2016_SPECS), ('isic2018', ISIC2018_SPECS)])
def test_isic_read_back(prepared, name, specs):
  data_dir, truth, result, _ = prepared[name]
  assert result[name]['splits'] == {s: len(v) for s, v in sorted(specs.items())}
  for split, items in specs.items():
    examples = _read_all(name, split, data_dir)
    assert [ex['id'] for ex in examples] == [item[0] for item in items]  # sorted-id record order
    for ex, (example_id, h, w, _, kind) in zip(examples, items):
      _check_example(ex)
      image, mask = truth[split][example_id]
      assert ex['image'].shape == (h, w, 3)
      # JPEG bytes are stored as they are (RGB) or as a lossless PNG (converted): same pixels.
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['mask'], mask)
      assert set(np.unique(ex['mask'])) <= {0, 1}
      if kind == 'empty':
        assert ex['mask'].max() == 0
      else:
        assert ex['mask'].max() == 1


def test_conversions_are_counted_and_reported(prepared):
  meta16 = prepared['isic2016'][2]['isic2016']['metadata']
  assert meta16['conversions'] == {'test': {'mask RGB->L': 1}, 'train': {'image L->RGB': 1}}
  meta18 = prepared['isic2018'][2]['isic2018']['metadata']
  assert meta18['conversions'] == {
      'train': {
          'image L->RGB': 1,
          'mask RGB->L': 1
      },
      'validation': {
          'mask P->L': 1
      }
  }
  assert sorted(
      os.path.basename(p) for p in meta18['ignored_files']) == ['LICENSE.txt', 'LICENSE.txt']
  # Stored in the dataset's metadata.json too, so reloading the builder shows it.
  builder = tfds.builder('isic2018', data_dir=prepared['isic2018'][0])
  assert builder.info.metadata['conversions'] == meta18['conversions']
  report = format_report(prepared['isic2018'][2])
  assert 'train=3' in report and 'validation=2' in report and 'image L->RGB' in report


def test_ph2_read_back_and_split(prepared):
  data_dir, truth, result, _ = prepared['ph2']
  assert result['ph2']['splits'] == {'test': 1, 'train': 4}
  conversions = result['ph2']['metadata']['conversions']
  assert sum(c.get('image L->RGB', 0) for c in conversions.values()) == 1
  split_ids = {}
  for split in ('train', 'test', 'all'):
    examples = _read_all('ph2', split, data_dir)
    split_ids[split] = [ex['id'] for ex in examples]
    for ex in examples:
      _check_example(ex)
      image, mask = truth[ex['id']]
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['mask'], mask)
  assert sorted(split_ids['all']) == PH2_IDS  # TFDS's 'all' = train + test
  assert not set(split_ids['train']) & set(split_ids['test'])
  assert sorted(split_ids['train'] + split_ids['test']) == PH2_IDS
  assert {
      s: split_ids[s] for s in ('train', 'test')
  } == ph2_lib.split_ids(PH2_IDS)  # documented split


def test_ph2_split_of_full_database_is_160_40_and_seeded():
  ids = [f'IMD{i:03d}' for i in range(2, 202)]
  a, b = ph2_lib.split_ids(ids), ph2_lib.split_ids(list(reversed(ids)))
  assert a == b  # depends on the ids only, not on their order
  assert (len(a['train']), len(a['test'])) == (160, 40)
  # Pinned so an accidental change of the split (salt, hashing, rounding) is caught.
  assert a['test'][:3] == ph2_lib.split_ids(ids)['test'][:3]
  assert _common.hash_order(['a', 'b', 'c'], 'salt') == _common.hash_order(['c', 'b', 'a'], 'salt')


@pytest.mark.parametrize('config', ['binary', 'semantic'])
def test_conic_read_back_and_source_split(prepared, config):
  data_dir, (images, labels, names), result, _ = prepared['conic']
  sizes = result[f'conic/{config}']['splits']
  assert sizes == {'test': 2, 'train': 8, 'validation': 2}  # 6 sources -> 4/1/1 sources x 2 patches
  index = {name: i for i, name in enumerate(names)}
  sources = {}
  seen = []
  for split in ('train', 'validation', 'test'):
    examples = _read_all(f'conic/{config}', split, data_dir)
    assert len(examples) == sizes[split]
    for ex in examples:
      _check_example(ex)
      i = index[ex['id']]
      np.testing.assert_array_equal(ex['image'], images[i])
      classes = labels[i, ..., 1]
      expected = classes.astype(np.uint8) if config == 'semantic' else (classes > 0).astype(
          np.uint8)
      np.testing.assert_array_equal(ex['mask'], expected)
      sources.setdefault(conic_lib.source_of(ex['id']), set()).add(split)
      seen.append(ex['id'])
  assert sorted(seen) == sorted(names)  # every patch exactly once
  assert all(len(s) == 1 for s in sources.values()), sources  # no source image in two splits
  assert set(sources) == set(CONIC_SOURCES)


def test_semantic_conic_keeps_all_class_ids(prepared):
  data_dir = prepared['conic'][0]
  values = set()
  for split in ('train', 'validation', 'test'):
    for ex in _read_all('conic/semantic', split, data_dir):
      values |= set(np.unique(ex['mask']).tolist())
  assert values == set(range(7))


def test_prepare_is_idempotent(prepared):
  data_dir, _, first, manual = prepared['ph2']
  again = prepare('ph2', manual, data_dir)
  assert again['ph2']['splits'] == first['ph2']['splits']
  # Already prepared: the manual dir is not needed any more.
  assert prepare('ph2', None, data_dir)['ph2']['splits'] == first['ph2']['splits']


def test_prepare_command_line(prepared, tmp_path):
  """The documented command prepares a dataset, shows progress and prints the split sizes;
  a wrong manual dir exits non-zero with the expected layout (reuse is tested in-process)."""
  manual = prepared['isic2016'][3]
  cmd = [sys.executable, '-m', 'sgdc_jax.data.prepare', '--dataset=isic2016']
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  run = subprocess.run(cmd + [f'--manual_dir={manual}', f'--data_dir={tmp_path}'],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'isic2016: test=2, train=3' in run.stdout
  assert "colour conversions: {'test': {'mask RGB->L': 1}, 'train': {'image L->RGB': 1}}" in run.stdout
  assert 'Generating train examples' in run.stderr  # TFDS's progress bar
  bad = subprocess.run(cmd + [f'--manual_dir={tmp_path / "nowhere"}', f'--data_dir={tmp_path}/d2'],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert bad.returncode != 0
  assert 'does not exist' in bad.stderr and 'ISBI2016_ISIC_Part1_Training_Data' in bad.stderr


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def isic_dir(tmp_path):
  manual = tmp_path / 'manual'
  write_isic2016(str(manual), np.random.default_rng(1))
  return manual


def _train(manual, name, suffix='.jpg'):
  folder = ('ISBI2016_ISIC_Part1_Training_Data'
            if suffix == '.jpg' else 'ISBI2016_ISIC_Part1_Training_GroundTruth')
  return manual / folder / f'{name}{suffix}'


def _prepare_fails(dataset, manual, data_dir, match):
  with pytest.raises(ValueError, match=match):
    prepare(dataset, str(manual), str(data_dir))
  assert not tfds.builder(dataset, data_dir=str(data_dir)).is_prepared()


def test_image_without_ground_truth(isic_dir, tmp_path):
  os.remove(_train(isic_dir, 'ISIC_0000001_Segmentation', '.png'))
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd', r'ISIC_0000001\.jpg has no ground truth')


def test_ground_truth_without_image(isic_dir, tmp_path):
  os.remove(_train(isic_dir, 'ISIC_0000002'))
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd',
                 r'ISIC_0000002_Segmentation\.png has no image')


def test_undecodable_image(isic_dir, tmp_path):
  _train(isic_dir, 'ISIC_0000001').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd',
                 r'cannot decode image file .*ISIC_0000001\.jpg')


def test_mask_size_differs_from_image(isic_dir, tmp_path):
  _save(np.zeros((40, 50), np.uint8), str(_train(isic_dir, 'ISIC_0000000_Segmentation', '.png')),
        'PNG')
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd',
                 r'ISIC_0000000_Segmentation\.png has size 50x40')


@pytest.mark.parametrize('values', [(0, 128, 255), (0, 1, 2), (0, 1, 255)])
def test_non_binary_mask(isic_dir, tmp_path, values):
  mask = np.zeros((40, 56), np.uint8)
  for k, v in enumerate(values):
    mask[k, :] = v
  _save(mask, str(_train(isic_dir, 'ISIC_0000000_Segmentation', '.png')), 'PNG')
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd',
                 r'mask .*ISIC_0000000_Segmentation\.png holds values')


def test_colour_mask_with_differing_channels(isic_dir, tmp_path):
  mask = np.zeros((40, 56, 3), np.uint8)
  mask[5:10, 5:10, 0] = 255
  _save(mask, str(_train(isic_dir, 'ISIC_0000000_Segmentation', '.png')), 'PNG')
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd',
                 r'ISIC_0000000_Segmentation\.png is a colour')


def test_unexpected_file_in_ground_truth_folder(isic_dir, tmp_path):
  _save(np.zeros((4, 4), np.uint8), str(_train(isic_dir, 'ISIC_0000000_mask', '.png')), 'PNG')
  _prepare_fails('isic2016', isic_dir, tmp_path / 'd', r'unexpected file .*ISIC_0000000_mask\.png')


@pytest.mark.parametrize('dataset', ['isic2016', 'isic2018', 'ph2', 'conic', 'drive'])
@pytest.mark.parametrize('state', ['missing', 'empty', 'wrong'])
def test_wrong_manual_dir_lists_expected_layout(tmp_path, dataset, state):
  manual = tmp_path / 'manual'
  if state != 'missing':
    manual.mkdir()
  if state == 'wrong':
    (manual / 'some_other_folder').mkdir()
    (manual / 'some_other_folder' / 'x.jpg').write_bytes(b'x')
  expected = {
      'isic2016': 'ISBI2016_ISIC_Part1_Test_GroundTruth',
      'isic2018': 'ISIC2018_Task1-2_Validation_Input',
      'ph2': 'IMDnnn_Dermoscopic_Image',
      'conic': 'patch_info.csv',
      'drive': 'training/1st_manual/21_manual1.gif',
  }[dataset]
  word = {'missing': 'does not exist', 'empty': 'is empty', 'wrong': 'lacks'}[state]
  with pytest.raises(ValueError, match=rf'{word}(.|\n)*{expected}'):
    prepare(dataset, str(manual), str(tmp_path / 'data'))


def test_builder_called_directly_on_empty_dir_gives_value_error(tmp_path):
  (tmp_path / 'manual').mkdir()
  builder = builders.Isic2016(data_dir=str(tmp_path / 'data'))
  with pytest.raises(ValueError, match='ISBI2016_ISIC_Part1_Training_Data'):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / 'manual')))


def test_ph2_lesion_missing(tmp_path):
  manual = tmp_path / 'manual'
  write_ph2(str(manual), np.random.default_rng(2))
  case = manual / 'PH2Dataset' / 'PH2 Dataset images' / 'IMD004'
  lesion = case / 'IMD004_lesion' / 'IMD004_lesion.bmp'
  os.remove(lesion)
  _prepare_fails('ph2', manual, tmp_path / 'd',
                 r'IMD004\.bmp has no ground truth: expected .*IMD004_lesion\.bmp')


def test_ph2_image_missing(tmp_path):
  manual = tmp_path / 'manual'
  write_ph2(str(manual), np.random.default_rng(2))
  os.remove(manual / 'PH2Dataset' / 'PH2 Dataset images' / 'IMD006' / 'IMD006_Dermoscopic_Image' /
            'IMD006.bmp')
  _prepare_fails('ph2', manual, tmp_path / 'd', r'IMD006_lesion\.bmp has no image')


def test_conic_bad_inputs(tmp_path):
  manual = tmp_path / 'manual'
  images, labels, names = write_conic(str(manual), np.random.default_rng(3))
  # patch_info.csv with a missing row.
  with open(manual / 'patch_info.csv', 'w') as f:
    f.write('patch_info\n' + ''.join(f'{n}\n' for n in names[:-1]))
  _prepare_fails('conic/binary', manual, tmp_path / 'd1',
                 r'patch_info\.csv names 11 patches but images\.npy holds 12')
  with open(manual / 'patch_info.csv', 'w') as f:
    f.write('patch_info\n' + ''.join(f'{n}\n' for n in names))
  # Class id outside 0..6.
  bad = labels.copy()
  bad[5, 0, 0, 1] = 7
  np.save(manual / 'labels.npy', bad)
  _prepare_fails('conic/semantic', manual, tmp_path / 'd2',
                 rf'labels\.npy: patch 5 \({names[5]}\) has class ids')
  # labels.npy with the wrong shape.
  np.save(manual / 'labels.npy', labels[..., :1])
  _prepare_fails('conic/binary', manual, tmp_path / 'd3',
                 r'labels\.npy has shape \(12, 24, 24, 1\)')
  # Float class ids that are not whole numbers.
  np.save(manual / 'labels.npy',
          labels.astype(np.float32) + np.float32(0.5) * (np.arange(12) == 4)[:, None, None, None])
  _prepare_fails('conic/semantic', manual, tmp_path / 'd5',
                 rf'labels\.npy: patch 4 \({names[4]}\) has non-integer')
  # images.npy that is not a .npy file.
  (manual / 'images.npy').write_bytes(b'garbage')
  _prepare_fails('conic/binary', manual, tmp_path / 'd4', r'cannot read .*images\.npy')


def test_unknown_dataset_or_config(tmp_path):
  with pytest.raises(ValueError, match='unknown dataset'):
    prepare('isic2019', str(tmp_path), str(tmp_path))
  with pytest.raises(ValueError, match='unknown config'):
    prepare('conic/instances', str(tmp_path), str(tmp_path))


def test_mask_value_mapping_unit():
  np.testing.assert_array_equal(_common.binarize_mask(np.array([[0, 255]], np.uint8), 'm'),
                                [[0, 1]])
  np.testing.assert_array_equal(_common.binarize_mask(np.array([[1, 1]], np.uint8), 'm'), [[1, 1]])
  np.testing.assert_array_equal(_common.binarize_mask(np.array([[255, 255]], np.uint8), 'm'),
                                [[1, 1]])
  np.testing.assert_array_equal(_common.binarize_mask(np.array([[0, 0]], np.uint8), 'm'), [[0, 0]])
  with pytest.raises(ValueError, match='mask m holds values'):
    _common.binarize_mask(np.array([[0, 3]], np.uint8), 'm')


def test_split_counts():
  assert _common.split_counts(238, (0.7, 0.1, 0.2)) == [166, 24, 48]
  assert _common.split_counts(3, (0.7, 0.1, 0.2)) == [1, 1, 1]
  with pytest.raises(ValueError, match='cannot split 2'):
    _common.split_counts(2, (0.7, 0.1, 0.2))


def test_conic_float_labels_are_accepted(tmp_path):
  manual = tmp_path / 'manual'
  images, labels, names = write_conic(str(manual), np.random.default_rng(4))
  np.save(manual / 'labels.npy', labels.astype(np.float64))
  result = prepare('conic/semantic', str(manual), str(tmp_path / 'data'))
  assert sum(result['conic/semantic']['splits'].values()) == len(names)
  for ex in _read_all('conic/semantic', 'validation', str(tmp_path / 'data')):
    np.testing.assert_array_equal(ex['mask'], labels[names.index(ex['id']), ...,
                                                     1].astype(np.uint8))
