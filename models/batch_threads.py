"""A CPU training step with its batch split over threads.

NumPy runs its matrix products on the BLAS's threads but its copies and
element-wise loops (im2col, col2im, pooling, ReLU, layout changes) on one:
in a small convnet those loops are half of a two-thread step, and one core
idles through them. Splitting the loops alone over Python threads does not
help: OpenBLAS's worker threads spin-wait after each product and hold the
other core (BENCHMARKS.md §8). So the step is split instead: the BLAS runs on
one thread, and each of ``T`` Python threads takes a contiguous share of the
batch through the whole network, products and loops alike (NumPy releases the
GIL in both). The gradient of the batch is the sum of the shards' (the loss
is the batch mean, computed once on the concatenated logits), so the step is
the same computation, summed in another order (float32 rounding apart).

Each extra thread runs a *replica* of the network: a copy of the module tree
that shares every parameter array and keeps its own caches and gradients.
The rule's feedback arrays are computed once per step, in the calling thread
and in the order the plain backward pass asks for them (so batch-random sign
symmetry draws the same numbers), and every shard reads them.

Not used (the plain step runs) where the split would change the computation
(batch norm: its statistics are the batch's; a device other than the CPU) or
would not pay (a network without convolutions: its products keep the BLAS's
threads busy, and the 784-500-500-10 MLP's step was 7 % slower split).
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy

from .conv import Conv2d
from .layers import softmax_cross_entropy
from .norm import BatchNorm2d

__all__ = ["MIN_SHARD", "BatchThreads", "blas_threads", "split_reason"]

#: the fewest examples per shard worth a thread of their own
MIN_SHARD = 16

_blas = None


def _blas_controller():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            found = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas = found[0] if found else False
        except Exception:  # noqa: BLE001 - no threadpoolctl, or it cannot see the BLAS
            _blas = False
    return _blas


def blas_threads() -> int:
    """The BLAS's thread count now (``OMP_NUM_THREADS``, ``threadpool_limits`` ...); 1 if unknown."""
    blas = _blas_controller()
    if not blas:
        return 1
    try:
        return max(1, int(blas.get_num_threads()))
    except Exception:  # noqa: BLE001
        return 1


def split_reason(net, xp, for_speed: bool = True) -> str:
    """Why the batch of ``net`` is not split over threads (``""``: it is); ``for_speed=False``:
    only the reasons that would change the computation, not those where it would not pay."""
    if xp is not numpy:
        return "not on the CPU"
    modules = [m for _, m in net.named_modules()]
    if any(isinstance(m, BatchNorm2d) for m in modules):
        return "batch norm (its statistics are the whole batch's)"
    if for_speed and not any(isinstance(m, Conv2d) for m in modules):
        # a network of matrix products keeps the BLAS's threads busy (the 784-500-500-10 MLP's
        # step was 7 % slower split: BENCHMARKS.md §8)
        return "no convolution (the BLAS's threads already keep the cores busy)"
    if not _blas_controller():
        return "the BLAS's thread count cannot be set (threadpoolctl does not see it)"
    return ""


class _StepFeedback:
    """The rule as a replica's backward pass sees it: feedback arrays computed once per step."""

    def __init__(self, rule, table: dict):
        self._rule = rule
        self._table = table

    def feedback(self, layer, xp, rng=None):
        return self._table[id(layer)]

    def __getattr__(self, name):
        return getattr(self._rule, name)


class BatchThreads:
    """Forward and backward passes of one batch, split over ``threads`` shards.

    Parameters
    ----------
    net : the network (``models.layers.Network``) on NumPy, without batch norm.
    threads : the number of shards (and threads, the calling one included).
    """

    def __init__(self, net, threads: int):
        reason = split_reason(net, numpy if net.xp is numpy else None, for_speed=False)
        if reason:
            raise ValueError(f"the batch cannot be split over threads: {reason}")
        self.net = net
        self.threads = int(threads)
        self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="weightmirror-shard")
        self._replicas: list = []
        self._param_ids: list[int] = []

    # -- replicas --------------------------------------------------------------
    def _arrays(self):
        return [p for m in self.net.parameter_modules() for p in m.params.values()]

    def _refresh(self) -> None:
        """(Re)build the replicas when a parameter array was replaced (a loaded checkpoint)."""
        ids = [id(a) for a in self._arrays()]
        if ids == self._param_ids and len(self._replicas) == self.threads - 1:
            return
        shared = {}
        for _, m in self.net.named_modules():
            for value in vars(m).values():
                if isinstance(value, numpy.ndarray):
                    shared[id(value)] = value
                elif isinstance(value, dict):
                    shared.update({id(v): v for v in value.values() if isinstance(v, numpy.ndarray)})
        replicas = []
        for _ in range(self.threads - 1):
            memo = dict(shared)  # arrays shared, never copied
            memo[id(self.net.rule)] = self.net.rule
            memo[id(numpy)] = numpy
            replica = copy.deepcopy(self.net, memo)  # modules and weight_layers: the same copies
            for _, m in replica.named_modules():
                m.grads = {}  # own gradients (a layer may write into a kept gradient array)
            replicas.append(replica)
        self._replicas = replicas
        self._param_ids = ids

    # -- the step --------------------------------------------------------------
    def bounds(self, n: int) -> list[int]:
        return [n * i // self.threads for i in range(self.threads + 1)]

    def loss_and_gradients(self, x, y, rng, label_smoothing: float = 0.0, loss_fn=softmax_cross_entropy):
        """Forward, the loss (``loss_fn(logits, y, xp, label_smoothing)``, softmax
        cross-entropy) and backward of the batch ``(x, y)``, split.

        Leaves the batch's gradients in ``net``'s modules (as ``net.backward``
        does) and returns ``(loss, dlogits)``.
        """
        net, xp = self.net, numpy
        self._refresh()
        nets = [net, *self._replicas]
        b = self.bounds(len(y))
        blas = _blas_controller()
        before = blas.get_num_threads()
        errors = xp.geterr()  # NumPy's error handling is per thread: the shards take the caller's

        def forward(r, xs):
            with xp.errstate(**errors):
                return r.forward(xs, True)

        blas.set_num_threads(1)
        try:
            futures = [self._pool.submit(forward, r, x[b[i + 1]:b[i + 2]]) for i, r in enumerate(nets[1:])]
            parts = [net.forward(x[b[0]:b[1]], True)] + [f.result() for f in futures]
            loss, dlogits = loss_fn(xp.concatenate(parts), y, xp, label_smoothing)
            # the rule's feedback, once, in the order the plain backward pass asks for it
            table = {id(layer): net.rule.feedback(layer, xp, rng)
                     for layer in reversed(net.weight_layers) if layer.needs_input_grad}
            for r in self._replicas:
                for original, twin in zip(net.weight_layers, r.weight_layers):
                    if id(original) in table:
                        table[id(twin)] = table[id(original)]
            rule = _StepFeedback(net.rule, table)

            def backward(r, d):
                with xp.errstate(**errors):
                    r.backward(d, rng=rng, rule=rule)

            futures = [self._pool.submit(backward, r, dlogits[b[i + 1]:b[i + 2]]) for i, r in enumerate(nets[1:])]
            backward(net, dlogits[b[0]:b[1]])
            for f in futures:
                f.result()
        finally:
            blas.set_num_threads(before)
        for r in self._replicas:
            for mine, theirs in zip(net.parameter_modules(), r.parameter_modules()):
                for name, g in mine.grads.items():
                    g += theirs.grads[name]
        return loss, dlogits
