"""A run that diverged: the first non-finite loss or weight stops it, and it fails loudly.

What is checked, by :class:`DivergenceGuard` in the training loop:

* the training loss of every step (``train_step``'s float);
* every array of the network (parameters, the stored feedback weights
  ``layer.B``, batch-norm buffers) and the optimiser's momentum, at every
  epoch end before the epoch is measured, and right before any checkpoint
  is written (mid-epoch ones included);
* the losses of each epoch's metrics row (``train_loss``, ``test_loss``,
  ``val_loss``), in case finite weights still overflow the outputs.

The first non-finite value stops training at once. The run then keeps what
it had, all finite: the metrics rows written so far (nothing non-finite is
appended), the last checkpoint (``checkpoint.npz`` is never overwritten with
non-finite arrays) and a ``summary.json`` of the last finite epoch with
``"status": "diverged"`` and ``"completed": false`` and where it happened::

    "diverged": {"epoch": 1, "step": 3, "loss": null, "what": "loss",
                 "layer": null, "quantity": "train_loss"}

``epoch``
    the epoch in progress, counted from 1 as the loop's messages and
    ``metrics.jsonl`` count them (row ``epoch = E`` is written after epoch
    E, so the last row of a run that diverged in epoch E is row E - 1);
``step``
    the training step within that epoch, counted from 1, at which the
    non-finite value was found (the epoch's number of steps for the
    epoch-end checks);
``loss``
    the non-finite loss (``null`` in JSON), or for ``what = "weights"`` the
    last finite training loss;
``what``
    ``"loss"`` or ``"weights"``;
``layer``
    the index of the weight layer (as in ``angles_deg``, 0 = bottom) whose
    ``W``, bias or ``B`` held the first non-finite value; ``null`` for a loss
    or an array of no weight layer (batch norm, the optimiser's momentum);
``quantity``
    what was not finite: ``train_loss``, ``test_loss``, ``val_loss``, or the
    checkpoint name of the array (``net.2.B``, ``opt.0.W``).

:func:`~.loop.train` then raises :class:`DivergedError`, which carries that
:class:`~weightmirror.results.Run` (``exc.run``, ``exc.summary``). A run that
completed has ``"status": "completed"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["DivergedError", "DivergenceGuard", "advice"]


class DivergedError(RuntimeError):
    """The run's loss or weights stopped being finite; training stopped there.

    Not an :class:`~weightmirror.errors.InputError`: every value given was
    valid, the run failed. The command line prints :meth:`message` in one
    line and exits with :data:`weightmirror.errors.EXIT_DIVERGED`.

    Attributes
    ----------
    run : weightmirror.results.Run
        The run as far as it was finite: ``metrics`` (the rows written),
        ``summary`` (as written to ``summary.json``: ``status`` is
        ``"diverged"``, ``diverged`` says where), ``config``, ``path``.
    summary : ``run.summary``.
    epoch, step, loss, what, layer, quantity : ``summary["diverged"]``'s.
    checkpoint : Path or None
        The last finite checkpoint, kept; None where none was written (a
        run that diverged before its first checkpoint, or in memory).
    """

    def __init__(self, run, checkpoint: Optional[Path] = None):
        self.run = run
        self.summary = run.summary
        info = run.summary["diverged"]
        self.epoch, self.step, self.loss = info["epoch"], info["step"], info["loss"]
        self.what, self.layer, self.quantity = info["what"], info["layer"], info["quantity"]
        self.checkpoint = checkpoint
        super().__init__(self.message())

    def cause(self) -> str:
        """What was not finite: ``loss = nan``, ``a non-finite value in layer 2's feedback weights B`` ..."""
        if self.what == "loss":
            name = {"train_loss": "loss", "test_loss": "test loss", "val_loss": "validation loss"}.get(
                self.quantity, self.quantity)
            return f"{name} = {_number(self.loss)}"
        return f"a non-finite value in {_array_name(self.quantity, self.layer)}"

    def message(self, cli: bool = False) -> str:
        """One line: where it diverged, which checkpoint is kept, what to try.

        ``cli``: name the learning rate as the command-line flag ``--lr``
        (else as the config key ``[optim] lr``).
        """
        if self.checkpoint is not None:
            kept = f"the last finite checkpoint is kept in {self.checkpoint}"
        elif self.run.path is not None:
            kept = "it diverged before its first checkpoint, so none is kept"
        else:
            kept = "a run kept in memory has no checkpoint"
        return (f"run diverged at epoch {self.epoch}, step {self.step} ({self.cause()}); {kept}; "
                f"try {advice(self.run.config or {}, cli)}")


