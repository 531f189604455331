"""Newest intact checkpoint: real Orbax checkpoints damaged on disk are named, skipped and kept;
the state fingerprint against an independent NumPy reference."""

import glob
import os
import shutil

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sgdc_jax.run import checkpoint_recovery as rec

STEPS = (1, 2, 3)


def _state(step):
  r = np.random.default_rng(step)
  return {"w": r.normal(size=(8, 500)).astype(np.float32),   # one real (compressed) data chunk
          "b": {"x": r.normal(size=(7,)).astype(np.float32)},
          "step": np.int32(step)}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding),
                      _state(0))


def _manager(directory):
  return ocp.CheckpointManager(directory, item_names=("state", rec.FINGERPRINT_ITEM))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """Steps 1-3 saved with their fingerprints; each test copies them before damaging."""
  directory = str(tmp_path_factory.mktemp("saved") / "checkpoints")
  mngr = _manager(directory)
  for step in STEPS:
    state = jax.tree.map(jnp.asarray, _state(step))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            fingerprint=rec.fingerprint_save_args(state)))
  mngr.wait_until_finished()
  mngr.close()
  return directory


@pytest.fixture
def ckpt_dir(saved, tmp_path):
  directory = str(tmp_path / "checkpoints")
  shutil.copytree(saved, directory)
  return directory


def _files(directory, step):
  return sorted(glob.glob(os.path.join(directory, str(step), "**", "*"), recursive=True))


def _largest_data_file(directory, step):
  """The array chunk file (the biggest file of the per-process OCDBT data)."""
  files = glob.glob(os.path.join(directory, str(step), "state", "ocdbt.process_*", "d", "*"))
  return max(files, key=os.path.getsize)


def _truncate_data(directory, step):
  path = _largest_data_file(directory, step)
  os.truncate(path, os.path.getsize(path) // 2)


def _flip_btree_byte(directory, step):
  (path,) = glob.glob(os.path.join(directory, str(step), "state", "d", "*"))
  _flip(path, os.path.getsize(path) // 2)


def _flip_data_byte(directory, step):
  path = _largest_data_file(directory, step)
  _flip(path, os.path.getsize(path) // 2)


def _flip(path, offset):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0xFF]))


def _delete_item(directory, step):
  shutil.rmtree(os.path.join(directory, str(step), "state"))


def _delete_manifest(directory, step):
  os.remove(os.path.join(directory, str(step), "state", "manifest.ocdbt"))


DAMAGE = {
    "truncated data file": (_truncate_data, "cause: ValueError: OUT_OF_RANGE: Error reading \"w/0.0\""),
    "corrupted b-tree bytes": (_flip_btree_byte, "Error decoding b-tree node"),
    "corrupted chunk byte": (_flip_data_byte, "1 array(s) differ from the fingerprint written "
                                              "at save (w)"),
    "deleted item folder": (_delete_item, "KeyError: Item \"state\" was not found"),
    "deleted OCDBT manifest": (_delete_manifest, "NOT_FOUND"),
}


def _restore(directory, **kw):
  mngr = _manager(directory)
  try:
    return rec.restore_newest_intact(
        mngr, {"state": ocp.args.StandardRestore(_abstract())}, **kw), mngr.all_steps()
  finally:
    mngr.close()


def _assert_state(restored, step):
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(_state(step))):
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_falls_back_and_is_kept(ckpt_dir, damage, capsys):
  damage_fn, reason = DAMAGE[damage]
  damage_fn(ckpt_dir, 3)
  left = _files(ckpt_dir, 3)
  found, steps = _restore(ckpt_dir)
  assert found.step == 2 and found.verified and found.set_aside == []
  _assert_state(found.items["state"], 2)
  assert [d.step for d in found.damaged] == [3]
  assert reason in found.damaged[0].reason, found.damaged[0].reason
  assert "tensorstore_spec" not in found.damaged[0].reason
  out = capsys.readouterr().out
  (line,) = [l for l in out.splitlines() if l.startswith("warning:")]
  assert line.startswith(f"warning: checkpoint {os.path.join(ckpt_dir, '3')} is damaged (")
  assert reason in line and line.endswith("); trying step 2")
  assert steps == list(STEPS) and _files(ckpt_dir, 3) == left    # nothing deleted or moved


def test_a_flipped_chunk_byte_restores_silently_without_the_fingerprint(ckpt_dir):
  # Why the fingerprint exists: the storage layer decodes this damage to wrong numbers.
  _flip_data_byte(ckpt_dir, 3)
  mngr = _manager(ckpt_dir)
  state = mngr.restore(3, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract())))["state"]
  mngr.close()
  w = np.asarray(state["w"])
  assert w.shape == (8, 500) and not np.array_equal(w, _state(3)["w"])


def test_several_damaged_steps_are_skipped_in_order(ckpt_dir):
  _delete_item(ckpt_dir, 3)
  _truncate_data(ckpt_dir, 2)
  found, _ = _restore(ckpt_dir)
  assert found.step == 1 and [d.step for d in found.damaged] == [3, 2]
  _assert_state(found.items["state"], 1)


