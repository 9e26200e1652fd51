"""Data-parallel helpers: one process per GPU, gradients averaged across ranks.

Every rank holds a full copy of the network, runs forward and backward on its
own shard of each global batch (:func:`shard_indices`), then
:func:`average_gradients` replaces each gradient by its mean over ranks.  The
loss gradient of :func:`models.layers.softmax_cross_entropy` is divided by the
*local* batch size, so when the shards are of equal size the mean of the
ranks' gradients is exactly the full-batch gradient, and every rank applies
the same update.

The collectives go through a :class:`Communicator`:

* :class:`SingleProcess` -- one rank, every call a no-op;
* :class:`MPICommunicator` -- NumPy (or host-copied CuPy) arrays through
  mpi4py (``Allreduce`` with ``MPI.SUM``, then a division by the size);
* :class:`NCCLCommunicator` -- CuPy arrays on the GPU through
  ``cupy.cuda.nccl`` (the unique id is broadcast through mpi4py).

:func:`get_communicator` picks one; ``python -m weightmirror.sims.distributed`` checks that
a launch works (``mpirun -n 2 python -m weightmirror.sims.distributed --backend mpi``).

Random numbers: initial weights must be identical on every rank (same seed,
or :meth:`Communicator.bcast` from rank 0), but the weight mirror's noise
must be drawn independently by each rank -- seed it with
:func:`rank_seed` ``(seed, rank)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from weightmirror.models.backend import array_module_of

__all__ = [
    "Communicator",
    "SingleProcess",
    "MPICommunicator",
    "NCCLCommunicator",
    "get_communicator",
    "make_communicator",
    "average_gradients",
    "allreduce_mean_arrays",
    "allreduce_sum",
    "shard_indices",
    "rank_seed",
    "launched_by_mpi",
]

# Environment variables that mpirun / srun / hydra set in each rank.
_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def shard_indices(n: int, rank: int, size: int) -> slice:
    """The slice of a batch of ``n`` samples that belongs to ``rank``.

    Contiguous shards whose lengths differ by at most one; the first
    ``n % size`` ranks get one sample more (as :func:`numpy.array_split`).

    Parameters
    ----------
    n : int
        Samples in the (global) batch.
    rank, size : int
        This rank and the number of ranks, ``0 <= rank < size``.

    Returns
    -------
    slice
        ``batch[shard_indices(len(batch), rank, size)]`` is this rank's part
        (a view for NumPy arrays).

    Notes
    -----
    Averaging per-rank mean gradients equals the full-batch mean gradient
    only when every shard has the same length: choose ``n`` divisible by
    ``size`` (``drop_last``) when that exactness matters.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank {rank} of size {size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return slice(start, stop)


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own random stream (weight-mirror noise).

    Derived from ``(seed, rank)`` through :class:`numpy.random.SeedSequence`,
    so ranks draw statistically independent noise and a run is reproducible
    for a fixed seed and number of ranks.

    Parameters
    ----------
    seed : int
        The run's seed.
    rank : int
        This process's rank.

    Returns
    -------
    int
        A non-negative 63-bit integer (accepted by NumPy and CuPy
        generators alike).
    """
    state = np.random.SeedSequence([int(seed), int(rank), 0x574D]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process with more than one rank."""
    for var in _MPI_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 1:
            return True
    return False


def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def _check_float(arrays: Sequence[Any], who: str) -> None:
    for i, a in enumerate(arrays):
        if a.dtype.kind != "f":
            raise TypeError(f"{who}: array {i} has dtype {a.dtype}; the mean needs floats")
        if not a.flags.c_contiguous:
            raise ValueError(f"{who}: array {i} is not C-contiguous; pass contiguous arrays")


class Communicator:
    """Collective operations over the ranks of a data-parallel job.

    Attributes
    ----------
    rank : int
        This process's rank, ``0 .. size-1``.
    size : int
        Number of ranks.
    """

    rank: int = 0
    size: int = 1

    def allreduce_mean(self, arrays: Sequence[Any]) -> None:
        """Replace each array, in place, by its element-wise mean over ranks.

        Parameters
        ----------
        arrays : sequence of arrays
            Contiguous floating-point arrays of the same shapes and dtypes,
            in the same order, on every rank.
        """
        raise NotImplementedError

    def bcast(self, arrays: Sequence[Any], root: int = 0) -> None:
        """Overwrite each array, in place, with rank ``root``'s copy.

        Parameters
        ----------
        arrays : sequence of arrays
            Contiguous arrays of the same shapes and dtypes on every rank.
        root : int
            The rank whose values are sent.
        """
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    @property
    def is_root(self) -> bool:
        """True on rank 0 (the rank that writes results)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """One rank: every collective leaves the arrays as they are."""

    rank = 0
    size = 1

    def allreduce_mean(self, arrays: Sequence[Any]) -> None:
        _check_float(arrays, "allreduce_mean")

    def bcast(self, arrays: Sequence[Any], root: int = 0) -> None:
        if root != 0:
            raise ValueError(f"bcast: root {root} out of range for 1 rank")


class MPICommunicator(Communicator):
    """Collectives through mpi4py on host (NumPy) buffers.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    cuda_aware : bool
        Pass CuPy arrays to MPI directly (needs a CUDA-aware MPI build);
        otherwise they are copied to the host and back.

    Notes
    -----
    ``allreduce_mean`` does ``comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)``
    then ``a /= size``: one collective per array, so fuse many small
    arrays first (as :func:`average_gradients` does).
    """

    def __init__(self, comm=None, cuda_aware: bool = False):
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise RuntimeError(
                f"MPICommunicator needs mpi4py (pip install mpi4py, with an MPI library "
                f"such as Open MPI installed): {exc}"
            ) from None
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.cuda_aware = bool(cuda_aware)

    def _host(self, a):
        if _is_cupy(a) and not self.cuda_aware:
            return a.get(), True
        return a, False

    def allreduce_mean(self, arrays: Sequence[Any]) -> None:
        _check_float(arrays, "allreduce_mean")
        MPI = self._MPI
        for a in arrays:
            buf, copied = self._host(a)
            if _is_cupy(buf):  # CUDA-aware: finish queued GPU work first
                import cupy

                cupy.cuda.get_current_stream().synchronize()
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf /= buf.dtype.type(self.size)
            if copied:
                a.set(buf)

    def bcast(self, arrays: Sequence[Any], root: int = 0) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"bcast: root {root} out of range for {self.size} ranks")
        for a in arrays:
            buf, copied = self._host(a)
            if not buf.flags.c_contiguous:
                raise ValueError("bcast: arrays must be C-contiguous")
            if _is_cupy(buf):
                import cupy

                cupy.cuda.get_current_stream().synchronize()
            self.comm.Bcast(buf, root=root)
            if copied:
                a.set(buf)

    def barrier(self) -> None:
        self.comm.Barrier()


class NCCLCommunicator(Communicator):
    """Collectives on CuPy arrays through NCCL (``cupy.cuda.nccl``).

    One process per GPU.  Rank 0 creates the NCCL unique id with
    ``nccl.get_unique_id()``, mpi4py broadcasts it, and every rank builds
    ``nccl.NcclCommunicator(size, uid, rank)`` on its current device.
    ``allreduce_mean`` runs ``allReduce(ptr, ptr, count, dtype, NCCL_SUM,
    stream)`` in place on each array's device pointer, on CuPy's current
    stream (so it is ordered after the kernels that computed the
    gradients), then divides by the size on the same stream.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm, optional
        Used only to share the unique id and to find this rank's local
        GPU.  Default ``MPI.COMM_WORLD``; without mpi4py a single rank is
        created (useful to check a one-GPU set-up).
    device : int, optional
        GPU to use; default: the rank's index among the ranks on the same
        node, modulo the number of visible GPUs.  Made current here.
    """

    def __init__(self, mpi_comm=None, device: Optional[int] = None):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise RuntimeError(
                f"NCCLCommunicator needs CuPy with NCCL support (pip install "
                f"'weightmirror[gpu]'): {exc}"
            ) from None
        if not getattr(nccl, "available", True):
            raise RuntimeError("NCCLCommunicator: CuPy was built without NCCL (cupy.cuda.nccl.available is False)")
        self._cupy, self._nccl = cupy, nccl
        if mpi_comm is None:
            try:
                from mpi4py import MPI

                mpi_comm = MPI.COMM_WORLD
            except ImportError:
                if launched_by_mpi():
                    raise RuntimeError(
                        "NCCLCommunicator: launched with several MPI ranks but mpi4py is "
                        "missing; it is needed to share the NCCL unique id"
                    ) from None
                mpi_comm = None
        self.mpi_comm = mpi_comm
        if mpi_comm is None:
            self.rank, self.size, local_rank = 0, 1, 0
        else:
            from mpi4py import MPI

            self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
            local_rank = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank).Get_rank()
        if device is None:
            device = local_rank % cupy.cuda.runtime.getDeviceCount()
        self.device = int(device)
        cupy.cuda.Device(self.device).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        if mpi_comm is not None:
            uid = mpi_comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._dtypes = {
            np.dtype(np.float16): nccl.NCCL_FLOAT16,
            np.dtype(np.float32): nccl.NCCL_FLOAT32,
            np.dtype(np.float64): nccl.NCCL_FLOAT64,
        }

    def _nccl_type(self, a, who: str) -> int:
        if not _is_cupy(a):
            raise TypeError(f"{who}: NCCLCommunicator needs CuPy arrays, got {type(a).__name__}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{who}: arrays must be C-contiguous")
        try:
            return self._dtypes[np.dtype(a.dtype)]
        except KeyError:
            raise TypeError(f"{who}: unsupported dtype {a.dtype} (float16/32/64)") from None

    def allreduce_mean(self, arrays: Sequence[Any]) -> None:
        nccl = self._nccl
        stream = self._cupy.cuda.get_current_stream()
        types = [self._nccl_type(a, "allreduce_mean") for a in arrays]
        if len(arrays) > 1:
            nccl.groupStart()
        try:
            for a, t in zip(arrays, types):
                self.comm.allReduce(a.data.ptr, a.data.ptr, a.size, t, nccl.NCCL_SUM, stream.ptr)
        finally:
            if len(arrays) > 1:
                nccl.groupEnd()
        for a in arrays:
            a /= a.dtype.type(self.size)

    def bcast(self, arrays: Sequence[Any], root: int = 0) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"bcast: root {root} out of range for {self.size} ranks")
        nccl = self._nccl
        stream = self._cupy.cuda.get_current_stream()
        types = [self._nccl_type(a, "bcast") for a in arrays]
        if len(arrays) > 1:
            nccl.groupStart()
        try:
            for a, t in zip(arrays, types):
                self.comm.bcast(a.data.ptr, a.size, t, root, stream.ptr)
        finally:
            if len(arrays) > 1:
                nccl.groupEnd()

    def barrier(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()
        if self.mpi_comm is not None:
            self.mpi_comm.Barrier()


def get_communicator(backend: str = "auto") -> Communicator:
    """Build a communicator.

    Parameters
    ----------
    backend : {"auto", "single", "mpi", "nccl"}
        ``auto``: :class:`MPICommunicator` when an MPI launcher started
        several ranks, else :class:`SingleProcess`.  Choose ``nccl``
        explicitly for GPU training.

    Returns
    -------
    Communicator
    """
    if backend == "auto":
        backend = "mpi" if launched_by_mpi() else "single"
    if backend == "single":
        return SingleProcess()
    if backend == "mpi":
        return MPICommunicator()
    if backend == "nccl":
        return NCCLCommunicator()
    raise ValueError(f"unknown communicator backend {backend!r}; allowed: auto, single, mpi, nccl")


def make_communicator(distributed: bool, device: str = "cpu") -> Communicator:
    """The communicator of a training run: one process unless ``distributed``.

    Data parallel under an MPI launch of several ranks: NCCL for
    ``device = "cuda"``, MPI for the CPU; without a launcher, one process.
    """
    if not distributed:
        return SingleProcess()
    if device == "cuda" and launched_by_mpi():
        return get_communicator("nccl")
    return get_communicator("auto")


def allreduce_mean_arrays(comm: Communicator, arrays: Sequence[Any]) -> None:
    """Replace each array in place by its mean over ranks.

    The arrays are packed into one flat buffer per dtype, so many arrays
    cost one collective per dtype, then unpacked into the same arrays. A
    no-op for one rank.
    """
    if comm.size == 1 or not arrays:
        return
    groups: dict[str, list] = {}
    for a in arrays:
        groups.setdefault(np.dtype(a.dtype).str, []).append(a)
    for key in sorted(groups):
        items = groups[key]
        xp = array_module_of(items[0])
        flat = xp.concatenate([a.reshape(-1) for a in items])
        comm.allreduce_mean([flat])
        offset = 0
        for a in items:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size


def allreduce_sum(comm: Communicator, values: Sequence[float], xp=np) -> np.ndarray:
    """Element-wise sum over ranks of a small vector (float64), returned as NumPy.

    ``xp`` is the array module the communicator takes (CuPy for NCCL).
    """
    buf = xp.asarray(np.asarray(values, dtype=np.float64))
    comm.allreduce_mean([buf])
    return np.asarray(buf.get() if hasattr(buf, "get") else buf) * comm.size


def _modules_of(modules) -> list:
    if hasattr(modules, "parameter_modules"):
        return list(modules.parameter_modules())
    return list(modules)


def average_gradients(comm: Communicator, modules: Iterable[Any]) -> None:
    """Average every ``module.grads[name]`` over ranks, in place.

    The gradients go through :func:`allreduce_mean_arrays`: one collective
    per dtype (one in all for a float32 network).

    Parameters
    ----------
    comm : Communicator
        The ranks to average over.
    modules : sequence of Module, or a Network
        Modules with a ``grads`` dict (a Network contributes its
        ``parameter_modules()``).  The same modules, with the same gradient
        names, shapes and dtypes, on every rank.

    Raises
    ------
    ValueError
        If a module with parameters has no gradient for one of them
        (backward was not run).
    """
    if comm.size == 1:
        return
    grads = []
    for m in _modules_of(modules):
        names = sorted(m.params) if getattr(m, "params", None) else sorted(m.grads)
        for name in names:
            g = m.grads.get(name)
            if g is None:
                raise ValueError(
                    f"average_gradients: {type(m).__name__} has no gradient for {name!r}; "
                    "run backward first"
                )
            grads.append(g)
    allreduce_mean_arrays(comm, grads)


def _self_check(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m weightmirror.sims.distributed``: average rank-dependent arrays and check."""
    parser = argparse.ArgumentParser(
        prog="python -m weightmirror.sims.distributed",
        description="Check a data-parallel launch: each rank contributes its rank; "
        "the mean must be (size-1)/2 everywhere.",
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "single", "mpi", "nccl"))
    args = parser.parse_args(argv)
    comm = get_communicator(args.backend)
    xp = np
    if isinstance(comm, NCCLCommunicator):
        import cupy as xp  # noqa: F811 - GPU arrays for NCCL
    a = xp.full((1000,), float(comm.rank), dtype=xp.float32)
    b = xp.full((3, 7), float(comm.rank), dtype=xp.float64)
    comm.allreduce_mean([a, b])
    want = (comm.size - 1) / 2.0
    c = xp.full((5,), float(comm.rank + 1), dtype=xp.float32)
    comm.bcast([c], root=comm.size - 1)
    ok = (
        bool(xp.all(a == want)) and bool(xp.all(b == want)) and bool(xp.all(c == comm.size))
    )
    print(f"{comm!r}: allreduce_mean and bcast {'OK' if ok else 'WRONG'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover - exercised through mpirun in the tests
    sys.exit(_self_check())
