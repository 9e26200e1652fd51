"""The array backend: the ONLY module that imports CuPy.

Everything in rate mode is written against an array module ``xp`` that is
either ``numpy`` (device ``cpu``) or ``cupy`` (device ``cuda``), chosen here.
"""
from __future__ import annotations

import numpy

from ..errors import InputError

DEVICES = ("cpu", "cuda")


class BackendError(InputError):
    """The requested device cannot be used on this machine."""


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


_TF32 = {"enabled": False}


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor-core math for float32 products on the GPU.

    TF32 rounds the inputs of a product to a 10-bit mantissa and accumulates
    in float32: about 3 decimal digits per input, several times the float32
    throughput on Ampere and later GPUs. It is PyTorch's default for cuDNN
    convolutions. It applies to CuPy's matrix products (cuBLAS compute type)
    and to cuDNN convolutions (``models.cudnn_conv``); NumPy is unaffected.
    Off by default: float32 throughout.
    """
    _TF32["enabled"] = bool(enabled)
    try:
        import cupy
        from cupy._core import _routines_linalg as linalg
    except Exception:  # no CuPy: nothing else to switch
        return
    if not cuda_available():  # cuBLAS's compute type is per device
        return
    kind = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
    linalg.set_compute_type(cupy.float32, kind)


def tf32_enabled() -> bool:
    """Whether ``set_tf32(True)`` is in force."""
    return _TF32["enabled"]
