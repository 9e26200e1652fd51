"""What the benchmark scripts share (``python3 bench/X.py`` puts this folder on the path)."""
from __future__ import annotations

import platform

import numpy as np


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mlp_matmul_chain(sizes, batch: int):
    """An MLP BP step's matrix products alone, float32, the same shapes: forward and weight
    gradient for every layer, the error for all but the first. Returns ``step()``."""
    rng = np.random.default_rng(1)
    Ws = [rng.standard_normal((o, i), dtype=np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    xs = [rng.standard_normal((batch, i), dtype=np.float32) for i in sizes[:-1]]
    ds = [rng.standard_normal((batch, o), dtype=np.float32) for o in sizes[1:]]

    def step() -> None:
        for k, W in enumerate(Ws):
            xs[k] @ W.T
            ds[k].T @ xs[k]
            if k:
                ds[k] @ W

    return step