def advice(config: dict, cli: bool = False) -> str:
    """What to try after a divergence, with the values the run had.

    Always a smaller learning rate; for the weight mirror also a tighter
    mirror (a smaller target angle, more samples allowed) or, for the fixed
    mirror, a smaller mirror learning rate, a larger mirror decay and more
    mirror samples; for the other rules a learning-rate warm-up where there
    was none.
    """
    optim = config.get("optim") or {}
    lr = optim.get("lr")
    now = f" (now {lr:g})" if isinstance(lr, (int, float)) else ""
    parts = [f"a smaller --lr{now}" if cli else f"a smaller learning rate ([optim] lr{now})"]
    rule = config.get("rule")
    wm = config.get("wm") or {}
    if rule == "wm" and wm.get("adaptive", True):
        if "target_angle" in wm:
            parts.append(f"a smaller mirror angle ([wm] target_angle, now {wm['target_angle']:g})")
        parts.append("more mirror samples ([wm] max_samples" + (f", now {wm['max_samples']})" if "max_samples" in wm
                                                                   else ")"))
    elif rule == "wm":
        if "lr" in wm:
            parts.append(f"a smaller mirror learning rate ([wm] lr, now {wm['lr']:g})")
        parts.append("a larger mirror decay ([wm] decay" + (f", now {wm['decay']:g})" if "decay" in wm else ")"))
        parts.append("more mirror samples ([wm] mirror_batch_size"
                     + (f", now {wm['mirror_batch_size']})" if "mirror_batch_size" in wm else ")"))
    elif not optim.get("warmup_epochs"):
        parts.append("a learning-rate warm-up ([optim] warmup_epochs)")
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _number(value) -> str:
    return "null" if value is None else str(float(value))  # nan, inf, -inf


def _array_name(quantity: str, layer: Optional[int]) -> str:
    """``net.2.B`` of weight layer 1 -> ``layer 2's feedback weights B``."""
    kind = quantity.rsplit(".", 1)[-1]
    if quantity.startswith("opt."):
        return f"the optimiser's momentum ({quantity})"
    if layer is None:
        return f"the network's array {quantity}"
    what = {"B": "feedback weights B", "W": "weights W", "b": "bias b"}.get(kind, f"array {kind}")
    return f"layer {layer + 1}'s {what}"


@dataclass(eq=False)  # an exception stays hashable
class Divergence(Exception):
    """Inside the loop: the first non-finite value (caught by :class:`DivergenceGuard`)."""

    epoch: int
    step: int
    what: str
    loss: Optional[float]
    layer: Optional[int]
    quantity: str

    def fields(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "loss": self.loss, "what": self.what,
                "layer": self.layer, "quantity": self.quantity}


def _finite(xp, a) -> bool:
    return bool(xp.isfinite(a).all())


def first_nonfinite(net, opt, xp) -> Optional[tuple[Optional[int], str]]:
    """``(weight-layer index or None, checkpoint name)`` of the first non-finite array, or None.

    Bottom up through the network (parameters, ``B``, buffers), then the
    optimiser's momentum: every array a checkpoint holds.
    """
    index = {id(layer): i for i, layer in enumerate(net.weight_layers)}
    for path, m in net.named_modules():
        arrays: dict[str, Any] = dict(m.params)
        if id(m) in index and getattr(m, "B", None) is not None:
            arrays["B"] = m.B
        arrays.update(getattr(m, "buffers", {}) or {})
        for name, a in arrays.items():
            if not _finite(xp, a):
                return index.get(id(m)), f"net.{path}.{name}"
    if opt is not None:
        for name, a in opt.state().items():
            if not _finite(xp, a):
                return None, f"opt.{name}"
    return None


class DivergenceGuard:
    """The loop's finiteness checks; as a context manager around the epoch loop it stops it.

    Each check raises :class:`Divergence` at the first non-finite value; the
    ``with`` block swallows it (closing the epoch's progress bar) and keeps
    it in :attr:`found`, so that the code after the loop writes the summary
    and :func:`~.loop.train` raises :class:`DivergedError`. Checks that look
    at arrays are collective in a data-parallel run (every rank calls them
    at the same point and all stop together).
    """

    def __init__(self, net, opt, comm, xp):
        self.net, self.opt, self.comm, self.xp = net, opt, comm, xp
        self.found: Optional[Divergence] = None
        self.last_loss: Optional[float] = None
        self._bar = None

    # -- the checks ----------------------------------------------------------
    def loss(self, loss: float, epoch: int, step: int, bar=None) -> None:
        """A training step's loss (the same on every rank)."""
        if math.isfinite(loss):
            self.last_loss = loss
            return
        self._bar = bar
        raise Divergence(epoch, step, "loss", float(loss), None, "train_loss")

    def weights(self, epoch: int, step: int, bar=None) -> None:
        """Every array of the network and the optimiser (collective)."""
        bad = first_nonfinite(self.net, self.opt, self.xp)
        if self.comm.size > 1:
            from ..distributed import allreduce_sum

            if allreduce_sum(self.comm, [bad is not None], self.xp)[0] == 0:
                return
            bad = bad or (None, "an array on another rank")
        if bad is None:
            return
        self._bar = bar
        layer, quantity = bad
        raise Divergence(epoch, step, "weights", self.last_loss, layer, quantity)

    def row(self, row: dict, epoch: int, step: int) -> None:
        """The losses of a metrics row (the same on every rank)."""
        for key in ("train_loss", "test_loss", "val_loss"):
            value = row.get(key)
            if value is not None and not math.isfinite(value):
                raise Divergence(epoch, step, "loss", float(value), None, key)

    # -- stopping ------------------------------------------------------------
    def __enter__(self) -> "DivergenceGuard":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if not isinstance(exc, Divergence):
            return False
        if self._bar is not None:
            self._bar.close()
        self.found = exc
        return True  # the loop stops; the code after it reports

    def summary_fields(self, interrupted: bool) -> dict:
        """``status`` (and ``diverged``) for the run's summary."""
        if self.found is not None:
            return {"status": "diverged", "completed": False, "diverged": self.found.fields()}
        return {"status": "interrupted" if interrupted else "completed"}
