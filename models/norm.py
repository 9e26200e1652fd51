"""Batch normalisation layers (per channel of images, per unit of vectors),
on an array module ``xp`` (NumPy or CuPy).

The per-channel scale γ and shift β are local to each unit, so every
learning rule uses the exact gradient (no feedback weights are involved).
On a GPU the training forward and backward passes run as fused kernels
(``models.fused``) while ``fused.active(xp)`` says so, with plain CuPy
operations as the fallback.
"""
from __future__ import annotations

from . import fused
from .layers import BackwardContext, Module

__all__ = ["BatchNorm2d", "BatchNorm1d"]


class BatchNorm2d(Module):
    """Batch normalisation per channel, with running statistics.

    Training: ``μ_c = mean_{n,h,w} x``, ``σ²_c = mean_{n,h,w} (x - μ_c)²``,
    ``x̂ = (x - μ_c) / sqrt(σ²_c + ε)``, ``y = γ_c x̂ + β_c``; the buffers move
    as ``μ̄ ← (1-m) μ̄ + m μ``, ``σ̄² ← (1-m) σ̄² + m σ² M/(M-1)`` (``M = N·H·W``,
    PyTorch's convention). Evaluation uses ``μ̄, σ̄²`` instead of the batch's.

    Backward (training statistics), with ``M`` elements per channel:
    ``∂L/∂γ = Σ δ x̂``, ``∂L/∂β = Σ δ``,
    ``∂L/∂x = γ / sqrt(σ² + ε) · (δ - ∂L/∂β / M - x̂ · ∂L/∂γ / M)``.
    The per-channel scale γ is local to each unit, so every learning rule uses
    this exact gradient (no feedback weights are involved).
    """

    def __init__(self, channels: int, xp, eps: float = 1e-5, momentum: float = 0.1, dtype=None):
        super().__init__()
        dtype = xp.float32 if dtype is None else dtype
        self.xp = xp
        self.channels = int(channels)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.params["gamma"] = xp.ones(channels, dtype=dtype)
        self.params["beta"] = xp.zeros(channels, dtype=dtype)
        self.buffers = {
            "running_mean": xp.zeros(channels, dtype=dtype),
            "running_var": xp.ones(channels, dtype=dtype),
        }

    def forward(self, x, train: bool = True):
        xp = self.xp
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not train:
            inv = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            scale = (gamma * inv).astype(x.dtype)
            shift = (beta - self.buffers["running_mean"] * scale).astype(x.dtype)
            return x * scale[:, None, None] + shift[:, None, None]
        m = x.shape[0] * x.shape[2] * x.shape[3]
        if fused.active(xp):
            try:
                y, xhat, mean, var, inv = fused.batchnorm_train(
                    x, gamma, beta, self.eps, self.buffers["running_mean"], self.buffers["running_var"],
                    self.momentum)
            except Exception as exc:  # noqa: BLE001 - fall back to plain CuPy for good
                fused.record_failure(exc)
            else:
                self._xhat, self._inv = xhat, inv.astype(x.dtype, copy=False)
                return y
        mean = x.mean(axis=(0, 2, 3))
        xc = x - mean[:, None, None]
        var = (xc * xc).mean(axis=(0, 2, 3))
        inv = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype)
        xhat = xc
        xhat *= inv[:, None, None]
        self._update_running(mean, var, m)
        self._xhat, self._inv = xhat, inv
        return xhat * gamma[:, None, None] + beta[:, None, None]

    def _update_running(self, mean, var, m: int) -> None:
        mom = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm *= 1 - mom
        rm += mom * mean
        rv *= 1 - mom
        rv += (mom * m / max(m - 1, 1)) * var

    def backward(self, dy, ctx: BackwardContext):
        xhat, inv = self._xhat, self._inv
        m = xhat.shape[0] * xhat.shape[2] * xhat.shape[3]
        if fused.active(self.xp):
            try:
                dx, dgamma, dbeta = fused.batchnorm_backward(dy, xhat, self.params["gamma"], inv,
                                                             need_dx=self.needs_input_grad)
            except Exception as exc:  # noqa: BLE001 - fall back to plain CuPy for good
                fused.record_failure(exc)
            else:
                self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
                return dx
        dbeta = dy.sum(axis=(0, 2, 3))
        dgamma = (dy * xhat).sum(axis=(0, 2, 3))
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        if not self.needs_input_grad:
            return None
        scale = (self.params["gamma"] * inv)[:, None, None]
        dx = xhat * (-dgamma / m)[:, None, None]
        dx += dy
        dx -= (dbeta / m)[:, None, None]
        dx *= scale
        return dx


class BatchNorm1d(BatchNorm2d):
    """Batch normalisation of ``(N, C)`` activations (a fully connected layer's),
    per unit over the batch: ``BatchNorm2d`` on ``(N, C, 1, 1)``, same equations."""

    def forward(self, x, train: bool = True):
        n, c = x.shape
        return super().forward(x.reshape(n, c, 1, 1), train).reshape(n, c)

    def backward(self, dy, ctx: BackwardContext):
        n, c = dy.shape
        dx = super().backward(dy.reshape(n, c, 1, 1), ctx)
        return None if dx is None else dx.reshape(n, c)
