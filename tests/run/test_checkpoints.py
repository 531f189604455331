"""Checkpoints: SIGTERM -> save -> resume equals an uninterrupted run; retention; round trip."""

import os

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.run import checkpoints as checkpointing

from test_train import run_script  # pylint: disable=wrong-import-order


def test_retention_policy_latest_plus_best():
  info = lambda step, dice: type("Info", (), {"step": step, "metrics": None if dice is None
                                              else {"val_dice": dice}})()
  policy = checkpointing.retention_policy(keep_best=2)   # Orbax LatestN(1) | BestN(2)
  cps = [info(1, None), info(2, 0.4), info(3, float("nan")), info(4, None)]
  assert policy.should_preserve(cps, context=None) == [False, True, True, True]
  cps.append(info(5, 0.5))
  assert policy.should_preserve(cps, context=None) == [False, True, False, False, True]


def test_checkpointer_keeps_latest_and_best_k(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), keep_best=2)
  ck.save(1, {"w": jnp.zeros((3,))})
  ck.save(2, {"w": jnp.zeros((3,))})
  ck.wait_until_finished()
  assert ck.all_steps() == [2]     # a periodic save is dropped once a newer one exists
  dice = {3: 0.9, 4: 0.7, 5: 0.6}
  for step in range(3, 7):
    state = {"w": jnp.full((3,), float(step))}
    ck.save(step, state, metrics={"val_dice": dice[step]} if step in dice else None)
  ck.wait_until_finished()
  # Best two by val Dice (3, 4) plus the latest (6); worse 5 and periodic 2 are gone.
  assert ck.all_steps() == [3, 4, 6]
  assert ck.best_step() == 3 and ck.latest_step() == 6
  abstract = {"w": jax.ShapeDtypeStruct((3,), jnp.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(
                                            jax.devices()[0]))}
  state, _ = ck.restore(3, abstract)
  np.testing.assert_array_equal(np.asarray(state["w"]), 3.0)
  ck.close()


def _fill_disk_at(monkeypatch, step: int) -> None:
  """Orbax's array writes of `step` fail in its write threads as TensorStore fails on a full
  disk."""
  from orbax.checkpoint._src.serialization import serialization  # pylint: disable=g-import-not-at-top
  write = serialization.async_serialize_from_host

  async def full(rslices, spec, **kw):
    if f"/{step}.orbax-checkpoint-tmp" in str(spec):
      raise ValueError("RESOURCE_EXHAUSTED: Error writing in OCDBT database: Failed to write 4 "
                       "bytes to file 6: No space left on device [os_error_code='28']")
    return await write(rslices, spec, **kw)

  monkeypatch.setattr(serialization, "async_serialize_from_host", full)


def test_disk_full_save_is_removed_and_the_last_complete_step_named(tmp_path, monkeypatch):
  directory = str(tmp_path / "ck")
  ck = checkpointing.Checkpointer(directory)
  _fill_disk_at(monkeypatch, 2)
  ck.save(1, {"w": jnp.zeros((3,))})
  ck.save(2, {"w": jnp.ones((3,))})  # fails in the background
  with pytest.raises(checkpointing.CheckpointSaveError) as e:
    ck.save(3, {"w": jnp.ones((3,))})  # waits for step 2 first: its failure, not step 3's
  assert isinstance(e.value, OSError) and "\n" not in str(e.value)
  assert str(e.value).startswith(f"no space left on device while saving checkpoint 2 to "
                                 f"{directory} (")
  assert str(e.value).endswith("removed the partial save; the last complete checkpoint is "
                               "step 1; free space and rerun the same command to resume")
  assert sorted(os.listdir(directory)) == ["1"]
  ck.wait_until_finished()  # reported once
  ck.close()


def test_disk_full_at_the_first_save_says_no_checkpoint_is_complete(tmp_path, monkeypatch):
  directory = str(tmp_path / "ck")
  ck = checkpointing.Checkpointer(directory)
  _fill_disk_at(monkeypatch, 1)
  ck.save(1, {"w": jnp.zeros((3,))})
  with pytest.raises(checkpointing.CheckpointSaveError,
                     match="no checkpoint is complete yet; free space and rerun the same "
                           "command to start again from step 0$"):
    ck.wait_until_finished()
  assert os.listdir(directory) == []
  ck.close()


def test_preemption_flag_catches_sigterm():
  import signal  # pylint: disable=g-import-not-at-top
  flag = checkpointing.PreemptionFlag()
  try:
    assert not flag.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.requested and flag.should_stop(2)
  finally:
    flag.restore()
  assert signal.getsignal(signal.SIGTERM) is not flag._handler  # pylint: disable=protected-access


RUN = """
    import signal
    from sgdc_jax.run import train
    c = tiny_config()
    c.train.num_steps = 6
    c.train.checkpoint_every = 0      # only the SIGTERM save and the final one
    kill_at = {kill_at}
    cb = (lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == kill_at else None)
    r = train.train_and_evaluate(c, {workdir!r}, step_callback=cb if kill_at else None,
                                 keep_iterator=True)
    leaves = jax.tree.leaves(jax.device_get((r.state.params, r.state.batch_stats,
                                             r.state.opt_state)))
    out = {{'step': r.step, 'preempted': r.preempted}}
    if not r.preempted:
      nxt = next(r.train_iter)
      np.savez({workdir!r} + '/final.npz', *leaves, **{{'next_' + k: v for k, v in nxt.items()}})
    print('RESULT' + json.dumps(out))
"""


@pytest.mark.slow
def test_sigterm_resume_matches_uninterrupted_run(tmp_path):
  a, b = str(tmp_path / "interrupted"), str(tmp_path / "straight")
  first = run_script(RUN.format(kill_at=3, workdir=a))
  assert first == {"step": 3, "preempted": True}
  assert sorted(os.listdir(os.path.join(a, "checkpoints"))) == ["3"]
  resumed = run_script(RUN.format(kill_at=0, workdir=a))
  assert resumed == {"step": 6, "preempted": False}
  straight = run_script(RUN.format(kill_at=0, workdir=b))
  assert straight == {"step": 6, "preempted": False}
  fa, fb = np.load(os.path.join(a, "final.npz")), np.load(os.path.join(b, "final.npz"))
  assert sorted(fa.files) == sorted(fb.files)
  params = [k for k in fa.files if k.startswith("arr_")]
  assert len(params) > 10
  for k in fa.files:
    np.testing.assert_allclose(fa[k], fb[k], rtol=0, atol=1e-6, err_msg=k)
  for k in ("next_image", "next_mask", "next_edge"):
    assert k in fa.files
  # The history of the resumed run has each logged step once.
  steps = [l for l in open(os.path.join(a, "history.jsonl")) if '"loss"' in l]
  assert len(steps) == 6
