"""Rate-mode layers on an array module ``xp`` (NumPy or CuPy), float32.

Each module has ``forward(x, train)`` and ``backward(dy, ctx)``; parameters
live in ``module.params`` (name -> array) and their gradients, after
``backward``, in ``module.grads``. Weight layers hold ``W``, ``b`` and the
feedback weights ``B`` (stored in W's layout, see ``circuits.rules``) and ask
the learning rule what the feedback path multiplies errors by:

``dx = δ · F``  with ``F = rule.feedback(layer)`` (``F = W`` for backprop),

while the forward weights always learn from the local product
``∂L/∂W = δᵀ x`` (summed over the batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import fused
from .backend import array_module_of


@dataclass
class BackwardContext:
    """What a backward pass needs besides the error.

    rule : the learning rule (decides the feedback weights).
    xp : the array module.
    rng : random generator (batch-random sign symmetry draws from it).
    use_backprop : send errors back through W whatever the rule (used to
        measure the rule's δ against backprop's on the same batch).
    record : when a list, each weight layer appends the error at its output
        (δ = ∂L/∂v), from the top layer down.
    """

    rule: Any
    xp: Any
    rng: Any = None
    use_backprop: bool = False
    record: list | None = None


class Module:
    """A layer of the network."""

    params: dict
    grads: dict

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.needs_input_grad = True

    def children(self) -> list["Module"]:
        """Sub-modules (residual blocks override this)."""
        return []

    def forward(self, x, train: bool = True):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dy, ctx: BackwardContext):  # pragma: no cover - interface
        raise NotImplementedError


class WeightLayer(Module):
    """A layer with forward weights W, bias b and feedback weights B."""

    #: the nonlinearity applied after this layer (for weight-mirror responses)
    mirror_activation: "Module | None" = None

    def __init__(self):
        super().__init__()
        self.B = None

    @property
    def W(self):
        return self.params["W"]

    @W.setter
    def W(self, value):
        self.params["W"] = value

    def init_feedback(self, rule, xp, rng) -> None:
        """Let the rule set B (None for backprop, which reads W) and any state it keeps here."""
        self.B = rule.init_feedback(self.W, xp, rng)
        rule.prepare_layer(self, xp)

    def activation_response(self, v, with_bias: bool = True):
        """``φ(v + b)``: the layer's output nonlinearity on a synaptic drive."""
        if with_bias and "b" in self.params:
            v = v + self.bias_view()
        if self.mirror_activation is None:
            return v
        return self.mirror_activation.forward(v, train=False)


class Linear(WeightLayer):
    """Fully connected layer ``v = W y + b`` (batch rows: ``v = y Wᵀ + b``).

    W has shape ``(out, in)``; initialised ``W ~ N(0, 2/in)`` (He) or
    ``N(0, 1/in)`` (LeCun) by ``init``; b = 0.
    """

    def __init__(self, n_in: int, n_out: int, xp, rng, init: str = "he", bias: bool = True):
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"Linear: sizes must be >= 1, got {n_in} -> {n_out}")
        gain = {"he": 2.0, "lecun": 1.0}[init]
        std = math.sqrt(gain / n_in)
        self.params["W"] = (rng.standard_normal((n_out, n_in), dtype=xp.float32) * xp.float32(std))
        if bias:
            self.params["b"] = xp.zeros(n_out, dtype=xp.float32)
        self.n_in, self.n_out = n_in, n_out
        self.xp = xp

    @property
    def mirror_input_shape(self) -> tuple[int, ...]:
        return (self.n_in,)

    def bias_view(self):
        return self.params["b"]

    def forward(self, x, train: bool = True):
        self._x = x if train else None
        v = x @ self.params["W"].T
        if "b" in self.params:
            v += self.params["b"]
        return v

    def linear_response(self, x):
        """``W x`` for a batch (no bias)."""
        return x @ self.params["W"].T

    def hebbian(self, pre, post):
        """``Σ_n post_n pre_nᵀ`` (out, in): also the weight gradient ``δᵀ y``."""
        return post.T @ pre

    def backward(self, dy, ctx: BackwardContext):
        if ctx.record is not None:
            ctx.record.append(dy)
        x = self._x
        # Gradients go into arrays kept from step to step: a fresh 1-MB array per
        # step costs page faults that are a visible share of a CPU step.
        gW = self.grads.get("W")
        if gW is None or gW.shape != self.params["W"].shape or gW.dtype != dy.dtype:
            gW = self.grads["W"] = ctx.xp.empty(self.params["W"].shape, dtype=dy.dtype)
        ctx.xp.matmul(dy.T, x, out=gW)
        if "b" in self.params:
            self.grads["b"] = dy.sum(axis=0)
        if not self.needs_input_grad:
            return None
        F = self.params["W"] if ctx.use_backprop else ctx.rule.feedback(self, ctx.xp, ctx.rng)
        return dy @ F


