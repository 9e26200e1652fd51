"""Convolution, batch norm and pooling against loop references and finite differences."""
import numpy as np
import pytest

from weightmirror.circuits.rules import KolenPollack, WeightMirror, angle_degrees, make_rule
from weightmirror.models.conv import Conv2d
from weightmirror.models.layers import BackwardContext, Network, ReLU
from weightmirror.models.norm import BatchNorm2d
from weightmirror.models.pool import Flatten, GlobalAvgPool, MaxPool2d
from weightmirror.models.resnet import build_convnet

F64 = np.float64


def ctx_bp(rule="bp"):
    return BackwardContext(make_rule(rule), np, np.random.default_rng(0), use_backprop=(rule == "bp"))


def conv_reference(x, W, b, stride, pad):
    """Direct loop: v[n,o,i,j] = b[o] + Σ W[o,c,a,e] x_pad[n,c,s i+a,s j+e]."""
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    v = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp_[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            v[:, :, i, j] = np.einsum("ncae,ocae->no", patch, W)
    if b is not None:
        v += b[None, :, None, None]
    return v


def conv_reference_grads(x, W, dy, stride, pad):
    """Loop references for dx (through W) and dW of the convolution."""
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp_)
    dW = np.zeros_like(W)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            sl = (slice(None), slice(None), slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw))
            dxp[sl] += np.einsum("no,ocae->ncae", dy[:, :, i, j], W)
            dW += np.einsum("no,ncae->ocae", dy[:, :, i, j], xp_[sl])
    return dxp[:, :, pad:pad + h, pad:pad + w], dW


GEOMETRIES = [  # c_in, c_out, k, stride, pad, bias, hw
    (3, 4, 3, 1, 1, True, (7, 6)),
    (2, 5, 3, 2, 1, False, (8, 9)),
    (3, 2, 1, 1, 0, True, (5, 5)),
    (4, 3, 1, 2, 0, False, (7, 6)),
    (2, 3, 5, 2, 2, True, (9, 9)),
    (1, 2, 2, 2, 0, True, (6, 6)),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_forward_and_gradients_match_loop_reference(geom):
    c_in, c_out, k, s, p, bias, hw = geom
    rng = np.random.default_rng(1)
    conv = Conv2d(c_in, c_out, k, np, rng, stride=s, padding=p, bias=bias, dtype=F64)
    if bias:
        conv.params["b"][...] = rng.standard_normal(c_out)
    x = rng.standard_normal((3, c_in, *hw))
    v = conv.forward(x)
    ref = conv_reference(x, conv.W, conv.params.get("b"), s, p)
    assert v.shape == ref.shape and v.shape[2:] == conv.output_hw(hw)
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(v.shape)
    dx = conv.backward(dy, ctx_bp())
    dx_ref, dW_ref = conv_reference_grads(x, conv.W, dy, s, p)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], dW_ref, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(conv.grads["b"], dy.sum(axis=(0, 2, 3)))
    # the weight gradient is the layer's Hebbian correlation op
    np.testing.assert_allclose(conv.hebbian(pre=x, post=dy), dW_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.linear_response(x), conv_reference(x, conv.W, None, s, p), atol=1e-12)


def _fd_check(f, arr, grad, rng, n_dirs=4, eps=1e-6, rtol=1e-6):
    """Central differences of scalar f along random directions of ``arr``."""
    for _ in range(n_dirs):
        d = rng.standard_normal(arr.shape)
        arr += eps * d
        fp = f()
        arr -= 2 * eps * d
        fm = f()
        arr += eps * d
        num = (fp - fm) / (2 * eps)
        ana = float((grad * d).sum())
        assert abs(num - ana) <= rtol * max(1.0, abs(num)), (num, ana)


def test_conv_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    conv = Conv2d(3, 4, 3, np, rng, stride=2, padding=1, dtype=F64)
    x = rng.standard_normal((2, 3, 7, 7))
    r = rng.standard_normal((2, 4, 4, 4))
    loss = lambda: float((conv.forward(x) * r).sum())  # noqa: E731
    loss()
    dx = np.array(conv.backward(r, ctx_bp()))
    dW = conv.grads["W"].copy()
    _fd_check(loss, x, dx, rng)
    _fd_check(loss, conv.params["W"], dW, rng)


def test_conv_accepts_channel_major_views_and_float32():
    rng = np.random.default_rng(3)
    conv = Conv2d(3, 5, 3, np, rng, padding=1)
    x = rng.standard_normal((4, 3, 6, 6), dtype=np.float32)
    x_cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    v1, v2 = conv.forward(x), conv.forward(x_cm)
    assert v1.dtype == np.float32
    np.testing.assert_allclose(v1, v2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v1, conv_reference(x.astype(F64), conv.W.astype(F64), conv.params["b"], 1, 1),
                               rtol=1e-4, atol=1e-4)


