"""The fused GPU kernels' layout logic, on NumPy stand-ins for the CuPy kernels.

``models.fused`` builds its CuPy kernels lazily in ``_kernels()``; here that
table is replaced by NumPy functions with the same call conventions (a
ReductionKernel reduces its broadcast inputs over ``axis``; an
ElementwiseKernel maps broadcast inputs to outputs), so the views, reshapes,
per-channel broadcasting and the equations are checked against the plain
NumPy batch norm of ``models.norm`` on a CPU, for both memory layouts. The
kernel sources themselves run in the gpu-marked test at the end.
"""
import numpy as np
import pytest

from weightmirror.models import fused
from weightmirror.models.backend import make_rng
from weightmirror.models.norm import BatchNorm2d
from weightmirror.models.layers import BackwardContext


def _numpy_kernels():
    def reduction(expr):
        return lambda *a, axis: expr(*np.broadcast_arrays(*a)).sum(axis=axis)

    def bn_forward(x, mean, inv, gamma, beta):
        xhat = (x - mean) * inv
        return xhat, xhat * gamma + beta

    def sgd(g, mu, scale, shrink, nesterov, v, p, step):
        vn = g
        if mu != 0:
            v[...] = mu * v + g
            vn = v
        step[...] = scale * (g + mu * vn) if nesterov else scale * vn
        p[...] = shrink * p + step

    def bn_stats(s2, mean, m, eps, mom, unbias, var, inv, rmean, rvar):
        var[...] = s2 / m
        inv[...] = 1 / np.sqrt(var + eps)
        rmean[...] = (1 - mom) * rmean + mom * mean
        rvar[...] = (1 - mom) * rvar + mom * unbias * var

    def maxpool_forward(x, H, W, Ho, Wo, k, s, p, y, arg):
        xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
        y[...] = -np.inf
        for t in range(k * k):  # raster order, strictly greater: the first maximum wins
            a, e = divmod(t, k)
            win = xpad[:, :, a:a + s * (Ho - 1) + 1:s, e:e + s * (Wo - 1) + 1:s]
            better = win > y
            y[better] = win[better]
            arg[better] = t

    def maxpool_backward(dy, arg, H, W, Ho, Wo, k, s, p, dx):
        n, c = dy.shape[:2]
        dxpad = np.zeros((n, c, H + 2 * p, W + 2 * p), dy.dtype)
        for t in range(k * k):
            a, e = divmod(t, k)
            dxpad[:, :, a:a + s * (Ho - 1) + 1:s, e:e + s * (Wo - 1) + 1:s] += dy * (arg == t)
        dx[...] = dxpad[:, :, p:p + H, p:p + W]

    return {
        "bn_stats": bn_stats,
        "maxpool_forward": maxpool_forward,
        "maxpool_backward": maxpool_backward,
        "sgd": sgd,
        "sum_sq_dev": reduction(lambda x, m: (x - m) * (x - m)),
        "sum_prod": reduction(lambda x, z: x * z),
        "bn_forward": bn_forward,
        "bn_backward": lambda dy, xhat, gamma, inv, db, dg, m: gamma * inv * (dy - db / m - xhat * dg / m),
        "relu_backward": lambda dy, y: np.where(y > 0, dy, 0).astype(dy.dtype),
    }


@pytest.fixture
def numpy_kernels(monkeypatch):
    monkeypatch.setattr(fused, "_kernels", _numpy_kernels)


