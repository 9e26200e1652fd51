"""cuDNN convolutions for CuPy arrays, through the ``nvidia-cudnn-frontend`` package.

GPU only. The three operations a convolution layer needs, each one cuDNN
graph with a single node, built once per geometry and cached:

``fprop``  ``y = W ⋆ x``                          (forward drive)
``dgrad``  ``dx = Fᵀ ⋆ dy``, a transposed convolution with any kernel ``F``
           (``F = W`` for backprop, the feedback kernel ``B`` otherwise)
``wgrad``  ``dW[o, c, a, e] = Σ_{n,i,j} dy[n, o, i, j] x_pad[n, c, s·i + a, s·j + e]``
           (the Hebbian correlation of input and output images: the weight
           gradient when ``dy = δ``, the weight mirror's product when ``x`` is noise)

All arrays are float32, logical layout ``(N, C, H, W)``; their actual
strides are passed to cuDNN, so channel-major or channels-last views work
where an engine supports them. ``available()`` says whether the package,
the cuDNN library and a GPU are all there, and why not.

GPU options (``models.backend.gpu_options()``, read when a graph is built):
with ``tf32=False`` (the default) plans whose engines round inputs to TF32
on tensor cores are excluded, so results are float32 as with im2col +
cuBLAS; with TF32 allowed cuDNN picks freely (PyTorch's default for
convolutions). ``plan_search`` (one of ``backend.PLAN_SEARCHES``) says how
a graph's execution plan is picked: ``"measure"`` (default), the fastest of
its first ``_MEASURED_PLANS`` candidates timed on the real buffers when the
graph is built (as PyTorch's ``cudnn.benchmark``), or ``"heuristic"``,
cuDNN's heuristic first choice. Graphs are cached per geometry and options.

The cuDNN library itself comes from the ``nvidia-cudnn-cu13`` (or ``-cu12``)
wheel that PyTorch and CuPy users usually have; when it is not on
``LD_LIBRARY_PATH``, the ``nvidia/cudnn/lib`` folders of ``sys.path`` are
searched before the frontend is imported.
"""
from __future__ import annotations

import glob
import os
import sys

from .backend import gpu_options

__all__ = ["available", "unavailable_reason", "version", "fprop", "dgrad", "wgrad"]

_STATE: dict = {}
_GRAPHS: dict = {}

#: candidate plans timed per graph with ``plan_search = "measure"``
_MEASURED_PLANS = 4


def _find_cudnn_library() -> None:
    """Put the first ``nvidia/cudnn/lib`` of ``sys.path`` on LD_LIBRARY_PATH.

    The frontend honours LD_LIBRARY_PATH before its own search, which only
    looks next to its own installation.
    """
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if any(glob.glob(os.path.join(p, "libcudnn.so*")) for p in paths):
        return
    for entry in sys.path:
        for lib in glob.glob(os.path.join(entry or ".", "nvidia", "cudnn", "lib")):
            if glob.glob(os.path.join(lib, "libcudnn.so*")):
                os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([lib, *paths])
                return


