#!/usr/bin/env bash
# ResNet-20 on Fashion-MNIST: the robustness grid's GPU row (bench/grid.py, row
# fmnist-resnet20: BP, FA, uSF, WM, KP with their defaults, seeds 0-2), six runs at
# once on one GPU (one process each); run from the repository root on a GPU machine
# with CuPy, the Fashion-MNIST IDX files in .data/fashion-mnist/, and the wheels of
# bench/gpu_check.sh in .whl/gpu/ (for cuDNN).
#
#   OUT=dir EPOCHS=12 SEEDS=0-2 BUDGET=300 bash bench/gpu_fmnist_resnet20.sh
#
# Stops at $BUDGET seconds; the run folders (without checkpoints) are packed into
# $OUT/resnet20_runs.tgz whether or not every run finished, the tables to $OUT/.
set -u
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/gpu_env.sh
timeout "$BUDGET" python3 bench/grid.py --rows fmnist-resnet20 --seeds "${SEEDS:-0-2}" --jobs 6 \
  --epochs "${EPOCHS:-12}" --set '{"data_dir": ".data/fashion-mnist"}' --out /tmp/r20 > "$OUT/resnet20.log" 2>&1
echo "exit $? after $SECONDS s" >> "$OUT/resnet20.log"
python3 bench/grid.py --rows fmnist-resnet20 --seeds "${SEEDS:-0-2}" --out /tmp/r20 --report-only >> "$OUT/resnet20.log" 2>&1
cp /tmp/r20/grid.md /tmp/r20/fmnist-resnet20/comparison.* "$OUT/" 2>/dev/null
tar czf "$OUT/resnet20_runs.tgz" --exclude=checkpoint.npz -C /tmp r20
nvidia-smi --query-gpu=name --format=csv,noheader >> "$OUT/resnet20.log"
