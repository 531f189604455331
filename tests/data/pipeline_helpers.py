"""Small configs, sources and checks shared by the input-pipeline tests (tests/data/)."""
import numpy as np

from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms as T

MEAN = np.array(T.IMAGENET_MEAN)
STD = np.array(T.IMAGENET_STD)


def small_config(size=24, raw=(30, 40), n=(12, 10, 6)):
  """Synthetic splits of n = (train, validation, test) raw (H, W) examples, S = size, no
  worker processes or read threads."""
  config = pipeline.default_data_config()
  config.image_size = size
  config.num_workers = 0
  config.read_threads = 0
  config.synthetic.update(dict(train_size=n[0], validation_size=n[1], test_size=n[2],
                               height=raw[0], width=raw[1]))
  return config


def unnormalise(image):
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


def decode_ids(batch):
  """The `IndexSource` record ids of a batch's (unaugmented) images."""
  grey = unnormalise(batch['image'])[..., 0].mean(axis=(1, 2)) * 255
  return [int(v) for v in np.round(grey / 10)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def write_tiny_isic2016(root, rng, lesions=False):
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
