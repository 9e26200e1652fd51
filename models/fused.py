"""Fused GPU kernels for the memory-bound parts of a convolutional network.

Batch normalisation and the ReLU's backward pass read and write whole
activation tensors; written as separate CuPy operations each of them passes
over memory several times. Here each is one or two CuPy kernels (elementwise
or reduction) with the same equations as the NumPy code in ``models.conv`` and
``models.layers``:

``batchnorm_train``:  ``μ_c = mean x``, ``σ²_c = mean (x - μ_c)²`` (two passes,
    as in NumPy, so no cancellation), then ONE pass writing ``x̂ = (x - μ_c) /
    sqrt(σ²_c + ε)`` and ``y = γ_c x̂ + β_c``;
``batchnorm_backward``:  ``Σ δ`` and ``Σ δ x̂`` per channel, then ONE pass
    ``dx = γ_c / sqrt(σ²_c + ε) · (δ - Σδ/M - x̂ Σδx̂ / M)``;
``relu_backward``:  ``dx = δ · [y > 0]`` in one pass;
``sgd_update``:  the optimiser's whole update of one parameter in one pass,
    ``v ← μ v + g``, ``s = -η (g + μ v)`` (Nesterov) or ``-η v``, ``p ← k p + s``
    (in place on v, p and the kept step array s).

Per-channel sums run over a contiguous view: ``(N, C, H·W)`` for NCHW arrays
(reduced over the last axis, then over N), ``(C, N·H·W)`` for channel-major
ones. Everything else falls back to a contiguous copy.

Kernels compile on first use. If compiling or launching one fails, the
callers in ``models`` switch back to their plain CuPy operations for the rest
of the process (``enabled()`` turns False and ``failure()`` says why), so a
toolchain problem costs speed, never a run.
"""
from __future__ import annotations

from .backend import array_module_of

__all__ = ["enabled", "failure", "disable", "channel_sum", "batchnorm_train",
           "batchnorm_backward", "relu_backward", "sgd_update"]

_STATE = {"enabled": True, "failure": None}
_KERNELS: dict = {}


def enabled() -> bool:
    """Whether the fused kernels are in use (False after a failure or ``disable``)."""
    return _STATE["enabled"]


def failure() -> str | None:
    """Why the kernels were switched off, if they were."""
    return _STATE["failure"]


def disable(reason: str = "disabled by the caller") -> None:
    """Switch the fused kernels off for the rest of the process."""
    _STATE["enabled"] = False
    _STATE["failure"] = reason


def _kernels():
    if _KERNELS:
        return _KERNELS
    import cupy

    _KERNELS["sum_sq_dev"] = cupy.ReductionKernel(
        "T x, T m", "T y", "(x - m) * (x - m)", "a + b", "y = a", "0", "wm_sum_sq_dev")
    _KERNELS["sum_prod"] = cupy.ReductionKernel(
        "T x, T z", "T y", "x * z", "a + b", "y = a", "0", "wm_sum_prod")
    _KERNELS["bn_forward"] = cupy.ElementwiseKernel(
        "T x, T mean, T inv, T gamma, T beta", "T xhat, T y",
        "xhat = (x - mean) * inv; y = xhat * gamma + beta", "wm_bn_forward")
    _KERNELS["bn_backward"] = cupy.ElementwiseKernel(
        "T dy, T xhat, T scale, T db, T dg", "T dx",
        "dx = scale * (dy - db - xhat * dg)", "wm_bn_backward")
    _KERNELS["sgd"] = cupy.ElementwiseKernel(
        "T g, T mu, T scale, T shrink, int32 nesterov", "T v, T p, T step",
        """
        T vn = g;
        if (mu != (T)0) { vn = mu * v + g; v = vn; }
        T s = nesterov ? scale * (g + mu * vn) : scale * vn;
        step = s;
        p = shrink * p + s;
        """, "wm_sgd_update")
    _KERNELS["relu_backward"] = cupy.ElementwiseKernel(
        "T dy, T y", "T dx", "dx = y > (T)0 ? dy : (T)0", "wm_relu_backward")
    return _KERNELS


