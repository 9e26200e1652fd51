"""SGD with momentum and decoupled weight decay, and learning-rate schedules.

The update of a parameter ``p`` with gradient ``g`` (the local product, e.g.
``δᵀ y`` for W) at learning rate ``η_t``:

``v ← μ v + g``;  ``s = -η_t (g + μ v)`` (Nesterov) or ``s = -η_t v``;
``p ← (1 - η_t λ_wd) p + s``.

Weight decay is decoupled from the momentum trace so that it is a plain
synaptic decay; Kolen-Pollack relies on this: its feedback weights receive
the same ``s`` and the same decay (``rule.after_weight_update``), so
``W - B`` shrinks by exactly ``(1 - η_t λ_wd)`` per step. Biases and
normalisation parameters are not decayed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import fused

#: parameter names that weight decay applies to
DECAYED = ("W",)

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Learning rate against training progress.

    ``warmup_epochs`` of linear warm-up from ``lr/steps`` to ``lr``, then
    ``constant``; ``step`` (× ``gamma`` at each epoch of ``milestones``);
    or ``cosine`` annealing to ``lr·final_fraction`` at the last epoch.
    """

    lr: float
    kind: str = "cosine"
    epochs: int = 1
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_fraction: float = 0.0

    def __call__(self, epoch_progress: float) -> float:
        """Learning rate at ``epoch_progress`` epochs (a float: epoch + step/steps)."""
        e = epoch_progress
        if self.warmup_epochs > 0 and e < self.warmup_epochs:
            return self.lr * (e + 1e-12) / self.warmup_epochs
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            drops = sum(1 for m in self.milestones if e >= m)
            return self.lr * self.gamma**drops
        # cosine, counted after warm-up
        span = max(self.epochs - self.warmup_epochs, 1e-12)
        frac = min(max((e - self.warmup_epochs) / span, 0.0), 1.0)
        low = self.lr * self.final_fraction
        return low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * frac))


def lr_mass(schedule: Schedule, epochs: int, steps_per_epoch: int) -> float:
    """``Σ_t η_t`` over a run: the learning-rate mass the trainer will spend.

    Step ``s`` of epoch ``e`` uses ``η = schedule(e + s / steps_per_epoch)``, as
    the training loop does.
    """
    return float(sum(schedule(e + s / steps_per_epoch) for e in range(epochs) for s in range(steps_per_epoch)))


class SGD:
    """SGD over a network's parameter modules; calls the rule for W.

    Parameters
    ----------
    modules : modules with ``params``/``grads`` dicts (``Network.parameter_modules()``).
    rule : the learning rule; ``after_weight_update(layer, step, shrink, xp)``
        runs after each W update.
    momentum, nesterov, weight_decay : see the module docstring.
    """

    def __init__(self, modules, rule, xp, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0):
        self.modules = list(modules)
        self.rule = rule
        self.xp = xp
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.velocity = [
            {name: xp.zeros_like(p) for name, p in m.params.items()} for m in self.modules
        ]
        # preallocated step arrays: no allocation in the training loop
        self._steps = [{name: xp.empty_like(p) for name, p in m.params.items()} for m in self.modules]

    def step(self, lr: float, progress=None) -> None:
        """One update at learning rate ``lr``; ``progress`` (a
        :class:`weightmirror.circuits.rules.Progress`: where training stands) is
        passed on to the rule, whose own decay may follow it."""
        xp = self.xp
        mu = self.momentum
        use_fused = fused.active(xp)
        for module, vel, steps in zip(self.modules, self.velocity, self._steps):
            for name, p in module.params.items():
                g = module.grads[name]
                v = vel[name]
                step = steps[name]
                # the rule's own decay of W (Kolen-Pollack) folds into this update:
                # W ← k (shrink·W + step), with no extra pass over W
                k = self.rule.weight_decay_factor(lr, progress) if name == "W" else 1.0
                scale = xp.float32(-lr * k)
                shrink = k * (1.0 - lr * self.weight_decay) if self.weight_decay and name in DECAYED else k
                if use_fused:
                    try:
                        fused.sgd_update(g, v, p, step, mu, -lr * k, shrink, self.nesterov)
                    except Exception as exc:  # noqa: BLE001 - plain CuPy from now on
                        fused.record_failure(exc)
                        use_fused = False
                    else:
                        if name == "W":
                            self.rule.after_weight_update(module, step, shrink, xp, lr, progress)
                        continue
                if mu:
                    v *= xp.float32(mu)
                    v += g
                    if self.nesterov:
                        xp.multiply(v, xp.float32(mu), out=step)
                        step += g
                        step *= scale
                    else:
                        xp.multiply(v, scale, out=step)
                else:
                    xp.multiply(g, scale, out=step)
                if shrink != 1.0:
                    p *= xp.float32(shrink)
                p += step
                if name == "W":
                    self.rule.after_weight_update(module, step, shrink, xp, lr, progress)

    def state(self) -> dict:
        return {f"{i}.{name}": v for i, vel in enumerate(self.velocity) for name, v in vel.items()}

    def load_state(self, arrays: dict) -> None:
        for key, v in self.state().items():
            if key not in arrays:
                raise ValueError(f"checkpoint lacks optimiser array {key}")
            if tuple(arrays[key].shape) != tuple(v.shape):  # no silent broadcast of a wrong shape
                raise ValueError(f"checkpoint optimiser array {key} has shape {tuple(arrays[key].shape)}, "
                                 f"the optimiser has {tuple(v.shape)}")
            v[...] = self.xp.asarray(arrays[key])
