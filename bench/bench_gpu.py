"""GPU benchmarks of rate mode (CuPy), side by side with PyTorch on the same GPU.

Run on a machine with a CUDA GPU, CuPy and (for the comparison) PyTorch with
torchvision:

    python3 bench/bench_gpu.py --out gpu_bench.md [--resnet-batch 256] [--steps 5]

1. MLP 784-500-500-10, batch 128: step time of every rule in this engine and of
   the same network in PyTorch (float32), reported as seconds per epoch of 60,000.
2. ResNet-18 at 224×224, batch 256 (ImageNet topology, 1000 classes): training
   images per second (forward, backward with the rule's feedback, SGD step, and
   for WM a mirror batch of 64 noise images through every layer at every step,
   the most the default schedule ever does in one step) for BP, FA, WM, KP, and
   torchvision's ResNet-18 trained with PyTorch (float32; cuDNN with its
   default TF32 convolutions, and with TF32 off); peak GPU memory of each.
   The engine runs in several configurations (``--configs``): convolutions
   by im2col + cuBLAS only, or chosen per geometry by measurement between
   im2col and cuDNN (``auto``), each in float32 or with TF32 allowed.
   The per-geometry choices and timings go to ``--autotune-out``.

Medians over ``--steps`` timed steps after warm-up; CUDA synchronised around
each step. Writes a Markdown report to ``--out`` and prints it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _median_step(fn, steps: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def engine_step_fn(model: str, rule_name: str, batch: int, input_shape, classes: int, cp):
    from weightmirror.circuits.rules import make_rule
    from weightmirror.models.backend import make_rng
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.optim import SGD
    from weightmirror.models.zoo import build_model

    rng = make_rng(cp, 0)
    params = {"wm": {"mirror_batch_size": 64, "mirror_batches": 1.0}}.get(rule_name, {}) if model != "mlp" else {}
    rule = make_rule(rule_name, **params)
    options = {"hidden": [500, 500]} if model == "mlp" else {}
    net = build_model(model, input_shape, classes, rule, cp, rng, **options)
    opt = SGD(net.parameter_modules(), rule, cp, momentum=0.9, weight_decay=1e-4)
    shape = (batch, *getattr(net, "input_shape", input_shape))
    x = rng.standard_normal(shape, dtype=cp.float32)
    y = cp.asarray(np.random.default_rng(0).integers(0, classes, batch))

    def step():
        logits = net.forward(x)
        _, d = softmax_cross_entropy(logits, y, cp)
        net.backward(d, rng=rng)
        opt.step(0.01)
        rule.after_step(net.weight_layers, cp, rng)

    return step


def torch_mlp_fn(batch: int, torch):
    dev = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(), torch.nn.Linear(500, 500),
                                torch.nn.ReLU(), torch.nn.Linear(500, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 784, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def torch_resnet_fn(batch: int, torch, tf32: bool):
    import torchvision

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = torchvision.models.resnet18(num_classes=1000).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_bench.md")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--mlp-steps", type=int, default=200)
    p.add_argument("--resnet-batch", type=int, default=256)
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--skip-mlp", action="store_true")
    p.add_argument("--configs", default="auto-fp32:bp,fa,wm,kp,auto-tf32:bp,fa,wm,kp,auto-tf32-heuristic:bp,im2col-fp32:bp",
                   help="engine configurations ALGO-PRECISION[-PLANS]:rules, e.g. auto-tf32:bp,fa "
                        "(ALGO auto|im2col|cudnn, PRECISION fp32|tf32, PLANS measure|heuristic: cuDNN plan choice)")
    p.add_argument("--autotune-out", default=None, help="where to write the per-geometry choices (Markdown)")
    args = p.parse_args()

    import cupy as cp

    pool = cp.get_default_memory_pool()
    sync = cp.cuda.Device().synchronize
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines = [f"GPU: {name}; CuPy {cp.__version__}"]
    try:
        import torch
        lines[0] += f"; PyTorch {torch.__version__}"
    except ImportError:
        torch = None

    from weightmirror.models import conv as conv_mod
    from weightmirror.models import cudnn_conv, fused
    from weightmirror.models.backend import gpu_options, use_gpu_options

    lines.append(f"cuDNN convolutions: available (frontend {cudnn_conv.version()})" if cudnn_conv.available()
                 else f"cuDNN convolutions: unavailable: {cudnn_conv.unavailable_reason()}")
    print(lines[-1], flush=True)

    # 1. MLP
    if not args.skip_mlp:
        lines += ["", "### MLP 784-500-500-10, batch 128 (s per 60,000-image epoch, median step × 468)", "",
                  "| what | s / epoch | ratio |", "|---|---:|---:|"]
        mlp = {}
        for r in ["bp", "fa", "usf", "brsf", "frsf", "wm", "kp"]:
            fn = engine_step_fn("mlp", r, 128, (1, 28, 28), 10, cp)
            mlp[r] = _median_step(fn, args.mlp_steps, 20, sync)
        if torch is not None:
            t = _median_step(torch_mlp_fn(128, torch), args.mlp_steps, 20, torch.cuda.synchronize)
            lines.append(f"| PyTorch BP | {t * 468:.3f} | 1.00 |")
            lines.append(f"| engine BP | {mlp['bp'] * 468:.3f} | {mlp['bp'] / t:.2f} x PyTorch |")
        for r, v in mlp.items():
            if r != "bp":
                lines.append(f"| engine {r} | {v * 468:.3f} | {v / mlp['bp']:.2f} x BP |")
        print("\n".join(lines), flush=True)

    # 2. ResNet-18
    if not args.skip_resnet:
        b = args.resnet_batch
        lines += ["", f"### ResNet-18, 3×224×224, batch {b}, 1000 classes: training step", "",
                  "| what | step (ms) | images/s | vs BP step (same configuration) | peak GPU memory (GiB) |",
                  "|---|---:|---:|---:|---:|"]
        engine_bp = {}
        # parse "ALGO-PREC:r1,r2,ALGO-PREC:r3" into [(config, [rules])]
        parsed = []
        for token in args.configs.split(","):
            if ":" in token:
                config, r = token.split(":")
                parsed.append((config, [r]))
            else:
                parsed[-1][1].append(token)
        for config, config_rules in parsed:
            algo, prec, *plans = config.split("-")
            options = dict(conv_algorithm=algo, tf32=prec == "tf32", plan_search=plans[0] if plans else "measure")
            for r in config_rules:
                pool.free_all_blocks()
                label = (f"engine {r.upper()}, convolutions {algo}, {'TF32' if prec == 'tf32' else 'float32'}"
                         + (f", cuDNN plans: {plans[0] if plans else 'measure'}" if algo != "im2col" else ""))
                try:
                    with use_gpu_options(**options):
                        fn = engine_step_fn("resnet18", r, b, (3, 224, 224), 1000, cp)
                        t = _median_step(fn, args.steps, 2, sync)
                    peak = pool.total_bytes() / 2**30
                    del fn
                except Exception as exc:  # noqa: BLE001 - report and go on
                    lines.append(f"| {label} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | |")
                    print(lines[-1], flush=True)
                    continue
                if r == "bp":
                    engine_bp[config] = t
                rel = t / engine_bp[config] if config in engine_bp else float("nan")
                lines.append(f"| {label} | {t * 1e3:.1f} | {b / t:.0f} | {rel:.2f} | {peak:.1f} |")
                print(lines[-1], flush=True)
        pool.free_all_blocks()
        torch_t = {}
        for tf32 in ((True, False) if torch is not None else ()):
            try:
                torch.cuda.reset_peak_memory_stats()
                t = _median_step(torch_resnet_fn(b, torch, tf32), args.steps, 3, torch.cuda.synchronize)
            except Exception as exc:  # noqa: BLE001 - e.g. a CPU-only PyTorch
                lines.append(f"| PyTorch (TF32 {tf32}) | failed: {type(exc).__name__}: {str(exc)[:120]} | | | |")
                continue
            torch_t[tf32] = t
            peak = torch.cuda.max_memory_allocated() / 2**30
            lines.append(f"| torchvision ResNet-18, PyTorch (TF32 {'on, its default' if tf32 else 'off'}) | "
                         f"{t * 1e3:.1f} | {b / t:.0f} | | {peak:.1f} |")
            print(lines[-1], flush=True)
            torch.cuda.empty_cache()
        lines.append(f"\nFused GPU kernels (BN, ReLU, max pooling, SGD): "
                     f"{'on' if fused.active(cp) else 'off (' + str(fused.failure() or 'GPUOptions.fused') + ')'}"
                     f" (GPU options in force: {gpu_options()})\n")
        for config, t in engine_bp.items():
            for tf32, tt in torch_t.items():
                lines.append(f"- engine BP ({config}) images/s ÷ PyTorch (TF32 {'on' if tf32 else 'off'}): "
                             f"**{tt / t:.2f}**")
        if args.autotune_out:
            rows = conv_mod.autotune_table()
            text = ["| C_in | C_out | kernel | stride | input | TF32 | cuDNN plans | chosen | im2col (ms) | cuDNN (ms) | note |",
                    "|---:|---:|---|---:|---|---|---|---|---:|---:|---|"]
            for row in rows:
                c = "" if row["cudnn_s"] is None else f"{row['cudnn_s'] * 1e3:.2f}"
                text.append(f"| {row['c_in']} | {row['c_out']} | {row['kernel'][0]}x{row['kernel'][1]} | {row['stride']} | "
                            f"{'x'.join(map(str, row['input_shape']))} | {row['tf32']} | {row['cudnn_plans']} | {row['algorithm']} | "
                            f"{row['im2col_s'] * 1e3:.2f} | {c} | {row['note'][:100]} |")
            Path(args.autotune_out).write_text("\n".join(text) + "\n")
    report = "\n".join(lines)
    Path(args.out).write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
