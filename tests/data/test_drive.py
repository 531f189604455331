"""`prepare --dataset=drive`: a fake DRIVE folder (TIFF images, GIF vessel and field-of-view
masks in the official layout) prepared in one command and read back with its `roi`."""
import dataclasses
import os
import subprocess
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before anything imports jax)
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.data import pipeline
from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import drive as drive_lib
from sgdc_jax.data.builders import folder as folder_lib
from sgdc_jax.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 12, 10  # DRIVE: 584 x 565


def _gif(values01, path):
  """A two-colour palette GIF holding {0, 255}, as DRIVE's masks are."""
  img = Image.fromarray(values01.astype(np.uint8), mode='P')
  img.putpalette([0, 0, 0, 255, 255, 255])
  img.save(path)


def write_drive(root, train=('21', '22', '23'), test=('01', '02'), seed=0):
  """The official layout with tiny files; returns {(split folder, id): (image, mask, roi)}."""
  rng = np.random.default_rng(seed)
  truth = {}
  for folder, ids in (('training', train), ('test', test)):
    for sub in ('images', '1st_manual', 'mask'):
      os.makedirs(os.path.join(root, folder, sub), exist_ok=True)
    for k, i in enumerate(ids):
      image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
      mask = (rng.random((H, W)) < 0.3).astype(np.uint8)
      roi = np.zeros((H, W), np.uint8)
      roi[1 + k % 2:H - 1, 1:W - 1] = 1
      Image.fromarray(image).save(os.path.join(root, folder, 'images', f'{i}_{folder}.tif'),
                                  compression='tiff_lzw')
      _gif(mask, os.path.join(root, folder, '1st_manual', f'{i}_manual1.gif'))
      _gif(roi, os.path.join(root, folder, 'mask', f'{i}_{folder}_mask.gif'))
      truth[(folder, i)] = (image, mask, roi)
  return truth


def _source(data_dir, split):
  config = pipeline.default_data_config()
  config.name = 'drive'
  config.data_dir = str(data_dir)
  return pipeline.open_source(config, split)


def test_drive_in_one_command(tmp_path):
  manual, data_dir = tmp_path / 'DRIVE', tmp_path / 'd'
  truth = write_drive(str(manual))
  cmd = [sys.executable, '-m', 'sgdc_jax.data.prepare', '--dataset=drive',
         f'--manual_dir={manual}', f'--data_dir={data_dir}']
  run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  # 3 training images: validation gets max(1, round(0.1 * 3)) = 1 by the folder hash rule.
  assert 'drive: test=2, train=2, validation=1' in run.stdout, run.stdout
  assert 'region-of-interest files: test=2, train=2, validation=1' in run.stdout
  assert "--split_folders=training:train,test:test" in run.stdout
  order = _common.hash_order(['21', '22', '23'], folder_lib.SPLIT_SALT)
  expected = {'train': sorted(order[:2]), 'validation': order[2:], 'test': ['01', '02']}
  for split, ids in expected.items():
    source = _source(data_dir, split)
    assert [source[i]['id'] for i in range(len(source))] == ids
    for ex in (source[i] for i in range(len(source))):
      image, mask, roi = truth[('test' if split == 'test' else 'training', ex['id'])]
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['mask'], mask)
      np.testing.assert_array_equal(ex['roi'], roi)
      assert ex['roi'].dtype == np.uint8 and ex['roi'].shape == (H, W)
  again = prepare('drive', str(manual), str(data_dir))['drive']  # same files, same preset
  assert again['status'].startswith('reused; the manual dir holds the same files')


def test_split_ratios_override_the_carved_validation(tmp_path):
  write_drive(str(tmp_path / 'm'), train=tuple(str(i) for i in range(21, 31)))
  options = dataclasses.replace(drive_lib.DRIVE_OPTIONS,
                                split_ratios=(('train', 0.8), ('validation', 0.2)))
  result = prepare('drive', str(tmp_path / 'm'), str(tmp_path / 'd'), folder_options=options)
  assert result['drive']['splits'] == {'test': 2, 'train': 8, 'validation': 2}
  assert result['drive']['metadata']['pairing']['split_ratios'] == [['train', 0.8],
                                                                    ['validation', 0.2]]


def _fails(tmp_path, match):
  with pytest.raises(ValueError, match=match):
    prepare('drive', str(tmp_path / 'm'), str(tmp_path / 'd'))
  assert not os.path.isdir(tmp_path / 'd' / 'drive' / '1.0.0')  # nothing half-prepared


def test_roi_of_another_size_is_named(tmp_path):
  write_drive(str(tmp_path / 'm'))
  _gif(np.ones((H, W + 1)), str(tmp_path / 'm' / 'test' / 'mask' / '02_test_mask.gif'))
  _fails(tmp_path, rf'roi .*02_test_mask\.gif has size {W + 1}x{H} \(WxH\) but its image '
         rf'.*02_test\.tif is {W}x{H}')


def test_unknown_split_folder_is_named(tmp_path):
  write_drive(str(tmp_path / 'm'))
  extra = tmp_path / 'm' / 'validation' / 'images'
  extra.mkdir(parents=True)
  Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(extra / '41_validation.tif')
  _fails(tmp_path, r"41_validation\.tif: its split folder 'validation' is not in "
         r'--split_folders=training:train,test:test; add validation:SPLIT')


def test_missing_test_labels_and_wrong_layout(tmp_path):
  write_drive(str(tmp_path / 'm'))
  for name in os.listdir(tmp_path / 'm' / 'test' / '1st_manual'):
    os.remove(tmp_path / 'm' / 'test' / '1st_manual' / name)
  os.rmdir(tmp_path / 'm' / 'test' / '1st_manual')
  _fails(tmp_path, r'test/1st_manual is missing: the test split needs the manual vessel')
  (tmp_path / 'other' / 'training').mkdir(parents=True)
  with pytest.raises(ValueError, match=r'lacks (.|\n)*training/images/21_training\.tif'):
    prepare('drive', str(tmp_path / 'other'), str(tmp_path / 'd'))
  with pytest.raises(ValueError, match="DRIVE's data set is named 'drive'"):
    prepare('drive', str(tmp_path / 'other'), str(tmp_path / 'd'), name='mine')
