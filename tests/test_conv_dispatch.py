"""Conv2d's cuDNN branch, run on a CPU with a NumPy stand-in for ``models.cudnn_conv``.

The stand-in computes the three cuDNN operations from their definitions (a
direct sum over kernel taps, independent of im2col) and checks what cuDNN
would be handed: float32 arrays, C-contiguous ``(N, C, H, W)`` inputs, output
buffers of the right shape. The layer's forward, backward (weight gradient,
backward-data with the rule's feedback kernel, bias gradient) and Hebbian
product through that branch must equal the im2col branch.
"""
import numpy as np
import pytest

from weightmirror.circuits.rules import make_rule
from weightmirror.models import cudnn_conv
from weightmirror.models.backend import GPUOptions, gpu_options, make_rng, use_gpu_options
from weightmirror.models.conv import Conv2d
from weightmirror.models.layers import BackwardContext


def _pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def _taps(shape_w, shape_y, s):
    _, _, kh, kw = shape_w
    ho, wo = shape_y[2], shape_y[3]
    for a in range(kh):
        for e in range(kw):
            yield a, e, (slice(a, a + s * (ho - 1) + 1, s), slice(e, e + s * (wo - 1) + 1, s))


class FakeCudnn:
    calls: list

    def __init__(self):
        self.calls = []

    def _check(self, *arrays):
        for a in arrays:
            assert a.dtype == np.float32 and a.flags.c_contiguous

    def fprop(self, x, W, out, stride, padding):
        self._check(x, W)
        self.calls.append("fprop")
        xp_ = _pad(x, padding)
        out[...] = 0
        for a, e, (si, sj) in _taps(W.shape, out.shape, stride):
            out += np.einsum("oc,ncij->noij", W[:, :, a, e], xp_[:, :, si, sj])
        return out

    def wgrad(self, x, dy, out, stride, padding):
        self._check(x, dy)
        self.calls.append("wgrad")
        xp_ = _pad(x, padding)
        for a, e, (si, sj) in _taps(out.shape, dy.shape, stride):
            out[:, :, a, e] = np.einsum("noij,ncij->oc", dy, xp_[:, :, si, sj])
        return out

    def dgrad(self, dy, F, out, stride, padding):
        self._check(dy, F)
        self.calls.append("dgrad")
        n, c, h, w = out.shape
        dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), np.float32)
        for a, e, (si, sj) in _taps(F.shape, dy.shape, stride):
            dxp[:, :, si, sj] += np.einsum("oc,noij->ncij", F[:, :, a, e], dy)
        out[...] = dxp[:, :, padding:padding + h, padding:padding + w]
        return out


@pytest.fixture
def fake(monkeypatch):
    f = FakeCudnn()
    for name in ("fprop", "wgrad", "dgrad"):
        monkeypatch.setattr(cudnn_conv, name, getattr(f, name))
    monkeypatch.setattr(Conv2d, "_uses_cudnn", lambda self, x: True)
    return f


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 2, 2)])
def test_cudnn_branch_equals_im2col_branch(fake, monkeypatch, k, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    # channel-major input, as a previous im2col convolution returns it
    x_cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    layers = {}
    for branch in ("im2col", "cudnn"):
        layers[branch] = Conv2d(3, 4, k, np, make_rng(np, 0), stride=stride, padding=pad, bias=True)
        layers[branch].params["b"][...] = [0.1, -0.2, 0.3, 0.0]
        layers[branch].B = rng.standard_normal(layers[branch].params["W"].shape).astype(np.float32) if branch == "im2col" else layers["im2col"].B
    rule = make_rule("fa")
    out = {}
    for branch, layer in layers.items():
        if branch == "im2col":
            monkeypatch.setattr(Conv2d, "_uses_cudnn", lambda self, x: False)
        else:
            monkeypatch.setattr(Conv2d, "_uses_cudnn", lambda self, x: True)
        y = layer.forward(x_cm)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy, BackwardContext(rule, np, None))
        heb = layer.hebbian(x_cm, dy)
        lin = layer.linear_response(x_cm)
        out[branch] = (y, dx, layer.grads["W"], layer.grads["b"], heb, lin)
    assert fake.calls.count("fprop") == 2 and fake.calls.count("wgrad") == 2 and fake.calls.count("dgrad") == 1
    for a, b in zip(out["im2col"], out["cudnn"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_backprop_through_cudnn_branch_uses_w(fake):
    rng = np.random.default_rng(2)
    layer = Conv2d(2, 3, 3, np, make_rng(np, 0), padding=1, bias=False)
    layer.B = rng.standard_normal(layer.params["W"].shape).astype(np.float32)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = layer.forward(x)
    dy = np.ones_like(y)
    dx_bp = layer.backward(dy, BackwardContext(make_rule("fa"), np, None, use_backprop=True))
    dx_fa = layer.backward(dy, BackwardContext(make_rule("fa"), np, None))
    # d(Σ y)/dx by finite differences equals the backprop error, not FA's
    h = 1e-2
    e = np.zeros_like(x)
    e[1, 0, 2, 3] = h
    fd = (layer.forward(x + e).sum() - layer.forward(x - e).sum()) / (2 * h)
    assert dx_bp[1, 0, 2, 3] == pytest.approx(fd, rel=1e-3)
    assert abs(dx_fa[1, 0, 2, 3] - fd) > 1e-2


def test_conv_algorithm_option_rejects_unknown_names():
    with pytest.raises(ValueError, match="allowed: auto, im2col, cudnn"):
        GPUOptions(conv_algorithm="winograd")
    with pytest.raises(ValueError, match="allowed: auto, im2col, cudnn"):
        with use_gpu_options(conv_algorithm="winograd"):
            pass
    assert gpu_options().conv_algorithm == "auto"


def test_numpy_never_takes_the_cudnn_branch():
    with use_gpu_options(conv_algorithm="cudnn"):
        layer = Conv2d(2, 3, 3, np, make_rng(np, 0), padding=1)
        layer.forward(np.ones((1, 2, 4, 4), np.float32))
        assert layer._x is None and layer._cols is not None
    assert gpu_options().conv_algorithm == "auto"