def _channel_view(x):
    """``(view, kind)``: x as ``(N, C, HW)`` ('nchw') or ``(C, NHW)`` ('cnhw')."""
    xp = array_module_of(x)
    n, c, h, w = x.shape
    if x.flags.c_contiguous:
        return x.reshape(n, c, h * w), "nchw"
    xt = x.transpose(1, 0, 2, 3)
    if xt.flags.c_contiguous:
        return xt.reshape(c, n * h * w), "cnhw"
    return xp.ascontiguousarray(x).reshape(n, c, h * w), "nchw"


def _per_channel(kernel, kind, *views):
    """Reduce per channel with ``kernel`` (a ReductionKernel or None for a sum)."""
    if kind == "nchw":
        partial = views[0].sum(axis=2) if kernel is None else kernel(*views, axis=2)
        return partial.sum(axis=0)
    return views[0].sum(axis=1) if kernel is None else kernel(*views, axis=1)


def channel_sum(x):
    """``Σ_{n,h,w} x[n, c, h, w]`` for every channel c."""
    view, kind = _channel_view(x)
    return _per_channel(None, kind, view)


def _like_view(a, kind):
    """``a`` viewed like ``_channel_view`` did for its partner (same layout)."""
    xp = array_module_of(a)
    n, c, h, w = a.shape
    if kind == "nchw":
        return xp.ascontiguousarray(a).reshape(n, c, h * w)
    return xp.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(c, n * h * w)


def _channel_param(v, kind):
    """A per-channel vector shaped to broadcast against the channel view."""
    return v.reshape(1, -1, 1) if kind == "nchw" else v.reshape(-1, 1)


def batchnorm_train(x, gamma, beta, eps: float):
    """Batch statistics and the normalised output.

    Returns ``(y, xhat, mean, var, inv)`` with ``inv = 1/sqrt(var + eps)``;
    ``y`` and ``xhat`` have x's logical shape.
    """
    xp = array_module_of(x)
    k = _kernels()
    n, c, h, w = x.shape
    m = n * h * w
    view, kind = _channel_view(x)
    mean = _per_channel(None, kind, view) / m
    var = _per_channel(k["sum_sq_dev"], kind, view, _channel_param(mean, kind)) / m
    inv = 1.0 / xp.sqrt(var + eps)
    p = lambda v: _channel_param(v.astype(x.dtype, copy=False), kind)  # noqa: E731
    xhat, y = k["bn_forward"](view, p(mean), p(inv), p(gamma), p(beta))
    if kind == "nchw":
        return y.reshape(n, c, h, w), xhat.reshape(n, c, h, w), mean, var, inv
    return (y.reshape(c, n, h, w).transpose(1, 0, 2, 3), xhat.reshape(c, n, h, w).transpose(1, 0, 2, 3),
            mean, var, inv)


def batchnorm_backward(dy, xhat, gamma, inv, need_dx: bool = True):
    """``(dx, dgamma, dbeta)``; dx is None when ``need_dx`` is False."""
    k = _kernels()
    n, c, h, w = xhat.shape
    m = n * h * w
    xview, kind = _channel_view(xhat)
    dview = _like_view(dy, kind)
    dbeta = _per_channel(None, kind, dview)
    dgamma = _per_channel(k["sum_prod"], kind, dview, xview)
    if not need_dx:
        return None, dgamma, dbeta
    p = lambda v: _channel_param(v.astype(dy.dtype, copy=False), kind)  # noqa: E731
    dx = k["bn_backward"](dview, xview, p(gamma * inv), p(dbeta / m), p(dgamma / m))
    if kind == "nchw":
        return dx.reshape(n, c, h, w), dgamma, dbeta
    return dx.reshape(c, n, h, w).transpose(1, 0, 2, 3), dgamma, dbeta


def relu_backward(dy, y):
    """``dy · [y > 0]`` in one pass (shapes must match)."""
    return _kernels()["relu_backward"](dy, y)


def sgd_update(g, v, p, step, mu: float, scale: float, shrink: float, nesterov: bool) -> None:
    """One SGD update of parameter ``p`` in place (see ``models.optim``).

    ``scale = -η_t·k`` and ``shrink = k·(1 - η_t λ_wd)`` as in ``SGD.step``;
    with ``mu = 0`` the trace is left alone and ``s = scale·g``.
    """
    t = p.dtype.type
    _kernels()["sgd"](g, t(mu), t(scale), t(shrink), int(bool(nesterov)), v, p, step)
