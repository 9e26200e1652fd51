# Sourced by the device scripts (bench/gpu_check.sh, bench/gpu_fmnist_resnet20.sh):
# installs the carried wheels of .whl/gpu/ into /tmp/wm_site (the cuDNN frontend; and
# cuda-bindings + cuda-pathfinder where the machine lacks them), puts that and the
# repository on PYTHONPATH, and the nvidia/cudnn/lib folder of the pip wheel PyTorch
# depends on (else any libcudnn.so.9 on the machine) on LD_LIBRARY_PATH.
# Expects $OUT; sets $wheels and $CUDNN_LIB for the caller's log.
# The carried wheels are not in git; fetch them where pip reaches PyPI, then carry .whl:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/gpu \
#       nvidia-cudnn-frontend cuda-bindings cuda-pathfinder tomli-w
# (tomli-w, pure Python, is the one project dependency such a machine may lack.)
SITE=/tmp/wm_site
mkdir -p "$SITE"
wheels=$(ls .whl/gpu/nvidia_cudnn_frontend-*.whl 2>/dev/null)
python3 -c "import cuda.bindings.driver" 2>/dev/null || wheels="$wheels $(ls .whl/gpu/cuda_bindings-*.whl .whl/gpu/cuda_pathfinder-*.whl 2>/dev/null)"
python3 -c "import tomli_w" 2>/dev/null || wheels="$wheels $(ls .whl/gpu/tomli_w-*.whl 2>/dev/null)"
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" $wheels \
    > "$OUT/install.log" 2>&1 || echo "wheel install failed" >> "$OUT/install.log"
fi
export PYTHONPATH=$SITE:$PWD
CUDNN_LIB=$(python3 -c "
import glob, os, sys
hits = [d for p in sys.path for d in glob.glob(os.path.join(p or '.', 'nvidia', 'cudnn', 'lib')) if glob.glob(d + '/libcudnn.so*')]
print(hits[0] if hits else '')")
if [ -z "$CUDNN_LIB" ]; then
  found=$(find / -name 'libcudnn.so.9' -not -path '/proc/*' 2>/dev/null | head -1)
  [ -n "$found" ] && CUDNN_LIB=$(dirname "$found")
fi
[ -n "$CUDNN_LIB" ] && export LD_LIBRARY_PATH=$CUDNN_LIB:${LD_LIBRARY_PATH:-}
