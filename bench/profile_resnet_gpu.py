"""Where a training step of ResNet-18 goes on the GPU, layer type by layer type.

    python3 bench/profile_resnet_gpu.py [--batch 256] [--rule bp] [--tf32] [--algorithm auto]

Every leaf module's forward and backward is timed with the GPU synchronised
before and after it (so the sum is a little more than an unsynchronised
step), plus the loss, the optimiser step and the rule's after-step work.
Prints a Markdown table: milliseconds per step by layer type.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rule", default="bp")
    p.add_argument("--tf32", action="store_true")
    p.add_argument("--algorithm", default="auto")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()

    from weightmirror.models.backend import use_gpu_options

    with use_gpu_options(tf32=args.tf32, conv_algorithm=args.algorithm):
        return _profile(args)


def _profile(args) -> int:
    """Time the steps of one configuration (its GPU options in force)."""
    import cupy as cp
    import numpy as np

    from weightmirror.circuits.rules import make_rule
    from weightmirror.models.backend import make_rng
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.optim import SGD
    from weightmirror.models.zoo import build_model

    rng = make_rng(cp, 0)
    rule = make_rule(args.rule)
    net = build_model("resnet18", (3, 224, 224), 1000, rule, cp, rng)
    opt = SGD(net.parameter_modules(), rule, cp, momentum=0.9, weight_decay=1e-4)
    x = rng.standard_normal((args.batch, 3, 224, 224), dtype=cp.float32)
    y = cp.asarray(np.random.default_rng(0).integers(0, 1000, args.batch))
    sync = cp.cuda.Device().synchronize
    totals: dict = defaultdict(float)
    recording = {"on": False}

    def timed(label, fn):
        def wrapper(*a, **k):
            if not recording["on"]:
                return fn(*a, **k)
            sync()
            t = time.perf_counter()
            out = fn(*a, **k)
            sync()
            totals[label] += time.perf_counter() - t
            return out
        return wrapper

    seen = set()
    for _, m in net.named_modules():
        if m.children() or id(m) in seen:
            continue
        seen.add(id(m))
        kind = type(m).__name__
        m.forward = timed((kind, "forward"), m.forward)
        m.backward = timed((kind, "backward"), m.backward)

    def step():
        logits = net.forward(x)
        loss, d = timed(("loss", "both"), softmax_cross_entropy)(logits, y, cp)
        net.backward(d, rng=rng)
        timed(("SGD", "step"), opt.step)(0.01)
        timed(("rule", "after_step"), rule.after_step)(net.weight_layers, cp, rng)

    for _ in range(2):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    plain = (time.perf_counter() - t) / args.steps
    recording["on"] = True
    for _ in range(args.steps):
        step()
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    print(f"ResNet-18, batch {args.batch}, rule {args.rule}, TF32 {args.tf32}, convolutions {args.algorithm}: "
          f"unsynchronised step {plain * 1e3:.1f} ms; synchronised per-module sum "
          f"{sum(totals.values()) / args.steps * 1e3:.1f} ms\n")
    print("| layer type | pass | ms / step |\n|---|---|---:|")
    for (kind, what), v in rows:
        print(f"| {kind} | {what} | {v / args.steps * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
