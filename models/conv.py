"""Convolutional layers on an array module ``xp`` (NumPy or CuPy).

Every layer takes and returns images in the logical layout ``(N, C, H, W)``.
Internally the convolution works on channel-major columns: its output is
allocated as ``(C, N, H, W)`` in memory and returned as a transposed view,
so that the next convolution's im2col, batch normalisation (per channel) and
pooling read it without a copy. Callers never need to know: every layer
accepts any strides.

Notation for a convolution with kernel ``W`` of shape ``(C_out, C_in, k_h,
k_w)``, stride ``s`` and zero padding ``p``:

``v[n, o, i, j] = b[o] + Σ_{c, a, e} W[o, c, a, e] · x_pad[n, c, s·i + a, s·j + e]``

im2col gathers the input patches into columns ``X`` of shape
``(C_in·k_h·k_w, N·H_out·W_out)`` so that the forward pass is ONE matrix
product ``V = W_mat · X`` with ``W_mat = W.reshape(C_out, -1)``. The
backward pass uses the feedback kernel ``F = rule.feedback(layer)`` (``F = W``
for backprop), stored in W's layout (see ``circuits.rules``):

``dX = F_matᵀ · δ_mat``,  ``dx = col2im(dX)``   (a transposed convolution with F),

and the forward kernel learns from the local product, the correlation of the
layer's input and output images

``∂L/∂W = δ_mat · Xᵀ``    (``hebbian(pre=x, post=δ)``),

which is also the weight mirror's Hebbian product when ``x`` is noise.

On a GPU the same three operations can instead run as cuDNN convolutions
(``models.cudnn_conv``: forward, backward-data with ``F``, weight gradient).
Which of the two a layer uses is chosen by measurement: with the algorithm
``"auto"`` (``set_conv_algorithm``), the first time a geometry (layer shape
and input shape) is seen, both are timed on the real input and the faster
one is kept for that geometry (``autotune_table()`` lists the choices).
NumPy always uses im2col.
"""
from __future__ import annotations

import math
import time

from . import cudnn_conv, fused
from .backend import BackendError, synchronize, tf32_enabled
from .layers import BackwardContext, Module, ReLU, WeightLayer

