"""What a training run measures: errors, angle(B, Wᵀ), angle(δ, δ_BP), weight norms.

One metrics row per epoch (epoch 0 = the state before training), written to
``metrics.jsonl``:

``train_loss``
    mean training loss of the epoch's steps;
``test_loss``, ``test_top1_error``, ``test_top5_error``
    over the whole test set (ImageNet folders: ``val/``), errors in percent;
``val_loss``, ``val_top1_error``, ``val_top5_error``
    the same over the whole validation part (held out of the training set,
    config ``validation``), only when there is one: choose settings on these;
``angles_deg``
    per weight layer, bottom up, the angle between the feedback the rule
    uses and W (B is stored in W's layout, see ``circuits.rules``), degrees;
``delta_angles_deg``
    per weight layer, the angle between the rule's δ and backprop's δ on a
    fixed training batch (NaN, ``null`` in JSON, where no error arrives);
``weight_norms``, ``epoch_seconds``, ``lr`` and, for the ImageNet
folders, ``skipped_images`` / ``skipped_eval_images`` (test set) /
``skipped_val_images`` (validation part, when there is one).

Every function that takes a ``comm`` is collective: every rank calls it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...circuits.rules import angle_degrees
from ...models.backend import make_rng, to_numpy
from ...models.layers import softmax_cross_entropy
from ..distributed import Communicator, allreduce_mean_arrays, allreduce_sum
from ..report import marked_angles
from .seeds import METRIC

__all__ = ["evaluate", "feedback_angles", "delta_angles", "weight_norms", "bn_buffers", "metrics_row",
           "epoch_line", "as_input"]

_BN_BUFFERS = ("running_mean", "running_var")


def as_input(net, x, xp):
    """``x`` on the device, shaped as the network's input."""
    x = xp.asarray(x)
    shape = getattr(net, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        x = x.reshape(len(x), *shape)
    return x


def bn_buffers(net) -> list:
    """The batch-norm running statistics (averaged over ranks before they are used)."""
    return [v for k, v in net.state().items() if k.endswith(_BN_BUFFERS)]


def _eval_sums(net, batches, xp) -> np.ndarray:
    """``[loss sum, top-1 wrong, top-5 wrong, samples]`` over ``batches`` (float64)."""
    sums = np.zeros(4)
    for xb, yb in batches:
        if len(yb) == 0:
            continue
        yb = xp.asarray(yb)
        logits = net.forward(as_input(net, xb, xp), train=False)
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


#: evaluate's ``part`` -> the source's batches of it
EVAL_PARTS = {"test": "eval_batches", "val": "val_batches"}


def evaluate(net, source, xp, comm: Optional[Communicator] = None, part: str = "test") -> dict:
    """Loss and top-1 / top-5 error (percent) over the source's whole test set or validation part.

    ``part = "test"`` (``source.eval_batches()``) gives ``test_loss``,
    ``test_top1_error``, ``test_top5_error``; ``part = "val"``
    (``source.val_batches()``, the part held out of the training set)
    gives ``val_loss``, ``val_top1_error``, ``val_top5_error``.
    Each rank evaluates its part; the sums are added over ranks, so every
    rank returns the same figures.
    """
    if part not in EVAL_PARTS:
        raise ValueError(f"part must be one of {', '.join(EVAL_PARTS)}, got {part!r}")
    sums = _eval_sums(net, getattr(source, EVAL_PARTS[part])(), xp)
    if comm is not None and comm.size > 1:
        sums = allreduce_sum(comm, sums, xp)
    n = max(sums[3], 1.0)
    return {f"{part}_loss": float(sums[0] / n), f"{part}_top1_error": float(100.0 * sums[1] / n),
            f"{part}_top5_error": float(100.0 * sums[2] / n)}


def test_predictions(net, source, xp, comm: Optional[Communicator] = None):
    """``(predicted, true)`` classes of every test example, in the test set's order (NumPy int32).

    What a paired per-example test (McNemar) between two runs needs. Data
    parallel: each rank predicts its contiguous shard and the shards are put
    together by a sum over ranks. ``None`` where examples were skipped (an
    ImageNet file that could not be decoded), so that no prediction could be
    misplaced.
    """
    from ..distributed import shard_indices

    preds, labels = [], []
    for xb, yb in source.eval_batches():
        if len(yb) == 0:
            continue
        logits = net.forward(as_input(net, xb, xp), train=False)
        preds.append(np.asarray(to_numpy(logits.argmax(axis=1)), dtype=np.int64))
        labels.append(np.asarray(yb, dtype=np.int64))
    n_test = getattr(source, "n_test", None)
    size = 1 if comm is None else comm.size
    rank = 0 if comm is None else comm.rank
    mine = sum(len(p) for p in preds)
    expected = None if n_test is None else shard_indices(int(n_test), rank, size)
    ok = expected is not None and mine == expected.stop - expected.start
    if size > 1 and not getattr(source, "contiguous_eval_shards", False):
        ok = False  # a loader that deals each batch out over the ranks: no contiguous shard to place
    if size > 1:
        ok = allreduce_sum(comm, [0.0 if ok else 1.0], xp)[0] == 0
    if not ok:
        return None
    buf = np.zeros((2, int(n_test)), dtype=np.float64)
    if mine:
        buf[0, expected] = np.concatenate(preds) + 1  # + 1: an empty slot sums to 0
        buf[1, expected] = np.concatenate(labels) + 1
    if size > 1:
        buf = allreduce_sum(comm, buf.reshape(-1), xp).reshape(2, -1)
    return (buf[0] - 1).astype(np.int32), (buf[1] - 1).astype(np.int32)


def feedback_angles(net, xp, rng) -> list[float]:
    """Per weight layer, angle(B, Wᵀ) in degrees (B the feedback the rule uses).

    Where the feedback *is* W (backprop) the angle is 0 exactly: the arccos of
    a cosine computed as ⟨W, W⟩/‖W‖² can be one rounding step below 1, i.e. 8.5e-7°.
    """
    angles = []
    for layer in net.weight_layers:
        feedback = net.rule.feedback(layer, xp, rng)
        angles.append(0.0 if feedback is layer.W else angle_degrees(feedback, layer.W, xp))
    return angles


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
    """Frobenius norm of each weight layer's W, bottom up."""
    return [float(xp.linalg.norm(layer.W)) for layer in net.weight_layers]


def metrics_row(net, xp, cfg, epoch: int, metric_batch, source, comm, train_loss, epoch_seconds, lr,
                skipped) -> dict:
    """One metrics.jsonl row after ``epoch`` epochs (0: the state before training).

    Collective: every rank calls it (BatchNorm statistics are averaged over
    ranks first, and the evaluation counts are summed).
    """
    allreduce_mean_arrays(comm, bn_buffers(net))
    metric_rng = make_rng(xp, [int(cfg.seed), METRIC])
    row = {"epoch": epoch}
    if train_loss is not None:
        row["train_loss"] = train_loss
    eval_skipped = source.eval_skipped
    row.update(evaluate(net, source, xp, comm))
    validates = getattr(source, "n_validation", 0) > 0
    if validates:
        val_skipped = source.val_skipped
        row.update(evaluate(net, source, xp, comm, part="val"))
    row["angles_deg"] = feedback_angles(net, xp, metric_rng)
    row["delta_angles_deg"] = delta_angles(net, *metric_batch, xp, metric_rng)
    row["weight_norms"] = weight_norms(net, xp)
    row["epoch_seconds"] = epoch_seconds
    row["lr"] = lr
    if source.counts_skips:
        eval_skipped = source.eval_skipped - eval_skipped
        if comm.size > 1:
            eval_skipped = int(allreduce_sum(comm, [eval_skipped], xp)[0])
        row["skipped_images"] = int(skipped)
        row["skipped_eval_images"] = int(eval_skipped)
        if validates:
            val_skipped = source.val_skipped - val_skipped
            if comm.size > 1:
                val_skipped = int(allreduce_sum(comm, [val_skipped], xp)[0])
            row["skipped_val_images"] = int(val_skipped)
    return row


def epoch_line(label: str, row: dict, used: list[bool] | None = None) -> str:
    """The one line printed after each epoch.

    ``used``: per weight layer, does its B carry an error? The angle of one
    that does not (the input layer's) is printed in parentheses.
    """
    angles = marked_angles(row["angles_deg"], used, sep="/")
    skipped = f"  skipped {row['skipped_images']} images" if row.get("skipped_images") else ""
    val = f"val error {row['val_top1_error']:.2f}%  " if "val_top1_error" in row else ""
    return (f"[{label}] epoch {row['epoch']}: loss {row.get('train_loss', float('nan')):.4f}  "
            f"{val}test error {row['test_top1_error']:.2f}%  angle(B,W^T) {angles} deg  "
            f"{row['epoch_seconds']:.1f}s{skipped}")
