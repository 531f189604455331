"""Train step, optimizer/schedule and the train loop (NaN stop, eval coverage)."""

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sgdc_jax.run import sharding as shd
from sgdc_jax.run import train
from sgdc_jax.run import train_state as ts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(tempfile.gettempdir(), "sgdc_jax_test_xla_cache")

# Tiny SGDCNet + tiny synthetic data, shared by the end-to-end subprocess scripts.
TINY = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import jax
    from sgdc_jax.run import config as config_lib
    def tiny_config():
      c = config_lib.get_config()
      mc = c.model
      mc.encoder = 'resnet18'; mc.decoder_channels = 16; mc.sge_bottleneck = 16; mc.sge_mid = 16
      mc.guide_channels = 4; mc.num_heads = 2; mc.n_blocks = 1
      d = c.data
      d.image_size = 64; d.read_threads = 1; d.prefetch_batches = 1; d.num_workers = 0
      d.synthetic.train_size = 16; d.synthetic.validation_size = 5; d.synthetic.test_size = 5
      d.synthetic.height = 48; d.synthetic.width = 64
      c.train.num_steps = 4; c.train.batch_size = 2; c.train.log_every = 1
      c.train.eval_every = 0; c.train.checkpoint_every = 1
      c.eval.batch_size = 2; c.eval.overlays = 2
      c.optimizer.warmup_steps = 1
      return c
    def untrained_workdir(c, workdir):
      # A workdir as training leaves it (record + step-1 checkpoint), without a train step.
      from sgdc_jax.run import checkpoints, experiment
      from sgdc_jax.run import workdir as workdir_lib
      workdir_lib.record_training_config(c, workdir)
      ck = checkpoints.Checkpointer(experiment.checkpoint_dir(workdir))
      ck.save(1, experiment.init_state(experiment.build(c)))
      ck.wait_until_finished(); ck.close()
""")


def run_script(body: str, devices: int = 1, timeout: int = 600) -> dict:
  """Runs TINY + body in a fresh interpreter; returns the JSON printed after 'RESULT'."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", SGDC_NO_BAR="1")
  code = "import sgdc_jax\n" + TINY + textwrap.dedent(body)
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


# ---------------------------------------------------------------- fast tests on a toy model

class Toy(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return {"logits": nn.Conv(1, (1, 1))(x)}


def toy_loss(outputs, batch):
  loss = optax.sigmoid_binary_cross_entropy(outputs["logits"][..., 0],
                                            batch["mask"].astype(jnp.float32)).mean()
  return loss, {"seg": loss}


def opt_config(**kw):
  base = dict(learning_rate=1e-2, weight_decay=0.1, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=2,
              min_lr_ratio=0.1, grad_clip_norm=1.0, ema_decay=0.5)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def toy_setup(opt, steps=5, ema=True):
  model = Toy()
  tx = ts.create_optimizer(opt, steps)
  mesh = shd.make_mesh(1)
  init = lambda: ts.create_train_state(
      model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False), tx, ema=ema)
  state, shardings = shd.create_sharded_state(init, mesh)
  fn = functools.partial(train.train_step, apply_fn=model.apply, loss_fn=toy_loss, tx=tx,
                         schedule=ts.learning_rate_schedule(opt, steps),
                         ema_decay=float(opt.ema_decay), seed=0)
  return state, train.jit_train_step(fn, shardings, mesh), mesh


def toy_batch(nan=False):
  rng = np.random.default_rng(1)
  img = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  if nan:
    img[0, 0, 0, 0] = np.nan
  return {"image": img, "mask": (img[..., 0] > 0).astype(np.int32)}


def test_schedule_warmup_then_cosine_matches_numpy():
  opt = opt_config(learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
  sched = ts.learning_rate_schedule(opt, 20)
  for step in range(21):
    if step < 4:
      want = step / 4
    else:
      t = (step - 4) / 16
      want = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t))
    assert abs(float(sched(step)) - want) < 1e-6, step


def test_weight_decay_only_on_kernels():
  opt = opt_config(learning_rate=0.1, warmup_steps=0, grad_clip_norm=0.0, weight_decay=0.5)
  tx = ts.create_optimizer(opt, 10)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: AdamW moves kernels by -lr * wd * p, biases not at all.
  np.testing.assert_allclose(np.asarray(updates["kernel"]), -0.1 * 0.5 * np.ones((2, 2)),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(updates["bias"]), 0.0)


def test_train_step_updates_params_bn_and_ema():
  opt = opt_config(warmup_steps=0)
  state, step, mesh = toy_setup(opt)
  before = jax.device_get(state)
  new, metrics = step(state, shd.host_to_global(toy_batch(), mesh))
  new = jax.device_get(new)
  assert int(new.step) == 1 and float(metrics["finite"]) == 1.0
  k0, k1 = before.params["Conv_0"]["kernel"], new.params["Conv_0"]["kernel"]
  assert np.abs(k1 - k0).max() > 0
  # EMA after one step: decay * initial + (1 - decay) * new parameters.
  np.testing.assert_allclose(new.ema_params["Conv_0"]["kernel"], 0.5 * k0 + 0.5 * k1, rtol=1e-6)
  assert np.abs(new.batch_stats["BatchNorm_0"]["mean"] -
                before.batch_stats["BatchNorm_0"]["mean"]).max() > 0
  assert set(metrics) >= {"loss", "seg", "grad_norm", "learning_rate", "finite"}
  # No warm-up: step 0 uses the peak learning rate.
  assert abs(float(metrics["learning_rate"]) - 1e-2) < 1e-9


