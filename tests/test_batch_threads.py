"""A training batch split over CPU threads gives the plain step's loss and gradients."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from weightmirror.circuits.rules import make_rule
from weightmirror.models.batch_threads import BatchThreads, blas_threads, split_reason
from weightmirror.models.layers import softmax_cross_entropy
from weightmirror.models.zoo import build_model

threadpoolctl = pytest.importorskip("threadpoolctl")


def _net(model, rule_name, seed=0):
    rng = np.random.default_rng(seed)
    if model == "mlp":
        net = build_model("mlp", (64,), 10, make_rule(rule_name), np, rng, hidden=[50, 40])
    else:
        net = build_model("convnet", (1, 12, 12), 10, make_rule(rule_name), np, rng, channels=(4, 6), hidden=16)
    x = rng.standard_normal((48, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    return net, x, y


def _plain(net, x, y, seed=5):
    loss, d = softmax_cross_entropy(net.forward(x, True), y, np)
    net.backward(d, rng=np.random.default_rng(seed))
    return loss, [g.copy() for m in net.parameter_modules() for g in m.grads.values()]


def _split(net, x, y, threads, seed=5):
    loss, _ = BatchThreads(net, threads).loss_and_gradients(x, y, np.random.default_rng(seed))
    return loss, [g.copy() for m in net.parameter_modules() for g in m.grads.values()]


@pytest.mark.parametrize("model", ["mlp", "convnet"])
@pytest.mark.parametrize("rule", ["bp", "fa", "usf", "brsf", "kp"])
@pytest.mark.parametrize("threads", [2, 3])
def test_the_split_step_is_the_plain_step(model, rule, threads):
    """Shards through replicas that share the parameters: the batch's loss and the sum of the
    shards' gradients equal the plain pass's (float32 rounding apart), batch-random sign
    symmetry drawing the same magnitudes."""
    net, x, y = _net(model, rule)
    loss0, g0 = _plain(net, x, y)
    net, x, y = _net(model, rule)
    loss1, g1 = _split(net, x, y, threads)
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6 * float(np.abs(a).max()))


def test_where_the_batch_is_split():
    mlp, _, _ = _net("mlp", "bp")
    conv, _, _ = _net("convnet", "bp")
    bn = build_model("convnet", (1, 12, 12), 10, make_rule("bp"), np, np.random.default_rng(0), batchnorm=True)
    assert split_reason(conv, np) == ""
    assert "no convolution" in split_reason(mlp, np) and split_reason(mlp, np, for_speed=False) == ""
    assert "batch norm" in split_reason(bn, np, for_speed=False)
    assert "not on the CPU" in split_reason(conv, object())
    with pytest.raises(ValueError, match="batch norm"):
        BatchThreads(bn, 2)


def test_a_replaced_parameter_reaches_the_replicas():
    """A loaded checkpoint may replace parameter arrays: the replicas are rebuilt."""
    net, x, y = _net("convnet", "fa")
    split = BatchThreads(net, 2)
    split.loss_and_gradients(x, y, np.random.default_rng(5))
    conv = net.weight_layers[1]
    conv.params["W"] = conv.params["W"] * np.float32(2.0)  # a new array, not written in place
    loss1, _ = split.loss_and_gradients(x, y, np.random.default_rng(5))
    g1 = [g.copy() for m in net.parameter_modules() for g in m.grads.values()]
    loss0, g0 = _plain(net, x, y)
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6 * float(np.abs(a).max()))


def test_the_blas_threads_and_the_callers_error_handling_hold():
    """The BLAS is back at its thread count after the step, and the shards' threads follow the
    caller's NumPy error handling (an overflow under ``errstate(all="ignore")`` stays quiet)."""
    net, x, y = _net("convnet", "bp")
    with threadpoolctl.threadpool_limits(2):
        before = blas_threads()
        split = BatchThreads(net, 2)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            split.loss_and_gradients(x * np.float32(1e38), y, np.random.default_rng(5))
        assert blas_threads() == before


def test_training_splits_a_convnet_batch_and_learns_the_same(tmp_path):
    """``run.split_batch`` on and off: the same run, to float32 rounding, with two BLAS threads."""
    from weightmirror.sims import config
    from weightmirror.sims.training import loop, train

    base = {"model": "convnet", "data": "digits", "epochs": 1, "batch_size": 64, "rule": "kp",
            "model_options": {"channels": [4], "hidden": 16}}
    used = []
    real = loop.batch_threads_for

    def spy(*args, **kwargs):
        split = real(*args, **kwargs)
        used.append(split is not None)
        return split

    losses = {}
    with threadpoolctl.threadpool_limits(2):
        if blas_threads() < 2:
            pytest.skip("the BLAS runs one thread here")
        loop.batch_threads_for = spy
        try:
            for on in (True, False):
                cfg = config.resolve({**base, "run": {"split_batch": on}})
                run = train(cfg, tmp_path / f"split-{on}", progress=False)
                losses[on] = run.summary["train_loss"]
        finally:
            loop.batch_threads_for = real
    assert used == [True, False]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
