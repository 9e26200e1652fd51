"""The fused GPU kernels' layout logic, on NumPy stand-ins for the CuPy kernels.

``models.fused`` builds its CuPy kernels lazily in ``_kernels()``; here that
table is replaced by NumPy functions with the same call conventions (a
ReductionKernel reduces its broadcast inputs over ``axis``; an
ElementwiseKernel maps broadcast inputs to outputs), so the views, reshapes,
per-channel broadcasting and the equations are checked against the plain
NumPy batch norm of ``models.conv`` on a CPU, for both memory layouts. The
kernel sources themselves run in the gpu-marked test at the end.
"""
import numpy as np
import pytest

from models import fused
from models.backend import make_rng
from models.conv import BatchNorm2d
from models.layers import BackwardContext


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

    return {
        "sgd": sgd,
        "sum_sq_dev": reduction(lambda x, m: (x - m) * (x - m)),
        "sum_prod": reduction(lambda x, z: x * z),
        "bn_forward": bn_forward,
        "bn_backward": lambda dy, xhat, scale, db, dg: scale * (dy - db - xhat * dg),
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

    y, xhat, mean, var, inv = fused.batchnorm_train(x, bn.params["gamma"], bn.params["beta"], bn.eps)
    np.testing.assert_allclose(y, ref_y, rtol=1e-10, atol=1e-12)
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
        return float((w * fused.batchnorm_train(v, gamma, beta, 1e-5)[0]).sum())

    _, xhat, _, _, inv = fused.batchnorm_train(x, gamma, beta, 1e-5)
    dx = fused.batchnorm_backward(w, xhat, gamma, inv)[0]
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 1, 2, 1)]:
        e = np.zeros_like(x)
        e[idx] = h
        assert dx[idx] == pytest.approx((loss(x + e) - loss(x - e)) / (2 * h), rel=1e-5, abs=1e-8)


def test_channel_sum_any_layout():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2, 4, 3, 5))
    views = [base, np.ascontiguousarray(base.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3),
             base[:, :, ::-1, :]]
    for v in views:
        np.testing.assert_allclose(fused.channel_sum(v), v.sum(axis=(0, 2, 3)), rtol=1e-12)


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
        y, xhat, mean, var, inv = fused.batchnorm_train(xg, cp.ones(6, cp.float32), cp.zeros(6, cp.float32), 1e-5)
        np.testing.assert_allclose(cp.asnumpy(y), ref_y, rtol=1e-4, atol=1e-5)
        dx = fused.batchnorm_backward(cp.asarray(dy), xhat, cp.ones(6, cp.float32), inv)[0]
        np.testing.assert_allclose(cp.asnumpy(dx), ref_dx, rtol=1e-3, atol=1e-4)
    y = cp.asarray(x - 2)
    np.testing.assert_array_equal(cp.asnumpy(fused.relu_backward(cp.asarray(dy), y)), np.where(x - 2 > 0, dy, 0))
    assert fused.enabled(), fused.failure()


@pytest.mark.parametrize("rule_name,momentum,nesterov,wd", [
    ("bp", 0.9, False, 1e-3), ("kp", 0.9, True, 1e-3), ("fa", 0.0, False, 0.0), ("kp", 0.0, False, 1e-2)])
def test_fused_sgd_matches_plain_sgd(numpy_kernels, monkeypatch, rule_name, momentum, nesterov, wd):
    from circuits.rules import make_rule
    from models.mlp import build_mlp
    from models.optim import SGD

    results = []
    for use_fused in (False, True):
        rule = make_rule(rule_name)
        net = build_mlp([6, 5, 3], rule, np, make_rng(np, 0))
        opt = SGD(net.parameter_modules(), rule, np, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        monkeypatch.setattr(SGD, "_fused", (lambda self: fused) if use_fused else (lambda self: None))
        rng = np.random.default_rng(5)
        for t in range(3):
            for m in net.parameter_modules():
                for name, prm in m.params.items():
                    m.grads[name] = rng.standard_normal(prm.shape).astype(prm.dtype)
            opt.step(0.1, progress=t / 10)
        results.append([l.W.copy() for l in net.weight_layers] + [l.B.copy() for l in net.weight_layers if l.B is not None]
                       + [v.copy() for vel in opt.velocity for v in vel.values()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
