"""Per-example preprocessing: raw example -> the resized, normalised example a step consumes.

Training (`TrainTransform`): random resized crop (`data.train_mode='resize'`) or a random
window at the stored resolution (`'patch'`), flips, 90-degree turns and colour jitter on
uint8 pixels, then normalisation (and, in patch mode, padding) and the boundary target.
Evaluation (`preprocess_eval`, and `EvalTransform` over a source's records): resize and
normalise only, deterministic.
"""
from __future__ import annotations

import grain
import numpy as np

from sgdc_jax.data import transforms as T
from sgdc_jax.data import data_config as data_config_lib
from sgdc_jax.data.data_config import image_size
from sgdc_jax.ops.boundary import boundary_target


def finish(image, mask, mean, std, boundary_width) -> dict:
  """uint8 (or [0, 1] float) image and uint8 mask -> the example dict the step consumes."""
  return {'image': T.normalise(image, mean, std),
          'mask': mask.astype(np.int32),
          'edge': boundary_target(mask, boundary_width)}


class TrainTransform(grain.transforms.RandomMap):
  """Raw example -> {'image': float32 (H, W, 3), 'mask': int32 (H, W), 'edge': uint8 (H, W)}.

  `data.train_mode='resize'` ((H, W) = `data.image_size`): random resized crop of the
  full-resolution example straight to the output size (one resampling; JPEG bytes decoded at
  reduced size when `data.jpeg_draft` allows), flips, 90-degree turns and colour jitter on
  uint8 pixels, then normalisation and the boundary target.

  `data.train_mode='patch'` ((H, W) = `data.crop_size`): a random window at the stored
  resolution, after resizing the example by a factor drawn from `data.scale_jitter`
  (`transforms.random_patch`; only the window is resampled, and nothing when the factor is
  1), then the same flips, turns and colour jitter. A side shorter than the window is
  placed at a random offset and padded after normalisation: image 0 (the normalisation mean:
  the loss has no per-pixel weights to leave padding out, and a mean-grey border carries no
  edges, unlike a reflection that invents mirrored structure the mask does not label), mask
  0 (background). The boundary target is computed from the final (padded) mask. The
  random-resized-crop settings `augment.scale_*` / `ratio_*` are not used.

  All draws come from the per-element generator Grain passes in (seeded by the pipeline seed
  and the element's stream index), in the same order on both paths, so `reference=True`
  (full-size decode, float32 jitter: the previous implementation) gives the same geometry.
  """

  def __init__(self, data_config, where: str = 'train', reference: bool = False):
    aug = data_config.augment
    self.patch = data_config_lib.train_mode(data_config) == 'patch'
    if self.patch:
      self.size = data_config_lib.crop_size(data_config)
      self.scale_jitter = data_config_lib.scale_jitter(data_config)
    else:
      self.size = image_size(data_config)
    self.enabled = bool(aug.enabled)
    self.hflip, self.vflip, self.rot90 = bool(aug.hflip), bool(aug.vflip), bool(aug.rot90)
    self.scale = (float(aug.scale_min), float(aug.scale_max))
    self.ratio = (float(aug.ratio_min), float(aug.ratio_max))
    self.jitter = dict(brightness=float(aug.brightness), contrast=float(aug.contrast),
                       saturation=float(aug.saturation), hue=float(aug.hue))
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    self.boundary_width = int(data_config.boundary_width)
    self.where = where
    self.reference = bool(reference)
    self.draft = bool(data_config.get('jpeg_draft', True)) and not self.reference

  def random_map(self, element, rng: np.random.Generator):
    """Raw example -> augmented, normalised training example with its boundary target."""
    where = f'{self.where} example {element.get("id", "?")!r}'
    image, mask = T.open_example(element, where)
    if self.patch:
      return self._patch(image, mask, rng, where)
    if not self.enabled:
      image, mask = T.resize_pair(image, mask, self.size, draft=self.draft, where=where)
      return finish(image, mask, self.mean, self.std, self.boundary_width)
    box = None
    if self.scale != (1.0, 1.0) or self.ratio != (1.0, 1.0):
      box = T.random_crop_box(rng, mask.shape[0], mask.shape[1], self.scale, self.ratio)
    turns = 0
    if self.rot90:
      turns = int(rng.integers(4)) if self.size[0] == self.size[1] else 2 * int(rng.integers(2))
    image, mask = T.crop_flip_rotate(image, mask, self.size, box,
                                     self.hflip and rng.uniform() < 0.5,
                                     self.vflip and rng.uniform() < 0.5, turns,
                                     draft=self.draft, where=where)
    image = self._colour_jitter(image, rng)
    return finish(image, mask, self.mean, self.std, self.boundary_width)

  def _colour_jitter(self, image, rng: np.random.Generator):
    if not any(self.jitter.values()):
      return image
    if self.reference:
      return T.colour_jitter(image.astype(np.float32) * np.float32(1 / 255), rng, **self.jitter)
    return T.colour_jitter_uint8(image, rng, **self.jitter)

  def _patch(self, image, mask, rng: np.random.Generator, where: str) -> dict:
    """Patch mode of `random_map` (see the class docstring)."""
    box, content, offset = T.random_patch(rng, mask.shape[0], mask.shape[1], self.size,
                                          self.scale_jitter)
    hflip = vflip = False
    turns = 0
    if self.enabled:
      if self.rot90:
        turns = int(rng.integers(4)) if self.size[0] == self.size[1] else 2 * int(rng.integers(2))
      hflip = self.hflip and rng.uniform() < 0.5
      vflip = self.vflip and rng.uniform() < 0.5
    image, mask = T.crop_patch(image, mask, box, content, hflip, vflip, turns,
                               draft=self.draft, where=where)
    if self.enabled:
      image = self._colour_jitter(image, rng)
    image = T.normalise(image, self.mean, self.std)
    if content != self.size:
      image, mask = T.place_in_window(image, mask, self.size, offset, hflip, vflip, turns)
    return {'image': image, 'mask': mask.astype(np.int32),
            'edge': boundary_target(mask, self.boundary_width)}