@pytest.mark.parametrize("layout", ["nchw", "cnhw", "strided"])
def test_fused_batchnorm_matches_plain_batchnorm(numpy_kernels, layout):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 5, 4, 6)).astype(np.float64) * 2 + 1
    if layout == "nchw":
        x = base
    elif layout == "cnhw":
        x = np.ascontiguousarray(base.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    else:
        x = np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    bn = BatchNorm2d(5, np, dtype=np.float64)
    bn.params["gamma"][...] = rng.uniform(0.5, 1.5, 5)
    bn.params["beta"][...] = rng.standard_normal(5)
    ref_y = bn.forward(base.copy())
    dy = rng.standard_normal(base.shape)
    ref_dx = bn.backward(dy.copy(), BackwardContext(None, np, None))
    ref_dgamma, ref_dbeta = bn.grads["gamma"].copy(), bn.grads["beta"].copy()

    rm, rv = np.zeros(5), np.ones(5)
    y, xhat, mean, var, inv = fused.batchnorm_train(x, bn.params["gamma"], bn.params["beta"], bn.eps, rm, rv, bn.momentum)
    np.testing.assert_allclose(y, ref_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm, bn.buffers["running_mean"], rtol=1e-12)
    np.testing.assert_allclose(rv, bn.buffers["running_var"], rtol=1e-12)
    np.testing.assert_allclose(mean, base.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var, base.var(axis=(0, 2, 3)), rtol=1e-10)
    dx, dgamma, dbeta = fused.batchnorm_backward(dy, xhat, bn.params["gamma"], inv)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dgamma, ref_dgamma, rtol=1e-10)
    np.testing.assert_allclose(dbeta, ref_dbeta, rtol=1e-10)
    assert fused.batchnorm_backward(dy, xhat, bn.params["gamma"], inv, need_dx=False)[0] is None


def test_fused_batchnorm_gradient_matches_finite_differences(numpy_kernels):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 3, 3))
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    w = rng.standard_normal(x.shape)  # loss = Σ w · y

    def loss(v):
        return float((w * fused.batchnorm_train(v, gamma, beta, 1e-5, np.zeros(3), np.ones(3), 0.1)[0]).sum())

    _, xhat, _, _, inv = fused.batchnorm_train(x, gamma, beta, 1e-5, np.zeros(3), np.ones(3), 0.1)
    dx = fused.batchnorm_backward(w, xhat, gamma, inv)[0]
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 1, 2, 1)]:
        e = np.zeros_like(x)
        e[idx] = h
        assert dx[idx] == pytest.approx((loss(x + e) - loss(x - e)) / (2 * h), rel=1e-5, abs=1e-8)


