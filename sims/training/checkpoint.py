"""Checkpoints: the network, the optimiser and a small train state, in one atomic ``.npz``.

``checkpoint.npz`` holds the arrays ``net.<name>`` (weights, feedback
weights, batch-norm buffers), ``opt.<name>`` (momentum traces) and
``__meta__``, a JSON text of :class:`TrainState`: where the run stands
(epochs done, steps done in the current epoch), its wall time so far, the
metrics rows so far, and for a mid-epoch checkpoint what the epoch has
gathered (losses, seconds, skipped images).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import results
from ...models.backend import to_numpy

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint"]


@dataclass
class TrainState:
    """Where a run stands, besides its arrays.

    Attributes
    ----------
    epoch : epochs completed.
    step : training steps done in epoch ``epoch`` (0 at an epoch boundary).
    wall_seconds : wall time spent so far, over every invocation.
    metrics : the metrics rows so far (epoch 0 first).
    partial : mid-epoch only: ``losses`` (per step so far), ``seconds`` and
        ``skipped`` (images) of the epoch in progress.
    world_size : number of ranks that wrote it.
    """

    epoch: int = 0
    step: int = 0
    wall_seconds: float = 0.0
    metrics: list[dict] = field(default_factory=list)
    partial: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1

    def to_json(self) -> str:
        meta = dataclasses.asdict(self)
        if not self.partial:
            del meta["partial"]
        return json.dumps(results.jsonable(meta))

    @classmethod
    def from_json(cls, text: str, where: Path) -> "TrainState":
        try:
            meta = json.loads(text)
            return cls(epoch=int(meta["epoch"]), step=int(meta.get("step", 0)),
                       wall_seconds=float(meta["wall_seconds"]), metrics=list(meta["metrics"]),
                       partial=dict(meta.get("partial") or {}), world_size=int(meta.get("world_size", 1)))
        except (ValueError, KeyError, TypeError) as exc:
            raise results.ResultsError(f"{where}: its train state (__meta__) is not readable ({exc})") from None


def save_checkpoint(path: Path, net, opt, state: TrainState) -> None:
    """Write the network, the optimiser and ``state`` to ``path`` atomically."""
    arrays = {f"net.{k}": to_numpy(v) for k, v in net.state().items()}
    arrays.update({f"opt.{k}": to_numpy(v) for k, v in opt.state().items()})
    arrays["__meta__"] = np.array(state.to_json())
    results.save_arrays(path, arrays)


def load_checkpoint(path: Path, net, opt) -> TrainState:
    """Load ``path`` into ``net`` and ``opt`` (in place); returns its train state."""
    arrays = results.load_arrays(path)
    if "__meta__" not in arrays:
        raise results.ResultsError(f"{path}: not a training checkpoint (no __meta__)")
    state = TrainState.from_json(str(arrays.pop("__meta__")), path)
    net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
    opt.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
    return state