class EvalTransform(grain.transforms.Map):
  """Record index -> resized, normalised example with 'valid' and 'index'; -1 -> padding row.

  Deterministic: the record alone decides the output (JPEGs decoded at reduced size when
  `data.jpeg_draft` allows, as in training; `reference=True` decodes in full).
  """

  def __init__(self, source, data_config, where: str = 'eval', reference: bool = False):
    self.source = source
    self.size = image_size(data_config)
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    self.boundary_width = int(data_config.boundary_width)
    self.where = where
    self.draft = bool(data_config.get('jpeg_draft', True)) and not reference

  def example(self, record, where: str) -> dict:
    """One raw record {'image', 'mask', ...} -> {'image', 'mask', 'edge'} (see `map`)."""
    image, mask = T.open_example(record, where)
    image, mask = T.resize_pair(image, mask, self.size, draft=self.draft, where=where)
    return finish(image, mask, self.mean, self.std, self.boundary_width)

  def map(self, element):
    """Record index (-1 = padding) -> resized, normalised eval example with `valid`/`index`."""
    index = int(element)
    if index < 0:
      height, width = self.size
      return {'image': np.zeros((height, width, 3), np.float32),
              'mask': np.zeros((height, width), np.int32),
              'edge': np.zeros((height, width), np.uint8),
              'valid': np.bool_(False), 'index': np.int32(-1)}
    out = self.example(self.source[index], f'{self.where} record {index}')
    out.update(valid=np.bool_(True), index=np.int32(index))
    return out


def preprocess_eval(image, mask, data_config, *, where: str = 'eval',
                    reference: bool = False) -> dict:
  """The evaluation preprocessing of one example, exactly as the eval pipeline applies it.

  Args:
    image: uint8 (H, W, 3) RGB, or its encoded JPEG/PNG bytes (decoded at reduced size when
      `data.jpeg_draft` allows, as the pipeline decodes TFDS records).
    mask: uint8 (H, W) or (H, W, 1) labels, or None (no ground truth: all background).
    data_config: a `default_data_config()`-like ConfigDict (image_size, mean, std,
      boundary_width, jpeg_draft).
    where: text naming the example in errors.
    reference: decode in full whatever `data.jpeg_draft` says.

  Returns:
    {'image': float32 (S, S, 3) normalised, 'mask': int32 (S, S), 'edge': uint8 (S, S)}.

  Raises:
    ValueError: a bad image or mask (wrong dtype, rank, size; undecodable bytes).
  """
  if mask is None:
    if isinstance(image, (bytes, bytearray, memoryview)):
      height, width = T.open_encoded(bytes(image), where).size[::-1]
    else:
      height, width = np.shape(image)[:2]
    mask = np.zeros((height, width), np.uint8)
  transform = EvalTransform(None, data_config, where=where, reference=reference)
  return transform.example({'image': image, 'mask': mask}, where)
