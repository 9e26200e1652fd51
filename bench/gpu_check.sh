#!/usr/bin/env bash
# The one prepared device check (run from the repository root on a GPU machine).
#
#   bash bench/gpu_check.sh            # writes its results under $OUT (default ./gpu_out)
#
# Needs: CuPy and PyTorch+torchvision on the machine; the wheels of brian2 2.10.1 and
# brian2cuda 1.0b1 for its Python in .whl/ (see BENCHMARKS.md for the download command);
# the Fashion-MNIST IDX files in .data/fashion-mnist/ (a copy of Debian's
# dataset-fashion-mnist). It runs, at once:
#   - on the host's CPU cores, in the background: bench/fmnist_table.py (every rule on
#     Fashion-MNIST, one single-threaded run per core);
#   - on the GPU, one after another: the gpu-marked tests, bench/bench_gpu.py (rate mode:
#     MLP and ResNet-18 against PyTorch), bench/gpu_circuit.py (brian2cuda).
# and stops everything at $BUDGET seconds (default 450), packing what finished.
set -u
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-450}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$SECONDS
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || { echo "wheel install failed" >> "$OUT/gpu_tests.log"; export PYTHONPATH=$PWD; }
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 --version;
  python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"; } > "$OUT/machine.txt" 2>&1

python3 bench/fmnist_table.py --out /tmp/fmnist --jobs "${JOBS:-12}" --data-dir .data/fashion-mnist \
  > "$OUT/fmnist.log" 2>&1 &
sweep=$!

left() { echo $(( BUDGET - (SECONDS - start) )); }
timeout 150 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_tests.log"
timeout 140 python3 bench/bench_gpu.py --out "$OUT/gpu_bench.md" > "$OUT/gpu_bench.log" 2>&1
echo "bench_gpu exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_bench.log"
if [ -f bench/gpu_circuit.py ] && [ "$(left)" -gt 60 ]; then
  timeout $(( $(left) - 40 )) python3 bench/gpu_circuit.py "$OUT/gpu_circuit.md" > "$OUT/gpu_circuit.log" 2>&1
  echo "gpu_circuit exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_circuit.log"
fi
while kill -0 $sweep 2>/dev/null && [ "$(left)" -gt 15 ]; do sleep 5; done
kill $sweep 2>/dev/null; sleep 1; pkill -9 -f bench/fmnist_table.py 2>/dev/null
echo "sweep stopped at $((SECONDS - start)) s" >> "$OUT/fmnist.log"
tar czf "$OUT/fmnist_runs.tgz" --exclude=checkpoint.npz -C /tmp fmnist 2>/dev/null
ls -la "$OUT"
