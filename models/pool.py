"""Pooling and reshaping layers: max pooling, global average pooling, flatten.

Each takes images in the logical layout ``(N, C, H, W)`` (any strides) on
an array module ``xp`` (NumPy or CuPy). On a GPU max pooling runs as fused
kernels (``models.fused``) while ``fused.active(xp)`` says so, with plain
CuPy operations as the fallback.
"""
from __future__ import annotations

from . import fused
from .backend import array_module_of
from .conv import conv_output_size
from .layers import BackwardContext, Module

__all__ = ["MaxPool2d", "GlobalAvgPool", "Flatten"]


class MaxPool2d(Module):
    """Max pooling ``y[n,c,i,j] = max_{a,e} x_pad[n, c, s·i + a, s·j + e]``.

    Padding is ``-∞``. The backward pass routes ``δ`` to the first maximal
    input of each window: ``∂L/∂x = Σ_{a,e} [argmax = (a, e)] δ`` (shifted).
    Training stores, per window tap t, the mask of outputs where tap t beat
    the taps before it (``k² - 1`` boolean arrays of the output's size).
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None, padding: int = 0, xp=None):
        super().__init__()
        self.k = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.k
        self.padding = int(padding)
        self.xp = xp
        self._arg = None  # per-window winning tap, when the fused kernel ran

    def _xp(self, x):
        if self.xp is not None:
            return self.xp
        return array_module_of(x)

    def _windows(self, x, xp):
        """The padded channel-major input and the ``k²`` strided window views."""
        n, c, h, w = x.shape
        k, s, p = self.k, self.stride, self.padding
        ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
        xt = x.transpose(1, 0, 2, 3)
        if p:
            xpad = xp.full((c, n, h + 2 * p, w + 2 * p), -xp.inf, dtype=x.dtype)
            xpad[:, :, p:p + h, p:p + w] = xt
        else:
            xpad = xt
        hs, ws = s * (ho - 1) + 1, s * (wo - 1) + 1
        wins = [xpad[:, :, a:a + hs:s, e:e + ws:s] for a in range(k) for e in range(k)]
        return xpad, wins

    def forward(self, x, train: bool = True):
        xp = self._xp(x)
        n, c, h, w = x.shape
        if fused.active(xp):
            k, s, p = self.k, self.stride, self.padding
            ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
            try:
                y, arg = fused.maxpool_forward(x, k, s, p, ho, wo)
            except Exception as exc:  # noqa: BLE001 - fall back to plain CuPy for good
                fused.record_failure(exc)
            else:
                self._arg, self._greater, self._x_shape = (arg if train else None), None, (n, c, h, w)
                return y
        self._arg = None
        _, wins = self._windows(x, xp)
        out = xp.array(wins[0])  # channel-major copy
        greater = []  # g_t = [window t beats windows 0..t-1]: first maximum wins
        for win in wins[1:]:
            if train:
                greater.append(win > out)
            xp.maximum(out, win, out=out)
        if train:
            self._greater, self._x_shape = greater, (n, c, h, w)
        return out.transpose(1, 0, 2, 3)

    def backward(self, dy, ctx: BackwardContext):
        """Route δ to each window's winner: ``dx_t = δ ⊙ m_t`` (shifted), with the
        exclusive masks ``m_t = g_t ∧ ¬(g_{t+1} ∨ … ∨ g_{k²-1})``, ``m_0 = ¬(g_1 ∨ …)``."""
        if not self.needs_input_grad:
            return None
        xp = self._xp(dy)
        n, c, h, w = self._x_shape
        k, s, p = self.k, self.stride, self.padding
        if self._arg is not None:
            try:
                return fused.maxpool_backward(dy, self._arg, self._x_shape, k, s, p)
            except Exception as exc:  # noqa: BLE001 - the same routing from the stored taps
                fused.record_failure(exc)
                return self._backward_from_taps(dy, xp)
        greater = self._greater
        ho, wo = dy.shape[2], dy.shape[3]
        hs, ws = s * (ho - 1) + 1, s * (wo - 1) + 1
        overlapping = s < k
        covered = p == 0 and s == k and ho * s == h and wo * s == w
        dxpad = (xp.empty if covered else xp.zeros)((c, n, h + 2 * p, w + 2 * p), dtype=dy.dtype)
        dyt = dy.transpose(1, 0, 2, 3)
        later = None  # some later tap beat this one
        for t in range(k * k - 1, -1, -1):
            if t == 0:
                mask = None if later is None else ~later
            elif later is None:
                mask, later = greater[t - 1], greater[t - 1].copy()
            else:
                mask = greater[t - 1] & ~later
                later |= greater[t - 1]
            a, e = divmod(t, k)
            dst = dxpad[:, :, a:a + hs:s, e:e + ws:s]
            if overlapping:
                dst += dyt if mask is None else dyt * mask
            elif mask is None:
                dst[...] = dyt
            else:
                xp.multiply(dyt, mask, out=dst)
        if p:
            dxpad = dxpad[:, :, p:p + h, p:p + w]
        return dxpad.transpose(1, 0, 2, 3)

    def _backward_from_taps(self, dy, xp):
        """``dx`` from the stored index of each window's winning tap (``_arg``)."""
        n, c, h, w = self._x_shape
        k, s, p = self.k, self.stride, self.padding
        ho, wo = dy.shape[2], dy.shape[3]
        hs, ws = s * (ho - 1) + 1, s * (wo - 1) + 1
        dxpad = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=dy.dtype)
        for t in range(k * k):
            a, e = divmod(t, k)
            dxpad[:, :, a:a + hs:s, e:e + ws:s] += dy * (self._arg == t)
        return dxpad[:, :, p:p + h, p:p + w]


class GlobalAvgPool(Module):
    """``y[n, c] = (1/(H W)) Σ_{h,w} x[n, c, h, w]``; ``∂L/∂x = δ[n, c] / (H W)``."""

    def forward(self, x, train: bool = True):
        if train:
            self._x_shape = tuple(x.shape)
        return x.mean(axis=(2, 3))

    def backward(self, dy, ctx: BackwardContext):
        if not self.needs_input_grad:
            return None
        xp = ctx.xp
        n, c, h, w = self._x_shape
        dx = xp.empty((c, n, h, w), dtype=dy.dtype)
        dx[...] = (dy.T * dy.dtype.type(1.0 / (h * w)))[:, :, None, None]
        return dx.transpose(1, 0, 2, 3)


class Flatten(Module):
    """``(N, C, H, W) → (N, C·H·W)`` (C-order, as PyTorch's ``flatten(1)``)."""

    def forward(self, x, train: bool = True):
        self._x_shape = tuple(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, ctx: BackwardContext):
        if not self.needs_input_grad:
            return None
        return dy.reshape(self._x_shape)
