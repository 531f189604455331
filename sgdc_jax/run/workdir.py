"""What a workdir guarantees: one training at a time (`workdir_lock`), and the record of how it
was trained (`training_record`). This module gathers their public names.

Lock (`training_lock`): a training holds an exclusive `fcntl.flock` on `workdir/.train.lock`
for as long as it runs; a second training on the same workdir is refused at once with a
message naming the holder (pid, host, start time). The OS releases the lock when the holder
exits in any way, kill -9 included, so a lock left by a dead run never blocks the next one
(the file stays and is reused; its contents are only the last holder's description). Not
reliable on NFS-like filesystems, where `flock` may be emulated per host or not at all. With
several JAX processes only process 0 takes the lock, and its outcome (with the message) is
broadcast so that every process raises the same error.

Training config record (`record_training_config`, `check_training_config`): `workdir/config.json`
is written once, when a training starts without a checkpoint, and never by a resumed training,
eval, predict or a run that failed its config check. On resume (and before eval/predict
restore a checkpoint) the current config is compared with it: fields that change the saved
state (`STATE_FIELDS`) give one error listing each as
`model.encoder: 'resnet50' (workdir) vs 'resnet18' (now)`; other differences (num_steps,
log_every, the data dir, ...) are allowed and logged, except the settings of how an eval or
predict run reads and writes (`UNREPORTED_FIELDS`: `predict.*`, which checkpoint, overlays, eval
batch size, the compilation cache), which never concern the trained model.

Eval and predict write their resolved config beside their outputs (`write_run_config`), never
over the record.
"""

from __future__ import annotations

# pylint: disable=unused-import
from sgdc_jax.errors import ModelConfigMismatchError, WorkdirBusyError, WorkdirError  # noqa: F401
from sgdc_jax.run.training_record import (  # noqa: F401
    CONFIG_FILE, STATE_FIELDS, UNREPORTED_FIELDS, ConfigComparison, FieldDiff,
    check_training_config, compare_training_config, read_training_config, record_path,
    record_training_config, write_run_config)
from sgdc_jax.run.workdir_lock import LOCK_FILE, training_lock  # noqa: F401
