"""Epoch time of the small convnet on Fashion-MNIST: weightmirror (NumPy) vs PyTorch (CPU).

The same network on both sides (conv3x3 32 + maxpool2 + ReLU, conv3x3 64 +
maxpool2 + ReLU, flatten, linear 3136→128 + ReLU, linear 128→10), the same
batch size, plain SGD, the same number of BLAS/intra-op threads. Each side
runs ``--warmup`` steps, then ``--blocks`` timed blocks of ``--steps`` steps,
the sides interleaved block by block (a new random order each round, 0.3 s of rest
before each block) so that all see the same machine
load. The epoch time is the median step time times ``ceil(60000 / batch)``.

Run it in an environment that has PyTorch (not a project dependency), with
the OpenBLAS overrides that may be set on the machine removed::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python3 bench/bench_convnet_cpu.py     # a Python with torch==2.13.0 installed

The NumPy side runs as ``weightmirror train`` does: with more than one thread
the batch is split over the threads (``run.split_batch``, ``models.batch_threads``);
``numpy:bp-unsplit`` is BP on the BLAS's threads alone, in the same run.

``--rules bp,fa,usf,kp,wm`` times several learning rules on the NumPy side in the
same run (each as the training config has it, ``TrainConfig().make_rule()``,
after its initial phase, told the batch size as the trainer tells it; ``wm``
includes its mirror after every step), each against BP and PyTorch.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from weightmirror.models.layers import softmax_cross_entropy  # noqa: E402
from weightmirror.models.zoo import build_model  # noqa: E402
from weightmirror.sims.datasets import load_dataset  # noqa: E402


def numpy_side(data, batch, rule_name, lr, seed, split=True):
    """One training step of this engine, as ``weightmirror train`` runs it: with ``split``
    (``run.split_batch``, the default) the batch is split over the BLAS's threads."""
    from weightmirror.circuits.rules import Progress
    from weightmirror.models.batch_threads import BatchThreads, blas_threads, split_reason
    from weightmirror.sims.config import resolve

    rng = np.random.default_rng(seed)
    rule = resolve({"rule": rule_name}).make_rule()  # the training defaults (WM's noise, KP's start)
    net = build_model("convnet", data.image_shape, data.num_classes, rule, np, rng)
    rule.initial_phase(net.weight_layers, np, rng)
    threads = blas_threads()
    shards = BatchThreads(net, threads) if split and threads > 1 and not split_reason(net, np) else None
    mods = net.parameter_modules()
    x_all, y_all = data.x_train, data.y_train
    n = len(y_all)
    state = {"i": 0}

    def step():
        i = state["i"]
        if i + batch > n:
            i = 0
        state["i"] = i + batch
        xb, yb = x_all[i:i + batch], y_all[i:i + batch]
        if shards is not None:
            loss, _ = shards.loss_and_gradients(xb, yb, rng)
        else:
            loss, g = softmax_cross_entropy(net.forward(xb, train=True), yb, np)
            net.backward(g, rng)
        for m in mods:
            for name, p in m.params.items():
                p -= np.float32(lr) * m.grads[name]
        state["steps"] = state.get("steps", 0) + 1
        rule.after_step(net.weight_layers, np, rng, Progress(state["steps"], 0.0, 1.0, batch))
        return loss

    return step


def torch_side(data, batch, lr, seed, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    x_all = torch.from_numpy(data.x_train)
    y_all = torch.from_numpy(data.y_train)
    n = len(y_all)
    state = {"i": 0}

    def step():
        i = state["i"]
        if i + batch > n:
            i = 0
        state["i"] = i + batch
        xb, yb = x_all[i:i + batch], y_all[i:i + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    return step, torch.__version__, torch.__config__.parallel_info()


#: seconds of rest before each timed block: the threads of the side timed before (OpenBLAS's,
#: PyTorch's OpenMP) spin-wait for a while after their work, and would take a core from this one
SETTLE = 0.3


def timed_block(step, steps):
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per side (interleaved)")
    ap.add_argument("--rules", default="bp", help="learning rules of the NumPy side, comma-separated "
                    "(bp, fa, usf, brsf, frsf, kp, wm); bp is always timed")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: /usr/share/datasets/fashion-mnist)")
    ap.add_argument("--no-torch", action="store_true", help="time the NumPy side only")
    args = ap.parse_args(argv)

    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set; it may slow NumPy's BLAS (unset it)")
    data = load_dataset("fashion-mnist", args.data_dir, flatten=False)
    steps_per_epoch = math.ceil(len(data.y_train) / args.batch)

    load_before = os.getloadavg()
    with threadpool_limits(limits=args.threads):
        rules = ["bp"] + [r for r in args.rules.split(",") if r and r != "bp"]
        sides = {f"numpy:{r}": numpy_side(data, args.batch, r, args.lr, 0) for r in rules}
        if args.threads > 1:  # the BLAS's threads alone (run.split_batch = false)
            sides["numpy:bp-unsplit"] = numpy_side(data, args.batch, "bp", args.lr, 0, split=False)

        torch_info = None
        if not args.no_torch:
            tstep, tver, tpar = torch_side(data, args.batch, args.lr, 0, args.threads)
            sides["torch"] = tstep
            torch_info = (tver, tpar)
        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} threads)"
                for i in threadpool_info() if i["user_api"] == "blas"]

        for name, step in sides.items():
            for _ in range(args.warmup):
                step()
        times = {name: [] for name in sides}
        order = list(sides)
        shuffle = np.random.default_rng(0)
        for _ in range(args.blocks):
            shuffle.shuffle(order)  # a new order every round: no side always follows the same one
            for name in order:
                times[name].append(timed_block(sides[name], args.steps))

    print(f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs (other processes share the cores when this exceeds the thread count)")
    print(f"python {platform.python_version()}, numpy {np.__version__}, BLAS: {'; '.join(blas)}")
    if torch_info:
        print(f"torch {torch_info[0]}; " + " ".join(
            line.strip() for line in torch_info[1].splitlines() if "threads" in line.lower() or "MKL" in line or "OpenMP" in line))
    print(f"batch {args.batch}, threads {args.threads}, {args.blocks} blocks x {args.steps} steps "
          f"after {args.warmup} warm-up; {steps_per_epoch} steps per epoch")
    med = {}
    for name, ts in times.items():
        med[name] = statistics.median(ts)
        print(f"{name:9s} step median {1e3 * med[name]:7.2f} ms  (blocks: "
              + ", ".join(f"{1e3 * t:.1f}" for t in ts)
              + f")  epoch {med[name] * steps_per_epoch:6.1f} s")
    if "torch" in med:
        print(f"ratio numpy BP / torch: {med['numpy:bp'] / med['torch']:.2f} "
              f"(per block: {', '.join(f'{a / b:.2f}' for a, b in zip(times['numpy:bp'], times['torch']))})")
    for r in rules[1:] + (["bp-unsplit"] if "numpy:bp-unsplit" in med else []):
        print(f"ratio numpy {r} / numpy BP: {med[f'numpy:{r}'] / med['numpy:bp']:.2f}")


if __name__ == "__main__":
    main()