def test_per_channel_sums_any_layout():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2, 4, 3, 5))
    views = [base, np.ascontiguousarray(base.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3),
             base[:, :, ::-1, :]]
    for v in views:
        view, kind = fused._channel_view(v)
        np.testing.assert_allclose(fused._per_channel(None, kind, view), v.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.gpu
def test_fused_kernels_on_gpu_match_numpy():
    cp = pytest.importorskip("cupy")
    if not cp.is_available():
        pytest.skip("no CUDA GPU")
    fused._KERNELS.clear()
    rng = make_rng(np, 3)
    x = rng.standard_normal((4, 6, 5, 7)).astype(np.float32) * 3 + 2
    bn = BatchNorm2d(6, np)
    ref_y = bn.forward(x.copy())
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ref_dx = bn.backward(dy.copy(), BackwardContext(None, np, None))
    for xg in (cp.asarray(x), cp.ascontiguousarray(cp.asarray(x).transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)):
        rm, rv = cp.zeros(6, cp.float32), cp.ones(6, cp.float32)
        y, xhat, mean, var, inv = fused.batchnorm_train(xg, cp.ones(6, cp.float32), cp.zeros(6, cp.float32), 1e-5,
                                                        rm, rv, 0.1)
        np.testing.assert_allclose(cp.asnumpy(rv), bn.buffers["running_var"], rtol=1e-4)
        np.testing.assert_allclose(cp.asnumpy(y), ref_y, rtol=1e-4, atol=1e-5)
        dx = fused.batchnorm_backward(cp.asarray(dy), xhat, cp.ones(6, cp.float32), inv)[0]
        np.testing.assert_allclose(cp.asnumpy(dx), ref_dx, rtol=1e-3, atol=1e-4)
    y = cp.asarray(x - 2)
    np.testing.assert_array_equal(cp.asnumpy(fused.relu_backward(cp.asarray(dy), y)), np.where(x - 2 > 0, dy, 0))
    assert fused.active(cp), fused.failure()


@pytest.mark.parametrize("rule_name,momentum,nesterov,wd", [
    ("bp", 0.9, False, 1e-3), ("kp", 0.9, True, 1e-3), ("fa", 0.0, False, 0.0), ("kp", 0.0, False, 1e-2)])
def test_fused_sgd_matches_plain_sgd(numpy_kernels, monkeypatch, rule_name, momentum, nesterov, wd):
    from weightmirror.circuits.rules import Progress, make_rule
    from weightmirror.models.mlp import build_mlp
    from weightmirror.models.optim import SGD

    results = []
    for use_fused in (False, True):
        rule = make_rule(rule_name)
        net = build_mlp([6, 5, 3], rule, np, make_rng(np, 0))
        opt = SGD(net.parameter_modules(), rule, np, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        monkeypatch.setattr(fused, "active", lambda xp, on=use_fused: on)
        rng = np.random.default_rng(5)
        for t in range(3):
            for m in net.parameter_modules():
                for name, prm in m.params.items():
                    m.grads[name] = rng.standard_normal(prm.shape).astype(prm.dtype)
            opt.step(0.1, progress=Progress(t, 0.1 * t, 1.0))  # inside KP's decay window
        results.append([l.W.copy() for l in net.weight_layers] + [l.B.copy() for l in net.weight_layers if l.B is not None]
                       + [v.copy() for vel in opt.velocity for v in vel.values()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _maxpool_pair(k, s, p, x):
    from weightmirror.models.pool import MaxPool2d

    ref, fast = MaxPool2d(k, s, p, xp=np), MaxPool2d(k, s, p, xp=np)
    y_ref = ref.forward(x.copy())
    dy = np.random.default_rng(7).standard_normal(y_ref.shape)
    dx_ref = ref.backward(dy.copy(), BackwardContext(None, np, None))
    return ref, fast, y_ref, dy, dx_ref


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 2, 0)])
def test_fused_maxpool_matches_plain_maxpool(numpy_kernels, monkeypatch, k, s, p):
    rng = np.random.default_rng(3)
    # ReLU-like input: many ties at 0, where the first maximal tap must win
    x = np.maximum(rng.standard_normal((2, 3, 9, 10)), 0)
    _, fast, y_ref, dy, dx_ref = _maxpool_pair(k, s, p, x)
    monkeypatch.setattr(fused, "active", lambda xp: True)
    np.testing.assert_array_equal(fast.forward(x.copy()), y_ref)
    assert fast._arg is not None, "the fused path did not run"
    np.testing.assert_allclose(fast.backward(dy.copy(), BackwardContext(None, np, None)), dx_ref, rtol=1e-12)
    # the plain routing from the stored taps (used if the backward kernel fails)
    np.testing.assert_allclose(fast._backward_from_taps(dy, np), dx_ref, rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_fused_maxpool_on_gpu_matches_numpy(k, s, p):
    cp = pytest.importorskip("cupy")
    if not cp.is_available():
        pytest.skip("no CUDA GPU")
    from weightmirror.models.pool import MaxPool2d

    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal((2, 3, 11, 12)), 0).astype(np.float32)
    _, _, y_ref, dy, dx_ref = _maxpool_pair(k, s, p, x)
    g = MaxPool2d(k, s, p, xp=cp)
    np.testing.assert_array_equal(cp.asnumpy(g.forward(cp.asarray(x))), y_ref)
    assert g._arg is not None, "the fused kernel was not used"
    np.testing.assert_allclose(cp.asnumpy(g.backward(cp.asarray(dy, dtype=cp.float32), BackwardContext(None, cp, None))),
                               dx_ref, rtol=1e-5, atol=1e-6)
    assert fused.active(cp), fused.failure()