def test_train_step_non_finite_keeps_state():
  state, step, mesh = toy_setup(opt_config())
  before = jax.device_get(state)
  new, metrics = step(state, shd.host_to_global(toy_batch(nan=True), mesh))
  new = jax.device_get(new)
  assert float(metrics["finite"]) == 0.0 and not np.isfinite(float(metrics["loss"]))
  assert int(new.step) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(new)):
    np.testing.assert_array_equal(a, b)


def test_dropout_key_differs_per_step_and_is_reproducible():
  k = lambda s: jax.random.key_data(jax.random.fold_in(jax.random.key(0), s))
  assert not np.array_equal(k(1), k(2))
  np.testing.assert_array_equal(k(3), k(3))


# ---------------------------------------------------------- end to end (tiny SGDCNet, slow)

# Records the training iterators made (`created`) and closed (`closed`, by identity; Grain's
# __del__ also closes, so a count would include iterators garbage-collected elsewhere).
TRACK_CLOSE = """
    from sgdc_jax.data import pipeline
    created, closed = [], []
    def track_close(it):
      created.append(it)
      close = it.close
      it.close = lambda: (closed.append(it), close())
      return it
    def last_closed():
      return bool(created) and any(c is created[-1] for c in closed)
    _create_train_iterator = pipeline.create_train_iterator
    pipeline.create_train_iterator = lambda *a, **k: track_close(_create_train_iterator(*a, **k))
"""

# The training batches of steps 3, 4, ... contain a NaN pixel.
POISON_FROM_STEP_3 = TRACK_CLOSE + """
    from sgdc_jax.run import train, checkpoints as checkpointing
    import itertools
    counter = itertools.count(1)
    def poison(batch):
      if next(counter) >= 3:
        batch = dict(batch); batch['image'] = batch['image'].copy()
        batch['image'][0, 0, 0, 0] = np.nan
      return batch
    def poisoned(*a, **k):
      return track_close(iter(pipeline.create_train_dataset(*a, **k).map(poison)))
    pipeline.create_train_iterator = poisoned
"""

@pytest.mark.slow
def test_nan_loss_stops_naming_step_and_keeps_last_good_checkpoint(tmp_path):
  out = run_script(POISON_FROM_STEP_3 + f"""
    c = tiny_config()
    try:
      train.train_and_evaluate(c, {str(tmp_path)!r})
      msg = None
    except train.NonFiniteLossError as e:
      msg = str(e)
    ck = checkpointing.Checkpointer(os.path.join({str(tmp_path)!r}, 'checkpoints'), read_only=True)
    print('RESULT' + json.dumps({{'msg': msg, 'steps': ck.all_steps(), 'closed': last_closed()}}))
  """)
  assert out["msg"] is not None and "step 3" in out["msg"], out
  assert out["steps"] == [2], out   # last good state kept, nothing saved for the bad step
  assert out["closed"] is True, out  # the error path stops the data workers too


@pytest.mark.slow
def test_eval_counts_every_example_once_with_non_dividing_batch(tmp_path):
  out = run_script(f"""
    import csv
    from sgdc_jax.run import experiment, inference
    from sgdc_jax.run import outputs
    c = tiny_config()
    c.eval.batch_size = 2      # 5 validation records: batches 2 + 2 + (1 + padding)
    exp = experiment.build(c)
    scorer = inference.Scorer(c, exp.model, exp.mesh)
    rows, summary = scorer.score(experiment.init_state(exp), 'validation',
                                 visit=outputs.overlay_writer({str(tmp_path)!r}, 2))
    outputs.write_eval_outputs({str(tmp_path)!r}, rows, summary)
    rows = list(csv.DictReader(open(os.path.join({str(tmp_path)!r}, 'per_image.csv'))))
    js = json.load(open(os.path.join({str(tmp_path)!r}, 'metrics.json')))
    print('RESULT' + json.dumps({{'n': summary['n_images'], 'idx': [int(r['index']) for r in rows],
        'ids': [r['id'] for r in rows], 'keys': sorted(js),
        'overlays': sorted(os.listdir(os.path.join({str(tmp_path)!r}, 'overlays')))}}))
  """)
  assert out["n"] == 5
  assert out["idx"] == [0, 1, 2, 3, 4]
  assert len(set(out["ids"])) == 5
  assert {"mean", "std", "n_images", "empty", "hd95_convention"} <= set(out["keys"])
  assert len(out["overlays"]) == 2 and all(f.endswith(".png") for f in out["overlays"])


