"""Grain worker processes hand batches over in shared memory; none of it is reported leaked at
exit (issue 25.7: 'resource_tracker: There appear to be 9 leaked shared_memory objects to
clean up at shutdown' ended every training with `data.num_workers` > 0).

Two sources, both fixed: batches still referenced at exit (the training loop's device queue,
in reference cycles) kept their names until garbage collection that never came
(`release_shared_memory` unlinks each name on arrival), and Grain's prefetch thread keeps the
last batch of a finite stream in a StopIteration traceback cycle (`close_pipeline`)."""
import os
import subprocess
import sys
import textwrap

import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)
import numpy as np
import pytest
from grain import multiprocessing as grain_mp

from test_fault_injection import TINY_FLAGS
from test_train import CACHE, REPO
from sgdc_jax.data import workers

TESTS_DATA = os.path.dirname(os.path.abspath(__file__))
NOISE = ('leaked shared_memory', 'resource_tracker', 'Exception ignored')

# The training and evaluation inputs with one worker process; batches of both are held in a
# reference cycle until the interpreter exits, as the training loop's objects are.
HOLD_TO_EXIT = textwrap.dedent("""
    import sgdc_jax
    from pipeline_helpers import small_config
    from sgdc_jax.data import pipeline

    def main():
      config = small_config(size=16)
      config.num_workers = 1
      train = pipeline.create_train_iterator(config, 2, seed=0, process_index=0,
                                             process_count=1)
      evaluation = pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                                 process_count=1)
      held = {'train': [next(train), next(train)], 'eval': [next(evaluation)]}
      held['self'] = held  # a cycle: nothing frees it before the interpreter exits
      train.close()
      evaluation.close()
      print('RESULT', sorted(held['train'][0]), float(held['eval'][0]['image'].sum()) != 0)

    if __name__ == '__main__':  # Grain's worker processes are spawned: they import this file
      main()
""")


def _assert_quiet(run):
  assert run.returncode == 0, run.stderr[-3000:]
  noise = [line for line in run.stderr.splitlines() if any(n in line for n in NOISE)]
  assert not noise, run.stderr[-3000:]


def test_batches_held_until_exit_leave_no_shared_memory(tmp_path):
  script = tmp_path / 'hold_to_exit.py'
  script.write_text(HOLD_TO_EXIT)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS_DATA]), JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       cwd=REPO, timeout=300, env=env)
  _assert_quiet(run)
  assert "RESULT ['edge', 'image', 'mask'] True" in run.stdout, run.stdout[-2000:]


def test_release_unlinks_the_name_and_keeps_the_data():
  array = grain_mp.SharedMemoryArray((4, 3), np.float32)
  array[:] = np.arange(12, dtype=np.float32).reshape(4, 3)
  array.unlink_on_del()  # as Grain marks the arrays it receives from a worker
  name = array.shm.name
  plain = np.ones(3)
  batch = {'image': array, 'other': plain, 'view': array[1:]}
  assert workers.release_shared_memory(batch) is batch
  if os.path.isdir('/dev/shm'):  # Linux: POSIX shared memory names live there
    assert not os.path.exists(os.path.join('/dev/shm', name.lstrip('/')))
  np.testing.assert_array_equal(batch['image'][3], [9, 10, 11])  # the mapping stays
  np.testing.assert_array_equal(batch['view'][0], [3, 4, 5])
  workers.release_shared_memory(batch)  # a second release is harmless
  del batch, array  # freeing closes the mapping without a second unlink (no error)


@pytest.mark.slow
def test_training_with_worker_processes_ends_quietly(tmp_path):
  """The reported case: a short training with a worker process and a validation at its end."""
  flags = [f for f in TINY_FLAGS if not f.startswith(('--config.train.num_steps',
                                                       '--config.data.num_workers'))]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', SGDC_NO_BAR='1')
  run = subprocess.run(
      [sys.executable, '-m', 'sgdc_jax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path / "work"}', '--config.train.num_steps=4',
       '--config.data.num_workers=1'] + flags,
      capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
  _assert_quiet(run)
  assert 'step 4: val dice' in run.stdout + run.stderr