def _init():
    """Import the frontend and create one handle (once); remember any failure."""
    if _STATE:
        return _STATE
    try:
        import cupy

        if not cupy.is_available():
            raise RuntimeError("no CUDA GPU is visible to CuPy")
        _find_cudnn_library()
        import cudnn

        handle = cudnn.create_handle()
        _STATE.update(cudnn=cudnn, handle=handle, cupy=cupy, error=None,
                      version=getattr(cudnn, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001 - any failure means "use im2col"
        _STATE.update(cudnn=None, handle=None, cupy=None, error=f"{type(exc).__name__}: {exc}")
    return _STATE


def available() -> bool:
    """True when cuDNN convolutions can be built on this machine."""
    return _init()["cudnn"] is not None


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    return _init()["error"]


def version() -> str | None:
    """The cuDNN frontend's version (None when ``available()`` is False)."""
    return _init().get("version")


def _elements(a) -> list[int]:
    return [int(s) // a.itemsize for s in a.strides]


def _build(kind: str, a, b, out, stride: int, padding: int, tf32: bool, search: str):
    """A built single-node graph for ``kind`` with the arrays' geometry; its
    plan picked as ``search`` (``"measure"`` or ``"heuristic"``) says."""
    st = _init()
    cudnn, cp = st["cudnn"], st["cupy"]
    f32 = cudnn.data_type.FLOAT
    g = cudnn.pygraph(io_data_type=f32, intermediate_data_type=f32, compute_data_type=f32,
                      handle=st["handle"])
    ta = g.tensor(name="a", dim=list(a.shape), stride=_elements(a), data_type=f32)
    tb = g.tensor(name="b", dim=list(b.shape), stride=_elements(b), data_type=f32)
    conv = dict(padding=[padding, padding], stride=[stride, stride], dilation=[1, 1], compute_data_type=f32)
    if kind == "fprop":
        to = g.conv_fprop(image=ta, weight=tb, **conv)
    elif kind == "dgrad":
        to = g.conv_dgrad(loss=ta, filter=tb, **conv)
    elif kind == "wgrad":
        to = g.conv_wgrad(image=ta, loss=tb, **conv)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    to.set_output(True).set_data_type(f32)
    to.set_dim(list(out.shape))
    to.set_stride(_elements(out))
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    if not tf32:
        g.deselect_numeric_notes([cudnn.numerical_note.TENSOR_CORE, cudnn.numerical_note.DOWN_CONVERT_INPUTS])
    g.check_support()
    g.build_plans()
    if search == "measure":
        try:
            found = _select_fastest_plan(g, {ta: a.data.ptr, tb: b.data.ptr, to: out.data.ptr})
        except Exception:  # noqa: BLE001 - fall back to a fresh graph with the heuristic's plan
            found = False
        if not found:
            return _build(kind, a, b, out, stride, padding, tf32, search="heuristic")
    size = int(g.get_workspace_size())
    workspace = cp.empty(max(size, 1), dtype=cp.uint8)
    return g, ta, tb, to, workspace


def _select_fastest_plan(g, pack) -> None:
    """Time the first few candidate plans on the real buffers; keep the fastest.

    Any candidate that does not build or run is skipped. Returns False when
    none could be timed (the caller then rebuilds with the heuristic's plan).
    """
    st = _STATE
    cp = st["cupy"]
    timings = []
    for index in range(min(int(g.get_execution_plan_count()), _MEASURED_PLANS)):
        try:
            g.build_plan_at_index(index)
            ws = cp.empty(max(int(g.get_workspace_size_plan_at_index(index)), 1), dtype=cp.uint8)
            g.execute_plan_at_index(pack, ws.data.ptr, index, st["handle"])
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            for _ in range(3):
                g.execute_plan_at_index(pack, ws.data.ptr, index, st["handle"])
            stop.record()
            stop.synchronize()
            timings.append((cp.cuda.get_elapsed_time(start, stop), index))
        except Exception:  # noqa: BLE001 - a candidate that fails is not a candidate
            continue
    if not timings:
        return False
    g.select_plan(min(timings)[1])
    g.build_plans()
    return True


def _run(kind: str, a, b, out, stride: int, padding: int):
    options = gpu_options()
    tf32, search = options.tf32, options.plan_search
    key = (kind, a.shape, a.strides, b.shape, b.strides, out.shape, out.strides, stride, padding, tf32, search)
    entry = _GRAPHS.get(key)
    if entry is None:
        entry = _GRAPHS[key] = _build(kind, a, b, out, stride, padding, tf32, search)
    g, ta, tb, to, workspace = entry
    g.execute({ta: a.data.ptr, tb: b.data.ptr, to: out.data.ptr}, workspace.data.ptr, handle=_STATE["handle"])
    return out


def _check(*arrays) -> None:
    for a in arrays:
        if a.dtype.itemsize != 4 or a.dtype.kind != "f":
            raise TypeError(f"cuDNN convolutions here take float32 arrays, got {a.dtype}")


def fprop(x, W, out, stride: int, padding: int):
    """``out = W ⋆ x`` (no bias); ``out`` is written in place and returned."""
    _check(x, W, out)
    return _run("fprop", x, W, out, stride, padding)


def dgrad(dy, F, out, stride: int, padding: int):
    """``out = Fᵀ ⋆ dy``, the input-side error sent back through kernel ``F``."""
    _check(dy, F, out)
    return _run("dgrad", dy, F, out, stride, padding)


def wgrad(x, dy, out, stride: int, padding: int):
    """``out[o, c, a, e] = Σ dy[n, o, i, j] · x_pad[n, c, s·i + a, s·j + e]``."""
    _check(x, dy, out)
    return _run("wgrad", x, dy, out, stride, padding)
