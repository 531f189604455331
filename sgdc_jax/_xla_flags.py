"""Guards XLA's CPU runtime against the YNNPACK fusion failure of jaxlib 0.10.2.

Root cause: jaxlib 0.10.2 routes large broadcast-multiply-reduce fusions on CPU to
YNNPACK (slinky buffers); for big operands (e.g. the 1.6 GB gradient of a 7x7 unfold at
(2, 128, 128, 256)) the allocation inside YNNPACK fails and the computation dies with
"YNNPACK operation failed" (a regression reported upstream as jax-ml/jax#39257). Turning the
YNN fusion pass off sends those fusions back to XLA's own CPU emitter, which handles them.

XLA reads `XLA_FLAGS` once, when the first backend starts, so the flag is added on import
of `sgdc_jax`, before any computation. Set `SGDC_JAX_KEEP_YNN_FUSION=1` to opt out, or set
the flag yourself (any value you give is respected).
"""
import os
import warnings

_FLAG_NAME = '--xla_cpu_experimental_ynn_fusion_type'


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # private API moved: assume the best, the flag is still set
    return False


def disable_ynn_fusion() -> None:
  """Adds `--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS unless already given."""
  if os.environ.get('SGDC_JAX_KEEP_YNN_FUSION') == '1':
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if _FLAG_NAME in flags:
    return
  os.environ['XLA_FLAGS'] = f'{flags} {_FLAG_NAME}='.strip()
  if 'jax' in __import__('sys').modules and _backends_started():
    warnings.warn(
        'sgdc_jax was imported after JAX started its backend, so XLA_FLAGS can no longer '
        f'take {_FLAG_NAME}=. Large SGDC computations on CPU may fail with "YNNPACK '
        'operation failed": import sgdc_jax before running any JAX computation, or set '
        f'XLA_FLAGS="{_FLAG_NAME}=" in the environment.', RuntimeWarning, stacklevel=3)
