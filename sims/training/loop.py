"""The training loop: one step function, one epoch loop, checkpoints, resume, data parallel.

``train(cfg, out)`` trains the configured model with the configured rule and
returns a :class:`weightmirror.results.Run`; with ``out`` a folder it also
writes the results folder (see :mod:`weightmirror.results`), with
``out=None`` it keeps everything in memory.

Randomness and resume
---------------------
Randomness is drawn from generators seeded by ``(seed, purpose, epoch)``
(:mod:`.seeds`), so an epoch's data order and noise depend only on the seed
and the epoch. A checkpoint (``checkpoint.npz``: network, optimiser state and
the :class:`~.checkpoint.TrainState`, written atomically) is written right
after the epoch-0 evaluation (before the first step: from then on every
interruption leaves a folder that ``resume`` continues), at the
end of every ``run.checkpoint_every`` epochs, every
``run.checkpoint_every_steps`` training steps if that is > 0, and at the
current step when SIGINT or SIGTERM arrives (the loop then stops cleanly; a
second signal stops at once). ``resume=True`` continues from the checkpoint:

* from an **epoch boundary** the resumed run is exactly the uninterrupted
  one (same metrics, bit for bit);
* from **mid-epoch** it continues at the saved step with the same epoch
  permutation (and, for ImageNet, the same per-sample augmentation), but
  the noise generator of the rest of that epoch (weight-mirror noise,
  brSF magnitudes) is reseeded from ``(seed, NOISE, epoch, step)``:
  those draws differ from the uninterrupted run's, so a mid-epoch resume
  is not bit-identical for rules that draw noise (it is for bp, fa, usf,
  frsf and kp). Following epochs use their usual seeds again.

Divergence
----------
A non-finite training loss (checked every step), a non-finite array of the
network or the optimiser (checked at every epoch end and right before every
checkpoint) or a non-finite loss in an epoch's metrics stops the run at once
(:mod:`.divergence`): the metrics rows so far and the last checkpoint stay
(all finite), ``summary.json`` says ``"status": "diverged"`` and where, and
:func:`train` raises :class:`~.divergence.DivergedError` carrying the run.

Data parallel
-------------
With ``run.distributed = true`` (CLI ``--distributed``) and a launch of
``mpirun -n K weightmirror train ...``, each of the K processes (one per
device) builds the same network (same initial seed, then broadcast from
rank 0), takes its :func:`~weightmirror.sims.distributed.shard_indices` part
of every global batch of ``batch_size`` samples, computes its gradients, and
:func:`~weightmirror.sims.distributed.average_gradients` averages them
before the optimiser step (shards of unequal size are weighted by their
sample count, so the update is that of the whole global batch). The
communicator is :func:`~weightmirror.sims.distributed.make_communicator`:
MPI on the CPU, NCCL for ``device = "cuda"``. Per rule:

* Kolen-Pollack's B follows from the averaged step, so it stays identical;
* the weight mirror's noise is drawn by each rank from its own stream
  (:func:`~weightmirror.sims.distributed.rank_seed`), and after
  ``rule.after_step`` the ranks' B arrays are averaged, so replicas stay
  identical (K ranks together form one mirror batch K times as large; this
  costs a second collective per step, of the size of the weights);
* BatchNorm running statistics are averaged over ranks before every
  evaluation and checkpoint.

Each rank evaluates its shard of the test set and the counts are summed.
Only rank 0 writes the results folder (which must be on a file system that
every rank reads, for ``--resume``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ... import locks, results
from ...circuits.rules import LearningRule, Progress
from ...errors import InputError
from ...models.backend import get_array_module, make_rng, synchronize, use_gpu_options
from ...models.batch_threads import MIN_SHARD, BatchThreads, blas_threads, split_reason
from ...models.layers import softmax_cross_entropy
from ...models.optim import SGD, Schedule, lr_mass
from ...models.zoo import build_model
from .. import datasets
from ..config import TrainConfig, as_written_run, resolve
from ..distributed import (
    Communicator,
    allreduce_mean_arrays,
    allreduce_sum,
    average_gradients,
    make_communicator,
    rank_seed,
)
from . import seeds
from .checkpoint import TrainState, load_checkpoint, read_state
from .divergence import DivergedError, Divergence, DivergenceGuard
from .interrupts import StopRequests, StoppedBeforeStart
from .metrics import as_input, bn_buffers, epoch_line, metrics_row, test_predictions
from .output import RunOutput, check_out_dir
from .sources import BatchSource, make_batch_source

__all__ = ["train", "train_step", "build_network", "load_data", "resume_config", "DivergedError"]


def load_data(cfg: TrainConfig):
    """The configured data set: arrays in memory (flattened for the ``mlp``), or the
    scanned ImageNet folders (images are decoded while training)."""
    return datasets.load(cfg.data, cfg.data_dir or None, flatten=cfg.model == "mlp", seed=cfg.seed)


def start_from(net, folder: str, xp) -> None:
    """Set ``net``'s W, B and biases from the results folder ``folder`` (:func:`sims.transfer.read_weights`:
    a circuit run's final weights, biases 0, or an MLP run's last checkpoint), exactly (as float32)."""
    from ..transfer import TransferError, read_weights

    source = read_weights(folder)
    layers = net.weight_layers
    shapes = [tuple(layer.params["W"].shape) for layer in layers]
    if [W.shape for W, _ in source.layers] != shapes:
        sizes = [shapes[0][1]] + [s[0] for s in shapes]
        raise TransferError(f"--init-from {folder}: its layers {source.sizes} are not this network's {sizes}; "
                            f"give model_options.hidden = {source.sizes[1:-1]} (in a --config file) and the data "
                            f"set of {source.sizes[0]} inputs and {source.sizes[-1]} classes")
    for l, (layer, (W, B)) in enumerate(zip(layers, source.layers)):
        layer.params["W"][...] = xp.asarray(W, dtype=xp.float32)
        layer.B[...] = xp.asarray(B, dtype=xp.float32)
        if "b" in layer.params:
            layer.params["b"][...] = 0 if source.biases is None else xp.asarray(source.biases[l], dtype=xp.float32)


def build_network(cfg: TrainConfig, data, xp):
    """The configured model with the configured rule; initial weights from ``(seed, INIT)``.

    ``data`` is anything with ``image_shape`` and ``num_classes`` (a
    Dataset or a BatchSource).
    """
    rng = make_rng(xp, [int(cfg.seed), seeds.INIT])
    return build_model(cfg.model, data.image_shape, data.num_classes, cfg.make_rule(), xp, rng,
                       **cfg.model_options)


# --------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------


@dataclass
class Trainee:
    """What a training step acts on: the network, its rule and optimiser, the ranks."""

    net: object
    rule: LearningRule
    opt: SGD
    comm: Communicator
    xp: object
    label_smoothing: float = 0.0
    #: the batch split over CPU threads (``models.batch_threads``; one process only), or None: the plain step
    batch_threads: BatchThreads | None = None

    @property
    def syncs_feedback(self) -> bool:
        """Does the rule change stored B after each step from rank-local noise (weight mirror)?
        Then the ranks average B after every step."""
        rule = self.rule
        return (self.comm.size > 1 and rule.stores_feedback
                and type(rule).after_step is not LearningRule.after_step)


def batch_threads_for(net, xp, comm: Communicator, run) -> BatchThreads | None:
    """The batch split over the BLAS's threads (``run.split_batch``), where it applies: on the
    CPU, with more than one thread, one process, convolutions and no batch norm
    (``models.batch_threads.split_reason``)."""
    if not run.split_batch or comm.size > 1 or split_reason(net, xp):
        return None
    threads = blas_threads()
    return BatchThreads(net, threads) if threads > 1 else None


def train_step(t: Trainee, xb, yb, lr: float, progress: Progress | None, noise_rng, want_stop: bool = False):
    """One optimiser step on this rank's shard ``(xb, yb)`` of a global batch.

    Forward, softmax cross-entropy, the rule's backward pass, gradient
    averaging over ranks (weighted by each shard's sample count), the SGD
    update at learning rate ``lr`` (``progress``: where training stands, for
    the rules whose own plasticity follows it), then the rule's own step (the
    weight mirror's mirror mode) and, data parallel, the average of B.
    Collective: every rank calls it, also with an empty shard.

    Returns
    -------
    (loss, samples, halt)
        The global batch's mean loss (NaN if it was empty), its number of
        samples over all ranks, and whether any rank asked to stop.
    """
    xp, net, comm = t.xp, t.net, t.comm
    n_local = len(yb)
    loss, dlogits = 0.0, None
    split = t.batch_threads is not None and n_local >= MIN_SHARD * t.batch_threads.threads
    if split:  # forward and backward, each thread a share of the batch (models.batch_threads)
        loss, dlogits = t.batch_threads.loss_and_gradients(as_input(net, xb, xp), xp.asarray(yb), noise_rng,
                                                          t.label_smoothing, softmax_cross_entropy)
    elif n_local:
        yb = xp.asarray(yb)
        logits = net.forward(as_input(net, xb, xp), train=True)
        loss, dlogits = softmax_cross_entropy(logits, yb, xp, t.label_smoothing)
    if comm.size > 1:
        # one small collective: sample counts, loss sums, and whether any rank must stop
        n_total, loss_total, votes = allreduce_sum(comm, [n_local, loss * n_local, want_stop], xp)
        halt = votes > 0
        step_loss = loss_total / n_total if n_total else math.nan
        if n_total:
            if n_local:
                share = n_local * comm.size / n_total  # unequal shards: weight by sample count
                if share != 1.0:
                    dlogits *= xp.float32(share)
                net.backward(dlogits, rng=noise_rng)
            else:
                _zero_grads(net, xp)
            average_gradients(comm, net.parameter_modules())
    else:
        n_total, step_loss, halt = n_local, loss, want_stop
        if n_local and not split:
            net.backward(dlogits, rng=noise_rng)
    if n_total:
        t.opt.step(lr, progress=progress)
        t.rule.after_step(net.weight_layers, xp, noise_rng, progress)
        if t.syncs_feedback:
            allreduce_mean_arrays(comm, [layer.B for layer in net.weight_layers])
    return step_loss, n_total, halt


def _zero_grads(net, xp) -> None:
    """Zero gradients (a rank whose shard was empty contributes nothing)."""
    for m in net.parameter_modules():
        for name, p in m.params.items():
            g = m.grads.get(name)
            if g is None or g.shape != p.shape:
                m.grads[name] = xp.zeros_like(p)
            else:
                g[...] = 0


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def train(cfg, out: str | Path | None = None, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, data=None, stop_after: int | None = None,
          stop_after_steps: int | None = None, comm: Communicator | None = None) -> results.Run:
    """Train per ``cfg``; write the results folder ``out`` (None: keep the run in memory).

    Parameters
    ----------
    cfg : TrainConfig, mapping or None
        The configuration (a mapping is resolved by :func:`~..config.resolve`).
        With ``resume`` the run's own ``config.toml`` is used instead and
        ``cfg`` may only raise ``epochs`` or set ``run.distributed``
        (a mapping such as ``{"epochs": 30}``; ``None``: neither).
    out : str, Path or None
        The results folder; it must not hold a run unless ``resume``.
    resume : bool
        Continue from ``out/checkpoint.npz`` (an epoch boundary or a
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
        SIGINT arriving during that step would.
    comm : Communicator, optional
        The ranks to train over; default
        :func:`~weightmirror.sims.distributed.make_communicator`.

    Returns
    -------
    weightmirror.results.Run
        ``config`` (as written to ``config.toml``), ``metrics`` (one row per
        epoch, epoch 0 first), ``summary`` (as written to ``summary.json``
        once every epoch ran, plus ``rank``; ``status`` is ``"completed"``;
        when the run stopped early, ``status`` is ``"interrupted"``,
        ``completed`` is False and ``resume_from`` holds the checkpoint's
        epoch and step) and ``path``.

    Raises
    ------
    DivergedError
        The loss or an array stopped being finite (see :mod:`.divergence`);
        ``exc.run`` is the run as far as it was finite, its ``summary``
        (written to ``summary.json`` too) has ``"status": "diverged"``.
    weightmirror.locks.FolderInUseError
        Another run holds ``out`` (the folder is claimed for the whole run:
        :func:`weightmirror.locks.claim`).
    RunExistsError
        ``out`` holds a run (without ``resume``; a folder holding only the
        start of a run that recorded nothing is reused), or nothing to resume.
    weightmirror.results.ResultsError
        With ``resume``: a value of ``cfg`` contradicts the run's config, or
        its config or checkpoint cannot be read (see :func:`resume_config`).
    weightmirror.results.WriteError
        A file of ``out`` cannot be written (a full disk, a read-only file
        system); the files already there are as they were.
    StoppedBeforeStart
        SIGINT/SIGTERM before the first checkpoint (a ``KeyboardInterrupt``;
        its text says what ``out`` holds and what to run next). Later, a
        signal checkpoints and the run returns with ``completed`` False.
    """
    if isinstance(out, str):
        results.check_out_path(out)
    out = None if out is None else Path(out)
    if resume:
        if out is None:
            raise results.ResultsError("resume needs the results folder of the run (out)")
        check_out_dir(out, True)
        cfg, _ = resume_config(out, cfg)
    else:
        cfg = cfg if isinstance(cfg, TrainConfig) else resolve(cfg)
    comm = comm if comm is not None else make_communicator(cfg.run.distributed, cfg.device)
    xp = get_array_module(cfg.device)
    # the folder is this run's from here to the end (rank 0 holds the claim for all ranks)
    claim = _claim(out, comm, xp, "train --resume" if resume else "train")
    stop = StopRequests(immediate=True)  # no checkpoint yet: a signal stops at once
    try:
        with claim, stop:
            saved = None
            if out is not None:  # (again) now that no other run can start in it
                reuse = check_out_dir(out, resume)
                if resume:
                    cfg, saved = resume_config(out, cfg)
                elif reuse and comm.is_root:
                    results.clear_unstarted(out)
            comm.barrier()  # every rank has checked the folder before rank 0 writes to it
            if not comm.is_root:
                progress, log = False, _silent
            if getattr(claim, "note", None):  # a stale lock taken over
                log(claim.note)
            output = RunOutput(out, writes=comm.is_root)
            # GPU-only numerics and kernels, restored when the run ends (no effect on NumPy)
            # overflow and NaN are not NumPy warnings here: the run stops on them (DivergedError)
            with use_gpu_options(tf32=cfg.run.tf32, conv_algorithm=cfg.run.conv_algorithm), \
                    np.errstate(all="ignore"):
                data = data if data is not None else load_data(cfg)
                source = make_batch_source(cfg, data, comm.rank, comm.size)
                try:
                    return _run(cfg, output, resume, progress, log, source, stop_after, stop_after_steps, comm, xp,
                                stop, saved)
                finally:
                    if source is not data:
                        source.close()
    except StoppedBeforeStart:
        raise StoppedBeforeStart(_stopped_message(out, resume)) from None


def _stopped_message(out: Path | None, resume: bool) -> str:
    """What a run stopped before its first checkpoint (or before resuming) left, and what to run next."""
    if out is None:
        return "interrupted before the first checkpoint (a run kept in memory)"
    if (out / results.CHECKPOINT).is_file():
        return (f"interrupted before training {'resumed' if resume else 'went on'}; {out} holds its checkpoint: "
                f"continue with: weightmirror train --resume --out {out}")
    return (f"interrupted before the first checkpoint; {out} holds no results: run the same command again "
            "(without --resume) to start over in it")


def _claim(out: Path | None, comm: Communicator, xp, command: str):
    """Rank 0 claims ``out`` for the run (:func:`weightmirror.locks.claim`): a context manager
    (a no-op for an in-memory run and on the other ranks).

    Collective in a data-parallel run: when rank 0 cannot claim the folder,
    every rank stops with an error (rank 0 with the reason).
    """
    if out is None:
        return contextlib.nullcontext()
    failed, claim = None, None
    if comm.is_root:
        try:
            claim = locks.claim(out, command, hint="choose another --out")
        except InputError as exc:
            failed = exc
    if comm.size > 1 and allreduce_sum(comm, [failed is not None], xp)[0] > 0 and failed is None:
        failed = results.ResultsError(f"{out}: rank 0 could not claim it for this run")
    if failed is not None:
        raise failed
    return claim if claim is not None else contextlib.nullcontext()


#: how the command line names the config keys a resumed run may be given
_FLAG_OF = {"rule": "--rule", "model": "--model", "data": "--data", "data_dir": "--data-dir",
            "batch_size": "--batch-size", "optim.lr": "--lr", "seed": "--seed", "device": "--device",
            "label": "--label", "epochs": "--epochs"}


def _flat(values, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same_value(a, b) -> bool:
    """Equal as config values (5 and 5.0 are; True and 1 are not; tuples as lists)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        return v

    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return plain(a) == plain(b)


def resume_config(out: Path, changes=None) -> tuple[TrainConfig, TrainConfig]:
    """``(config to run, the run's own config)`` for resuming the run in ``out``.

    A resumed run trains as its ``config.toml`` says. ``changes`` (config-key
    form, or a whole :class:`TrainConfig`) may set ``run.distributed``,
    ``data_dir`` (the same data set moved elsewhere; recorded in
    ``config.toml``) and ``epochs``: to any number not below the epochs already trained (more than
    them for a finished run, which is then extended); the new ``epochs`` is
    recorded in ``config.toml`` when training resumes. The learning-rate
    schedule depends on ``epochs``, so a run extended or shortened this way
    is not identical to an uninterrupted run of that length (it is with
    ``optim.schedule = "constant"`` and no warm-up change). Any other value
    that differs from the run's is refused, never ignored.

    Raises
    ------
    ResultsError
        the config or checkpoint cannot be read, a value contradicts the
        run's config (the message names each, with the run's value), or
        ``epochs`` is below what the run already trained.
    """
    saved = resolve(as_written_run(results.read_config(out)))  # the run's own config
    if isinstance(changes, TrainConfig):
        changes = changes.to_dict()
    changes = {k: v for k, v in dict(changes or {}).items() if v is not None}
    run_changes = dict(changes.pop("run", None) or {})
    epochs = changes.pop("epochs", None)
    # where the data lie is not what the run is: a data set moved to another disk may be
    # named again (recorded in config.toml); it must hold the same files, which is not checked
    data_dir = changes.pop("data_dir", None)
    distributed = run_changes.pop("distributed", None)
    if run_changes:
        changes["run"] = run_changes
    before, given = _flat(saved.to_dict()), _flat(changes)
    differ = [k for k, v in given.items() if k in before and not _same_value(v, before[k])]
    if differ:
        said = ", ".join(f"{k} = {given[k]!r}" + (f" ({_FLAG_OF[k]})" if k in _FLAG_OF else "")
                         + f" but the run has {before[k]!r}" for k in differ)
        raise results.ResultsError(
            f"--resume continues the run in {out} as its config.toml says; contradicting values given: {said}; "
            "leave them out, or start a new run with another --out")
    if changes:
        saved.updated(changes)  # an unknown key or a bad value: the usual ConfigError line
    state = read_state(out / results.CHECKPOINT)
    finished = (out / results.SUMMARY).is_file()
    if finished and results.read_summary(out / results.SUMMARY).get("status") == "diverged":
        raise results.ResultsError(
            f"--resume: the run in {out} diverged (see its summary.json); resuming would repeat the same "
            "steps: start a new run with another --out (e.g. a smaller --lr)")
    done = state.epoch + (1 if state.step else 0)
    if epochs is not None:
        least = done + 1 if finished else max(done, 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < least:
            what = (f"the run in {out} has finished ({done} epochs): to extend it give --epochs N with N > {done}"
                    if finished else f"the run in {out} has trained {done} epochs: --epochs must be at least {least}")
            raise results.ResultsError(f"--epochs {epochs}: {what}")
    elif finished:
        raise results.ResultsError(f"--resume: the run in {out} has finished ({done} epochs); to train it further "
                                   f"give --resume --epochs N with N > {done}")
    updates = {}
    if epochs is not None and epochs != saved.epochs:
        updates["epochs"] = epochs
    if data_dir is not None and data_dir != saved.data_dir:
        updates["data_dir"] = data_dir
    if distributed is not None:
        updates["run"] = {"distributed": bool(distributed)}
    return (saved.updated(updates) if updates else saved), saved


def _silent(message: str) -> None:
    pass


def _run(cfg: TrainConfig, output: RunOutput, resume: bool, progress: bool, log, source: BatchSource,
         stop_after, stop_after_steps, comm: Communicator, xp, stop: StopRequests,
         saved: TrainConfig | None = None) -> results.Run:
    net = build_network(cfg, source, xp)
    if cfg.init_from and not resume:  # before anything is written: a bad folder leaves no trace
        start_from(net, cfg.init_from, xp)
    o = cfg.optim
    opt = SGD(net.parameter_modules(), net.rule, xp, o.momentum, o.nesterov, o.weight_decay)
    t = Trainee(net, net.rule, opt, comm, xp, o.label_smoothing, batch_threads_for(net, xp, comm, cfg.run))
    guard = DivergenceGuard(net, opt, comm, xp)  # a non-finite loss or weight stops the run
    schedule = Schedule(o.lr, o.schedule, cfg.epochs, o.warmup_epochs, tuple(o.milestones), o.gamma,
                        o.final_fraction)
    steps = source.steps_per_epoch()
    lr_total = lr_mass(schedule, cfg.epochs, steps)
    mx, my = source.metric_batch(cfg.run.delta_batch_size)
    metric_batch = (as_input(net, mx, xp), xp.asarray(my))
    every_steps = cfg.run.checkpoint_every_steps
    root = comm.is_root

    def measure(epoch, train_loss, seconds, lr, skipped):
        return metrics_row(net, xp, cfg, epoch, metric_batch, source, comm, train_loss, seconds, lr, skipped)

    def checkpoint(state: TrainState) -> None:
        # collective: every rank calls it at the same point
        allreduce_mean_arrays(comm, bn_buffers(net))
        if state.partial and source.counts_skips and comm.size > 1:
            state.partial["skipped"] = int(allreduce_sum(comm, [state.partial["skipped"]], xp)[0])
        state.world_size = comm.size
        # never a non-finite checkpoint: the last finite one stays
        guard.weights(state.epoch + 1 if state.step else state.epoch, state.step or steps)
        output.checkpoint(net, opt, state)

    if resume:
        state = load_checkpoint(output.checkpoint_path, net, opt)
        if not 0 <= state.step < steps:
            raise results.ResultsError(f"{output.checkpoint_path}: step {state.step} is not within an epoch "
                                       f"of {steps} steps")
        output.rewrite_metrics(state.metrics)
        if saved is not None and cfg.to_dict() != saved.to_dict():
            output.config(cfg)  # --epochs, --data-dir or --distributed changed: config.toml says what the run now is
        where = f", step {state.step + 1}/{steps}" if state.step else ""
        log(f"resuming {output.path} at epoch {state.epoch + 1}/{cfg.epochs}{where}")
    else:
        state = TrainState()
        output.start(cfg)
    if comm.size > 1:  # the replicas start identical whatever happened before
        comm.bcast(list(net.state().values()))
        comm.bcast(list(opt.state().values()))
    if not resume:
        if not cfg.init_from:  # weights that came from elsewhere keep the B they came with
            t.rule.initial_phase(net.weight_layers, xp, make_rng(xp, [int(cfg.seed), seeds.MIRROR0]))
        state.metrics.append(measure(0, None, 0.0, 0.0, 0))
        # a checkpoint at epoch 0, before the row: from here on the folder is one --resume continues
        # (a crash, kill -9 or full disk earlier leaves an empty metrics file: a rerun reuses the folder)
        try:
            checkpoint(TrainState(0, 0, 0.0, state.metrics))
        except Divergence:
            pass  # not finite already: the first step reports it, as without this checkpoint
        output.append(state.metrics[-1])
    stop.immediate = False  # a checkpoint exists: a signal now stops the loop at its next step

    noise_seed = int(cfg.seed) if comm.size == 1 else rank_seed(cfg.seed, comm.rank)
    # Σ η over the steps already taken, summed in the loop's own order (a resumed
    # run continues with the very same number as an uninterrupted one)
    lr_spent = 0.0
    for k in range(state.epoch * steps + state.step):
        lr_spent += schedule(k // steps + (k % steps) / steps)
    t_start = time.perf_counter()
    wall_before = state.wall_seconds
    steps_here = 0
    resume_from = None
    with guard:
        for epoch in range(state.epoch, cfg.epochs):
            first = state.step if epoch == state.epoch else 0
            if first:
                # mid-epoch resume: the noise of the rest of the epoch comes from a stream of its own
                noise_rng = make_rng(xp, [noise_seed, seeds.NOISE, epoch, first])
                losses = list(state.partial.get("losses", []))
                skipped_before = int(state.partial.get("skipped", 0)) if root else 0
                seconds_before = float(state.partial.get("seconds", 0.0))
            else:
                noise_rng = make_rng(xp, [noise_seed, seeds.NOISE, epoch])
                losses, skipped_before, seconds_before = [], 0, 0.0
            skipped_at_start = source.skipped
            bar = _progress(steps - first, f"{cfg.run_label} epoch {epoch + 1}/{cfg.epochs}", progress)
            t0 = time.perf_counter()
            step, halt = first, False

            def partial_state():
                return {"losses": losses, "seconds": seconds_before + time.perf_counter() - t0,
                        "skipped": skipped_before + source.skipped - skipped_at_start}

            for xb, yb in source.train_batches(epoch, first):
                want_stop = stop.hit or (stop_after_steps is not None and steps_here + 1 >= stop_after_steps)
                lr = schedule(epoch + step / steps)
                progress = Progress(epoch * steps + step, lr_spent, lr_total, len(yb))
                loss, n, halt = train_step(t, xb, yb, lr, progress, noise_rng, want_stop)
                lr_spent += lr
                if n:
                    guard.loss(loss, epoch + 1, step + 1, bar)
                    losses.append(loss)
                step += 1
                steps_here += 1
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{loss:.3f}")
                if halt and step < steps:
                    break
                if every_steps and (epoch * steps + step) % every_steps == 0 and step < steps:
                    checkpoint(TrainState(epoch, step, wall_before + time.perf_counter() - t_start,
                                          state.metrics, partial_state()))
            synchronize(xp)
            epoch_seconds = seconds_before + time.perf_counter() - t0
            if bar is not None:
                bar.close()
            if step < steps:  # stopped mid-epoch
                if not halt:
                    raise RuntimeError(f"the batch source gave {step - first} of {steps - first} batches "
                                       f"in epoch {epoch + 1}")
                checkpoint(TrainState(epoch, step, wall_before + time.perf_counter() - t_start, state.metrics,
                                      {**partial_state(), "seconds": epoch_seconds}))
                resume_from = {"epoch": epoch, "step": step}
                log(f"interrupted at epoch {epoch + 1}, step {step}/{steps}: {output.resume_hint()}")
                break
            skipped = skipped_before + source.skipped - skipped_at_start
            if source.counts_skips and comm.size > 1:
                skipped = int(allreduce_sum(comm, [skipped], xp)[0])
            train_loss = float(np.mean(losses)) if losses else math.nan
            guard.weights(epoch + 1, step)
            row = measure(epoch + 1, train_loss, epoch_seconds, schedule(epoch + 1 - 1e-9), skipped)
            guard.row(row, epoch + 1, step)
            state.metrics.append(row)
            output.append(row)
            wall = wall_before + time.perf_counter() - t_start
            stopping = halt or stop.hit
            if comm.size > 1:
                stopping = allreduce_sum(comm, [stopping], xp)[0] > 0
            last = epoch + 1 == cfg.epochs
            by_count = stop_after is not None and epoch + 1 - state.epoch >= stop_after
            due = (epoch + 1) % cfg.run.checkpoint_every == 0 or (
                every_steps and (epoch + 1) * steps % every_steps == 0)
            if due or last or stopping or by_count:
                checkpoint(TrainState(epoch + 1, 0, wall, state.metrics))
            if progress:
                log(epoch_line(cfg.run_label, row, feedback_used(net)))
            if (stopping or by_count) and not last:
                resume_from = {"epoch": epoch + 1, "step": 0}
                if stopping:
                    log(f"interrupted after epoch {epoch + 1}: {output.resume_hint()}")
                break

    wall = wall_before + time.perf_counter() - t_start
    summary = _summary(cfg, net, source, state.metrics, comm, wall, completed=resume_from is None)
    summary.update(guard.summary_fields(interrupted=resume_from is not None))
    arrays = {}
    if resume_from is None and guard.found is None:
        # the final network's prediction of every test example: paired tests between runs
        predictions = test_predictions(net, source, xp, comm)
        if predictions is not None:
            arrays[results.PREDICTIONS] = {"test_pred": predictions[0], "test_label": predictions[1]}
            output.arrays(results.PREDICTIONS, arrays[results.PREDICTIONS])
    if resume_from is None:  # completed or diverged
        output.summary(summary)
    else:
        summary["resume_from"] = resume_from
    summary["rank"] = comm.rank
    run = results.Run(path=output.path, kind="train", config=cfg.to_dict(), metrics=state.metrics,
                      summary=summary, arrays={} if output.writes else arrays)
    if guard.found is not None:
        kept = output.checkpoint_path
        raise DivergedError(run, kept if kept is not None and kept.is_file() else None)
    return run


def feedback_used(net) -> list[bool]:
    """Per weight layer: does its B carry an error to the layer below (the input layer's does not)?"""
    return [bool(getattr(layer, "needs_input_grad", True)) for layer in net.weight_layers]


def _summary(cfg: TrainConfig, net, source, rows, comm, wall, completed: bool) -> dict:
    """The figures of a run, as written to ``summary.json``."""
    last = rows[-1]
    rule = net.rule
    summary = {
        "rule": rule.key,
        "rule_long_name": rule.long_name,
        "label": cfg.run_label,
        "model": cfg.model,
        "data": cfg.data,
        "epochs": last["epoch"],
        "test_top1_error": last["test_top1_error"],
        "test_top5_error": last.get("test_top5_error"),
        "train_loss": last.get("train_loss"),
        "angles_deg": last["angles_deg"],
        "delta_angles_deg": last["delta_angles_deg"],
        "weight_norms": last["weight_norms"],
        "layer_shapes": [list(layer.W.shape) for layer in net.weight_layers],
        "feedback_used": feedback_used(net),
        "n_parameters": int(sum(int(np.prod(a.shape)) for m in net.parameter_modules() for a in m.params.values())),
        "device": cfg.device,
        "seed": cfg.seed,
        "world_size": comm.size,
        "wall_seconds": wall,
        "completed": completed,
    }
    if source.counts_skips:
        summary["skipped_images"] = int(sum(r.get("skipped_images", 0) for r in rows))
    summary.update({k: last[k] for k in ("val_top1_error", "val_top5_error", "val_loss") if k in last})
    summary.update(n_train=source.n_train, n_validation=source.n_validation, n_test=source.n_test)
    return summary


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=None)  # None: no bar where stderr is not a terminal (logs stay readable)
