"""Fused GPU kernels for the memory-bound parts of a convolutional network.

Batch normalisation and the ReLU's backward pass read and write whole
activation tensors; written as separate CuPy operations each of them passes
over memory several times. Here each is one or two CuPy kernels (elementwise
or reduction) with the same equations as the NumPy code in ``models.norm``,
``models.pool``, ``models.layers`` and ``models.optim``:

``batchnorm_train``:  ``μ_c = mean x``, ``σ²_c = mean (x - μ_c)²`` (two passes,
    as in NumPy, so no cancellation), then ONE pass writing ``x̂ = (x - μ_c) /
    sqrt(σ²_c + ε)`` and ``y = γ_c x̂ + β_c``;
``batchnorm_backward``:  ``Σ δ`` and ``Σ δ x̂`` per channel, then ONE pass
    ``dx = γ_c / sqrt(σ²_c + ε) · (δ - Σδ/M - x̂ Σδx̂ / M)``;
``relu_backward``:  ``dx = δ · [y > 0]`` in one pass;
``maxpool_forward`` / ``maxpool_backward``:  max pooling in one pass each: the
    forward writes the maximum and the index of the first maximal tap of every
    window (one byte); the backward, one thread per input unit, gathers the
    errors of the windows whose maximum it was (no atomics, any overlap);
``sgd_update``:  the optimiser's whole update of one parameter in one pass,
    ``v ← μ v + g``, ``s = -η (g + μ v)`` (Nesterov) or ``-η v``, ``p ← k p + s``
    (in place on v, p and the kept step array s).

Per-channel sums run over a contiguous view: ``(N, C, H·W)`` for NCHW arrays
(reduced over the last axis, then over N), ``(C, N·H·W)`` for channel-major
ones. Everything else falls back to a contiguous copy.

Kernels compile on first use. Callers ask ``active(xp)``: CuPy arrays, the
user's switch ``GPUOptions.fused`` on (``models.backend.use_gpu_options``),
and no kernel has failed. If compiling or launching a kernel fails they call
``record_failure(exc)`` (one warning) and use their plain CuPy operations for
the rest of the process (``failure()`` says why), so a toolchain problem
costs speed, never a run. That record is a fact about the process, not a
setting: no option turns the kernels back on.
"""
from __future__ import annotations

from .backend import array_module_of, gpu_options

__all__ = ["active", "failure", "record_failure", "batchnorm_train",
           "batchnorm_backward", "relu_backward", "sgd_update", "maxpool_forward", "maxpool_backward"]

#: why a kernel failed (None while none has): process-wide, set once
_STATE = {"failure": None}
_KERNELS: dict = {}


def active(xp) -> bool:
    """Whether arrays of module ``xp`` go through the fused kernels: CuPy,
    ``gpu_options().fused``, and no kernel has failed in this process."""
    return xp.__name__ != "numpy" and gpu_options().fused and _STATE["failure"] is None


def failure() -> str | None:
    """Why the kernels were switched off for the process, if a kernel failed."""
    return _STATE["failure"]