__all__ = [
    "CONV_ALGORITHMS",
    "set_conv_algorithm",
    "conv_algorithm",
    "autotune_table",
    "conv_output_size",
    "Conv2d",
    "BatchNorm2d",
    "BatchNorm1d",
    "MaxPool2d",
    "GlobalAvgPool",
    "Flatten",
    "BasicBlock",
    "Bottleneck",
]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``⌊(size + 2p - k) / s⌋ + 1``, the output extent of a convolution or pool."""
    out = (int(size) + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"input extent {size} is too small for kernel {kernel}, stride {stride}, padding {padding}"
        )
    return out


#: how a convolution on the GPU is computed: measured choice, or forced
CONV_ALGORITHMS = ("auto", "im2col", "cudnn")
_ALGORITHM = {"name": "auto"}
#: geometry key -> (choice, seconds with im2col, seconds with cuDNN or None, note)
_AUTOTUNE: dict = {}


def set_conv_algorithm(name: str) -> None:
    """Choose how GPU convolutions run: ``"auto"`` (default: time im2col+cuBLAS
    and cuDNN once per geometry, keep the faster), ``"im2col"`` or ``"cudnn"``
    (forced; ``"cudnn"`` fails if the frontend or library is missing)."""
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}; allowed: {', '.join(CONV_ALGORITHMS)}")
    _ALGORITHM["name"] = name


def conv_algorithm() -> str:
    """The setting of ``set_conv_algorithm``."""
    return _ALGORITHM["name"]


def autotune_table() -> list[dict]:
    """One row per geometry decided so far: the layer and input shape, the
    algorithm used, and the measured seconds of one forward + weight-gradient
    + backward-data pass with each (``None`` where not measured)."""
    rows = []
    for key, (choice, t_im2col, t_cudnn, note) in _AUTOTUNE.items():
        c_in, c_out, kh, kw, stride, padding, x_shape, tf32, plans = key
        rows.append(dict(c_in=c_in, c_out=c_out, kernel=(kh, kw), stride=stride, padding=padding,
                         input_shape=x_shape, tf32=tf32, cudnn_plans=plans, algorithm=choice, im2col_s=t_im2col,
                         cudnn_s=t_cudnn, note=note))
    return rows


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


class Conv2d(WeightLayer):
    """2-D convolution ``v = W ⋆ x + b`` with feedback kernel ``B`` (W's layout).

    Parameters
    ----------
    c_in, c_out : input and output channels.
    kernel_size : ``k`` or ``(k_h, k_w)``.
    xp : array module (numpy or cupy).
    rng : random generator of ``xp`` (He initialisation).
    stride, padding : ``s`` and zero padding ``p`` (same on both axes).
    bias : whether the layer has ``b`` (off where batch norm follows).
    input_hw : ``(H, W)`` of the input images, when known at construction;
        otherwise it is recorded at the first forward pass. It sets the size
        of the weight mirror's noise images (``mirror_input_shape``).
    dtype : ``xp.float32`` (default); ``xp.float64`` for gradient tests.

    Notes
    -----
    ``W ~ N(0, 2 / (C_in k_h k_w))`` (He, fan-in), ``b = 0``.

    Weight mirror: ``mirror_input_shape = (C_in, H, W)``, the layer's own
    input size, and ``linear_response(ξ) = W ⋆ ξ``. For noise ``ξ ~ N(0, σ²)``
    the Hebbian product is ``E[hebbian(ξ, W ⋆ ξ)][o, c, a, e] = σ² W[o, c, a,
    e] · n(a, e)``, where ``n(a, e)`` counts the output positions at which the
    kernel tap ``(a, e)`` falls inside the image (not on padding).
    ``mirror_counts()`` returns ``n`` (shape ``(k_h, k_w)``): dividing the
    estimate by ``m · n`` gives exactly ``σ² W`` as for a Linear layer. Without
    that division the estimate is ``σ² W`` scaled by about ``H_out·W_out``
    and, for small images with padding, slightly distorted at the border taps
    (about 5° of angle for 3x3 on 8x8, 11° on 4x4).

    When batch norm follows, ``mirror_activation`` is None: the weight
    mirror's ``response='layer'`` then uses the identity, i.e. the conv's
    linear drive (BN's per-channel affine map, which would only rescale each
    output channel's slice of B, is left out). In the small convnet (no BN)
    it is the ReLU that follows.

    Training keeps the im2col columns (``C_in·k_h·k_w × N·H_out·W_out``
    floats; for a 1x1 stride-1 conv a view of the input) until the next
    forward pass, so that backward can run more than once per batch.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size, xp, rng, stride: int = 1,
                 padding: int = 0, bias: bool = True, input_hw=None, dtype=None):
        super().__init__()
        kh, kw = _pair(kernel_size)
        if c_in < 1 or c_out < 1 or kh < 1 or kw < 1 or stride < 1 or padding < 0:
            raise ValueError(
                f"Conv2d: bad geometry c_in={c_in} c_out={c_out} kernel={kernel_size} "
                f"stride={stride} padding={padding}"
            )
        dtype = xp.float32 if dtype is None else dtype
        self.xp = xp
        self.c_in, self.c_out = int(c_in), int(c_out)
        self.kh, self.kw = kh, kw
        self.stride, self.padding = int(stride), int(padding)
        self.dtype = dtype
        std = math.sqrt(2.0 / (c_in * kh * kw))
        W = rng.standard_normal((c_out, c_in, kh, kw), dtype=xp.float32) * xp.float32(std)
        self.params["W"] = W.astype(dtype)
        if bias:
            self.params["b"] = xp.zeros(c_out, dtype=dtype)
        self.input_hw = None if input_hw is None else _pair(input_hw)
        self._cols = None
        self._x = None  # the kept input (cuDNN path)
        self._x_shape = None

    # -- algorithm ---------------------------------------------------------
    def _uses_cudnn(self, x) -> bool:
        """Whether input ``x`` runs through cuDNN (decided once per geometry).

        Every entry point (forward, linear response, Hebbian product) asks
        this first, so it is also where x's channel count is checked.
        """
        if x.shape[1] != self.c_in:
            raise ValueError(f"Conv2d: expected {self.c_in} input channels, got {x.shape[1]} (input {tuple(x.shape)})")
        xp = self.xp
        if xp.__name__ == "numpy" or self.dtype != xp.float32:
            return False
        name = _ALGORITHM["name"]
        if name == "im2col":
            return False
        if name == "cudnn":
            if not cudnn_conv.available():
                raise BackendError(f"convolution algorithm 'cudnn': {cudnn_conv.unavailable_reason()}")
            return True
        key = (self.c_in, self.c_out, self.kh, self.kw, self.stride, self.padding, tuple(x.shape), tf32_enabled(),
               cudnn_conv.plan_search())
        hit = _AUTOTUNE.get(key)
        if hit is None:
            hit = _AUTOTUNE[key] = self._autotune(x)
        return hit[0] == "cudnn"

    def _autotune(self, x):
        """Time one forward + weight-gradient + backward-data pass both ways."""
        xp = self.xp
        ho, wo = self.output_hw(x.shape[2:])
        dy = xp.ones((x.shape[0], self.c_out, ho, wo), dtype=xp.float32)

        def timed(fn, reps=3):
            fn()
            synchronize(xp)
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            synchronize(xp)
            return (time.perf_counter() - t) / reps

        def im2col_pass():
            cols, geom = self._columns(x)
            self._matmul_out(cols, geom, bias=False)
            self._delta_matrix(dy) @ cols.T
            self._col2im(self.params["W"].reshape(self.c_out, -1).T @ self._delta_matrix(dy), tuple(x.shape))

        t_im2col = timed(im2col_pass)
        if not cudnn_conv.available():
            return ("im2col", t_im2col, None, cudnn_conv.unavailable_reason())
        xc = xp.ascontiguousarray(x)

        def cudnn_pass():
            self._cudnn_fprop(xc)
            self._cudnn_wgrad(xc, dy)
            self._cudnn_dgrad(dy, self.params["W"], tuple(x.shape))

        try:
            t_cudnn = timed(cudnn_pass)
        except Exception as exc:  # noqa: BLE001 - an unsupported geometry keeps im2col
            return ("im2col", t_im2col, None, f"cuDNN failed: {type(exc).__name__}: {str(exc)[:200]}")
        return ("cudnn" if t_cudnn < t_im2col else "im2col", t_im2col, t_cudnn, "")

    def _cudnn_fprop(self, xc):
        ho, wo = self.output_hw(xc.shape[2:])
        out = self.xp.empty((xc.shape[0], self.c_out, ho, wo), dtype=self.xp.float32)
        return cudnn_conv.fprop(xc, self.params["W"], out, self.stride, self.padding)

    def _cudnn_wgrad(self, xc, dy):
        out = self.xp.empty(self.params["W"].shape, dtype=self.xp.float32)
        return cudnn_conv.wgrad(xc, self.xp.ascontiguousarray(dy), out, self.stride, self.padding)

    def _cudnn_dgrad(self, dy, F, x_shape):
        out = self.xp.empty(x_shape, dtype=self.xp.float32)
        return cudnn_conv.dgrad(self.xp.ascontiguousarray(dy), self.xp.ascontiguousarray(F), out,
                                self.stride, self.padding)

    # -- geometry ----------------------------------------------------------
    def output_hw(self, hw) -> tuple[int, int]:
        """``(H_out, W_out)`` for an input of spatial size ``hw``."""
        h, w = _pair(hw)
        return (conv_output_size(h, self.kh, self.stride, self.padding),
                conv_output_size(w, self.kw, self.stride, self.padding))

    @property
    def mirror_input_shape(self) -> tuple[int, int, int]:
        """``(C_in, H, W)``: one noise image of the layer's input size."""
        if self.input_hw is None:
            raise RuntimeError(
                "Conv2d: the input size is unknown; pass input_hw at construction "
                "or run a forward pass before the mirror phase"
            )
        return (self.c_in, *self.input_hw)

    def mirror_counts(self):
        """``n(a, e)``: output positions per noise image at which tap ``(a, e)``
        sees the image rather than padding, shape ``(k_h, k_w)`` (float32)."""
        xp = self.xp
        H, W = self.mirror_input_shape[1:]
        ho, wo = self.output_hw((H, W))
        s, p = self.stride, self.padding

        def taps(k, n_out, size):
            pos = xp.arange(n_out)[None, :] * s + xp.arange(k)[:, None] - p
            return ((pos >= 0) & (pos < size)).sum(axis=1).astype(xp.float32)

        return taps(self.kh, ho, H)[:, None] * taps(self.kw, wo, W)[None, :]

    def bias_view(self):
        return self.params["b"].reshape(-1, 1, 1)

    # -- im2col / col2im ---------------------------------------------------
    def _columns(self, x):
        """im2col: ``X[(c, a, e), (n, i, j)] = x_pad[n, c, s·i + a, s·j + e]``.

        Returns ``(X, (N, H_out, W_out))`` with X of shape
        ``(C_in·k_h·k_w, N·H_out·W_out)``.
        """
        xp = self.xp
        n, c, h, w = x.shape
        ho, wo = self.output_hw((h, w))
        s, p, kh, kw = self.stride, self.padding, self.kh, self.kw
        xt = x.transpose(1, 0, 2, 3)  # (C, N, H, W): free for channel-major inputs
        if kh == 1 and kw == 1 and p == 0:
            src = xt if s == 1 else xt[:, :, ::s, ::s]
            return xp.ascontiguousarray(src).reshape(c, n * ho * wo), (n, ho, wo)
        if p:
            xpad = xp.zeros((c, n, h + 2 * p, w + 2 * p), dtype=x.dtype)
            xpad[:, :, p:p + h, p:p + w] = xt
        else:
            xpad = xt
        cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
        hs, ws = s * (ho - 1) + 1, s * (wo - 1) + 1
        for a in range(kh):
            for e in range(kw):
                cols[:, a, e] = xpad[:, :, a:a + hs:s, e:e + ws:s]
        return cols.reshape(c * kh * kw, n * ho * wo), (n, ho, wo)

    def _col2im(self, dcols, x_shape):
        """Adjoint of ``_columns``: scatter-add columns back to ``(N, C, H, W)``."""
        xp = self.xp
        n, c, h, w = x_shape
        ho, wo = self.output_hw((h, w))
        s, p, kh, kw = self.stride, self.padding, self.kh, self.kw
        if kh == 1 and kw == 1 and p == 0:
            d = dcols.reshape(c, n, ho, wo)
            if s == 1:
                return d.transpose(1, 0, 2, 3)
            dx = xp.zeros((c, n, h, w), dtype=dcols.dtype)
            dx[:, :, ::s, ::s] = d
            return dx.transpose(1, 0, 2, 3)
        d = dcols.reshape(c, kh, kw, n, ho, wo)
        dxpad = xp.zeros((c, n, h + 2 * p, w + 2 * p), dtype=dcols.dtype)
        hs, ws = s * (ho - 1) + 1, s * (wo - 1) + 1
        for a in range(kh):
            for e in range(kw):
                dxpad[:, :, a:a + hs:s, e:e + ws:s] += d[:, a, e]
        if p:
            dxpad = dxpad[:, :, p:p + h, p:p + w]
        return dxpad.transpose(1, 0, 2, 3)

    def _matmul_out(self, cols, geom, bias: bool):
        n, ho, wo = geom
        v = self.params["W"].reshape(self.c_out, -1) @ cols  # (C_out, N·Ho·Wo)
        if bias and "b" in self.params:
            v += self.params["b"][:, None]
        return v.reshape(self.c_out, n, ho, wo).transpose(1, 0, 2, 3)

    # -- module interface --------------------------------------------------
    def forward(self, x, train: bool = True):
        """``v = W ⋆ x + b`` for ``x`` of shape ``(N, C_in, H, W)``."""
        if self.input_hw is None:
            self.input_hw = (int(x.shape[2]), int(x.shape[3]))
        if self._uses_cudnn(x):
            xc = self.xp.ascontiguousarray(x)
            v = self._cudnn_fprop(xc)
            if "b" in self.params:
                v += self.params["b"][:, None, None]
            self._cols = None
            self._x = xc if train else None
            self._x_shape = tuple(x.shape)
            return v
        cols, geom = self._columns(x)
        self._x = None
        if train:
            self._cols = cols
            self._x_shape = tuple(x.shape)
        else:
            self._cols = None
        return self._matmul_out(cols, geom, bias=True)

    def linear_response(self, x):
        """``W ⋆ x`` (no bias) for a batch of images: the forward drive."""
        if self._uses_cudnn(x):
            return self._cudnn_fprop(self.xp.ascontiguousarray(x))
        cols, geom = self._columns(x)
        return self._matmul_out(cols, geom, bias=False)

    def _delta_matrix(self, post):
        # (N, C_out, Ho, Wo) -> (C_out, N·Ho·Wo); free for channel-major arrays
        return post.transpose(1, 0, 2, 3).reshape(self.c_out, -1)

    def hebbian(self, pre, post):
        """``Σ_{n,i,j} post[n,:,i,j] ⊗ patch(pre)[n,:,i,j]`` in W's layout.

        The correlation of input images ``pre`` and output images ``post``:
        the weight gradient ``∂L/∂W`` when ``post = δ``, the weight mirror's
        Hebbian product when ``pre`` is noise and ``post`` its response.
        """
        if self._uses_cudnn(pre):
            return self._cudnn_wgrad(self.xp.ascontiguousarray(pre), post)
        cols, _ = self._columns(pre)
        return (self._delta_matrix(post) @ cols.T).reshape(self.params["W"].shape)

    def backward(self, dy, ctx: BackwardContext):
        """Gradients of W (and b) from ``δ = dy``; returns ``col2im(Fᵀ δ)``."""
        if ctx.record is not None:
            ctx.record.append(dy)
        if self._x is not None:  # the forward pass ran through cuDNN
            dyc = self.xp.ascontiguousarray(dy)
            self.grads["W"] = self._cudnn_wgrad(self._x, dyc)
            if "b" in self.params:
                self.grads["b"] = dyc.sum(axis=(0, 2, 3))
            if not self.needs_input_grad:
                return None
            F = self.params["W"] if ctx.use_backprop else ctx.rule.feedback(self, ctx.xp, ctx.rng)
            return self._cudnn_dgrad(dyc, F, self._x_shape)
        d = self._delta_matrix(dy)
        self.grads["W"] = (d @ self._cols.T).reshape(self.params["W"].shape)
        if "b" in self.params:
            self.grads["b"] = d.sum(axis=1)
        if not self.needs_input_grad:
            return None
        F = self.params["W"] if ctx.use_backprop else ctx.rule.feedback(self, ctx.xp, ctx.rng)
        dcols = F.reshape(self.c_out, -1).T @ d
        return self._col2im(dcols, self._x_shape)


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
                fused.disable(exc)
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
                fused.disable(exc)
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
        from .backend import array_module_of
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
                fused.disable(exc)
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
                fused.disable(exc)
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


class _Residual(Module):
    """``y = ReLU(main(x) + shortcut(x))``; shortcut is identity or conv1x1+BN.

    Backward: ``∂L/∂x = main'ᵀ δ + shortcut'ᵀ δ`` with ``δ`` the error after
    the final ReLU, each path's convolutions using the rule's feedback kernels.
    """

    def __init__(self):
        self._needs_input_grad = True
        super().__init__()
        self.main: list[Module] = []
        self.shortcut: list[Module] = []
        self.out_relu = ReLU()

    @property
    def needs_input_grad(self) -> bool:
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        # The first modules of both paths see the block's input.
        self._needs_input_grad = bool(value)
        for path in (getattr(self, "main", []), getattr(self, "shortcut", [])):
            if path:
                path[0].needs_input_grad = bool(value)

    def children(self) -> list[Module]:
        return [*self.main, *self.shortcut, self.out_relu]

    def forward(self, x, train: bool = True):
        h = x
        for m in self.main:
            h = m.forward(h, train)
        r = x
        for m in self.shortcut:
            r = m.forward(r, train)
        h += r
        return self.out_relu.forward(h, train)

    def backward(self, dy, ctx: BackwardContext):
        d = self.out_relu.backward(dy, ctx)
        # shortcut first, so that recorded errors follow reversed(weight_layers)
        ds = d
        for m in reversed(self.shortcut):
            ds = m.backward(ds, ctx)
        dm = d
        for m in reversed(self.main):
            dm = m.backward(dm, ctx)
        if not self._needs_input_grad:
            return None
        dm += ds
        return dm


def _projection(c_in, c_out, stride, xp, rng, input_hw, dtype):
    if stride == 1 and c_in == c_out:
        return []
    return [Conv2d(c_in, c_out, 1, xp, rng, stride=stride, bias=False, input_hw=input_hw, dtype=dtype),
            BatchNorm2d(c_out, xp, dtype=dtype)]


class BasicBlock(_Residual):
    """ResNet basic block (He et al. 2016): 3x3 conv, BN, ReLU, 3x3 conv, BN,
    plus the shortcut, then ReLU. ``stride`` is on the first conv; the
    shortcut is conv1x1(stride)+BN when the shape changes, else identity.
    """

    expansion = 1

    def __init__(self, c_in: int, planes: int, xp, rng, stride: int = 1, input_hw=None,
                 dtype=None, zero_init_residual: bool = False):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = Conv2d(c_in, planes, 3, xp, rng, stride=stride, padding=1, bias=False, input_hw=input_hw, dtype=dtype)
        hw2 = None if input_hw is None else self.conv1.output_hw(input_hw)
        self.bn1 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, c_out, 3, xp, rng, stride=1, padding=1, bias=False, input_hw=hw2, dtype=dtype)
        self.bn2 = BatchNorm2d(c_out, xp, dtype=dtype)
        if zero_init_residual:
            self.bn2.params["gamma"][...] = 0
        self.main = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2]
        self.shortcut = _projection(c_in, c_out, stride, xp, rng, input_hw, dtype)
        self.output_hw = hw2
        self.needs_input_grad = True


