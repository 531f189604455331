#!/usr/bin/env bash
# Train sgdc_jax on a Cloud TPU VM (single- or multi-host pod slice).
#
#   launch/tpu_vm.sh create                  # create the TPU VM
#   launch/tpu_vm.sh install                 # copy this repo to every worker, install deps
#   launch/tpu_vm.sh run configs/isic.py runs/isic2018 [--config.x=y ...]
#   launch/tpu_vm.sh delete
#
# Settings (environment variables): TPU_NAME, ZONE, ACCELERATOR_TYPE, TPU_VERSION, PROJECT.
# On a multi-host slice every worker runs the same command; sgdc_jax.main sees
# TPU_WORKER_HOSTNAMES and calls jax.distributed.initialize(), which auto-detects the pod.
# The workdir must be shared by all workers (a gs:// bucket path or a mounted filesystem).
set -euo pipefail

TPU_NAME="${TPU_NAME:-sgdc-tpu}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="sgdc_jax"

ssh_all() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --project="${PROJECT}" \
    --worker=all --command="$1"
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}"
  exit 1
}

cmd="${1:-}"
[[ -n "${cmd}" ]] || usage
shift

case "${cmd}" in
  create)
    gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${ZONE}" --project="${PROJECT}" \
      --accelerator-type="${ACCELERATOR_TYPE}" --version="${TPU_VERSION}"
    ;;
  install)
    gcloud compute tpus tpu-vm scp --recurse "${REPO_DIR}" "${TPU_NAME}:~/${REMOTE_DIR}" \
      --zone="${ZONE}" --project="${PROJECT}" --worker=all
    jax_version="$(grep '^jax==' "${REPO_DIR}/requirements.txt" | cut -d= -f3)"
    ssh_all "cd ~/${REMOTE_DIR} && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
      && grep -v '^jax==' requirements.txt > /tmp/req.txt \
      && .venv/bin/pip install -q -r /tmp/req.txt 'jax[tpu]==${jax_version}' \
      && .venv/bin/pip install -q --no-deps -e ."
    ;;
  run)
    [[ $# -ge 2 ]] || usage
    config="$1"
    workdir="$2"
    shift 2
    extra=""
    for arg in "$@"; do
      extra+=" $(printf '%q' "${arg}")"
    done
    ssh_all "cd ~/${REMOTE_DIR} && .venv/bin/python -m sgdc_jax.main \
      --config=$(printf '%q' "${config}") --workdir=$(printf '%q' "${workdir}")${extra}"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone="${ZONE}" --project="${PROJECT}" --quiet
    ;;
  *)
    usage
    ;;
esac