def test_first_layer_skips_input_gradient():
    rng = np.random.default_rng(4)
    net = build_convnet((1, 8, 8), 3, make_rule("fa"), np, rng, channels=(2,), hidden=4)
    assert net.modules[0].needs_input_grad is False
    logits = net.forward(rng.standard_normal((2, 1, 8, 8), dtype=np.float32))
    assert logits.shape == (2, 3)
    assert net.modules[0].backward(np.ones((2, 2, 8, 8), np.float32), ctx_bp("fa")) is None
    assert "W" in net.modules[0].grads


def _all_grads(net):
    return [g.copy() for m in net.parameter_modules() for g in m.grads.values()]


def test_feedback_alignment_with_B_equal_W_gives_exactly_backprop():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 12, 12), dtype=np.float32)
    y = np.array([0, 2, 1])
    from weightmirror.models.layers import softmax_cross_entropy

    grads = {}
    for rule in ("bp", "fa"):
        net = build_convnet((1, 12, 12), 3, make_rule(rule), np, np.random.default_rng(6), channels=(4, 6), hidden=8)
        if rule == "fa":
            for layer in net.weight_layers:
                assert layer.B is not None and angle_degrees(layer.B, layer.W) > 60
                layer.B = layer.W.copy()
        _, g = softmax_cross_entropy(net.forward(x), y, np)
        record = []
        net.backward(g, rng, record=record)
        grads[rule] = (_all_grads(net), record)
    for a, b in zip(grads["bp"][0], grads["fa"][0]):
        assert np.array_equal(a, b)
    assert len(grads["bp"][1]) == 4
    for a, b in zip(grads["bp"][1], grads["fa"][1]):
        assert np.array_equal(a, b)


def test_weight_mirror_aligns_a_convolution():
    rng = np.random.default_rng(7)
    conv = Conv2d(4, 8, 3, np, rng, padding=1, input_hw=(12, 12))
    rule = WeightMirror(sigma=1.0, lr=0.05, decay=0.05, mirror_batch_size=16)
    conv.init_feedback(rule, np, rng)
    assert conv.mirror_input_shape == (4, 12, 12)
    before = angle_degrees(conv.B, conv.W)
    assert 80 < before < 100
    rule.mirror_phase([conv], np, rng, batches=60, lr=rule.lr, decay=rule.decay)
    after = angle_degrees(conv.B, conv.W)
    assert after < 10, (before, after)


def test_mirror_counts_make_the_hebbian_estimate_unbiased():
    """The rule divides the convolution's Hebbian sum by n(a, e): E[H] = σ² W for each tap."""
    rng = np.random.default_rng(8)
    conv = Conv2d(2, 3, 3, np, rng, stride=2, padding=1, input_hw=(5, 6))
    counts = conv.mirror_counts()
    # 3x3 outputs; rows 2i+a-1 inside [0, 5): a=0,1,2 -> 2,3,2; cols in [0, 6) -> 2,3,3
    np.testing.assert_array_equal(counts, np.outer([2, 3, 2], [2, 3, 3]))
    rule = WeightMirror(sigma=0.5, mirror_batch_size=4000)
    H = rule.hebbian_estimate(conv, np, rng, 4000)
    np.testing.assert_allclose(H, 0.25 * conv.W, atol=0.02 * np.abs(conv.W).max() + 0.01)


def test_kolen_pollack_shrinks_the_conv_difference_by_exactly_one_minus_lambda():
    rng = np.random.default_rng(9)
    conv = Conv2d(3, 4, 3, np, rng, padding=1, dtype=F64)
    rule = KolenPollack()
    conv.init_feedback(rule, np, rng)
    conv.B = conv.B.astype(F64)
    x = rng.standard_normal((2, 3, 5, 5))
    lr, wd = 0.125, 0.0625  # shrink = 1 - 2**-7, exact in float32 as the rule applies it
    shrink = 1 - lr * wd
    gap = np.linalg.norm(conv.W - conv.B)
    for _ in range(5):
        dy = rng.standard_normal((2, 4, 5, 5))
        conv.forward(x)
        conv.backward(dy, BackwardContext(rule, np, rng))
        step = -lr * conv.grads["W"]
        conv.W *= shrink
        conv.W += step
        rule.after_weight_update(conv, step, shrink, np)
        new_gap = np.linalg.norm(conv.W - conv.B)
        np.testing.assert_allclose(new_gap, shrink * gap, rtol=1e-12)
        gap = new_gap


