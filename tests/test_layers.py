"""Rate-mode layers, loss and optimiser against independent references."""
import numpy as np
import pytest

from weightmirror.circuits.rules import make_rule
from weightmirror.models.layers import Linear, ReLU, Sigmoid, Tanh, softmax_cross_entropy
from weightmirror.models.mlp import build_mlp
from weightmirror.models.optim import SGD, Schedule


def _float64(net):
    for m in net.modules:
        for k, v in m.params.items():
            m.params[k] = v.astype(np.float64)
        if getattr(m, "B", None) is not None:
            m.B = m.B.astype(np.float64)
    return net


def _loss(net, x, y):
    return softmax_cross_entropy(net.forward(x, train=False), y, np)[0]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_backprop_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(3)
    net = _float64(build_mlp([6, 7, 5, 4], make_rule("bp"), np, rng, activation=activation))
    x = rng.standard_normal((9, 6))
    y = rng.integers(0, 4, 9)
    _, d = softmax_cross_entropy(net.forward(x), y, np)
    net.backward(d)
    eps = 1e-6
    for layer in net.weight_layers:
        for name in ("W", "b"):
            p = layer.params[name]
            numeric = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = _loss(net, x, y)
                p[idx] = old - eps
                down = _loss(net, x, y)
                p[idx] = old
                numeric[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(layer.grads[name], numeric, rtol=1e-5, atol=1e-8)


def test_fa_with_b_held_at_w_equals_backprop():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 10)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    nets = {}
    for name in ("bp", "fa"):
        nets[name] = build_mlp([10, 8, 8, 3], make_rule(name), np, np.random.default_rng(5))
    for layer in nets["fa"].weight_layers:
        layer.B = layer.W.copy()
    for net in nets.values():
        _, d = softmax_cross_entropy(net.forward(x), y, np)
        net.backward(d)
    for a, b in zip(nets["bp"].weight_layers, nets["fa"].weight_layers):
        np.testing.assert_array_equal(a.grads["W"], b.grads["W"])
    # and with B != W the hidden gradients differ (the test could fail)
    nets["fa"].weight_layers[-1].B *= -1
    _, d = softmax_cross_entropy(nets["fa"].forward(x), y, np)
    nets["fa"].backward(d)
    assert not np.allclose(nets["bp"].weight_layers[0].grads["W"], nets["fa"].weight_layers[0].grads["W"])


def test_softmax_cross_entropy_reference_and_label_smoothing():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 7)).astype(np.float64) * 3
    y = np.array([0, 3, 6, 2, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loss, grad = softmax_cross_entropy(logits.copy(), y, np)
    assert loss == pytest.approx(-np.log(p[np.arange(5), y]).mean(), rel=1e-10)
    t = np.eye(7)[y]
    np.testing.assert_allclose(grad, (p - t) / 5, atol=1e-12)
    eps = 0.1
    loss_s, grad_s = softmax_cross_entropy(logits.copy(), y, np, label_smoothing=eps)
    ts = (1 - eps) * t + eps / 7
    assert loss_s == pytest.approx(-(ts * np.log(p)).sum(1).mean(), rel=1e-10)
    np.testing.assert_allclose(grad_s, (p - ts) / 5, atol=1e-12)


@pytest.mark.parametrize("cls, fn, dfn", [
    (ReLU, lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(float)),
    (Tanh, np.tanh, lambda v: 1 - np.tanh(v) ** 2),
    (Sigmoid, lambda v: 1 / (1 + np.exp(-v)), lambda v: np.exp(-v) / (1 + np.exp(-v)) ** 2),
])
def test_activations_and_their_slopes(cls, fn, dfn):
    v = np.linspace(-3, 3, 13).reshape(1, -1) + 0.01
    m = cls()
    np.testing.assert_allclose(m.forward(v), fn(v), rtol=1e-12)
    dy = np.full_like(v, 2.0)
    np.testing.assert_allclose(m.backward(dy, None), 2.0 * dfn(v), rtol=1e-10)


def test_linear_forward_and_first_layer_skips_input_error():
    rng = np.random.default_rng(0)
    net = build_mlp([3, 4, 2], make_rule("bp"), np, rng)
    first = net.weight_layers[0]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    first.params["b"][:] = 0.5
    np.testing.assert_allclose(first.forward(x), x @ first.W.T + 0.5, rtol=1e-6)
    assert first.needs_input_grad is False
    assert net.weight_layers[1].needs_input_grad is True


def test_sgd_momentum_nesterov_and_decoupled_decay():
    layer = Linear(3, 2, np, np.random.default_rng(0))
    W0 = layer.W.astype(np.float64).copy()
    g1 = np.full((2, 3), 1.0, np.float32)
    g2 = np.full((2, 3), -2.0, np.float32)
    opt = SGD([layer], make_rule("bp"), np, momentum=0.5, nesterov=True, weight_decay=0.1)
    lr = 0.2
    W = W0.copy()
    v = np.zeros_like(W)
    for g in (g1, g2):
        layer.grads = {"W": g, "b": np.zeros(2, np.float32)}
        opt.step(lr)
        v = 0.5 * v + g
        W = (1 - lr * 0.1) * W - lr * (g + 0.5 * v)
    np.testing.assert_allclose(layer.W, W, rtol=1e-5)
    np.testing.assert_allclose(layer.params["b"], 0)  # no decay, zero gradient


def test_schedules():
    cos = Schedule(1.0, "cosine", epochs=10)
    assert cos(0) == pytest.approx(1.0)
    assert cos(5) == pytest.approx(0.5)
    assert cos(10) == pytest.approx(0.0, abs=1e-12)
    step = Schedule(1.0, "step", epochs=10, milestones=(3, 6), gamma=0.1)
    assert [step(e) for e in (0, 2.9, 3, 6.5)] == pytest.approx([1, 1, 0.1, 0.01])
    warm = Schedule(1.0, "constant", epochs=10, warmup_epochs=2)
    assert warm(1) == pytest.approx(0.5)
    assert warm(3) == 1.0
