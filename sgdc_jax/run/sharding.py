"""Device mesh, data/parameter shardings and sharded state creation.

One code path for 1 CPU, simulated CPU devices, several JAX processes, GPUs and TPUs:

* the mesh has a single axis ``'data'`` (``jax.make_mesh`` with ``AxisType.Auto``);
* batches are split over ``'data'`` along their leading axis;
* parameters (and anything shaped like them, e.g. optimizer moments) are replicated, or, with
  ``mesh.fsdp`` on, leaves with at least ``mesh.fsdp_min_size`` elements are split over ``'data'``
  along their largest dimension divisible by the axis size (FSDP-style; XLA inserts the gathers);
* the train state is built abstractly with ``jax.eval_shape`` and materialised already sharded
  with ``jax.jit(init, out_shardings=...)``, so no full copy ever lives on one device.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax._src import distributed  # the coordination-service client, for `barrier`
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_data: int = -1) -> jax.sharding.Mesh:
  """Builds the 1-D ``('data',)`` mesh.

  Args:
    num_data: devices on the data axis; -1 uses all global devices.
  Returns:
    A ``jax.sharding.Mesh`` with one Auto axis named ``'data'``.
  Raises:
    ValueError: if ``num_data`` is not -1 and not in ``[1, jax.device_count()]``, or if it does
      not use every device of every process (each process must own part of the mesh).
  """
  n = jax.device_count()
  if num_data == -1:
    num_data = n
  if not 1 <= num_data <= n:
    raise ValueError(f"mesh.data={num_data} but {n} devices are available (use -1 for all)")
  if jax.process_count() > 1 and num_data != n:
    raise ValueError(f"mesh.data={num_data}: with {jax.process_count()} processes the mesh "
                     f"must use all {n} devices (use -1)")
  return jax.make_mesh((num_data,), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_data])


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of a batch array: leading (batch) axis split over ``'data'``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, P())


def leaf_spec(shape: tuple[int, ...], axis_size: int, fsdp: bool, min_size: int) -> P:
  """Partition spec for one parameter-like leaf.

  Args:
    shape: the leaf's shape.
    axis_size: size of the ``'data'`` mesh axis.
    fsdp: whether large leaves are sharded at all.
    min_size: leaves with fewer elements stay replicated.
  Returns:
    ``P()`` (replicated) or a spec with ``'data'`` on the largest dimension divisible by
    ``axis_size`` (ties: the last such dimension, usually the output channels).
  """
  if not fsdp or axis_size == 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % axis_size == 0 and (best is None or d >= shape[best]):
      best = i
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = DATA_AXIS
  return P(*spec)


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh, *, fsdp: bool = False,
                    min_size: int = 2**18) -> Any:
  """Shardings for every leaf of an abstract state (a pytree of ``ShapeDtypeStruct``).

  Leaves are handled by shape only, so optimizer moments and EMA copies get the same sharding as
  the parameters they mirror; scalars (step, counts) are replicated.
  """
  axis_size = mesh.shape[DATA_AXIS]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), axis_size, fsdp, min_size)),
      abstract_state)


def create_sharded_state(init_fn: Callable[[], Any], mesh: jax.sharding.Mesh, *,
                         fsdp: bool = False, min_size: int = 2**18) -> tuple[Any, Any]:
  """Builds the state abstractly, then materialises it directly in its sharded layout.

  Args:
    init_fn: zero-argument function returning the state pytree (closes over rngs/shapes).
    mesh: the device mesh.
    fsdp, min_size: see ``state_shardings``.
  Returns:
    ``(state, shardings)``: the sharded state and the pytree of its ``NamedSharding``s.
  """
  abstract = jax.eval_shape(init_fn)
  shardings = state_shardings(abstract, mesh, fsdp=fsdp, min_size=min_size)
  state = jax.jit(init_fn, out_shardings=shardings)()
  return state, shardings


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """Attaches shardings to an abstract state (what Orbax needs to restore in place)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_state, shardings)


