"""The array backend: the ONLY module that imports CuPy.

Everything in rate mode is written against an array module ``xp`` that is
either ``numpy`` (device ``cpu``) or ``cupy`` (device ``cuda``), chosen here.

It also owns the GPU options (``GPUOptions``: TF32, the convolution
algorithm, cuDNN's plan search, the fused kernels), read by every layer with
``gpu_options()`` and put in force only for the extent of a ``with
use_gpu_options(...)`` block, which restores the previous ones on exit.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy

from .. import checks
from ..errors import InputError

__all__ = ["DEVICES", "CONV_ALGORITHMS", "PLAN_SEARCHES", "BackendError", "GPUOptions", "gpu_options",
           "use_gpu_options", "cuda_available", "get_array_module", "array_module_of", "to_numpy",
           "make_rng", "synchronize"]

#: the devices rate mode runs on
DEVICES = ("cpu", "cuda")


class BackendError(InputError):
    """The requested device cannot be used on this machine, or a GPU option is not allowed."""


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def get_array_module(device: str = "cpu"):
    """``numpy`` for ``cpu``, ``cupy`` for ``cuda`` (a clear error without a GPU)."""
    if device == "cpu":
        return numpy
    if device == "cuda":
        try:
            import cupy
        except Exception as exc:
            raise BackendError(
                f"--device cuda needs CuPy (pip install 'weightmirror[gpu]'); importing it failed: {exc}"
            ) from None
        if not cuda_available():
            raise BackendError("--device cuda: no CUDA GPU is visible to CuPy; use --device cpu")
        return cupy
    raise BackendError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")


def array_module_of(a):
    """The array module an array belongs to (``numpy`` for NumPy arrays)."""
    return numpy if isinstance(a, numpy.ndarray) or numpy.isscalar(a) else __import__("cupy")


def to_numpy(a) -> numpy.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    if isinstance(a, numpy.ndarray):
        return a
    return a.get()


def make_rng(xp, seed):
    """A random generator of the backend, seeded by an int or a sequence of ints."""
    if xp is numpy:
        return numpy.random.default_rng(seed)
    # CuPy's generator takes an int seed: fold a sequence into one.
    if not isinstance(seed, int):
        seed = int(numpy.random.SeedSequence(seed).generate_state(1, dtype=numpy.uint64)[0] >> 1)
    return xp.random.default_rng(seed)


def synchronize(xp) -> None:
    """Wait for queued GPU work (a no-op on NumPy); used by timers."""
    if xp is not numpy:
        xp.cuda.Device().synchronize()


#: how a convolution on the GPU is computed: the faster of the two measured
#: once per geometry (``"auto"``), or forced (``models.conv``)
CONV_ALGORITHMS = ("auto", "im2col", "cudnn")
#: how a cuDNN graph's execution plan is picked: cuDNN's heuristic first
#: choice, or the fastest of its first few candidates timed on the real
#: buffers when the graph is built (as PyTorch's ``cudnn.benchmark``;
#: ``models.cudnn_conv``)
PLAN_SEARCHES = ("heuristic", "measure")


@dataclass(frozen=True)
class GPUOptions:
    """How rate mode computes on a GPU; no effect on NumPy arrays.

    tf32 : allow TF32 tensor-core math for float32 products. TF32 rounds the
        inputs of a product to a 10-bit mantissa and accumulates in float32:
        about 3 decimal digits per input, several times the float32
        throughput on Ampere and later GPUs (PyTorch's default for cuDNN
        convolutions). It applies to CuPy's matrix products (cuBLAS compute
        type) and to cuDNN convolutions (``models.cudnn_conv``). Off by
        default: float32 throughout.
    conv_algorithm : one of ``CONV_ALGORITHMS``: ``"auto"`` (time im2col +
        cuBLAS and cuDNN once per geometry, keep the faster), ``"im2col"`` or
        ``"cudnn"`` (forced; ``"cudnn"`` fails if the frontend or library is
        missing).
    plan_search : one of ``PLAN_SEARCHES``: ``"measure"`` (time the first
        candidate plans of each cuDNN graph) or ``"heuristic"``; applies to
        graphs built while it is in force.
    fused : use the fused CuPy kernels for batch norm, the ReLU's backward
        pass, max pooling and the SGD update (``models.fused``). A kernel
        that fails to compile switches them off for the rest of the process
        whatever this says (``fused.failure()``).

    Options are put in force with ``use_gpu_options`` and read with
    ``gpu_options()``; an instance validates its fields on construction
    (``BackendError`` naming the allowed values).
    """

    tf32: bool = False
    conv_algorithm: str = "auto"
    plan_search: str = "measure"
    fused: bool = True

    def __post_init__(self):
        checks.boolean(self.tf32, "GPU option tf32", BackendError)
        checks.choice(self.conv_algorithm, CONV_ALGORITHMS, "GPU option conv_algorithm", BackendError)
        checks.choice(self.plan_search, PLAN_SEARCHES, "GPU option plan_search", BackendError)
        checks.boolean(self.fused, "GPU option fused", BackendError)


#: the options in force; changed only by ``use_gpu_options``, which restores them.
#: Process-wide, as cuBLAS's compute type is (not per thread).
_IN_FORCE = {"options": GPUOptions()}


def gpu_options() -> GPUOptions:
    """The GPU options in force (``GPUOptions()`` outside any ``use_gpu_options``)."""
    return _IN_FORCE["options"]


def _cublas():
    """``(cupy, cupy._core._routines_linalg)``, or None without CuPy or a GPU.

    cuBLAS's compute type is what CuPy's float32 matrix products use; setting
    TF32 needs a device (it checks the compute capability).
    """
    try:
        import cupy
        from cupy._core import _routines_linalg as linalg
    except Exception:  # no CuPy: nothing to switch
        return None
    if not cuda_available():
        return None
    return cupy, linalg


def _set_cublas_tf32(enabled: bool):
    """Set cuBLAS's float32 compute type to TF32 or the default; returns the
    previous compute type (None where there is no CuPy or GPU)."""
    lib = _cublas()
    if lib is None:
        return None
    cupy, linalg = lib
    before = linalg.get_compute_type(cupy.float32)
    linalg.set_compute_type(cupy.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT)
    return before


def _restore_cublas(before) -> None:
    """Put back the compute type ``_set_cublas_tf32`` returned."""
    if before is None:
        return
    cupy, linalg = _cublas()
    linalg.set_compute_type(cupy.float32, before)


@contextlib.contextmanager
def use_gpu_options(options: GPUOptions | None = None, **changes) -> Iterator[GPUOptions]:
    """Put GPU options in force for the ``with`` block; restore the previous ones after.

    ``options`` (default: the options in force) with the fields named in
    ``changes`` replaced, e.g. ``use_gpu_options(tf32=True)``. Also sets
    cuBLAS's float32 compute type through CuPy (TF32 or the default) when
    CuPy sees a GPU. On exit, normal or by an exception, the previous options
    and the previous compute type come back; contexts nest.

    Raises ``BackendError`` for an unknown field or a bad value (naming the
    allowed ones), before anything changes. Yields the options in force.
    """
    base = gpu_options() if options is None else options
    if not isinstance(base, GPUOptions):
        raise TypeError(f"use_gpu_options: expected GPUOptions, got {type(base).__name__}")
    allowed = [f.name for f in dataclasses.fields(GPUOptions)]
    for key in changes:
        if key not in allowed:
            raise BackendError(f"unknown GPU option {key!r}; allowed: {', '.join(allowed)}")
    new = dataclasses.replace(base, **changes)
    previous = _IN_FORCE["options"]
    compute_before = _set_cublas_tf32(new.tf32)
    _IN_FORCE["options"] = new
    try:
        yield new
    finally:
        _IN_FORCE["options"] = previous
        _restore_cublas(compute_before)
