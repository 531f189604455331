"""Tests of the Grain input pipeline (per-example transforms: test_transforms.py)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import itertools
import json

import ml_collections
import numpy as np
import pytest

from image_examples import PatternSource
from sgdc_jax.ops.boundary import boundary_target
from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms as T

MEAN = np.array(T.IMAGENET_MEAN)
STD = np.array(T.IMAGENET_STD)


def _config(size=24, raw=(30, 40), n=(12, 10, 6)):
  config = pipeline.default_data_config()
  config.image_size = size
  config.num_workers = 0
  config.read_threads = 0
  config.synthetic.update(dict(train_size=n[0], validation_size=n[1], test_size=n[2],
                               height=raw[0], width=raw[1]))
  return config


def _unnormalise(image):
  return image * STD + MEAN  # back to [0, 1] RGB


class IndexSource:
  """Example i is a constant image of grey level 10 * i (identifies the record)."""

  def __init__(self, n, size=(8, 8)):
    self.n, self.size = n, size

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    image = np.full(self.size + (3,), 10 * index, np.uint8)
    mask = np.zeros(self.size, np.uint8)
    mask[: index % self.size[0]] = 1
    return {'image': image, 'mask': mask, 'id': str(index)}


def _decode_ids(batch):
  grey = _unnormalise(batch['image'])[..., 0].mean(axis=(1, 2)) * 255
  return [int(v) for v in np.round(grey / 10)]


# --- training pipeline -----------------------------------------------------------------


def test_train_batches_format():
  config = _config()
  it = pipeline.create_train_iterator(config, 4, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert batch['image'].shape == (4, 24, 24, 3) and batch['image'].dtype == np.float32
  assert batch['mask'].shape == (4, 24, 24) and batch['mask'].dtype == np.int32
  assert batch['edge'].dtype == np.uint8
  np.testing.assert_array_equal(batch['edge'], boundary_target(batch['mask'], 2))
  assert 0 < batch['mask'].mean() < 1


def test_augmentation_keeps_image_and_mask_aligned(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: PatternSource(16))
  config = _config(size=32)
  it = pipeline.create_train_iterator(config, 8, seed=1, process_index=0, process_count=1)
  checked = 0
  for _ in range(4):
    batch = next(it)
    for image, mask in zip(_unnormalise(batch['image']), batch['mask']):
      grey = image.mean(-1)
      bright = grey > (grey.min() + grey.max()) / 2
      if not mask.any():
        assert not bright.any()
        continue
      # Disagreement only within ~2 px of the mask boundary (resampling blur).
      band = boundary_target(mask, width=4).astype(bool)
      assert not np.any((bright != mask.astype(bool)) & ~band)
      iou = (bright & (mask > 0)).sum() / (bright | (mask > 0)).sum()
      assert iou > 0.75
      checked += 1
  assert checked >= 20


def test_fast_path_matches_the_reference_path():
  """uint8 colour jitter: the same geometry as the float32 reference, colours within 1/2 level."""
  config = _config()
  kwargs = dict(global_batch_size=4, seed=3, process_index=0, process_count=1)
  fast = iter(pipeline.create_train_dataset(config, **kwargs))
  reference = iter(pipeline.create_train_dataset(config, reference=True, **kwargs))
  for _ in range(3):
    got, want = next(fast), next(reference)
    np.testing.assert_array_equal(got['mask'], want['mask'])
    np.testing.assert_array_equal(got['edge'], want['edge'])
    diff = np.abs(_unnormalise(got['image']) - _unnormalise(want['image'])) * 255
    assert diff.max() <= 0.5 + 1e-3
  config.augment.update(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
  got = next(iter(pipeline.create_train_dataset(config, **kwargs)))
  want = next(iter(pipeline.create_train_dataset(config, reference=True, **kwargs)))
  np.testing.assert_allclose(got['image'], want['image'], atol=1e-5)  # no jitter: same pixels


def test_two_processes_see_disjoint_examples_covering_the_split(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: IndexSource(12))
  config = _config(size=8)
  config.augment.enabled = False
  seen = []
  for process in (0, 1):
    it = pipeline.create_train_iterator(config, 4, seed=7, process_index=process, process_count=2)
    ids = [i for _ in range(3) for i in _decode_ids(next(it))]  # 3 batches of 2 = 6 = 12 / 2
    assert len(ids) == 6
    seen.append(ids)
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(12))
  assert seen[0] + seen[1] != list(range(12))  # shuffled


def test_shuffle_changes_between_epochs_and_seeds(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: IndexSource(8))
  config = _config(size=8)
  config.augment.enabled = False
  it = pipeline.create_train_iterator(config, 8, seed=3, process_index=0, process_count=1)
  first, second = _decode_ids(next(it)), _decode_ids(next(it))
  assert sorted(first) == sorted(second) == list(range(8)) and first != second
  other = pipeline.create_train_iterator(config, 8, seed=4, process_index=0, process_count=1)
  assert _decode_ids(next(other)) != first


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_iterator_state_resumes_at_the_exact_next_batch():
  config = _config()
  it = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  for _ in range(3):  # crosses the epoch boundary (12 examples / 2 processes / 2 per batch)
    next(it)
  state = it.get_state()
  json.dumps(state)  # checkpointable as JSON
  after = [next(it) for _ in range(4)]
  it.set_state(state)
  _assert_batches_equal([next(it) for _ in range(4)], after)
  fresh = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  fresh.set_state(state)
  _assert_batches_equal([next(fresh) for _ in range(4)], after)


def test_worker_processes_give_the_same_batches_and_resume_with_any_worker_count():
  config = _config()
  reference = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  want = [next(reference) for _ in range(5)]
  config.num_workers = 2
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  try:
    got = [next(it) for _ in range(2)]
    state = it.get_state()
    got += [next(it) for _ in range(3)]
    _assert_batches_equal(got, want)
    it.set_state(state)
    _assert_batches_equal([next(it) for _ in range(3)], want[2:])
  finally:
    it.close()
  assert state == {'next_batch': 2}
  # A state saved with 2 workers resumes with 1 or none (e.g. auto-sized on another host).
  for workers in (1, 0):
    config.num_workers = workers
    it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
    try:
      it.set_state(state)
      _assert_batches_equal([next(it) for _ in range(3)], want[2:])
    finally:
      it.close()
  # Evaluation keeps its order with workers too.
  config.num_workers = 2
  got = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                           process_count=1))
  config.num_workers = 0
  want = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                            process_count=1))
  _assert_batches_equal(got, want)


def test_iterator_accepts_single_process_grain_states_and_rejects_per_worker_ones():
  config = _config()
  want = [next(pipeline.create_train_iterator(config, 4, seed=2, process_index=0,
                                              process_count=1)) for _ in range(1)]
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  batches = [next(it) for _ in range(3)]
  it.set_state({'next_index': 1})   # Grain's own state of this pipeline without workers
  _assert_batches_equal([next(it)], batches[1:2])
  _assert_batches_equal(batches[:1], want)
  with pytest.raises(ValueError, match='multi-worker'):
    it.set_state({'next_index_in_cycle': 1, 'iterators_in_use_states': [{'next_index': 1}]})


def test_workers_and_read_threads_sized_to_the_host_unless_set(monkeypatch):
  config = _config()
  config.num_workers, config.read_threads = -1, -1
  assert pipeline.resolve_workers(config, cpus=1) == (0, 1)
  assert pipeline.resolve_workers(config, cpus=2) == (1, 2)
  assert pipeline.resolve_workers(config, cpus=8) == (7, 1)
  assert pipeline.resolve_workers(config, cpus=64) == (pipeline.MAX_AUTO_WORKERS, 4)
  # Evaluation: threads only (worker start-up would outweigh a validation pass).
  assert pipeline.resolve_workers(config, cpus=64, evaluation=True) == (0, 4)
  assert pipeline.resolve_workers(config, cpus=2, evaluation=True) == (0, 2)
  config.num_workers = 3                     # an explicit value wins ...
  assert pipeline.resolve_workers(config, cpus=64) == (3, 4)
  assert pipeline.resolve_workers(config, cpus=64, evaluation=True) == (3, 4)
  config.read_threads = 0                    # ... for either field
  assert pipeline.resolve_workers(config, cpus=64) == (3, 0)
  config.num_workers, config.read_threads = 0, -1
  assert pipeline.resolve_workers(config, cpus=2) == (0, 2)
  # The iterators resolve -1 through `usable_cpus` (one CPU here: no worker processes).
  monkeypatch.setattr(pipeline, 'usable_cpus', lambda: 1)
  config.num_workers = -1
  it = pipeline.create_train_iterator(config, 4, seed=0, process_index=0, process_count=1)
  assert next(it)['image'].shape == (4, 24, 24, 3)
  for field, value in (('num_workers', -2), ('read_threads', -3), ('worker_buffer_size', 0),
                       ('jpeg_draft', 'yes')):
    bad = _config().to_dict()
    bad[field] = value  # via a dict: the base config's typed bool field refuses 'yes' itself
    bad = ml_collections.ConfigDict(bad)
    with pytest.raises(ValueError, match=f'data.{field}'):
      pipeline.create_train_iterator(bad, 4, seed=0, process_index=0, process_count=1)


def test_train_errors():
  config = _config()
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.create_train_iterator(config, 5, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.create_train_iterator(config, 4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='seed'):
    pipeline.create_train_iterator(config, 4, seed=-1, process_index=0, process_count=1)


# --- evaluation pipeline -----------------------------------------------------------------


def test_eval_sees_every_example_once_with_padding():
  config = _config(size=16)  # validation split: 10 records; 10 % 4 != 0
  source = pipeline.open_source(config, 'validation')
  per_process = []
  for process in (0, 1):
    batches = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=process,
                                                 process_count=2))
    assert len(batches) == 3  # ceil(10 / 4), the same on every process
    for b in batches:
      assert b['image'].shape == (2, 16, 16, 3) and b['valid'].dtype == bool
      assert b['index'].dtype == np.int32
      assert np.array_equal(b['valid'], b['index'] >= 0)
      assert not b['image'][~b['valid']].any() and not b['mask'][~b['valid']].any()
    per_process.append(batches)
  indices = [int(i) for p in per_process for b in p for i in b['index'][b['valid']]]
  assert sorted(indices) == list(range(10))
  padding = sum(int((~b['valid']).sum()) for p in per_process for b in p)
  assert padding == 2
  # Global batch k = records 4k..4k+3: process 0 holds the first half, process 1 the second.
  np.testing.assert_array_equal(per_process[0][1]['index'], [4, 5])
  np.testing.assert_array_equal(per_process[1][2]['index'], [-1, -1])
  # Content is the resized record, the same on every run.
  first = per_process[0][0]
  _, mask = T.resize_pair(source[1]['image'], source[1]['mask'], (16, 16))
  np.testing.assert_array_equal(first['mask'][1], mask)
  again = next(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                             process_count=2))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])


def test_eval_indices_single_process():
  assert pipeline.eval_indices(5, 4, 0, 1) == [0, 1, 2, 3, 4, -1, -1, -1]
  assert pipeline.eval_indices(4, 4, 0, 1) == [0, 1, 2, 3]


# --- sources ---------------------------------------------------------------------------------


def test_unprepared_tfds_dataset_names_dir_and_command(tmp_path):
  config = _config()
  config.name = 'isic2016'
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as err:
    pipeline.open_source(config, 'train')
  assert str(tmp_path) in str(err.value)
  assert 'python -m sgdc_jax.data.prepare --dataset=isic2016' in str(err.value)


def _write_tiny_isic2016(root, rng, lesions=False):
  """A few JPEG/PNG pairs in the ISIC 2016 layout (folder names from the builder).

  Noise images of about 30x40, or with `lesions` synthetic lesions of 96x128 (JPEGs that
  decode well at reduced size).
  """
  from PIL import Image
  from sgdc_jax.data.builders import Isic2016
  from sgdc_jax.data.synthetic import generate
  masks = {}
  for split, count in (('train', 3), ('test', 3)):
    image_dir, mask_dir = (root / f for f in Isic2016.SPLIT_FOLDERS[split])
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for k in range(count):
      name = f'ISIC_{len(masks):07d}'
      if lesions:
        example = generate(1, len(masks), 96, 128)
        image, mask = example['image'], example['mask'] * 255
      else:
        h, w = 30 + 2 * k, 40
        image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[5:20, 8 + k:30] = 255
      Image.fromarray(image).save(image_dir / f'{name}.jpg', quality=95)
      Image.fromarray(mask).save(mask_dir / f'{name}{Isic2016.MASK_SUFFIX}.png')
      masks[name] = mask // 255
  return masks


def test_tfds_isic2016_through_the_pipeline(tmp_path):
  from sgdc_jax.data.prepare import prepare
  masks = _write_tiny_isic2016(tmp_path / 'manual', np.random.default_rng(0))
  prepare('isic2016', str(tmp_path / 'manual'), str(tmp_path / 'data'))
  config = _config(size=16)
  config.name, config.data_dir = 'isic2016', str(tmp_path / 'data')
  source = pipeline.open_source(config, 'test')
  assert len(source) == 3
  with pytest.raises(ValueError, match='no split'):
    pipeline.open_source(config, 'validation')
  # TFDS's 'all' (used for PH2's 200 images) is the union of the splits.
  assert len(pipeline.open_source(config, 'all')) == len(source) + len(
      pipeline.open_source(config, 'train'))
  batch = next(pipeline.create_train_iterator(config, 2, seed=0, process_index=0, process_count=1))
  assert batch['image'].shape == (2, 16, 16, 3) and batch['mask'].max() == 1
  batches = list(pipeline.create_eval_iterator(config, 'test', 2, process_index=0, process_count=1))
  assert [list(b['index']) for b in batches] == [[0, 1], [2, -1]]
  for b in batches:
    for index, mask in zip(b['index'][b['valid']], b['mask'][b['valid']]):
      record = source[int(index)]
      ident = record['id'].decode() if isinstance(record['id'], bytes) else record['id']
      want = T.resize_pair(T.check_example(record)[0], masks[ident], (16, 16))[1]
      np.testing.assert_array_equal(mask, want)
  # The JPEG bytes are decoded in the transform: record 0 (30x40 -> 16x16, shrink < 2) in
  # full, so exactly as the reference path; records 1, 2 (32x40, 34x40) at half size.
  reference = list(pipeline.create_eval_dataset(config, 'test', 2, process_index=0,
                                                process_count=1, reference=True))
  for key in batches[0]:
    np.testing.assert_array_equal(batches[0][key][0], reference[0][key][0])
  for got, want in zip(batches, reference):
    np.testing.assert_array_equal(got['mask'], want['mask'])


def _assert_close_to_full_decode(got, want):
  """Draft-decoded batches vs full decode: same masks, images within the stated tolerance."""
  np.testing.assert_array_equal(got['mask'], want['mask'])
  np.testing.assert_array_equal(got['edge'], want['edge'])
  diff = (_unnormalise(got['image']) - _unnormalise(want['image'])) * 255
  # Looser than test_transforms' per-image bound: 16x16 outputs of 96x128 JPEGs are tiny.
  assert np.abs(diff).mean() <= 2.0 and abs(diff.mean()) <= 0.5


def test_tfds_jpegs_decode_at_reduced_size_deterministically(tmp_path):
  from sgdc_jax.data.prepare import prepare
  _write_tiny_isic2016(tmp_path / 'manual', None, lesions=True)
  prepare('isic2016', str(tmp_path / 'manual'), str(tmp_path / 'data'))
  config = _config(size=16)   # 96x128 -> 16x16: JPEGs decoded at 1/4 (eval), 1/2-1/4 (train)
  config.name, config.data_dir = 'isic2016', str(tmp_path / 'data')
  kwargs = dict(global_batch_size=3, process_index=0, process_count=1)
  train = list(itertools.islice(pipeline.create_train_dataset(config, seed=1, **kwargs), 2))
  reference = list(itertools.islice(
      pipeline.create_train_dataset(config, seed=1, reference=True, **kwargs), 2))
  for got, want in zip(train, reference):
    _assert_close_to_full_decode(got, want)
  evaluated = list(pipeline.create_eval_iterator(config, 'test', **kwargs))
  reference = list(pipeline.create_eval_iterator(config, 'test', reference=True, **kwargs))
  _assert_close_to_full_decode(evaluated[0], reference[0])
  assert np.abs(evaluated[0]['image'] - reference[0]['image']).max() > 0  # drafted indeed
  # Deterministic: again, and with threads computing the examples.
  _assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), evaluated)
  config.read_threads = 2
  _assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), evaluated)
  # data.jpeg_draft=False decodes in full: the reference result exactly.
  config.jpeg_draft = False
  _assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), reference)
