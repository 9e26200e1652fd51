"""The ImageNet batch loader: a process pool decoding the JPEG folders into shared buffers.

:class:`ImageNetLoader` serves the batches ``(x, y)`` of one scanned split
(:class:`~weightmirror.sims.datasets.imagenet.folders.ImageFolder`).  Images
are decoded with Pillow in worker processes, with the training or the
evaluation transform of
:mod:`weightmirror.sims.datasets.imagenet.transforms`, normalised there, and
written straight into shared float32 batch buffers.  The batches are float32
``(N, 3, size, size)``.  Every random draw of sample ``i`` in epoch ``e``
comes from a generator seeded by ``(seed, e, i)``, so a batch does not depend
on the number of workers or on which process decoded it.  A file that cannot
be decoded is skipped, counted in :attr:`ImageNetLoader.skipped` and logged
once with its name.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from typing import Iterator, Optional

import numpy as np

from weightmirror.sims.distributed import shard_indices

from ..base import DataError
from .folders import ImageFolder
from .transforms import _normalise_into, decode_eval, decode_train, sample_rng

__all__ = ["ImageNetLoader"]

log = logging.getLogger("weightmirror.imagenet")

_SHUFFLE_TAG = 2  # appended to (seed, epoch) for the epoch's permutation


# Per-process view of the loader's shared batch buffers (set in each worker).
_WORKER_SLOTS: Optional[list] = None


def default_start_method() -> Optional[str]:
    """``"forkserver"`` where the platform has it, else the platform's default.

    Not ``fork``: the training process runs OpenBLAS threads, and
    ``multiprocessing.Pool`` forks replacement workers from a background
    thread; a fork while the main thread is inside a BLAS call can leave
    OpenBLAS's thread pool shut down under that call, which then spins
    forever (seen as a run that never ends in ``numpy.linalg.norm``, deaf to
    SIGTERM). A fork server forks the workers from a clean single-threaded
    process instead.
    """
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when its parent process ends (no orphaned decoders)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the pool's pipes end the workers
        pass


def _init_worker(slots: list, shape: tuple) -> None:
    """Pool initializer: map the shared batch buffers as float32 arrays."""
    global _WORKER_SLOTS
    _die_with_parent()
    _WORKER_SLOTS = [_slot_array(raw, shape) for raw in slots]


def _slot_array(raw, shape: tuple) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)


def _decode_task(task, slots: Optional[list] = None):
    """Decode one sample straight into row ``row`` of batch buffer ``slot``.

    ``task = (slot, row, index, path, train, size, seed, epoch, fast)``;
    returns ``(row, index, error text or None)``.  The image is normalised
    here, in the worker, so the parent process only copies the finished
    float32 batch out of shared memory.
    """
    slot, row, index, path, train, size, seed, epoch, fast = task
    try:
        if train:
            arr = decode_train(path, sample_rng(seed, epoch, index), size, fast_decode=fast)
        else:
            arr = decode_eval(path, size, fast_decode=fast)
        out = (slots if slots is not None else _WORKER_SLOTS)[slot][row]
        _normalise_into(arr, out)
        return row, index, None
    except Exception as exc:  # noqa: BLE001 - any decoding failure skips the file
        text = str(exc).splitlines()[0] if str(exc) else ""
        return row, index, f"{type(exc).__name__}{': ' + text if text else ''}"


# --------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------


class ImageNetLoader:
    """Batches ``(x, y)`` of one ImageNet split, decoded in worker processes.

    Parameters
    ----------
    folder : ImageFolder
        The split (:func:`scan_imagenet_split`).
    batch_size : int
        Samples per global batch (before sharding across ranks).
    train : bool
        Training transform (random-resized crop + flip) and, by default, a
        shuffled order; else the evaluation transform in file order.
    size : int
        Output side (224 for ResNets).
    seed : int
        Seed of the epoch permutations and of every per-sample draw.
    workers : int
        Decoding processes; 0 decodes in the calling process (no pool).
    shuffle : bool, optional
        Default: ``train``.
    drop_last : bool
        Drop a final incomplete global batch.
    prefetch : int
        Batches decoded ahead of the one being consumed (>= 1), so decoding
        overlaps training.
    rank, world_size : int
        Data parallelism: each rank gets its :func:`sims.distributed.shard_indices`
        part of every global batch (all ranks see the same permutation).
    chunksize : int, optional
        Tasks per message to a worker; default spreads a batch evenly.
    fast_decode : bool
        Reduced-scale JPEG decoding where it keeps the output resolution
        (see :func:`decode_train`).
    start_method : str, optional
        ``multiprocessing`` start method of the pool (default:
        :func:`default_start_method`, a fork server where there is one).

    Attributes
    ----------
    skipped : int
        Samples skipped so far because their file could not be decoded.
    skipped_files : dict
        File name -> error text for every file skipped at least once.

    Notes
    -----
    A batch holds only the samples that decoded, so it can be smaller than
    its share of ``batch_size``; a batch with no readable sample is not
    yielded.  Each unreadable file is logged once (logger
    ``weightmirror.imagenet``, level WARNING).  Use as a context manager or
    call :meth:`close` to stop the workers.

    Examples
    --------
    >>> folder = scan_imagenet_split("/data/imagenet", "train")   # doctest: +SKIP
    >>> with ImageNetLoader(folder, 256, train=True, workers=8) as loader:  # doctest: +SKIP
    ...     for x, y in loader.epoch(0):
    ...         pass
    """

    def __init__(
        self,
        folder: ImageFolder,
        batch_size: int,
        train: bool = True,
        size: int = 224,
        seed: int = 0,
        workers: int = 4,
        shuffle: Optional[bool] = None,
        drop_last: bool = False,
        prefetch: int = 2,
        rank: int = 0,
        world_size: int = 1,
        chunksize: Optional[int] = None,
        fast_decode: bool = True,
        start_method: Optional[str] = None,
    ):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if int(workers) != workers or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        if int(prefetch) != prefetch or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        if len(folder) == 0:
            raise DataError(f"{folder.root}: no images")
        self.folder = folder
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.size = int(size)
        self.seed = int(seed)
        self.workers = int(workers)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.chunksize = chunksize
        self.fast_decode = bool(fast_decode)
        self.start_method = default_start_method() if start_method is None else start_method
        self.skipped = 0
        self.skipped_files: dict[str, str] = {}
        self._pool = None
        self._slots: Optional[list[np.ndarray]] = None
        self._raw_slots: Optional[list] = None
        self._inflight: list = []
        self._generation = 0

    # -- life cycle ---------------------------------------------------------

    def _slot_shape(self) -> tuple[int, int, int, int]:
        full = shard_indices(self.batch_size, self.rank, self.world_size)
        return (full.stop - full.start, 3, self.size, self.size)

    def _get_slots(self) -> list[np.ndarray]:
        """The ``prefetch + 1`` shared float32 batch buffers (made once)."""
        if self._slots is None:
            shape = self._slot_shape()
            nbytes = int(np.prod(shape)) * 4
            ctx = multiprocessing.get_context(self.start_method)
            self._raw_slots = [ctx.RawArray("b", nbytes) for _ in range(self.prefetch + 1)]
            self._slots = [_slot_array(raw, shape) for raw in self._raw_slots]
        return self._slots

    def _get_pool(self):
        if self.workers == 0:
            return None
        if self._pool is None:
            self._get_slots()
            ctx = multiprocessing.get_context(self.start_method)
            self._pool = ctx.Pool(
                self.workers, initializer=_init_worker,
                initargs=(self._raw_slots, self._slot_shape()),
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later epoch starts new ones)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._inflight = []

    def __enter__(self) -> "ImageNetLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # -- batches ------------------------------------------------------------

    def __len__(self) -> int:
        """Global batches per epoch."""
        n = len(self.folder)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in visiting order (same on every rank)."""
        n = len(self.folder)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, int(epoch), _SHUFFLE_TAG])
        return rng.permutation(n)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """This rank's sample indices of every batch of ``epoch``."""
        order = self.order(epoch)
        out = []
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            out.append(idx[shard_indices(len(idx), self.rank, self.world_size)])
        return out

    def _submit(self, idx: np.ndarray, epoch: int, slot: int):
        paths = self.folder.paths
        tasks = [
            (slot, row, int(i), paths[i], self.train, self.size, self.seed, int(epoch),
             self.fast_decode)
            for row, i in enumerate(idx)
        ]
        pool = self._get_pool()
        if pool is None:
            return slot, tasks  # decoded in _collect, in this process
        chunk = self.chunksize or max(1, -(-len(tasks) // (self.workers * 2)))
        job = pool.map_async(_decode_task, tasks, chunksize=chunk)
        self._inflight.append(job)
        return slot, job

    def _collect(self, pending) -> Optional[tuple[np.ndarray, np.ndarray]]:
        slot, job = pending
        slots = self._get_slots()
        if isinstance(job, list):
            results = [_decode_task(t, slots) for t in job]
        else:
            results = job.get()
            self._inflight.remove(job)
        labels = self.folder.labels
        rows, ys = [], []
        for row, index, err in results:
            if err is not None:
                self.skipped += 1
                path = self.folder.paths[index]
                if path not in self.skipped_files:
                    self.skipped_files[path] = err
                    log.warning("%s: skipped unreadable image (%s)", path, err)
                continue
            rows.append(row)
            ys.append(labels[index])
        if not rows:
            return None
        buf = slots[slot]
        if rows == list(range(len(rows))):
            x = buf[: len(rows)].copy()
        else:
            x = buf[np.asarray(rows)]
        return x, np.asarray(ys, dtype=np.int64)

    def _drain(self) -> None:
        """Wait for batches an abandoned epoch left in flight (they write the buffers)."""
        for job in self._inflight:
            job.wait()
        self._inflight = []

    def epoch(self, epoch: int = 0, start: int = 0,
              keep_empty: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over this rank's batches of ``epoch``.

        Parameters
        ----------
        epoch : int
            Epoch number: selects the permutation and the per-sample draws.
        start : int
            First batch to decode (resuming mid-epoch: the batches before it
            are skipped without being read).
        keep_empty : bool
            Yield a batch whose every file was unreadable as an empty batch
            (``n = 0``) instead of leaving it out, so that every rank of a
            data-parallel run takes the same number of steps.

        Yields
        ------
        x : np.ndarray
            float32 ``(n, 3, size, size)``, normalised; a fresh array that
            stays valid after the next batch.
        y : np.ndarray
            int64 ``(n,)`` class indices.

        Notes
        -----
        One epoch iterator at a time: starting another one ends the
        previous (its next ``next`` raises ``RuntimeError``).
        """
        self._generation += 1
        generation = self._generation
        self._drain()
        batches = deque(self.batch_indices(epoch)[int(start):])
        nslots = self.prefetch + 1
        counter = 0
        pending: deque = deque()

        def submit():
            nonlocal counter
            pending.append(self._submit(batches.popleft(), epoch, counter % nslots))
            counter += 1

        while batches and len(pending) < self.prefetch:
            submit()
        while pending:
            if generation != self._generation:
                raise RuntimeError("ImageNetLoader: another epoch was started; this iterator ended")
            job = pending.popleft()
            # queue the next batch (into a free buffer) before finishing this one
            if batches:
                submit()
            batch = self._collect(job)
            if batch is not None:
                yield batch
            elif keep_empty:
                yield (np.empty((0, 3, self.size, self.size), dtype=np.float32), np.empty((0,), dtype=np.int64))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.epoch(0)
