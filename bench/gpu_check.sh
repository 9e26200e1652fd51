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
#   4. bench/bench_gpu.py: ResNet-18 224², batch 256, BP/FA/WM/KP in this engine
#      (im2col only, and measured choice of im2col/cuDNN, float32 and TF32) beside
#      torchvision's ResNet-18 in PyTorch; the per-geometry choices to autotune.md.
set -u
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$SECONDS
left() { echo $(( BUDGET - (SECONDS - start) )); }

SITE=/tmp/wm_site
mkdir -p "$SITE"
wheels=$(ls .whl/gpu/nvidia_cudnn_frontend-*.whl 2>/dev/null)
python3 -c "import cuda.bindings.driver" 2>/dev/null || wheels="$wheels $(ls .whl/gpu/cuda_bindings-*.whl .whl/gpu/cuda_pathfinder-*.whl 2>/dev/null)"
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" $wheels \
    > "$OUT/install.log" 2>&1 || echo "wheel install failed" >> "$OUT/install.log"
fi
export PYTHONPATH=$SITE:$PWD
# libcudnn: the nvidia/cudnn/lib folder of the pip wheel PyTorch depends on
CUDNN_LIB=$(python3 -c "
import glob, os, sys
hits = [d for p in sys.path for d in glob.glob(os.path.join(p or '.', 'nvidia', 'cudnn', 'lib')) if glob.glob(d + '/libcudnn.so*')]
print(hits[0] if hits else '')")
if [ -z "$CUDNN_LIB" ]; then
  found=$(find / -name 'libcudnn.so.9' -not -path '/proc/*' 2>/dev/null | head -1)
  [ -n "$found" ] && CUDNN_LIB=$(dirname "$found")
fi
[ -n "$CUDNN_LIB" ] && export LD_LIBRARY_PATH=$CUDNN_LIB:${LD_LIBRARY_PATH:-}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 --version
  echo "cudnn lib: $CUDNN_LIB"; echo "wheels: $wheels"
  python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
  timeout 60 python3 -c "
from models import cudnn_conv
print('cudnn_conv.available:', cudnn_conv.available(), cudnn_conv.unavailable_reason() or '')
if cudnn_conv.available():
    import cudnn; print('frontend', cudnn.__version__, 'backend', cudnn.backend_version())
"; } > "$OUT/machine.txt" 2>&1

timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -rs \
  tests/test_gpu_conv.py tests/test_fused.py tests/test_gpu_rate.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_tests.log"

timeout 90 python3 bench/profile_resnet_gpu.py --tf32 > "$OUT/profile_tf32.md" 2>&1
echo "profile exit $? at $((SECONDS - start)) s" >> "$OUT/profile_tf32.md"

timeout $(( $(left) - 10 )) python3 bench/bench_gpu.py --skip-mlp --steps 5 --out "$OUT/gpu_bench.md" \
  --autotune-out "$OUT/autotune.md" > "$OUT/gpu_bench.log" 2>&1
echo "bench_gpu exit $? at $((SECONDS - start)) s" >> "$OUT/gpu_bench.log"
ls -la "$OUT"
