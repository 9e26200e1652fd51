"""Batch sources: where the training loop's batches come from.

The loop takes its batches from a :class:`BatchSource` and does not care
where they come from:

* :class:`ArraySource` -- a :class:`~weightmirror.sims.datasets.Dataset` in
  memory (digits, MNIST, Fashion-MNIST, CIFAR-10, downsampled ImageNet 32/64);
* :class:`ImageFolderSource` -- the ImageNet JPEG folder layout
  (``data = "imagenet"``, ``data_dir`` the root holding ``train/`` and
  ``val/``), decoded by :class:`~weightmirror.sims.datasets.imagenet.ImageNetLoader`
  with the training transform for ``train/`` and the evaluation transform
  for ``val/``, crops of ``run.image_size`` pixels, ``run.workers``
  decoding processes. Files that cannot be decoded are skipped and counted.

Validation (config ``validation`` > 0): every source holds out the
stratified part of the training set that
:func:`weightmirror.sims.datasets.split.stratified_split` picks from
``validation_seed`` (never from ``seed``), serves training batches, the
δ-angle batch and ``steps_per_epoch`` from the rest only, and serves the
held-out part through :meth:`BatchSource.val_batches` (evaluation transform
for the ImageNet folders). The test set (ImageNet: ``val/``) is untouched.

Every source serves this rank's part of each global batch (data parallel:
:func:`weightmirror.sims.distributed.shard_indices`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..datasets import DataError, Dataset, ImageNetFolders, stratified_split
from ..distributed import shard_indices
from .seeds import ORDER

__all__ = ["BatchSource", "ArraySource", "ImageFolderSource", "make_batch_source", "validation_settings"]


def validation_settings(cfg) -> tuple[float, int]:
    """``(validation, validation_seed)`` of a TrainConfig (``(0, 0)`` for an object without them)."""
    return float(getattr(cfg, "validation", 0.0)), int(getattr(cfg, "validation_seed", 0))


class BatchSource:
    """Where the training loop's batches come from.

    A source serves this rank's part of every global training batch of an
    epoch, this rank's part of the test set and of the validation part, and
    a fixed batch of training samples for the δ-angle metric.  All arrays
    are NumPy, ``(n, ...)`` with int64 labels; the loop moves them to the
    device.

    Attributes
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of one sample.
    num_classes : int
        Number of classes.
    counts_skips : bool
        True when samples can be skipped (undecodable files); the metrics
        rows then carry ``skipped_images`` and ``skipped_eval_images``.
    skipped, eval_skipped, val_skipped : int
        Training / test-set / validation samples skipped so far by this rank.
    n_train, n_validation, n_test : int or None
        Samples in the training part (what training batches come from), the
        held-out validation part (0: none) and the test set; None where unknown.
    """

    image_shape: tuple = ()
    num_classes: int = 0
    counts_skips: bool = False
    skipped: int = 0
    eval_skipped: int = 0
    val_skipped: int = 0
    n_train: int | None = None
    n_validation: int = 0
    n_test: int | None = None

    def steps_per_epoch(self) -> int:
        """Global batches (optimiser steps) per epoch."""
        raise NotImplementedError

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's shard of the global batches ``start_step ..`` of ``epoch``.

        Yields exactly ``steps_per_epoch() - start_step`` batches (a batch
        whose files all failed to decode is yielded empty), in the epoch's
        order, which depends only on the seed and ``epoch``.
        """
        raise NotImplementedError

    def eval_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's part of the whole test set (ImageNet: the ``val/`` folder), in batches."""
        raise NotImplementedError

    def val_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's part of the whole validation part (held out of training), in batches."""
        return iter(())

    def metric_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` fixed training samples (deterministic, the same on every rank)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release worker processes, if any."""


class ArraySource(BatchSource):
    """Batches from a :class:`~weightmirror.sims.datasets.Dataset` held in memory.

    Parameters
    ----------
    data : Dataset
        Training and test arrays.
    cfg : TrainConfig
        ``seed``, ``batch_size``, ``run.eval_batch_size``, ``validation``,
        ``validation_seed``.
    rank, world_size : int
        This rank and the number of ranks.

    Attributes
    ----------
    train_idx, val_idx : np.ndarray
        Sorted indices into ``data.x_train`` of the training and the
        validation part (:meth:`Dataset.validation_split`); with
        ``validation = 0``, ``arange(n)`` and empty.

    Notes
    -----
    Epoch ``e`` visits the training part in the permutation drawn from
    ``(seed, ORDER, e)`` (of positions in ``train_idx``); the last partial
    global batch is dropped (unless the part is smaller than one batch).
    With ``validation = 0`` this is the whole training set, as before the
    validation split existed.
    """

    #: each rank evaluates one contiguous block of the test set (test predictions can be put together)
    contiguous_eval_shards = True

    def __init__(self, data: Dataset, cfg, rank: int = 0, world_size: int = 1):
        self.data = data
        self.seed = int(cfg.seed)
        self.batch_size = int(cfg.batch_size)
        self.eval_batch_size = int(cfg.run.eval_batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.image_shape = tuple(data.image_shape)
        self.num_classes = int(data.num_classes)
        fraction, split_seed = validation_settings(cfg)
        self.train_idx, self.val_idx = stratified_split(data.y_train, fraction, split_seed)
        self.n_train, self.n_validation, self.n_test = len(self.train_idx), len(self.val_idx), len(data.y_test)

    def steps_per_epoch(self) -> int:
        return max(1, self.n_train // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order of the training part: indices into ``x_train`` (the same on every rank)."""
        perm = np.random.default_rng([self.seed, ORDER, int(epoch)]).permutation(self.n_train)
        return self.train_idx[perm]

    def train_batches(self, epoch: int, start_step: int = 0):
        perm = self.order(epoch)
        b = self.batch_size
        for step in range(start_step, self.steps_per_epoch()):
            idx = perm[step * b:(step + 1) * b]
            idx = idx[shard_indices(len(idx), self.rank, self.world_size)]
            yield self.data.x_train[idx], self.data.y_train[idx]

    def eval_batches(self):
        part = shard_indices(len(self.data.y_test), self.rank, self.world_size)
        x, y = self.data.x_test[part], self.data.y_test[part]
        for start in range(0, len(y), self.eval_batch_size):
            yield x[start:start + self.eval_batch_size], y[start:start + self.eval_batch_size]

    def val_batches(self):
        idx = self.val_idx[shard_indices(len(self.val_idx), self.rank, self.world_size)]
        for start in range(0, len(idx), self.eval_batch_size):
            part = idx[start:start + self.eval_batch_size]
            yield self.data.x_train[part], self.data.y_train[part]

    def metric_batch(self, n: int):
        idx = self.train_idx[:int(n)]  # the first samples of the training part
        return self.data.x_train[idx], self.data.y_train[idx]


class ImageFolderSource(BatchSource):
    """Batches decoded from the ImageNet JPEG folder layout.

    Parameters
    ----------
    folders : ImageNetFolders
        The scanned ``train/`` and ``val/`` splits.
    cfg : TrainConfig
        ``seed``, ``batch_size``, ``run.image_size``, ``run.workers``,
        ``run.eval_batch_size``, ``validation``, ``validation_seed``.
    rank, world_size : int
        This rank and the number of ranks.

    Attributes
    ----------
    train_part, validation_part : ImageFolder
        The images of ``train/`` trained on and those held out for
        validation (:meth:`ImageNetFolders.validation_split`; with
        ``validation = 0``, ``folders.train`` and None).
    train_loader, val_loader, validation_loader : ImageNetLoader
        Training part; the test set (``val/``, named as the folder is);
        the validation part (None without one).

    Notes
    -----
    Training uses the loader with the training transform (random resized
    crop, flip) over the training part, drawn per sample from ``(seed,
    epoch, index)``; the last partial global batch is dropped (unless the
    part is smaller than one batch).  The test set is the ``val/`` folder,
    and it and the validation part are decoded with the evaluation
    transform (resize, centre crop). The δ-angle batch is ``n`` images
    spread evenly over the (class-sorted) training part, decoded with the
    evaluation transform.
    """

    counts_skips = True

    def __init__(self, folders: ImageNetFolders, cfg, rank: int = 0, world_size: int = 1):
        from ..datasets.imagenet import ImageNetLoader

        self.folders = folders
        self.size = int(cfg.run.image_size)
        self.workers = int(cfg.run.workers)
        self.seed = int(cfg.seed)
        self.rank, self.world_size = int(rank), int(world_size)
        batch = int(cfg.batch_size)
        self.image_shape = (3, self.size, self.size)
        self.num_classes = folders.num_classes
        fraction, split_seed = validation_settings(cfg)
        if fraction > 0:
            self.train_part, held = folders.validation_split(fraction, split_seed)
            self.validation_part = held if len(held) else None
        else:
            self.train_part, self.validation_part = folders.train, None
        self.n_train, self.n_test = len(self.train_part), len(folders.val)
        self.n_validation = len(self.validation_part) if self.validation_part is not None else 0
        self.train_loader = ImageNetLoader(self.train_part, batch, train=True, size=self.size, seed=self.seed,
                                           workers=self.workers, drop_last=len(self.train_part) >= batch,
                                           rank=rank, world_size=world_size)
        self.val_loader = ImageNetLoader(folders.val, int(cfg.run.eval_batch_size), train=False,
                                         size=self.size, seed=self.seed, workers=self.workers,
                                         rank=rank, world_size=world_size)
        self.validation_loader = None if self.validation_part is None else ImageNetLoader(
            self.validation_part, int(cfg.run.eval_batch_size), train=False, size=self.size, seed=self.seed,
            workers=self.workers, rank=rank, world_size=world_size)

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.train_loader.skipped

    @property
    def eval_skipped(self) -> int:  # type: ignore[override]
        return self.val_loader.skipped

    @property
    def val_skipped(self) -> int:  # type: ignore[override]
        return 0 if self.validation_loader is None else self.validation_loader.skipped

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def train_batches(self, epoch: int, start_step: int = 0):
        # empty batches (every file unreadable) are kept: each rank takes the same steps
        return self.train_loader.epoch(epoch, start=start_step, keep_empty=True)

    def eval_batches(self):
        try:
            yield from self.val_loader.epoch(0, keep_empty=True)
        finally:
            self.val_loader.close()  # its workers are idle until the next evaluation

    def val_batches(self):
        if self.validation_loader is None:
            return
        try:
            yield from self.validation_loader.epoch(0, keep_empty=True)
        finally:
            self.validation_loader.close()

    def metric_batch(self, n: int):
        from ..datasets.imagenet import ImageNetLoader

        split = self.train_part
        n = min(int(n), len(split))
        pick = np.unique(np.linspace(0, len(split) - 1, n).round().astype(np.int64))
        sub = split.subset(pick)
        with ImageNetLoader(sub, len(pick), train=False, size=self.size, seed=self.seed,
                            workers=min(self.workers, 1)) as loader:
            batches = list(loader.epoch(0))
        x = np.concatenate([b[0] for b in batches]) if batches else np.empty((0, *self.image_shape), np.float32)
        y = np.concatenate([b[1] for b in batches]) if batches else np.empty((0,), np.int64)
        if len(pick) and not len(x):
            # every image tried is broken: nothing could be trained or measured
            raise DataError(f"{split.root}: none of the {len(pick)} training images tried could be decoded "
                            f"(e.g. {sub.paths[0]}); are the files JPEG images?")
        return x, y

    def close(self) -> None:
        self.train_loader.close()
        self.val_loader.close()
        if self.validation_loader is not None:
            self.validation_loader.close()


def make_batch_source(cfg, data, rank: int = 0, world_size: int = 1) -> BatchSource:
    """The batch source for ``data`` (a Dataset, ImageNetFolders or a BatchSource).

    Parameters
    ----------
    cfg : TrainConfig
    data : Dataset, ImageNetFolders or BatchSource
        What :func:`weightmirror.sims.datasets.load` returned, or a ready
        source (returned as is).
    rank, world_size : int
        This rank and the number of ranks.
    """
    if isinstance(data, BatchSource):
        return data
    if isinstance(data, ImageNetFolders):
        return ImageFolderSource(data, cfg, rank, world_size)
    return ArraySource(data, cfg, rank, world_size)