class ReLU(Module):
    """``φ(v) = max(v, 0)``, ``φ'(v) = [v > 0]``.

    ``inplace=True`` overwrites its input (safe where no other module keeps
    it, as after a Linear layer, which caches its own input only) and scales
    the incoming error in place.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x, train: bool = True):
        xp = array_module_of(x)
        y = xp.maximum(x, 0, out=x if self.inplace else None)
        if train:
            self._y = y
        return y

    def backward(self, dy, ctx: BackwardContext):
        if fused.active(array_module_of(dy)) and dy.shape == self._y.shape:
            try:
                return fused.relu_backward(dy, self._y)
            except Exception as exc:  # noqa: BLE001 - plain CuPy from now on
                fused.record_failure(exc)
        if self.inplace:
            dy *= self._y > 0
            return dy
        return dy * (self._y > 0)


class Tanh(Module):
    """``φ(v) = tanh v``, ``φ'(v) = 1 - φ(v)²``."""

    def forward(self, x, train: bool = True):
        xp = array_module_of(x)
        y = xp.tanh(x)
        if train:
            self._y = y
        return y

    def backward(self, dy, ctx: BackwardContext):
        y = self._y
        return dy * (1 - y * y)


class Sigmoid(Module):
    """``φ(v) = 1 / (1 + e^{-v})``, ``φ'(v) = φ(v)(1 - φ(v))``."""

    def forward(self, x, train: bool = True):
        xp = array_module_of(x)
        y = 1 / (1 + xp.exp(-x))
        if train:
            self._y = y
        return y

    def backward(self, dy, ctx: BackwardContext):
        y = self._y
        return dy * (y * (1 - y))


#: activation name -> module class (the one list of names: configs and builders read it)
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
#: the names of ``ACTIVATIONS``, in order
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)


def softmax_cross_entropy(logits, labels, xp, label_smoothing: float = 0.0):
    """Mean cross-entropy of ``softmax(logits)`` and its gradient.

    ``L = -(1/n) Σ_n Σ_k t_nk log p_nk`` with ``p = softmax(logits)`` and
    targets ``t = (1-ε) onehot + ε/K``; ``∂L/∂logits = (p - t) / n``.
    Computed in float32 with the max subtracted for stability.
    """
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    log_p = shifted - xp.log(sums)
    rows = xp.arange(n)
    if label_smoothing:
        eps = label_smoothing
        loss = -((1 - eps) * log_p[rows, labels] + (eps / k) * log_p.sum(axis=1)).mean()
    else:
        loss = -log_p[rows, labels].mean()
    grad = exp / sums
    if label_smoothing:
        grad -= eps / k
        grad[rows, labels] -= 1 - eps
    else:
        grad[rows, labels] -= 1
    grad *= xp.float32(1.0 / n)
    return float(loss), grad


class Network:
    """A feed-forward stack of modules with an injected learning rule."""

    def __init__(self, modules: list[Module], rule, xp):
        self.modules = modules
        self.rule = rule
        self.xp = xp
        self.weight_layers: list[WeightLayer] = [
            m for _, m in self.named_modules() if isinstance(m, WeightLayer)
        ]
        # The network's input needs no error: skip the first layer's dx product.
        if modules:
            modules[0].needs_input_grad = False

    def init_feedback(self, rng) -> None:
        for layer in self.weight_layers:
            layer.init_feedback(self.rule, self.xp, rng)

    def forward(self, x, train: bool = True):
        for m in self.modules:
            x = m.forward(x, train)
        return x

    def backward(self, dlogits, rng=None, use_backprop: bool = False, record: list | None = None, rule=None):
        """The error from the logits down; ``rule`` (default: the network's) gives the feedback."""
        ctx = BackwardContext(self.rule if rule is None else rule, self.xp, rng, use_backprop, record)
        d = dlogits
        for m in reversed(self.modules):
            d = m.backward(d, ctx)
            if d is None:
                break
        return ctx

    def named_modules(self):
        """``(path, module)`` for every module, depth first (``"3.1.0"``)."""

        def walk(prefix, mods):
            for i, m in enumerate(mods):
                path = f"{prefix}{i}"
                yield path, m
                yield from walk(path + ".", m.children())

        yield from walk("", self.modules)

    def parameter_modules(self) -> list[Module]:
        """Every module that has parameters, in a stable order."""
        return [m for _, m in self.named_modules() if m.params]

    def state(self) -> dict[str, Any]:
        """Every array (parameters, feedback weights, buffers) by a stable name."""
        out = {}
        for path, m in self.named_modules():
            for name, arr in m.params.items():
                out[f"{path}.{name}"] = arr
            if isinstance(m, WeightLayer) and m.B is not None:
                out[f"{path}.B"] = m.B
            for name, arr in getattr(m, "buffers", {}).items():
                out[f"{path}.{name}"] = arr
        return out

    def load_state(self, arrays: dict[str, Any]) -> None:
        """Copy arrays (NumPy) into the network, checking names and shapes."""
        own = self.state()
        missing = sorted(set(own) - set(arrays))
        if missing:
            raise ValueError(f"checkpoint lacks arrays {missing[:5]}")
        for key, arr in own.items():
            src = arrays[key]
            if tuple(src.shape) != tuple(arr.shape):
                raise ValueError(f"checkpoint array {key} has shape {tuple(src.shape)}, network has {tuple(arr.shape)}")
            arr[...] = self.xp.asarray(src)
