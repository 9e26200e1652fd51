#!/usr/bin/env bash
# The one prepared device check (run from the repository root on a GPU machine).
#
#   bash bench/gpu_check.sh            # writes its results under $OUT (default ./gpu_out)
#
# Needs on the machine: CuPy, PyTorch + torchvision (for the comparison, and whose
# nvidia-cudnn wheel provides libcudnn). Carried in .whl/gpu/ (see BENCHMARKS.md for
# the download command): nvidia-cudnn-frontend, and cuda-bindings + cuda-pathfinder
# for machines that lack them. It runs, one after another, and stops at $BUDGET
# seconds (default 420):
#   1. a probe: can models.cudnn_conv build cuDNN convolutions here (and why not);
#   2. the gpu-marked rate-mode tests (cuDNN vs im2col vs NumPy, fused kernels, CuPy rules);
#   3. bench/profile_resnet_gpu.py: where a BP step goes, layer type by layer type;
#   4. bench/mirror_cost.py --device cuda: the weight mirror's share of a ResNet-18/50 step (issue 13);
#   5. bench/bench_gpu.py: ResNet-18 224², batch 256, BP/FA/WM/KP in this engine
#      (im2col only, and measured choice of im2col/cuDNN, float32 and TF32) beside
#      torchvision's ResNet-18 in PyTorch; the per-geometry choices to autotune.md.
set -u
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$SECONDS
left() { echo $(( BUDGET - (SECONDS - start) )); }

. bench/gpu_env.sh

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 --version
  echo "cudnn lib: $CUDNN_LIB"; echo "wheels: $wheels"
  python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
  timeout 60 python3 -c "
from weightmirror.models import cudnn_conv
print('cudnn_conv.available:', cudnn_conv.available(), cudnn_conv.unavailable_reason() or '')
if cudnn_conv.available():
    import cudnn; print('frontend', cudnn.__version__, 'backend', cudnn.backend_version())
"; } > "$OUT/machine.txt" 2>&1

timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -rs \
  tests/test_gpu_conv.py tests/test_fused.py tests/test_gpu_rate.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_tests.log"

timeout 90 python3 bench/profile_resnet_gpu.py --tf32 > "$OUT/profile_tf32.md" 2>&1
echo "profile exit $? at $((SECONDS - start)) s" >> "$OUT/profile_tf32.md"

timeout 120 python3 bench/mirror_cost.py --device cuda --batch 256 --repeats 3 --out "$OUT/mirror_cost" \
  > "$OUT/mirror_cost.log" 2>&1
echo "mirror_cost exit $? at $((SECONDS - start)) s" >> "$OUT/mirror_cost.log"

timeout $(( $(left) - 10 )) python3 bench/bench_gpu.py --skip-mlp --steps 5 --out "$OUT/gpu_bench.md" \
  --autotune-out "$OUT/autotune.md" > "$OUT/gpu_bench.log" 2>&1
echo "bench_gpu exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_bench.log"
ls -la "$OUT"
