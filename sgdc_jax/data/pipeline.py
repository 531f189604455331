"""Grain input pipeline: raw examples -> resized, augmented, normalised, per-process batches.

Training (`create_train_iterator`)::

  MapDataset.source(open_source(...)) -> seed(seed) -> shuffle -> repeat
    -> random_map(decode, crop-resize, flips, 90-degree turns, colour jitter, normalise,
                  boundary)
    -> [process_index::process_count] -> batch(global // process_count, drop_remainder)
    -> to_iter_dataset(read threads) -> mp_prefetch(num_workers)

Every stage before `to_iter_dataset` is index-based, so element `i` of the stream (and its
augmentation, seeded by `(seed, i)`) does not depend on the number of processes or workers;
batch `k` of process `p` holds stream elements `(k * b + j) * P + p`. The iterator's
`get_state()` is `{'next_batch': k}`, which `set_state()` restores to the exact next batch
whatever the worker count (`ResumableBatches`); save it with the training checkpoint.

Evaluation (`create_eval_iterator`) pads the split to whole global batches: global batch `k`
holds records `k * B .. k * B + B - 1`, process `p` the `p`-th block of `B / P` of them, rows
past the end of the split have `valid=False` and `index=-1`. Every record is seen exactly
once, in order, by exactly one process; all processes run the same number of batches.
Full-resolution metrics fetch `open_source(config, split)[index]` for the original mask and id.

Speed (the pipeline must outrun the accelerator):
- TFDS images are read as their stored bytes and decoded in the transform, JPEGs at 1/2,
  1/4 or 1/8 size when the crop still holds the output size at that scale
  (`data.jpeg_draft`, default on; see `transforms`). Masks are always decoded in full.
- Pixels stay uint8 through crop, resize, flips, turns and colour jitter; `normalise` at
  the end makes the float32 image.
- `data.num_workers` and `data.read_threads` default to -1 = sized to the host
  (`resolve_workers`); a value >= 0 is used as given.
- `create_*_dataset(..., reference=True)` runs the previous, slower path (full-size decode,
  float32 colour jitter) for tests and benchmarks.

Where each part lives (every public name is served from here too):
- `data_config`: `default_data_config`, the input size;
- `sources`: `open_source` (synthetic or prepared TFDS splits), `undecoded_images`;
- `preprocess`: `TrainTransform`, `EvalTransform`, `preprocess_eval` (one example);
- `batching`: process ids, per-process batch size, `eval_indices`;
- `workers`: `resolve_workers`, `validate_data_config`, `to_iter_dataset`;
- `resumable`: `ResumableBatches`, the training iterator's `{'next_batch': k}` state;
- `train_loader`, `eval_loader`: `create_train_*`, `create_eval_*`.
"""
# pylint: disable=unused-import  (re-exports)
from sgdc_jax.data.batching import eval_indices
from sgdc_jax.data.data_config import default_data_config
from sgdc_jax.data.eval_loader import create_eval_dataset, create_eval_iterator
from sgdc_jax.data.preprocess import EvalTransform, TrainTransform, preprocess_eval
from sgdc_jax.data.resumable import ResumableBatches
from sgdc_jax.data.sources import (SYNTHETIC, SYNTHETIC_SPLITS, open_source,
                                   synthetic_split_seed)
from sgdc_jax.data.sources import undecoded_images as _undecoded_images  # noqa: F401  (benchmarks)
from sgdc_jax.data.train_loader import create_train_dataset, create_train_iterator
from sgdc_jax.data.workers import (AUTO, MAX_AUTO_READ_THREADS, MAX_AUTO_WORKERS,
                                   resolve_workers, usable_cpus, validate_data_config)

__all__ = [
    'AUTO', 'MAX_AUTO_READ_THREADS', 'MAX_AUTO_WORKERS', 'SYNTHETIC', 'SYNTHETIC_SPLITS',
    'EvalTransform', 'ResumableBatches', 'TrainTransform', 'create_eval_dataset',
    'create_eval_iterator', 'create_train_dataset', 'create_train_iterator',
    'default_data_config', 'eval_indices', 'open_source', 'preprocess_eval', 'resolve_workers',
    'synthetic_split_seed', 'usable_cpus', 'validate_data_config',
]
