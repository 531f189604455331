#!/usr/bin/env bash
# Multi-node GPU training with SLURM: one task per GPU, all running the same command.
#
#   sbatch --nodes=2 launch/slurm_gpu.sh configs/isic.py /shared/runs/isic2018 [--config.x=y ...]
#
# Every task calls jax.distributed.initialize(), which reads the SLURM environment
# (SLURM_NTASKS, SLURM_PROCID, node list) to find the coordinator and its process id; the
# workdir must be on a filesystem shared by the nodes. Requeue-friendly: on preemption SLURM
# sends SIGTERM, the run saves a checkpoint and exits; the requeued job resumes from it.
#SBATCH --job-name=sgdc_jax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [--nodes=N] launch/slurm_gpu.sh CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 1
fi
config="$1"
workdir="$2"
shift 2

REPO_DIR="${SLURM_SUBMIT_DIR:-$(pwd)}"
PY="${PY:-${REPO_DIR}/.venv/bin/python}"   # venv with jax[cuda12] at the pinned version
cd "${REPO_DIR}"

export XLA_PYTHON_CLIENT_PREALLOCATE=false
srun --kill-on-bad-exit=1 "${PY}" -m sgdc_jax.main --config="${config}" --workdir="${workdir}" "$@"
