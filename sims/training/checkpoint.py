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

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "read_state"]


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
            state = cls(epoch=int(meta["epoch"]), step=int(meta.get("step", 0)),
                        wall_seconds=float(meta["wall_seconds"]), metrics=list(meta["metrics"]),
                        partial=dict(meta.get("partial") or {}), world_size=int(meta.get("world_size", 1)))
            if state.epoch < 0 or state.step < 0 or not all(isinstance(r, dict) for r in state.metrics):
                raise ValueError("epoch, step or metrics out of range")
            if len(state.metrics) != state.epoch + 1:
                raise ValueError(f"{len(state.metrics)} metrics rows for {state.epoch} epochs")
            if not isinstance(state.partial.get("losses", []), list):
                raise ValueError("partial.losses is not a list")
            return state
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise results.ResultsError(f"{where}: its train state (__meta__) is not readable ({exc})") from None


def read_state(path: Path) -> TrainState:
    """Only the train state of checkpoint ``path`` (its ``__meta__``), without loading the arrays."""
    path = Path(path)
    if not path.is_file():
        raise results.ResultsError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                raise results.ResultsError(f"{path}: not a training checkpoint (no __meta__)")
            text = str(z["__meta__"])
    except results.ResultsError:
        raise
    except Exception as exc:  # zipfile/format errors, an object array refused by allow_pickle=False
        raise results.ResultsError(f"{path}: not a readable .npz ({exc})") from None
    return TrainState.from_json(text, path)


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
    try:
        net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
        opt.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
    except (ValueError, TypeError) as exc:  # missing arrays, wrong shapes or dtypes
        raise results.ResultsError(f"{path}: does not fit the network of its config.toml ({exc})") from None
    return state
