"""Datasets for sgdc_jax.

- `sgdc_jax.data.builders`: TFDS builders (isic2016, isic2018, ph2, conic/binary,
  conic/semantic); importing it registers them with TFDS.
- `sgdc_jax.data.prepare`: `python -m sgdc_jax.data.prepare --dataset=NAME --manual_dir=DIR`.
- `sgdc_jax.data.synthetic`, `sgdc_jax.data.pipeline`: the synthetic default dataset and the
  Grain input pipeline.

Nothing is imported here, so `import sgdc_jax.data` stays cheap.
"""
