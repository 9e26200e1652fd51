"""Epoch time of the rate-mode MLP engine, side by side with PyTorch on the CPU.

Run:  python3 bench/bench_mlp_speed.py [--repeats 5] [--steps 200] [--threads 2]

Network 784-500-500-10 (ReLU), batch 128, SGD momentum 0.9, on Fashion-MNIST
(the real training images, or random data with --random). In one process and
interleaved (every contender once per round, in a new random order each round, after a
0.3 s rest) so that machine noise hits all alike:

1. this engine's BP step against the same network, batch and thread count in
   PyTorch (``pip install torch==2.13.0``, the local CPU wheel; not a project
   dependency): forward, cross-entropy, backward, SGD step;
2. every rule's step time relative to BP in this engine (WM with its mirror
   batches);
3. achieved GFLOP/s of the BP step against a plain float32 matrix product
   chain of the same sizes (the matmuls alone, no other work).

Times are medians over ``--repeats`` blocks of ``--steps`` steps, reported as
seconds per epoch (60,000 images = 468 steps of 128).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from benchlib import mlp_matmul_chain  # noqa: E402

SIZES = [784, 500, 500, 10]
BATCH = 128
STEPS_PER_EPOCH = 60000 // BATCH


def flops_per_step(sizes, batch) -> float:
    """Forward 2·n·in·out per layer; backward dW the same; dx for all but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    dw = fwd
    dx = sum(2 * batch * i * o for i, o in pairs[1:])
    return fwd + dw + dx


def load_inputs(random: bool):
    if not random:
        try:
            from weightmirror.sims.datasets import load_dataset

            d = load_dataset("fashion-mnist")
            return d.x_train, d.y_train
        except Exception as exc:  # noqa: BLE001 - benchmark falls back to random data
            print(f"(Fashion-MNIST not readable: {exc}; using random data)")
    rng = np.random.default_rng(0)
    return rng.standard_normal((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000)


def engine_stepper(rule_name: str, x, y, seed=0, force_split=False):
    """This engine's training step as ``weightmirror train`` runs it (an MLP's batch is not split
    over threads: ``models.batch_threads.split_reason``); ``force_split``: split it anyway."""
    from weightmirror.circuits.rules import Progress, make_rule
    from weightmirror.models.batch_threads import BatchThreads, blas_threads, split_reason
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.mlp import build_mlp
    from weightmirror.models.optim import SGD
    from weightmirror.sims.config import TrainConfig

    rng = np.random.default_rng(seed)
    # the rules as the training config has them; KP with its own decay on all the time (the worst case)
    defaults = TrainConfig()
    params = {"kp": {**defaults.kp.params(), "decay_total": 4.0, "decay_fraction": 1.0},
              "wm": defaults.wm.params()}
    rule = make_rule(rule_name, **params.get(rule_name, {}))
    net = build_mlp(SIZES, rule, np, rng)
    # as training starts: the initial mirror phase (WM; KP's mirror-calibrated start) before any step
    rule.initial_phase(net.weight_layers, np, rng)
    opt = SGD(net.parameter_modules(), rule, np, momentum=0.9, weight_decay=1e-4)
    threads = blas_threads()
    split = not split_reason(net, np, for_speed=not force_split)
    shards = BatchThreads(net, threads) if split and threads > 1 else None
    order = rng.permutation(len(y))
    state = {"i": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            i = state["i"] % (len(y) // BATCH)
            state["i"] += 1
            idx = order[i * BATCH:(i + 1) * BATCH]
            xb, yb = x[idx], y[idx]
            if shards is not None:
                shards.loss_and_gradients(xb, yb, rng)
            else:
                logits = net.forward(xb)
                _, d = softmax_cross_entropy(logits, yb, np)
                net.backward(d, rng=rng)
            # where training stands (inside KP's decay window) and the step's examples, as the training
            # loop passes them (the weight mirror sizes its cost against them)
            progress = Progress(state["i"], 0.0, 1.0, BATCH)
            opt.step(0.01, progress=progress)
            rule.after_step(net.weight_layers, np, rng, progress)

    return run


def torch_stepper(x, y, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    state = {"i": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            i = state["i"] % (len(y) // BATCH)
            state["i"] += 1
            idx = order[i * BATCH:(i + 1) * BATCH]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()

    return run, torch.__version__


def matmul_chain():
    """The BP step's matrix products alone, float32, same shapes (``benchlib.mlp_matmul_chain``)."""
    step = mlp_matmul_chain(SIZES, BATCH)

    def run(steps: int) -> None:
        for _ in range(steps):
            step()

    return run


#: seconds of rest before each timed block: the threads of the side timed before (OpenBLAS's,
#: PyTorch's OpenMP) spin-wait for a while after their work, and would take a core from this one
SETTLE = 0.3


def timed(run, steps: int) -> float:
    time.sleep(SETTLE)
    t = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--random", action="store_true", help="random data instead of Fashion-MNIST")
    p.add_argument("--rules", default="bp,fa,usf,brsf,frsf,wm,kp")
    args = p.parse_args()

    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(args.threads)
        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                         f"threads={i.get('num_threads')}" for i in threadpool_info())
    except ImportError:
        blas = "threadpoolctl not installed"
    x, y = load_inputs(args.random)
    rules = args.rules.split(",")
    runners = {f"engine:{r}": engine_stepper(r, x, y) for r in rules}
    if args.threads > 1:  # BP with the batch split over the threads anyway (why an MLP's is not)
        runners["engine:bp-split"] = engine_stepper("bp", x, y, force_split=True)
    try:
        runners["torch:bp"], torch_version = torch_stepper(x, y, args.threads)
    except ImportError:
        torch_version = None
        print("(PyTorch not installed: pip install torch==2.13.0 to compare)")
    runners["matmul-only"] = matmul_chain()

    for run in runners.values():  # warm-up
        run(20)
    samples = {k: [] for k in runners}
    order = list(runners)
    shuffle = np.random.default_rng(0)
    for _ in range(args.repeats):
        shuffle.shuffle(order)  # a new order every round: no contender always follows the same one
        for name in order:
            samples[name].append(timed(runners[name], args.steps))
    med = {k: statistics.median(v) for k, v in samples.items()}

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flops = flops_per_step(SIZES, BATCH)
    print(f"machine: {cpu}, {os.cpu_count()} cores; threads {args.threads}; numpy {np.__version__}; "
          f"torch {torch_version}; BLAS: {blas}")
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, {args.repeats} x {args.steps} steps, medians\n")
    bp = med["engine:bp"]
    print("| what | s / epoch | ratio |")
    print("|---|---:|---:|")
    if "torch:bp" in med:
        print(f"| PyTorch BP | {med['torch:bp'] * STEPS_PER_EPOCH:.2f} | 1.00 (reference) |")
        print(f"| this engine BP | {bp * STEPS_PER_EPOCH:.2f} | {bp / med['torch:bp']:.2f} x PyTorch |")
    for r in rules + (["bp-split"] if "engine:bp-split" in med else []):
        if r == "bp":
            continue
        t = med[f"engine:{r}"]
        print(f"| this engine {r} | {t * STEPS_PER_EPOCH:.2f} | {t / bp:.2f} x BP |")
    mm = med["matmul-only"]
    print(f"\nGFLOP/s (BP step, {flops / 1e6:.0f} MFLOP/step): engine {flops / bp / 1e9:.1f}, "
          f"matmul chain alone {flops / mm / 1e9:.1f} ({mm / bp:.0%} of it)"
          + (f", PyTorch {flops / med['torch:bp'] / 1e9:.1f}" if "torch:bp" in med else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
