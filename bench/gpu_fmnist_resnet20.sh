#!/usr/bin/env bash
# ResNet-20 on Fashion-MNIST, every rule of the convnet table (+ KP from a random B₀),
# all runs at once on one GPU (one process each); run from the repository root on a
# GPU machine with CuPy, the Fashion-MNIST IDX files in .data/fashion-mnist/, and the
# wheels of bench/gpu_check.sh in .whl/gpu/ (for cuDNN).
#
#   OUT=dir EPOCHS=10 BUDGET=300 bash bench/gpu_fmnist_resnet20.sh
#
# Stops at $BUDGET seconds; the run folders (without checkpoints) are packed into
# $OUT/resnet20_runs.tgz whether or not every run finished, the table to $OUT/table.md.
set -u
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/gpu_env.sh
timeout "$BUDGET" python3 bench/fmnist_table.py --model resnet20 --device cuda --jobs 6 \
  --epochs "${EPOCHS:-10}" --out /tmp/r20 --data-dir .data/fashion-mnist > "$OUT/resnet20.log" 2>&1
echo "exit $? after $SECONDS s" >> "$OUT/resnet20.log"
cp /tmp/r20/table.md "$OUT/table.md" 2>/dev/null
tar czf "$OUT/resnet20_runs.tgz" --exclude=checkpoint.npz -C /tmp r20
nvidia-smi --query-gpu=name --format=csv,noheader >> "$OUT/resnet20.log"
