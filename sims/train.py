"""Rate-mode training: batch sources, the loop, metrics, checkpoints, resume, data parallel.

``train(cfg, out_dir)`` trains the configured model with the configured rule
and writes the results folder (see ``weightmirror.results``).

Batch sources
-------------
The loop takes its batches from a :class:`BatchSource` and does not care
where they come from:

* :class:`ArraySource` -- a :class:`sims.data.Dataset` in memory (digits,
  MNIST, Fashion-MNIST, CIFAR-10, downsampled ImageNet 32/64);
* :class:`ImageFolderSource` -- the ImageNet JPEG folder layout
  (``data = "imagenet"``, ``data_dir`` the root holding ``train/`` and
  ``val/``), decoded by :class:`sims.imagenet.ImageNetLoader` with the
  training transform for ``train/`` and the evaluation transform for
  ``val/``, crops of ``run.image_size`` pixels, ``run.workers`` decoding
  processes.  Files that cannot be decoded are skipped and counted: each
  metrics row carries ``skipped_images`` (training images skipped during
  that epoch, over all ranks) and ``skipped_eval_images``.

Evaluation runs over the whole test (or val) set and reports the loss and
the top-1 and top-5 errors.

Randomness and resume
---------------------
Randomness is drawn from generators seeded by ``(seed, purpose, epoch)``,
so an epoch's data order and noise depend only on the seed and the epoch.
A checkpoint (``checkpoint.npz``: network, optimiser state and the metrics
so far, written atomically) is written at the end of every
``run.checkpoint_every`` epochs, every ``run.checkpoint_every_steps``
training steps if that is > 0, and at the current step when SIGINT or
SIGTERM arrives (the loop then stops cleanly; a second signal stops at
once).  ``resume=True`` continues from the checkpoint:

* from an **epoch boundary** the resumed run is exactly the uninterrupted
  one (same metrics, bit for bit);
* from **mid-epoch** it continues at the saved step with the same epoch
  permutation (and, for ImageNet, the same per-sample augmentation), but
  the noise generator of the rest of that epoch (weight-mirror noise,
  brSF magnitudes) is reseeded from ``(seed, purpose, epoch, step)``:
  those draws differ from the uninterrupted run's, so a mid-epoch resume
  is not bit-identical for rules that draw noise (it is for bp, fa, usf,
  frsf and kp).  Following epochs use their usual seeds again.

Data parallel
-------------
With ``run.distributed = true`` (CLI ``--distributed``) and a launch of
``mpirun -n K weightmirror train ...``, each of the K processes (one per
device) builds the same network (same initial seed, then broadcast from
rank 0), takes its :func:`sims.distributed.shard_indices` part of every
global batch of ``batch_size`` samples, computes its gradients, and
:func:`sims.distributed.average_gradients` averages them before the
optimiser step (shards of unequal size are weighted by their sample
count, so the update is that of the whole global batch).  The
communicator is :func:`sims.distributed.get_communicator`: MPI on the CPU,
NCCL for ``device = "cuda"``.  Per rule:

* Kolen-Pollack's B follows from the averaged step, so it stays identical;
* the weight mirror's noise is drawn by each rank from its own stream
  (:func:`sims.distributed.rank_seed`), and after ``rule.after_step`` the
  ranks' B arrays are averaged, so replicas stay identical (K ranks
  together form one mirror batch K times as large; this costs a second
  collective per step, of the size of the weights);
* BatchNorm running statistics are averaged over ranks before every
  evaluation and checkpoint.

Each rank evaluates its shard of the test set and the counts are summed.
Only rank 0 writes the results folder (which must be on a file system
that every rank reads, for ``--resume``).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np

from ..errors import InputError

from weightmirror.circuits.rules import LearningRule, angle_degrees
from weightmirror.models.backend import get_array_module, make_rng, set_tf32, synchronize, to_numpy
from weightmirror.models.conv import set_conv_algorithm
from weightmirror.models.layers import softmax_cross_entropy
from weightmirror.models.optim import SGD, Schedule
from weightmirror import results
from weightmirror.sims.config import make_rule_from_config, resolve
from weightmirror.sims.data import DataError, Dataset, load_dataset
from weightmirror.sims.distributed import (
    Communicator,
    SingleProcess,
    average_gradients,
    get_communicator,
    launched_by_mpi,
    rank_seed,
    shard_indices,
)

# purposes of the seeded generators
_INIT, _MIRROR0, _ORDER, _NOISE, _METRIC = range(5)

_BN_BUFFERS = ("running_mean", "running_var")


class RunExistsError(InputError):
    """The output folder already holds a run and --resume was not given."""


def _seed(cfg: dict, *parts: int) -> list[int]:
    return [int(cfg["seed"]), *parts]


# --------------------------------------------------------------------------
# Batch sources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageNetFolders:
    """The scanned ``train/`` and ``val/`` splits of an ImageNet-layout root.

    Attributes
    ----------
    train, val : sims.imagenet.ImageFolder
        Image paths and labels of each split.
    """

    train: object
    val: object

    @property
    def num_classes(self) -> int:
        """Number of classes (the ``train/`` class folders)."""
        return self.train.num_classes


def load_data(cfg: dict) -> Union[Dataset, ImageNetFolders]:
    """Load (or, for the JPEG folders, scan) the configured data set.

    Parameters
    ----------
    cfg : dict
        A resolved config; reads ``data``, ``data_dir``, ``model`` and ``seed``.

    Returns
    -------
    Dataset or ImageNetFolders
        Arrays in memory, flattened for the ``mlp`` model; for
        ``data = "imagenet"`` the scanned folders (images are decoded while
        training).

    Raises
    ------
    DataError
        If the files are missing or malformed.
    """
    if cfg["data"] == "imagenet":
        from weightmirror.sims.imagenet import scan_imagenet_split

        if not cfg["data_dir"]:
            raise DataError("imagenet: --data-dir is required (a folder holding train/<wnid>/*.JPEG and val/)")
        train_split = scan_imagenet_split(cfg["data_dir"], "train")
        val_split = scan_imagenet_split(cfg["data_dir"], "val", classes=train_split.classes)
        return ImageNetFolders(train_split, val_split)
    flatten = cfg["model"] == "mlp"
    return load_dataset(cfg["data"], cfg["data_dir"] or None, flatten=flatten, seed=cfg["seed"])


class BatchSource:
    """Where the training loop's batches come from.

    A source serves this rank's part of every global training batch of an
    epoch, this rank's part of the test set, and a fixed batch of training
    samples for the δ-angle metric.  All arrays are NumPy, ``(n, ...)`` with
    int64 labels; the loop moves them to the device.

    Attributes
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of one sample.
    num_classes : int
        Number of classes.
    counts_skips : bool
        True when samples can be skipped (undecodable files); the metrics
        rows then carry ``skipped_images`` and ``skipped_eval_images``.
    skipped, eval_skipped : int
        Training / evaluation samples skipped so far by this rank.
    """

    image_shape: tuple = ()
    num_classes: int = 0
    counts_skips: bool = False
    skipped: int = 0
    eval_skipped: int = 0

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
        """This rank's part of the whole test (or val) set, in batches."""
        raise NotImplementedError

    def metric_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` fixed training samples (deterministic, the same on every rank)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release worker processes, if any."""


class ArraySource(BatchSource):
    """Batches from a :class:`sims.data.Dataset` held in memory.

    Parameters
    ----------
    data : Dataset
        Training and test arrays.
    cfg : dict
        A resolved config (``seed``, ``batch_size``, ``run.eval_batch_size``).
    rank, world_size : int
        This rank and the number of ranks.

    Notes
    -----
    Epoch ``e`` visits the training set in the permutation drawn from
    ``(seed, 2, e)``; the last partial global batch is dropped (unless the
    set is smaller than one batch).
    """

    def __init__(self, data: Dataset, cfg: dict, rank: int = 0, world_size: int = 1):
        self.data = data
        self.seed = int(cfg["seed"])
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg["run"]["eval_batch_size"])
        self.rank, self.world_size = int(rank), int(world_size)
        self.image_shape = tuple(data.image_shape)
        self.num_classes = int(data.num_classes)

    def steps_per_epoch(self) -> int:
        return max(1, len(self.data.y_train) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of the training set (the same on every rank)."""
        return np.random.default_rng([self.seed, _ORDER, int(epoch)]).permutation(len(self.data.y_train))

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

    def metric_batch(self, n: int):
        n = min(int(n), len(self.data.y_train))
        return self.data.x_train[:n], self.data.y_train[:n]


class ImageFolderSource(BatchSource):
    """Batches decoded from the ImageNet JPEG folder layout.

    Parameters
    ----------
    folders : ImageNetFolders
        The scanned ``train/`` and ``val/`` splits.
    cfg : dict
        A resolved config: ``seed``, ``batch_size``, ``run.image_size``,
        ``run.workers``, ``run.eval_batch_size``.
    rank, world_size : int
        This rank and the number of ranks.

    Notes
    -----
    Training uses :class:`sims.imagenet.ImageNetLoader` with the training
    transform (random resized crop, flip), drawn per sample from
    ``(seed, epoch, index)``; the last partial global batch is dropped
    (unless the split is smaller than one batch).  Evaluation uses the
    ``val/`` split with the evaluation transform (resize, centre crop).
    The δ-angle batch is ``n`` training images spread evenly over the
    (class-sorted) split, decoded with the evaluation transform.
    """

    counts_skips = True

    def __init__(self, folders: ImageNetFolders, cfg: dict, rank: int = 0, world_size: int = 1):
        from weightmirror.sims.imagenet import ImageNetLoader as loader

        self.folders = folders
        self.size = int(cfg["run"]["image_size"])
        self.workers = int(cfg["run"]["workers"])
        self.seed = int(cfg["seed"])
        self.rank, self.world_size = int(rank), int(world_size)
        batch = int(cfg["batch_size"])
        self.image_shape = (3, self.size, self.size)
        self.num_classes = folders.num_classes
        self.train_loader = loader(folders.train, batch, train=True, size=self.size, seed=self.seed,
                                   workers=self.workers, drop_last=len(folders.train) >= batch,
                                   rank=rank, world_size=world_size)
        self.val_loader = loader(folders.val, int(cfg["run"]["eval_batch_size"]), train=False,
                                 size=self.size, seed=self.seed, workers=self.workers,
                                 rank=rank, world_size=world_size)

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.train_loader.skipped

    @property
    def eval_skipped(self) -> int:  # type: ignore[override]
        return self.val_loader.skipped

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

    def metric_batch(self, n: int):
        from weightmirror.sims.imagenet import ImageFolder, ImageNetLoader

        split = self.folders.train
        n = min(int(n), len(split))
        pick = np.unique(np.linspace(0, len(split) - 1, n).round().astype(np.int64))
        sub = ImageFolder(root=split.root, paths=tuple(split.paths[i] for i in pick),
                          labels=split.labels[pick], classes=split.classes)
        with ImageNetLoader(sub, len(pick), train=False, size=self.size, seed=self.seed,
                            workers=min(self.workers, 1)) as loader:
            batches = list(loader.epoch(0))
        x = np.concatenate([b[0] for b in batches]) if batches else np.empty((0, *self.image_shape), np.float32)
        y = np.concatenate([b[1] for b in batches]) if batches else np.empty((0,), np.int64)
        return x, y

    def close(self) -> None:
        self.train_loader.close()
        self.val_loader.close()


def make_batch_source(cfg: dict, data, rank: int = 0, world_size: int = 1) -> BatchSource:
    """The batch source for ``data`` (a Dataset, ImageNetFolders or a BatchSource).

    Parameters
    ----------
    cfg : dict
        A resolved config.
    data : Dataset, ImageNetFolders or BatchSource
        What :func:`load_data` returned, or a ready source (returned as is).
    rank, world_size : int
        This rank and the number of ranks.

    Returns
    -------
    BatchSource
    """
    if isinstance(data, BatchSource):
        return data
    if isinstance(data, ImageNetFolders):
        return ImageFolderSource(data, cfg, rank, world_size)
    return ArraySource(data, cfg, rank, world_size)


# --------------------------------------------------------------------------
# Network and metrics
# --------------------------------------------------------------------------


def build_network(cfg: dict, data, xp):
    """The configured model with the configured rule; initial weights from ``(seed, 0)``.

    ``data`` is anything with ``image_shape`` and ``num_classes`` (a
    Dataset or a BatchSource).
    """
    from weightmirror.models.zoo import build_model
    rule = make_rule_from_config(cfg)
    rng = make_rng(xp, _seed(cfg, _INIT))
    return build_model(cfg["model"], data.image_shape, data.num_classes, rule, xp, rng,
                       **cfg["model_options"])


def _as_input(net, x, xp):
    """``x`` on the device, shaped as the network's input."""
    x = xp.asarray(x)
    shape = getattr(net, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        x = x.reshape(len(x), *shape)
    return x


def _eval_sums(net, batches, xp) -> np.ndarray:
    """``[loss sum, top-1 wrong, top-5 wrong, samples]`` over ``batches`` (float64)."""
    sums = np.zeros(4)
    for xb, yb in batches:
        if len(yb) == 0:
            continue
        yb = xp.asarray(yb)
        logits = net.forward(_as_input(net, xb, xp), train=False)
        loss, _ = softmax_cross_entropy(logits, yb, xp)
        sums[0] += loss * len(yb)
        sums[1] += int((logits.argmax(axis=1) != yb).sum())
        k = logits.shape[1]
        if k > 5:
            top5 = xp.argpartition(-logits, 5, axis=1)[:, :5]
            sums[2] += int((~(top5 == yb[:, None]).any(axis=1)).sum())
        # with <= 5 classes the true class is always among the top 5
        sums[3] += len(yb)
    return sums


def _errors(sums: np.ndarray) -> dict:
    n = max(sums[3], 1.0)
    return {"test_loss": float(sums[0] / n), "test_top1_error": float(100.0 * sums[1] / n),
            "test_top5_error": float(100.0 * sums[2] / n)}


def evaluate(net, x, y, xp, batch_size: int) -> dict:
    """Loss and top-1 / top-5 error (percent) on arrays ``(x, y)``, in eval mode.

    Parameters
    ----------
    net : models.layers.Network
    x, y : arrays
        Samples and int labels.
    xp : module
        NumPy or CuPy.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    dict
        ``test_loss``, ``test_top1_error``, ``test_top5_error`` (0 when there
        are at most 5 classes).
    """
    batches = ((x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(y), batch_size))
    return _errors(_eval_sums(net, batches, xp))


def evaluate_source(net, source: BatchSource, xp, comm: Optional[Communicator] = None) -> dict:
    """Loss and top-1 / top-5 error over the source's whole test (val) set.

    Each rank evaluates its part; the sums are added over ranks, so every
    rank returns the same figures.
    """
    sums = _eval_sums(net, source.eval_batches(), xp)
    if comm is not None and comm.size > 1:
        sums = _allreduce_sum(comm, sums, xp)
    return _errors(sums)


def feedback_angles(net, xp, rng) -> list[float]:
    """Per weight layer, angle(B, Wᵀ) in degrees (B the feedback the rule uses)."""
    return [angle_degrees(net.rule.feedback(layer, xp, rng), layer.W, xp) for layer in net.weight_layers]


def delta_angles(net, x, y, xp, rng) -> list[float]:
    """Per weight layer (bottom up), angle between the rule's δ and backprop's δ.

    Both backward passes start from the same forward pass on the same batch;
    the top layer's δ is the same for every rule (0°). Normalisation statistics
    are left as they were.
    """
    saved = {k: v.copy() for k, v in net.state().items() if k.endswith(_BN_BUFFERS)}
    logits = net.forward(x, train=True)
    _, dlogits = softmax_cross_entropy(logits, y, xp)
    grads_before = [dict(m.grads) for m in net.parameter_modules()]
    rule_deltas: list = []
    net.backward(dlogits, rng=rng, record=rule_deltas)
    bp_deltas: list = []
    net.backward(dlogits, rng=rng, use_backprop=True, record=bp_deltas)
    for m, g in zip(net.parameter_modules(), grads_before):
        m.grads = g
    if saved:
        state = net.state()
        for k, v in saved.items():
            state[k][...] = v
    n = min(len(rule_deltas), len(bp_deltas))
    angles = [angle_degrees(a, b, xp) for a, b in zip(rule_deltas[:n], bp_deltas[:n])]
    # Layers below the first one that takes no error have none: report NaN.
    angles += [float("nan")] * (len(net.weight_layers) - n)
    return angles[::-1]


def weight_norms(net, xp) -> list[float]:
    return [float(xp.linalg.norm(layer.W)) for layer in net.weight_layers]


# --------------------------------------------------------------------------
# Collectives
# --------------------------------------------------------------------------


def make_communicator(cfg: dict) -> Communicator:
    """The communicator for ``cfg``: one process unless ``run.distributed``.

    With ``run.distributed`` under an MPI launch of several ranks: NCCL for
    ``device = "cuda"``, MPI for the CPU (``get_communicator("auto")``);
    without a launcher, a single process.
    """
    if not cfg["run"]["distributed"]:
        return SingleProcess()
    if cfg["device"] == "cuda" and launched_by_mpi():
        return get_communicator("nccl")
    return get_communicator("auto")


def _allreduce_sum(comm: Communicator, values, xp) -> np.ndarray:
    """Element-wise sum over ranks of a small float vector (returned as NumPy)."""
    buf = xp.asarray(np.asarray(values, dtype=np.float64))
    comm.allreduce_mean([buf])
    return to_numpy(buf) * comm.size


def _allreduce_mean_fused(comm: Communicator, arrays: list, xp) -> None:
    """Replace each array in place by its mean over ranks, one collective per dtype."""
    if comm.size == 1 or not arrays:
        return
    groups: dict[str, list] = {}
    for a in arrays:
        groups.setdefault(np.dtype(a.dtype).str, []).append(a)
    for key in sorted(groups):
        items = groups[key]
        flat = xp.concatenate([a.reshape(-1) for a in items])
        comm.allreduce_mean([flat])
        offset = 0
        for a in items:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size


def _bn_buffers(net) -> list:
    return [v for k, v in net.state().items() if k.endswith(_BN_BUFFERS)]


def _noisy_feedback(rule) -> bool:
    """Does the rule change stored B after each step from rank-local noise (weight mirror)?"""
    return rule.stores_feedback and type(rule).after_step is not LearningRule.after_step


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        for name in (results.CONFIG, results.CHECKPOINT):
            if not (out / name).is_file():
                raise RunExistsError(f"--resume: {out / name} not found; nothing to resume in {out}")
        return
    taken = [n for n in (results.CONFIG, results.CHECKPOINT, results.SUMMARY, results.METRICS) if (out / n).exists()]
    if taken:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(taken)}); give --resume to continue it or another --out"
        )


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag, so the loop can checkpoint and stop.

    A second signal raises ``KeyboardInterrupt`` at once.  Processes forked
    while the handler is installed (the ImageNet decoding workers) inherit
    it; in them SIGINT is ignored (the training process decides when to
    stop, and a Ctrl-C reaches the whole process group) and SIGTERM
    terminates as by default, so that ``Pool.terminate`` still ends them.
    """

    def __init__(self):
        self.hit = False
        self._old = {}
        self._pid = os.getpid()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if os.getpid() != self._pid:  # a forked worker inherited the handler
            if signum == signal.SIGINT:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self.hit:  # second signal: give up at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _zero_grads(net, xp) -> None:
    """Zero gradients (a rank whose shard was empty contributes nothing)."""
    for m in net.parameter_modules():
        for name, p in m.params.items():
            g = m.grads.get(name)
            if g is None or g.shape != p.shape:
                m.grads[name] = xp.zeros_like(p)
            else:
                g[...] = 0


def train(cfg: dict | None, out_dir: str | Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, data=None, stop_after: int | None = None,
          stop_after_steps: int | None = None, comm: Communicator | None = None) -> dict:
    """Train per ``cfg`` into the results folder ``out_dir``.

    Parameters
    ----------
    cfg : dict or None
        A config resolved by :func:`sims.config.resolve`.  With ``resume``
        the run's own ``config.toml`` is used instead and ``cfg`` may only
        raise ``epochs`` or set ``run.distributed`` (``None``: neither).
    out_dir : str or Path
        The results folder; it must not hold a run unless ``resume``.
    resume : bool
        Continue from ``out_dir/checkpoint.npz`` (an epoch boundary or a
        mid-epoch step; see the module docstring for what is bit-identical).
    progress : bool
        Show a progress bar and per-epoch lines (rank 0 only).
    log : callable
        Receives the one-line messages (rank 0 only).
    data : Dataset, ImageNetFolders or BatchSource, optional
        Data already loaded (``compare`` shares it between rules);
        default :func:`load_data`.
    stop_after : int, optional
        End this invocation after that many epochs, checkpointed, as an
        interruption would (a later ``resume=True`` call continues).
    stop_after_steps : int, optional
        End this invocation after that many training steps, exactly as a
        SIGINT arriving during that step would: checkpoint at that step,
        ``completed`` False.
    comm : Communicator, optional
        The ranks to train over; default :func:`make_communicator` (one
        process unless ``run.distributed``).

    Returns
    -------
    dict
        The summary (written to ``summary.json`` by rank 0 once every epoch
        ran), plus ``rank``; when the run stopped early, ``completed`` is
        False and ``resume_from`` holds the checkpoint's epoch and step.
    """
    out = Path(out_dir)
    if resume:
        _check_out_dir(out, True)
        # The run's own resolved config; only the epochs and data parallelism may change.
        saved = resolve(_read_toml(out))
        if cfg and cfg.get("epochs"):
            saved["epochs"] = int(cfg["epochs"])
        if cfg and (cfg.get("run") or {}).get("distributed") is not None:
            saved["run"]["distributed"] = bool(cfg["run"]["distributed"])
        cfg = saved
    else:
        _check_out_dir(out, False)
    comm = comm if comm is not None else make_communicator(cfg)
    comm.barrier()  # every rank has checked the folder before rank 0 writes to it
    if not comm.is_root:
        progress = False
        log = _silent
    xp = get_array_module(cfg["device"])
    # GPU-only numerics and kernels (no effect on NumPy)
    set_tf32(cfg["run"]["tf32"])
    set_conv_algorithm(cfg["run"]["conv_algorithm"])
    data = data if data is not None else load_data(cfg)
    source = make_batch_source(cfg, data, comm.rank, comm.size)
    try:
        summary = _train(cfg, out, resume, progress, log, source, stop_after, stop_after_steps, comm, xp)
    finally:
        if source is not data:
            source.close()
    return summary


def _silent(message: str) -> None:
    pass


def _train(cfg, out, resume, progress, log, source, stop_after, stop_after_steps, comm, xp) -> dict:
    rank, world, root = comm.rank, comm.size, comm.is_root
    net = build_network(cfg, source, xp)
    rule = net.rule
    o = cfg["optim"]
    opt = SGD(net.parameter_modules(), rule, xp, o["momentum"], o["nesterov"], o["weight_decay"])
    schedule = Schedule(o["lr"], o["schedule"], cfg["epochs"], o["warmup_epochs"], tuple(o["milestones"]),
                        o["gamma"], o["final_fraction"])
    steps = source.steps_per_epoch()
    metric_x, metric_y = source.metric_batch(cfg["run"]["delta_batch_size"])
    metric_x, metric_y = _as_input(net, metric_x, xp), xp.asarray(metric_y)
    every_steps = cfg["run"]["checkpoint_every_steps"]
    sync_b = world > 1 and _noisy_feedback(rule)

    rows: list[dict] = []
    start_epoch = start_step = 0
    partial: dict = {}
    wall_before = 0.0
    if resume:
        arrays = results.load_arrays(out / results.CHECKPOINT)
        meta = json.loads(str(arrays.pop("__meta__")))
        net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
        opt.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
        rows = meta["metrics"]
        start_epoch = int(meta["epoch"])
        start_step = int(meta.get("step", 0))
        partial = meta.get("partial", {})
        wall_before = meta["wall_seconds"]
        if not 0 <= start_step < steps:
            raise results.ResultsError(f"{out / results.CHECKPOINT}: step {start_step} is not within an epoch "
                                       f"of {steps} steps")
        if root:
            results.write_metrics(out / results.METRICS, rows)
        where = f", step {start_step + 1}/{steps}" if start_step else ""
        log(f"resuming {out} at epoch {start_epoch + 1}/{cfg['epochs']}{where}")
    else:
        if root:
            out.mkdir(parents=True, exist_ok=True)
            results.atomic_write_text(out / results.CONFIG, results.to_toml(cfg))
            results.write_metrics(out / results.METRICS, [])
    if world > 1:  # the replicas start identical whatever happened before
        comm.bcast(list(net.state().values()))
        comm.bcast(list(opt.state().values()))
    if not resume:
        rule.initial_phase(net.weight_layers, xp, make_rng(xp, _seed(cfg, _MIRROR0)))
        rows.append(_metrics_row(net, xp, cfg, -1, metric_x, metric_y, source, comm, None, 0.0, 0.0, 0))
        if root:
            results.append_metrics(out / results.METRICS, rows[-1])

    def save_checkpoint(epoch_done: int, wall: float, step_done: int = 0, part: dict | None = None) -> None:
        # collective: every rank calls it at the same point
        _allreduce_mean_fused(comm, _bn_buffers(net), xp)
        if part is not None and source.counts_skips and world > 1:
            part = {**part, "skipped": int(_allreduce_sum(comm, [part["skipped"]], xp)[0])}
        if not root:
            return
        arrays = {f"net.{k}": to_numpy(v) for k, v in net.state().items()}
        arrays.update({f"opt.{k}": to_numpy(v) for k, v in opt.state().items()})
        meta = {"epoch": epoch_done, "step": step_done, "wall_seconds": wall, "metrics": rows,
                "world_size": world}
        if part is not None:
            meta["partial"] = part
        arrays["__meta__"] = np.array(json.dumps(results._jsonable(meta)))
        results.save_arrays(out / results.CHECKPOINT, arrays)

    noise_seed = int(cfg["seed"]) if world == 1 else rank_seed(cfg["seed"], rank)
    t_start = time.perf_counter()
    steps_here = 0
    interrupted = False
    resume_from = None
    with _Interrupt() as stop:
        for epoch in range(start_epoch, cfg["epochs"]):
            first = start_step if epoch == start_epoch else 0
            if first:
                # mid-epoch resume: the noise of the rest of the epoch comes from a stream of its own
                noise_rng = make_rng(xp, [noise_seed, _NOISE, epoch, first])
                losses = list(partial.get("losses", []))
                skipped_before = int(partial.get("skipped", 0)) if root else 0
                seconds_before = float(partial.get("seconds", 0.0))
            else:
                noise_rng = make_rng(xp, [noise_seed, _NOISE, epoch])
                losses, skipped_before, seconds_before = [], 0, 0.0
            skipped_at_start = source.skipped
            bar = _progress(steps - first, f"{rule.key} epoch {epoch + 1}/{cfg['epochs']}", progress)
            t0 = time.perf_counter()
            step = first
            halt = False
            for xb, yb in source.train_batches(epoch, first):
                want_stop = stop.hit or (stop_after_steps is not None and steps_here + 1 >= stop_after_steps)
                n_local = len(yb)
                loss = 0.0
                dlogits = None
                if n_local:
                    yb = xp.asarray(yb)
                    logits = net.forward(_as_input(net, xb, xp), train=True)
                    loss, dlogits = softmax_cross_entropy(logits, yb, xp, o["label_smoothing"])
                if world > 1:
                    # one small collective: sample counts, loss sums, and whether any rank must stop
                    n_total, loss_total, votes = _allreduce_sum(comm, [n_local, loss * n_local, want_stop], xp)
                    halt = votes > 0
                    step_loss = loss_total / n_total if n_total else math.nan
                    if n_total:
                        if n_local:
                            share = n_local * world / n_total  # unequal shards: weight by sample count
                            if share != 1.0:
                                dlogits *= xp.float32(share)
                            net.backward(dlogits, rng=noise_rng)
                        else:
                            _zero_grads(net, xp)
                        average_gradients(comm, net.parameter_modules())
                else:
                    n_total, step_loss, halt = n_local, loss, want_stop
                    if n_local:
                        net.backward(dlogits, rng=noise_rng)
                if n_total:
                    # progress: the fraction of training done (KP's decay window uses it)
                    opt.step(schedule(epoch + step / steps), progress=(epoch + step / steps) / cfg["epochs"])
                    rule.after_step(net.weight_layers, xp, noise_rng)
                    if sync_b:
                        _allreduce_mean_fused(comm, [layer.B for layer in net.weight_layers], xp)
                    losses.append(step_loss)
                step += 1
                steps_here += 1
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{step_loss:.3f}")
                if halt and step < steps:
                    break
                if every_steps and (epoch * steps + step) % every_steps == 0 and step < steps:
                    part = {"losses": losses, "seconds": seconds_before + time.perf_counter() - t0,
                            "skipped": skipped_before + source.skipped - skipped_at_start}
                    save_checkpoint(epoch, wall_before + time.perf_counter() - t_start, step, part)
            synchronize(xp)
            epoch_seconds = seconds_before + time.perf_counter() - t0
            if bar is not None:
                bar.close()
            skipped = skipped_before + source.skipped - skipped_at_start
            if step < steps:
                if not halt:
                    raise RuntimeError(f"the batch source gave {step - first} of {steps - first} batches "
                                       f"in epoch {epoch + 1}")
                part = {"losses": losses, "seconds": epoch_seconds, "skipped": skipped}
                save_checkpoint(epoch, wall_before + time.perf_counter() - t_start, step, part)
                interrupted = True
                resume_from = {"epoch": epoch, "step": step}
                log(f"interrupted at epoch {epoch + 1}, step {step}/{steps}: checkpoint written to "
                    f"{out / results.CHECKPOINT}; continue with: weightmirror train --resume --out {out}")
                break
            if source.counts_skips and world > 1:
                skipped = int(_allreduce_sum(comm, [skipped], xp)[0])
            train_loss = float(np.mean(losses)) if losses else math.nan
            row = _metrics_row(net, xp, cfg, epoch, metric_x, metric_y, source, comm, train_loss, epoch_seconds,
                               schedule(epoch + 1 - 1e-9), skipped)
            rows.append(row)
            if root:
                results.append_metrics(out / results.METRICS, row)
            wall = wall_before + time.perf_counter() - t_start
            stopping = halt or stop.hit
            if world > 1:
                stopping = _allreduce_sum(comm, [stopping], xp)[0] > 0
            last = epoch + 1 == cfg["epochs"]
            by_count = stop_after is not None and epoch + 1 - start_epoch >= stop_after
            due = (epoch + 1) % cfg["run"]["checkpoint_every"] == 0 or (
                every_steps and (epoch + 1) * steps % every_steps == 0)
            if due or last or stopping or by_count:
                save_checkpoint(epoch + 1, wall)
            if progress:
                log(_epoch_line(rule.key, row))
            if (stopping or by_count) and not last:
                interrupted = True
                resume_from = {"epoch": epoch + 1, "step": 0}
                if stopping:
                    log(f"interrupted after epoch {epoch + 1}: checkpoint written to {out / results.CHECKPOINT}; "
                        f"continue with: weightmirror train --resume --out {out}")
                break

    wall = wall_before + time.perf_counter() - t_start
    last_row = rows[-1]
    summary = {
        "rule": rule.key,
        "rule_long_name": rule.long_name,
        "model": cfg["model"],
        "data": cfg["data"],
        "epochs": last_row["epoch"],
        "test_top1_error": last_row["test_top1_error"],
        "test_top5_error": last_row.get("test_top5_error"),
        "train_loss": last_row.get("train_loss"),
        "angles_deg": last_row["angles_deg"],
        "delta_angles_deg": last_row["delta_angles_deg"],
        "weight_norms": last_row["weight_norms"],
        "layer_shapes": [list(layer.W.shape) for layer in net.weight_layers],
        "n_parameters": int(sum(int(np.prod(a.shape)) for m in net.parameter_modules() for a in m.params.values())),
        "device": cfg["device"],
        "seed": cfg["seed"],
        "world_size": world,
        "wall_seconds": wall,
        "completed": not interrupted,
    }
    if source.counts_skips:
        summary["skipped_images"] = int(sum(r.get("skipped_images", 0) for r in rows))
    if not interrupted and root:
        results.write_json(out / results.SUMMARY, summary)
    if resume_from is not None:
        summary["resume_from"] = resume_from
    summary["rank"] = rank
    return summary


def _read_toml(out: Path) -> dict:
    from weightmirror.sims.config import load_toml

    return load_toml(out / results.CONFIG)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _metrics_row(net, xp, cfg, epoch, metric_x, metric_y, source, comm, train_loss, epoch_seconds, lr,
                 skipped) -> dict:
    """One metrics.jsonl row; epoch 0 is the state before training.

    Collective: every rank calls it (BatchNorm statistics are averaged over
    ranks first, and the evaluation counts are summed).
    """
    _allreduce_mean_fused(comm, _bn_buffers(net), xp)
    metric_rng = make_rng(xp, _seed(cfg, _METRIC))
    row = {"epoch": epoch + 1}
    if train_loss is not None:
        row["train_loss"] = train_loss
    eval_skipped = source.eval_skipped
    row.update(evaluate_source(net, source, xp, comm))
    row["angles_deg"] = feedback_angles(net, xp, metric_rng)
    row["delta_angles_deg"] = delta_angles(net, metric_x, metric_y, xp, metric_rng)
    row["weight_norms"] = weight_norms(net, xp)
    row["epoch_seconds"] = epoch_seconds
    row["lr"] = lr
    if source.counts_skips:
        eval_skipped = source.eval_skipped - eval_skipped
        if comm.size > 1:
            eval_skipped = int(_allreduce_sum(comm, [eval_skipped], xp)[0])
        row["skipped_images"] = int(skipped)
        row["skipped_eval_images"] = int(eval_skipped)
    return row


def _epoch_line(rule: str, row: dict) -> str:
    angles = "/".join(f"{a:.1f}" for a in row["angles_deg"])
    skipped = f"  skipped {row['skipped_images']} images" if row.get("skipped_images") else ""
    return (f"[{rule}] epoch {row['epoch']}: loss {row.get('train_loss', float('nan')):.4f}  "
            f"test error {row['test_top1_error']:.2f}%  angle(B,W^T) {angles} deg  "
            f"{row['epoch_seconds']:.1f}s{skipped}")