def test_batchnorm_forward_backward_and_eval_statistics():
    rng = np.random.default_rng(10)
    bn = BatchNorm2d(3, np, dtype=F64)
    bn.params["gamma"][...] = rng.standard_normal(3)
    bn.params["beta"][...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 3, 2)) * 2 + 1
    y = bn.forward(x)
    yhat = (y - bn.params["beta"][:, None, None]) / bn.params["gamma"][:, None, None]
    np.testing.assert_allclose(yhat.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(yhat.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    # running stats after one batch, PyTorch convention (unbiased var)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.buffers["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1))
    r = rng.standard_normal(y.shape)
    loss = lambda: float((bn.forward(x) * r).sum())  # noqa: E731
    bn.forward(x)
    dx = bn.backward(r, ctx_bp())
    dgamma, dbeta = bn.grads["gamma"].copy(), bn.grads["beta"].copy()
    _fd_check(loss, x, dx, rng)
    _fd_check(loss, bn.params["gamma"], dgamma, rng)
    _fd_check(loss, bn.params["beta"], dbeta, rng)
    # eval mode uses the running statistics, not the batch's
    bn.buffers["running_mean"][...] = [1.0, -2.0, 0.5]
    bn.buffers["running_var"][...] = [4.0, 0.25, 1.0]
    ye = bn.forward(x, train=False)
    g, b = bn.params["gamma"], bn.params["beta"]
    ref = (x - bn.buffers["running_mean"][:, None, None]) / np.sqrt(bn.buffers["running_var"] + bn.eps)[:, None, None]
    np.testing.assert_allclose(ye, ref * g[:, None, None] + b[:, None, None], rtol=1e-12)


def test_batchnorm_buffers_are_saved_in_network_state():
    rng = np.random.default_rng(11)
    net = Network([Conv2d(1, 2, 3, np, rng, bias=False), BatchNorm2d(2, np), ReLU()], make_rule("bp"), np)
    net.forward(rng.standard_normal((2, 1, 5, 5), dtype=np.float32))
    state = net.state()
    assert {"1.running_mean", "1.running_var", "1.gamma", "1.beta", "0.W"} <= set(state)
    saved = {k: v.copy() for k, v in state.items()}
    net.modules[1].buffers["running_mean"][...] = 7
    net.load_state(saved)
    np.testing.assert_array_equal(net.modules[1].buffers["running_mean"], saved["1.running_mean"])


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_forward_and_gradient(k, s, p):
    rng = np.random.default_rng(12)
    pool = MaxPool2d(k, s, p)
    x = rng.standard_normal((2, 3, 7, 6))
    y = pool.forward(x)
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    ref = np.empty(y.shape)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            ref[:, :, i, j] = xpad[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    np.testing.assert_array_equal(y, ref)
    r = rng.standard_normal(y.shape)
    dx = pool.backward(r, ctx_bp())
    _fd_check(lambda: float((pool.forward(x) * r).sum()), x, dx, rng, eps=1e-7)


def test_global_average_pool_and_flatten():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 4, 5))
    gap, flat = GlobalAvgPool(), Flatten()
    np.testing.assert_allclose(gap.forward(x), x.mean(axis=(2, 3)))
    dy = rng.standard_normal((2, 3))
    np.testing.assert_allclose(gap.backward(dy, ctx_bp()), np.broadcast_to(dy[:, :, None, None] / 20, x.shape))
    f = flat.forward(x)
    np.testing.assert_array_equal(f, x.reshape(2, -1))
    np.testing.assert_array_equal(flat.backward(f, ctx_bp()), x)


def test_conv_response_layer_uses_identity_before_batchnorm_and_relu_in_convnet():
    rng = np.random.default_rng(14)
    conv = Conv2d(1, 2, 3, np, rng, bias=False)
    v = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(conv.activation_response(v), v)
    net = build_convnet((1, 8, 8), 2, make_rule("bp"), np, rng, channels=(2,), hidden=0)
    first = net.modules[0]
    first.params["b"][...] = [0.5, -0.5]
    out = first.activation_response(v)
    np.testing.assert_allclose(out, np.maximum(v + np.float32([0.5, -0.5])[:, None, None], 0))


def test_maxpool_routes_ties_to_the_first_maximum():
    x = np.array([[[[0.0, 0.0, 1.0, 3.0],
                    [0.0, 0.0, 3.0, 2.0]]]], dtype=np.float32)
    for pool in (MaxPool2d(2), MaxPool2d(2, 1)):
        y = pool.forward(x)
        dx = pool.backward(np.ones_like(y), ctx_bp())
        ref = np.zeros_like(x)
        for j in range(y.shape[3]):  # first (row-major) maximal tap of each window
            win = x[0, 0, :, j * pool.stride:j * pool.stride + 2]
            a, e = np.unravel_index(np.argmax(win), win.shape)
            ref[0, 0, a, j * pool.stride + e] += 1
        np.testing.assert_array_equal(dx, ref)


def test_every_conv_entry_point_checks_the_channel_count():
    c = Conv2d(3, 4, 3, np, np.random.default_rng(0), padding=1)
    x = np.ones((1, 2, 5, 5), np.float32)
    for call in (lambda: c.forward(x), lambda: c.linear_response(x),
                 lambda: c.hebbian(x, np.ones((1, 4, 5, 5), np.float32))):
        with pytest.raises(ValueError, match="expected 3 input channels, got 2"):
            call()