def record_failure(why) -> None:
    """Switch the fused kernels off for the rest of the process, with one warning.

    ``why`` is the exception a kernel raised (or a message); the first one is
    kept (``failure()``), later ones are ignored.
    """
    import warnings

    if _STATE["failure"] is not None:
        return
    reason = f"{type(why).__name__}: {why}" if isinstance(why, BaseException) else str(why)
    warnings.warn(f"fused GPU kernels switched off, plain CuPy operations used instead: {reason}",
                  RuntimeWarning, stacklevel=3)
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
        "T dy, T xhat, T gamma, T inv, T dbeta, T dgamma, T m", "T dx",
        "dx = gamma * inv * (dy - dbeta / m - xhat * dgamma / m)", "wm_bn_backward")
    _KERNELS["bn_stats"] = cupy.ElementwiseKernel(
        "T s2, T mean, T m, T eps, T mom, T unbias", "T var, T inv, T rmean, T rvar",
        """
        var = s2 / m;
        inv = (T)1 / sqrt(var + eps);
        rmean = ((T)1 - mom) * rmean + mom * mean;
        rvar = ((T)1 - mom) * rvar + mom * unbias * var;
        """, "wm_bn_stats")
    _KERNELS["maxpool_forward"] = cupy.ElementwiseKernel(
        "raw T x, int32 H, int32 W, int32 Ho, int32 Wo, int32 k, int32 s, int32 p", "T y, uint8 arg",
        """
        long long wo = i % Wo, t = i / Wo, ho = t % Ho, nc = t / Ho;
        const long long base = nc * H * W;
        T best = 0; int bi = 0; bool found = false;
        for (int a = 0; a < k; ++a) {
            long long h = ho * s - p + a;
            if (h < 0 || h >= H) continue;
            for (int e = 0; e < k; ++e) {
                long long w = wo * s - p + e;
                if (w < 0 || w >= W) continue;
                T v = x[base + h * W + w];
                if (!found || v > best) { best = v; bi = a * k + e; found = true; }
            }
        }
        y = best; arg = bi;
        """, "wm_maxpool_forward")
    _KERNELS["maxpool_backward"] = cupy.ElementwiseKernel(
        "raw T dy, raw uint8 arg, int32 H, int32 W, int32 Ho, int32 Wo, int32 k, int32 s, int32 p", "T dx",
        """
        long long w = i % W, t = i / W, h = t % H, nc = t / H;
        long long h0 = h + p - k + 1, w0 = w + p - k + 1;
        long long hmin = h0 <= 0 ? 0 : (h0 + s - 1) / s, wmin = w0 <= 0 ? 0 : (w0 + s - 1) / s;
        long long hmax = (h + p) / s, wmax = (w + p) / s;
        if (hmax > Ho - 1) hmax = Ho - 1;
        if (wmax > Wo - 1) wmax = Wo - 1;
        T acc = 0;
        for (long long ho = hmin; ho <= hmax; ++ho) {
            for (long long wo = wmin; wo <= wmax; ++wo) {
                long long o = (nc * Ho + ho) * Wo + wo;
                if (arg[o] == (h - (ho * s - p)) * k + (w - (wo * s - p))) acc += dy[o];
            }
        }
        dx = acc;
        """, "wm_maxpool_backward")
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


def batchnorm_train(x, gamma, beta, eps: float, running_mean, running_var, momentum: float):
    """Batch statistics, the running statistics' update and the normalised output.

    Returns ``(y, xhat, mean, var, inv)`` with ``inv = 1/sqrt(var + eps)``;
    ``y`` and ``xhat`` have x's logical shape. ``running_mean`` and
    ``running_var`` move in place: ``r ← (1-m) r + m μ``, ``v ← (1-m) v + m σ² M/(M-1)``.
    """
    xp = array_module_of(x)
    k = _kernels()
    n, c, h, w = x.shape
    m = n * h * w
    t = x.dtype.type
    view, kind = _channel_view(x)
    mean = _per_channel(None, kind, view) / m
    s2 = _per_channel(k["sum_sq_dev"], kind, view, _channel_param(mean, kind))
    var, inv = xp.empty_like(mean), xp.empty_like(mean)
    k["bn_stats"](s2, mean, t(m), t(eps), t(momentum), t(m / max(m - 1, 1)), var, inv, running_mean, running_var)
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
    dx = k["bn_backward"](dview, xview, p(gamma), p(inv), p(dbeta), p(dgamma), dy.dtype.type(m))
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


def maxpool_forward(x, k: int, s: int, p: int, ho: int, wo: int):
    """``(y, arg)``: window maxima (NCHW) and the tap index ``a·k + e`` of the first maximum."""
    xp = array_module_of(x)
    n, c, h, w = x.shape
    xc = xp.ascontiguousarray(x)
    y = xp.empty((n, c, ho, wo), dtype=x.dtype)
    arg = xp.empty((n, c, ho, wo), dtype=xp.uint8)
    _kernels()["maxpool_forward"](xc, h, w, ho, wo, k, s, p, y, arg)
    return y, arg


def maxpool_backward(dy, arg, x_shape, k: int, s: int, p: int):
    """``dx[n, c, h, w] = Σ`` over the windows whose first maximum is (h, w) of their error."""
    xp = array_module_of(dy)
    n, c, h, w = x_shape
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    _kernels()["maxpool_backward"](xp.ascontiguousarray(dy), arg, h, w, dy.shape[2], dy.shape[3], k, s, p, dx)
    return dx
