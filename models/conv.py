"""The 2-D convolution layer on an array module ``xp`` (NumPy or CuPy), and
the per-geometry choice of how it runs on a GPU (im2col + cuBLAS or cuDNN).

Batch normalisation is in ``models.norm``, pooling and flattening in
``models.pool``, the residual blocks in ``models.resnet``.

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
Which of the two a layer uses is the GPU option ``conv_algorithm``
(``models.backend.use_gpu_options``): ``"im2col"`` or ``"cudnn"`` force one;
with ``"auto"`` (the default), the first time a geometry (layer shape, input
shape, TF32 and cuDNN plan search in force) is seen, both are timed on the
real input and the faster one is kept for that geometry
(``autotune_table()`` lists the choices). NumPy always uses im2col.
"""
from __future__ import annotations

import math
import time

from . import cudnn_conv
from .backend import BackendError, gpu_options, synchronize
from .layers import BackwardContext, WeightLayer

__all__ = ["autotune_table", "conv_output_size", "Conv2d"]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``⌊(size + 2p - k) / s⌋ + 1``, the output extent of a convolution or pool."""
    out = (int(size) + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"input extent {size} is too small for kernel {kernel}, stride {stride}, padding {padding}"
        )
    return out


#: geometry key -> (choice, seconds with im2col, seconds with cuDNN or None, note):
#: measurements, kept for the process (the key holds the options they depend on)
_AUTOTUNE: dict = {}


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
        options = gpu_options()
        name = options.conv_algorithm
        if name == "im2col":
            return False
        if name == "cudnn":
            if not cudnn_conv.available():
                raise BackendError(f"convolution algorithm 'cudnn': {cudnn_conv.unavailable_reason()}")
            return True
        key = (self.c_in, self.c_out, self.kh, self.kw, self.stride, self.padding, tuple(x.shape), options.tf32,
               options.plan_search)
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

    def mirror_samples_per_input(self) -> int:
        """Hebbian samples one noise image gives: every output position, ``H_out · W_out``."""
        return int(math.prod(self.output_hw(self.mirror_input_shape[1:])))

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
