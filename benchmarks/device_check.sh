#!/usr/bin/env bash
# The GPU check (benchmarks/device_check.py), run from anywhere:
#   benchmarks/device_check.sh OUTDIR [--cpu] [--data=JPEG_DIR] [--wheels=DIR] [...]
# On a device (no --cpu), the folders that `make device-wheels` fills are used when present and
# not given: --wheels=.devcarry/wheels and --data=.devcarry/isic2017. PYTHON picks the
# interpreter (default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=("$@")
cpu=0 wheels=0 data=0
for a in "$@"; do
  case "$a" in
    --cpu) cpu=1 ;;
    --wheels=*) wheels=1 ;;
    --data=*) data=1 ;;
  esac
done
if [[ $cpu == 0 && $wheels == 0 && -d "$repo/.devcarry/wheels" ]]; then
  args+=("--wheels=$repo/.devcarry/wheels")
fi
if [[ $cpu == 0 && $data == 0 && -d "$repo/.devcarry/isic2017" ]]; then
  args+=("--data=$repo/.devcarry/isic2017")
fi
exec "${PYTHON:-python3}" "$repo/benchmarks/device_check.py" "${args[@]}"