def test_no_intact_checkpoint_lists_every_step(ckpt_dir):
  for step in STEPS:
    _delete_item(ckpt_dir, step)
  with pytest.raises(rec.NoIntactCheckpointError) as e:
    _restore(ckpt_dir, set_aside_to=ckpt_dir + ".damaged")
  message = str(e.value)
  assert f"no intact checkpoint in {ckpt_dir} (nothing was deleted)" in message
  for step in STEPS:
    assert f"step {step}: KeyError" in message
  assert not os.path.exists(ckpt_dir + ".damaged")
  assert sorted(os.listdir(ckpt_dir)) == ["1", "2", "3"]
  with pytest.raises(FileNotFoundError, match="no checkpoints in"):
    _restore(ckpt_dir, steps=[])


def test_training_sets_the_damaged_steps_aside_and_saves_them_again(ckpt_dir):
  _truncate_data(ckpt_dir, 3)
  aside = ckpt_dir + ".damaged"
  mngr = _manager(ckpt_dir)
  found = rec.restore_newest_intact(mngr, lambda step: {
      "state": ocp.args.StandardRestore(_abstract())}, set_aside_to=aside)
  assert found.step == 2 and found.set_aside == [os.path.join(aside, "3")]
  assert mngr.all_steps() == [1, 2] and sorted(os.listdir(aside)) == ["3"]
  state = jax.tree.map(jnp.asarray, _state(3))
  mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       fingerprint=rec.fingerprint_save_args(state)))
  mngr.wait_until_finished()
  mngr.close()
  found, _ = _restore(ckpt_dir)
  assert found.step == 3 and found.damaged == []
  _assert_state(found.items["state"], 3)
  # A second damaged step 3 is kept beside the first.
  _truncate_data(ckpt_dir, 3)
  mngr = _manager(ckpt_dir)
  rec.restore_newest_intact(mngr, {"state": ocp.args.StandardRestore(_abstract())},
                            set_aside_to=aside)
  mngr.close()
  assert sorted(os.listdir(aside)) == ["3", "3.1"]


def test_checkpoint_without_fingerprint_restores_unverified(tmp_path):
  mngr = ocp.CheckpointManager(str(tmp_path), item_names=("state",))
  mngr.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(5))))
  mngr.wait_until_finished()
  found = rec.restore_newest_intact(mngr, {"state": ocp.args.StandardRestore(_abstract())})
  mngr.close()
  assert found.step == 5 and not found.verified
  _assert_state(found.items["state"], 5)


def _reference_sum(a: np.ndarray) -> int:
  """Independent NumPy fingerprint of one array (Python integers, no wrapping tricks)."""
  a = np.asarray(a)
  if a.dtype == np.bool_:
    words = a.astype(np.uint64).ravel()
  else:
    words = np.frombuffer(a.tobytes(), dtype=f"<u{min(a.dtype.itemsize, 4)}").astype(np.uint64)
  weights = 2 * np.arange(words.size, dtype=np.uint64) + 1
  return int(sum(int(w) * int(v) for w, v in zip(words, weights)) % 2**32)


def test_fingerprint_matches_numpy_reference_and_sees_one_bit():
  r = np.random.default_rng(0)
  tree = {"f32": r.normal(size=(3, 5, 7)).astype(np.float32),
          "bf16": r.normal(size=(4, 6)).astype(ml_dtypes.bfloat16),
          "i8": r.integers(-128, 127, size=(9,), dtype=np.int8),
          "mask": r.random((2, 3)) > 0.5,
          "step": np.int32(-7)}
  fp = rec.fingerprint(jax.tree.map(jnp.asarray, tree))
  for name, a in tree.items():
    shape = "x".join(map(str, np.shape(a))) or "scalar"
    assert fp[name] == f"{shape} {np.dtype(a.dtype).name} {_reference_sum(a):08x}", name
  assert rec.fingerprint(tree) == fp                    # host arrays give the same
  flipped = tree["f32"].copy()
  flipped.view(np.uint32)[1, 2, 3] ^= 1 << 31           # one bit of one element
  changed = rec.fingerprint(dict(tree, f32=flipped))
  assert [k for k in fp if fp[k] != changed[k]] == ["f32"]
  assert rec.fingerprint_mismatch(dict(tree, f32=flipped), fp).startswith("1 array(s) differ")
  assert rec.fingerprint_mismatch(tree, fp) is None


def test_describe_error_keeps_one_line_without_the_spec():
  e = ValueError("DATA_LOSS: Error reading \"w/.zarray\": CRC-32C checksum verification failed "
                 "[tensorstore_spec='{\"driver\": \"zarr\", ...}']")
  assert rec.describe_error(e) == ("ValueError: DATA_LOSS: Error reading \"w/.zarray\": CRC-32C "
                                   "checksum verification failed")
  assert len(rec.describe_error(RuntimeError("x" * 1000))) < 330
  try:
    try:
      raise OSError("disk gone")
    except OSError as inner:
      raise RuntimeError("restore failed") from inner
  except RuntimeError as outer:
    assert rec.describe_error(outer) == "RuntimeError: restore failed; cause: OSError: disk gone"


def test_steps_are_tried_in_the_order_given(ckpt_dir, capsys):
  _delete_item(ckpt_dir, 2)                  # e.g. eval: the best step (2) first, then newest
  found, _ = _restore(ckpt_dir, steps=[2, 3, 1])
  assert found.step == 3 and [d.step for d in found.damaged] == [2]
  _assert_state(found.items["state"], 3)
  assert "trying step 3" in capsys.readouterr().out
