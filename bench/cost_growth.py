"""How a training step's cost grows, in this engine and in PyTorch, side by side on the CPU.

Run (a Python with ``torch==2.13.0`` installed; not a project dependency):

    python3 bench/cost_growth.py [--threads 2] [--repeats 5] [--out bench/results_cost_growth]

Two sweeps, BP steps (forward, loss, backward, SGD with momentum), random data:

1. the MLP 784-W-W-10 (ReLU) against the batch size (W = 500) and against
   the width W (batch 128);
2. the small convnet (conv3x3 32, pool, conv3x3 64, pool, fc 128, fc 10)
   against the image size (batch 64).

For every point: this engine's step, PyTorch's, and the step's matrix
products alone (NumPy, the same shapes: the GEMM floor), each a median over
``--repeats`` blocks, the three interleaved block by block. What bounds a
point shows in the columns: ``GEMM share`` = products alone / engine step
(near 1: the BLAS bounds it; low at small sizes: the fixed cost per step, i.e.
Python and the calls; low at large images: the element-wise and copy loops,
i.e. memory), and the time per example, which is flat where the step grows
linearly.

Writes ``table.md`` and ``summary.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from benchlib import cpu_name, mlp_matmul_chain  # noqa: E402


# -- this engine -------------------------------------------------------------------
def engine_step(model: str, input_shape, batch: int, options: dict):
    from weightmirror.circuits.rules import Backprop
    from weightmirror.models.batch_threads import BatchThreads, blas_threads, split_reason
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.optim import SGD
    from weightmirror.models.zoo import build_model

    rng = np.random.default_rng(0)
    rule = Backprop()
    net = build_model(model, input_shape, 10, rule, np, rng, **options)
    opt = SGD(net.parameter_modules(), rule, np, momentum=0.9)
    x = rng.standard_normal((batch, *net.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    threads = blas_threads()  # as weightmirror train runs it: a convnet's batch split over the threads
    shards = BatchThreads(net, threads) if threads > 1 and not split_reason(net, np) else None

    def step():
        if shards is not None:
            shards.loss_and_gradients(x, y, rng)
        else:
            _, d = softmax_cross_entropy(net.forward(x), y, np)
            net.backward(d, rng=rng)
        opt.step(0.01)

    return step


def gemm_floor_convnet(hw: int, batch: int):
    """The convnet's products alone as im2col GEMMs of the same shapes (columns precomputed)."""
    rng = np.random.default_rng(1)
    shapes = []  # (C_out, F, positions, needs dx)
    h = hw
    c_in = 1
    for k, c_out in enumerate((32, 64)):
        shapes.append((c_out, c_in * 9, batch * h * h, k > 0))
        c_in, h = c_out, h // 2
    shapes.append((128, c_in * h * h, batch, True))
    shapes.append((10, 128, batch, True))
    arrays = [(rng.standard_normal((c, f), dtype=np.float32), rng.standard_normal((f, p), dtype=np.float32),
               rng.standard_normal((c, p), dtype=np.float32), dx) for c, f, p, dx in shapes]

    def step():
        for W, cols, d, dx in arrays:
            W @ cols
            d @ cols.T
            if dx:
                W.T @ d

    return step


# -- PyTorch -----------------------------------------------------------------------
def torch_step(kind: str, batch: int, width: int = 500, hw: int = 28):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if kind == "mlp":
        net = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
        x = torch.randn(batch, 784)
    else:
        side = hw // 4
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.randn(batch, 1, hw, hw)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    return step


#: seconds of rest before each timed block: the threads of the side timed before (OpenBLAS's,
#: PyTorch's OpenMP) spin-wait for a while after their work, and would take a core from this one
SETTLE = 0.3


def timed(step, steps: int) -> float:
    time.sleep(SETTLE)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def measure(sides: dict, repeats: int, seconds: float = 1.0) -> dict:
    """Median seconds per step of each side, interleaved; each block about ``seconds`` long."""
    for step in sides.values():
        step()
    probe = {}
    for k, s in sides.items():
        t = time.perf_counter()
        s()
        probe[k] = time.perf_counter() - t
    steps = {k: max(1, int(seconds / max(t, 1e-6))) for k, t in probe.items()}
    times = {k: [] for k in sides}
    order = list(sides)
    shuffle = np.random.default_rng(0)
    for _ in range(repeats):
        shuffle.shuffle(order)  # a new order every round: no side always follows the same one
        for k in order:
            times[k].append(timed(sides[k], steps[k]))
    return {k: statistics.median(v) for k, v in times.items()} | {
        f"{k}_spread": [min(v), max(v)] for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", default="8,32,128,512")
    p.add_argument("--widths", default="128,500,1000,2000")
    p.add_argument("--image-sizes", default="16,28,56,112")
    p.add_argument("--out", type=Path, default=Path("bench/results_cost_growth"))
    args = p.parse_args()
    if args.threads < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be >= 1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("(PyTorch not installed: the PyTorch column stays empty; pip install torch==2.13.0 to compare)")
    points = []

    def point(sweep, label, per, engine, floor, torch_side):
        sides = {"engine": engine, "gemm": floor}
        if torch_version:
            sides["torch"] = torch_side()
        r = measure(sides, args.repeats)
        r.update(sweep=sweep, point=label, examples=per)
        points.append(r)
        tt = f"{r['torch'] * 1e3:.2f}" if "torch" in r else "-"
        print(f"{sweep:16s} {label:12s} engine {r['engine'] * 1e3:8.2f} ms  torch {tt} ms  "
              f"gemm {r['gemm'] * 1e3:8.2f} ms", flush=True)

    for b in map(int, args.batches.split(",")):
        point("MLP, batch", f"batch {b}", b, engine_step("mlp", (784,), b, {"hidden": [500, 500]}),
              mlp_matmul_chain([784, 500, 500, 10], b), lambda b=b: torch_step("mlp", b))
    for w in map(int, args.widths.split(",")):
        point("MLP, width", f"W {w}", 128, engine_step("mlp", (784,), 128, {"hidden": [w, w]}),
              mlp_matmul_chain([784, w, w, 10], 128), lambda w=w: torch_step("mlp", 128, width=w))
    for hw in map(int, args.image_sizes.split(",")):
        point("convnet, image", f"{hw}x{hw}", 64, engine_step("convnet", (1, hw, hw), 64, {}),
              gemm_floor_convnet(hw, 64), lambda hw=hw: torch_step("convnet", 64, hw=hw))

    lines = [f"`python3 bench/cost_growth.py --threads {args.threads} --repeats {args.repeats}`; {cpu_name()}, "
             f"{os.cpu_count()} cores, {args.threads} threads; NumPy {np.__version__}, PyTorch {torch_version}; "
             f"BP steps on random data, medians of {args.repeats} interleaved blocks.", "",
             "| sweep | point | engine ms / step | PyTorch ms / step | engine / PyTorch | products alone ms | "
             "GEMM share of the engine's step | engine µs / example |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in points:
        torch_ms = f"{r['torch'] * 1e3:.2f}" if "torch" in r else "not measured"
        ratio = f"{r['engine'] / r['torch']:.2f}" if "torch" in r else "-"
        lines.append(f"| {r['sweep']} | {r['point']} | {r['engine'] * 1e3:.2f} | {torch_ms} | {ratio} | "
                     f"{r['gemm'] * 1e3:.2f} | {r['gemm'] / r['engine']:.0%} | {r['engine'] / r['examples'] * 1e6:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps({"threads": args.threads, "torch": torch_version,
                                                        "points": points}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