class Bottleneck(_Residual):
    """ResNet bottleneck block (torchvision's v1.5): conv1x1, BN, ReLU, conv3x3
    (stride), BN, ReLU, conv1x1 (×4 channels), BN, plus the shortcut, then
    ReLU. The shortcut is conv1x1(stride)+BN when the shape changes.
    """

    expansion = 4

    def __init__(self, c_in: int, planes: int, xp, rng, stride: int = 1, input_hw=None,
                 dtype=None, zero_init_residual: bool = False):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = Conv2d(c_in, planes, 1, xp, rng, bias=False, input_hw=input_hw, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, xp, rng, stride=stride, padding=1, bias=False,
                            input_hw=input_hw, dtype=dtype)
        hw2 = None if input_hw is None else self.conv2.output_hw(input_hw)
        self.bn2 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu2 = ReLU()
        self.conv3 = Conv2d(planes, c_out, 1, xp, rng, bias=False, input_hw=hw2, dtype=dtype)
        self.bn3 = BatchNorm2d(c_out, xp, dtype=dtype)
        if zero_init_residual:
            self.bn3.params["gamma"][...] = 0
        self.main = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2, self.relu2, self.conv3, self.bn3]
        self.shortcut = _projection(c_in, c_out, stride, xp, rng, input_hw, dtype)
        self.output_hw = hw2
        self.needs_input_grad = True