def host_to_global(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into global arrays split over ``'data'``.

  Args:
    batch: dict of NumPy arrays, each with leading axis = this process's share of the global
      batch (``global_batch / process_count``).
  Returns:
    dict of ``jax.Array`` with leading axis = global batch, sharded by ``data_sharding(mesh)``.
  Raises:
    ValueError: if a local leading axis is not divisible by this process's devices in the mesh.
  """
  sharding = data_sharding(mesh)
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.shape[0] % local_devices:
      raise ValueError(f"batch['{k}'] has local size {v.shape[0]}, not divisible by the "
                       f"{local_devices} local devices")
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def global_to_host(x: jax.Array) -> np.ndarray:
  """Full value of a (possibly multi-process) global array as NumPy on every process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


_BARRIERS = [0]


def barrier(name: str, timeout_s: int = 900) -> None:
  """Waits until every JAX process reaches this point (no-op with one process).

  Uses the coordination service's barrier, which has a long timeout, instead of a device
  collective: the first collective on CPU creates a Gloo context whose key exchange times out
  after 30 s, so processes that drift apart (e.g. one still compiling on a loaded host) are
  lined up here first. Every process must call ``barrier`` in the same order.
  """
  if jax.process_count() == 1:
    return
  client = distributed.global_state.client
  if client is None:
    return
  _BARRIERS[0] += 1
  client.wait_at_barrier(f"sgdc_{name}_{_BARRIERS[0]}", timeout_in_ms=int(timeout_s * 1000))


class DevicePrefetcher:
  """Iterator of global device batches that keeps `size` batches on the devices ahead of use.

  `jax.make_array_from_process_local_data` (via `host_to_global`) starts each host-to-device
  copy as soon as the batch is read, so step k's input is already on the devices while step
  k - 1 runs; nothing here waits for the devices.

  Checkpointing: the wrapped Grain iterator has already produced the queued batches, so its own
  state is ahead of the training loop. `get_state()` returns the state the iterator had before
  the next batch this object will return (bytes of the Grain JSON state), which is what a
  checkpoint of the current step must hold; pass this object to
  `grain.checkpoint.CheckpointSave`. Restore into the plain Grain iterator before wrapping it.
  """

  def __init__(self, iterator: Any, mesh: jax.sharding.Mesh, size: int = 2):
    self._it = iterator
    self._mesh = mesh
    self._size = max(int(size), 1)
    self._queue: collections.deque = collections.deque()

  def _fill(self) -> None:
    while len(self._queue) < self._size:
      state = self._it.get_state()
      try:
        host = next(self._it)
      except StopIteration:
        return
      self._queue.append((state, host_to_global(host, self._mesh)))

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    self._fill()
    if not self._queue:
      raise StopIteration
    _, batch = self._queue.popleft()
    self._fill()
    return batch

  def peek(self) -> dict[str, jax.Array]:
    """The batch the next `next()` returns, without consuming it."""
    self._fill()
    return self._queue[0][1]

  def get_state(self) -> bytes:
    """Grain state of the wrapped iterator positioned at the next batch returned here."""
    state = self._queue[0][0] if self._queue else self._it.get_state()
    return json.dumps(state, indent=4).encode()

  def set_state(self, state: bytes) -> None:
    """Repositions the wrapped iterator (drops the queued batches)."""
    self._queue.clear()
    self._it.set_state(json.loads(state))

  def start_prefetch(self) -> None:
    """Called by Grain's checkpoint handler after a restore; batches are read lazily."""

  def close(self) -> None:
    """Drops the queued batches and closes the wrapped iterator (its worker processes)."""
    self._queue.clear()
    self._it.close()


def prefetch_to_device(iterator: Any, mesh: jax.sharding.Mesh, size: int = 2) -> DevicePrefetcher:
  """Wraps a Grain iterator of per-process host batches; see `DevicePrefetcher`."""
  return DevicePrefetcher(iterator, mesh, size)