@pytest.mark.slow
def test_deferred_metric_fetch_stops_on_nan_with_last_good_checkpoint(tmp_path):
  # log_every > num_steps: metrics are fetched only before checkpoint saves (every 2 steps), so
  # the loop dispatches step 3 (NaN) without waiting; the check before the step-4 save finds it.
  out = run_script(POISON_FROM_STEP_3 + f"""
    c = tiny_config()
    c.train.num_steps = 6; c.train.log_every = 100; c.train.checkpoint_every = 2
    c.train.prefetch_to_device = 3
    calls = []
    try:
      train.train_and_evaluate(c, {str(tmp_path)!r}, step_callback=calls.append)
      msg = None
    except train.NonFiniteLossError as e:
      msg = str(e)
    ck = checkpointing.Checkpointer(os.path.join({str(tmp_path)!r}, 'checkpoints'), read_only=True)
    print('RESULT' + json.dumps({{'msg': msg, 'steps': ck.all_steps(), 'calls': calls}}))
  """)
  assert out["msg"] is not None and "step 3" in out["msg"], out
  assert "step 2" in out["msg"]            # names the last good checkpoint
  assert out["steps"] == [2], out          # nothing saved at or after the bad step
  assert out["calls"] == [1, 2, 3], out    # step 3 ran without a host wait; caught before saving 4


@pytest.mark.slow
def test_deferred_fetch_trains_exactly_like_fetching_every_step(tmp_path):
  """log_every 1, 3 and 4 give identical parameters; between fetches no device->host copy."""
  out = run_script(TRACK_CLOSE + f"""
    from sgdc_jax.run import train
    finals, history = [], []
    def guard(step):
      # Steps 2 and 3 of the log_every=4 run must not move anything from the devices to the
      # host, explicitly (device_get) or not: the loop only dispatches between fetches.
      if step == 1:
        jax.config.update('jax_transfer_guard_device_to_host', 'disallow_explicit')
      elif step == 3:
        jax.config.update('jax_transfer_guard_device_to_host', 'allow')
    for log_every in (1, 3, 4):
      c = tiny_config()
      c.train.log_every = log_every; c.train.checkpoint_every = 0
      work = os.path.join({str(tmp_path)!r}, f'log{{log_every}}')
      r = train.train_and_evaluate(c, work, run_eval=False,
                                   step_callback=guard if log_every == 4 else None)
      assert r.train_iter is None and last_closed()  # closed on return
      finals.append([np.asarray(x).tolist() for x in
                     jax.tree.leaves(jax.device_get((r.state.params, r.state.batch_stats)))])
      history.append([json.loads(l) for l in open(os.path.join(work, 'history.jsonl'))
                      if '"loss"' in l])
    print('RESULT' + json.dumps({{'finals': finals, 'history': history}}))
  """)
  a, b, c = out["finals"]
  assert len(a) == len(b) == len(c) > 10
  for x, y, z in zip(a, b, c):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
  every, deferred, _ = out["history"]
  assert [r["step"] for r in every] == [1, 2, 3, 4]
  assert [r["step"] for r in deferred] == [3, 4]
  # The deferred window's logged loss is the mean of the per-step losses it covers.
  np.testing.assert_allclose(deferred[0]["loss"], np.mean([r["loss"] for r in every[:3]]),
                             rtol=1e-6)
  np.testing.assert_allclose(deferred[1]["loss"], every[3]["loss"], rtol=1e-6)
  assert np.isfinite([r["loss"] for r in every]).all()


@pytest.mark.slow
def test_eval_mode_writes_one_folder_per_dataset_split_and_step(tmp_path):
  work = str(tmp_path / "work")
  out = run_script(f"""
    from sgdc_jax.run import evaluate, train
    c = tiny_config()
    c.train.num_steps = 2; c.train.checkpoint_every = 0
    train.train_and_evaluate(c, {work!r})
    c.eval.checkpoint = 'latest'
    test = evaluate.evaluate_checkpoint(c, {work!r})
    val = evaluate.evaluate_checkpoint(c, {work!r}, split='validation')
    print('RESULT' + json.dumps({{'test': test['output_dir'], 'val': val['output_dir'],
                                  'step': test['checkpoint_step'], 'n': test['n_images']}}))
  """)
  assert out["step"] == 2 and out["n"] == 5
  assert out["test"] == os.path.join(work, "eval", "synthetic_lesions", "test", "step_2")
  assert out["val"] == os.path.join(work, "eval", "synthetic_lesions", "validation", "step_2")
  for folder in (out["test"], out["val"]):
    assert {"metrics.json", "per_image.csv", "overlays", "config.json"} <= set(os.listdir(folder))
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert metrics["checkpoint_step"] == 2 and metrics["n_images"] == 5
    assert len(os.listdir(os.path.join(folder, "overlays"))) == 2
  assert json.load(open(os.path.join(out["val"], "metrics.json")))["split"] == "validation"
  # Evaluation leaves the training record alone; the workdir root holds no eval files.
  assert json.load(open(os.path.join(work, "config.json")))["eval"]["checkpoint"] == "best"
  assert not {"metrics.json", "per_image.csv"} & set(os.listdir(work))
