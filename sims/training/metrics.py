"""What a training run measures: errors, angle(B, Wᵀ), angle(δ, δ_BP), weight norms.

One metrics row per epoch (epoch 0 = the state before training), written to
``metrics.jsonl``:

``train_loss``
    mean training loss of the epoch's steps;
``test_loss``, ``test_top1_error``, ``test_top5_error``
    over the whole test (val) set, errors in percent;
``angles_deg``
    per weight layer, bottom up, the angle between the feedback the rule
    uses and W (B is stored in W's layout, see ``circuits.rules``), degrees;
``delta_angles_deg``
    per weight layer, the angle between the rule's δ and backprop's δ on a
    fixed training batch (NaN, ``null`` in JSON, where no error arrives);
``weight_norms``, ``epoch_seconds``, ``lr`` and, for the ImageNet
folders, ``skipped_images`` / ``skipped_eval_images``.

Every function that takes a ``comm`` is collective: every rank calls it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...circuits.rules import angle_degrees
from ...models.backend import make_rng
from ...models.layers import softmax_cross_entropy
from ..distributed import Communicator, allreduce_mean_arrays, allreduce_sum
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


def evaluate(net, source, xp, comm: Optional[Communicator] = None) -> dict:
    """Loss and top-1 / top-5 error (percent) over the source's whole test (val) set.

    Each rank evaluates its part; the sums are added over ranks, so every
    rank returns the same figures.
    """
    sums = _eval_sums(net, source.eval_batches(), xp)
    if comm is not None and comm.size > 1:
        sums = allreduce_sum(comm, sums, xp)
    n = max(sums[3], 1.0)
    return {"test_loss": float(sums[0] / n), "test_top1_error": float(100.0 * sums[1] / n),
            "test_top5_error": float(100.0 * sums[2] / n)}


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
    return row


def epoch_line(label: str, row: dict) -> str:
    """The one line printed after each epoch."""
    angles = "/".join(f"{a:.1f}" for a in row["angles_deg"])
    skipped = f"  skipped {row['skipped_images']} images" if row.get("skipped_images") else ""
    return (f"[{label}] epoch {row['epoch']}: loss {row.get('train_loss', float('nan')):.4f}  "
            f"test error {row['test_top1_error']:.2f}%  angle(B,W^T) {angles} deg  "
            f"{row['epoch_seconds']:.1f}s{skipped}")
