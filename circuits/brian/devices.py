"""Brian2 devices, chosen in one place.

``--device`` value → Brian2 device:

==========  ====================================================
runtime     runtime device, NumPy code-generation target
cython      runtime device, Cython target (compiled, cached in ~/.cython)
cpp         ``cpp_standalone`` (``threads`` OpenMP threads when > 0)
cuda        ``cuda_standalone`` through brian2cuda (a CUDA GPU)
==========  ====================================================

Standalone devices are activated with ``build_on_run=False``: the network
is built once, phases are several ``run()`` calls with gating variables set
between them, and :func:`build` compiles and runs the whole project in a
build directory that the caller names.

On CUDA 13 brian2cuda's generated code needs C++17: :func:`use_cxx17`
replaces any ``-std=`` flag by ``-std=c++17`` in both the g++ preference
(``codegen.cpp.extra_compile_args_gcc``) and the nvcc preference
(``devices.cuda_standalone.cuda_backend.extra_compile_args_nvcc``).
"""
from __future__ import annotations

import os
import tempfile

from ..spec import DEVICES, SpecError

__all__ = ["DeviceError", "activate", "build", "release", "is_standalone",
           "brian2cuda_available", "use_cxx17", "cxx17_flags"]


class DeviceError(SpecError):
    """The requested device cannot be used here (a clear, one-line reason)."""


def is_standalone(device: str) -> bool:
    return device in ("cpp", "cuda")


def brian2cuda_available() -> bool:
    """True when brian2cuda imports (it needs a CUDA toolkit to build)."""
    try:
        import brian2cuda  # noqa: F401
    except Exception:
        return False
    return True


def cxx17_flags(flags) -> list[str]:
    """``flags`` with every ``-std=...`` replaced by a single ``-std=c++17``."""
    out = [f for f in (flags or []) if not str(f).startswith("-std=")]
    out.append("-std=c++17")
    return out


def use_cxx17() -> None:
    """Set -std=c++17 in Brian's g++ flags and brian2cuda's nvcc flags."""
    from brian2 import prefs

    prefs["codegen.cpp.extra_compile_args_gcc"] = cxx17_flags(prefs["codegen.cpp.extra_compile_args_gcc"])
    key = "devices.cuda_standalone.cuda_backend.extra_compile_args_nvcc"
    try:
        prefs[key] = cxx17_flags(prefs[key])
    except KeyError:  # brian2cuda not imported: nothing to set
        pass


_DEFAULT_GCC = None


def activate(device: str, threads: int = 1, directory: str | None = None) -> str | None:
    """Make ``device`` Brian2's current device; returns the build directory.

    Raises :class:`DeviceError` for an unknown device, or ``cuda`` without
    brian2cuda.
    """
    global _DEFAULT_GCC
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    import brian2
    from brian2 import prefs, set_device

    if _DEFAULT_GCC is None:
        _DEFAULT_GCC = list(prefs["codegen.cpp.extra_compile_args_gcc"])
    prefs["codegen.cpp.extra_compile_args_gcc"] = list(_DEFAULT_GCC)
    if not is_standalone(device):
        set_device("runtime")
        prefs.codegen.target = "numpy" if device == "runtime" else "cython"
        return None
    if directory is None:
        directory = tempfile.mkdtemp(prefix=f"weightmirror_{device}_")
    directory = os.path.abspath(directory)
    if device == "cuda":
        try:
            import brian2cuda  # noqa: F401
        except Exception as exc:
            raise DeviceError(
                f"--device cuda needs brian2cuda and a CUDA toolkit (pip install 'weightmirror[gpu]'); "
                f"importing it failed: {exc}") from None
        name = "cuda_standalone"
    else:
        name = "cpp_standalone"
    set_device(name, build_on_run=False, directory=directory)
    dev = brian2.get_device()
    dev.reinit()
    dev.activate(build_on_run=False, directory=directory)
    if device == "cpp":
        prefs["devices.cpp_standalone.openmp_threads"] = int(threads)
    else:
        use_cxx17()
    return directory


def build(directory: str) -> None:
    """Compile and run the standalone project (after all ``run()`` calls)."""
    import brian2

    brian2.get_device().build(directory=directory, compile=True, run=True, debug=False)


def release(device: str) -> None:
    """Back to the runtime device (after a standalone build has been read out)."""
    import brian2
    from brian2 import prefs, set_device

    if is_standalone(device):
        brian2.get_device().reinit()
        prefs["devices.cpp_standalone.openmp_threads"] = 0
    if _DEFAULT_GCC is not None:
        prefs["codegen.cpp.extra_compile_args_gcc"] = list(_DEFAULT_GCC)
    set_device("runtime")
