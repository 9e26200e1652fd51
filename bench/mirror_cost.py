"""The weight mirror's cost on ResNet-18/50 at ImageNet size: FLOPs, measured time, angles.

Run:  python3 bench/mirror_cost.py [--models resnet18,resnet50] [--batch 32] [--repeats 3]
                                    [--threads 2] [--device cpu] [--out bench/results_mirror_cost]

(``--device cuda``: the same on CuPy, e.g. ``--batch 256`` on a GPU, from
``bench/gpu_check.sh``.)

For each model (224² images, 1000 classes, the training config's WM rule:
``weightmirror.sims.config.TrainConfig().wm``):

1. **the initial phase**: run, timed, and every mirrored layer's angle to its W
   afterwards (the issue's bound: within 10°); its multiply-adds counted as the
   rule counts them (a moment draw ``F² (C + R)``, or ``m (2 F C + R F)``
   for ``m`` explicit samples, ``R`` = ``WeightMirror.RANDOM_WORK``);
2. **the running mirror's bound per step**: whatever the drift, the adaptive
   mirror draws each layer the cheaper way, so a step costs at most one moment
   draw per layer (``k = 1``; it pools ``k = ⌊1/λ⌋`` steps per draw, so less);
   that bound times the steps of an ImageNet epoch (1,281,167 images at batch
   256), against BP's ``3 × forward`` multiply-adds per image;
3. **the measured time share**: a BP training step at ``--batch`` (forward,
   loss, backward, SGD with momentum) against one moment draw in every mirrored
   layer (the bound of 2), both timed in this process, interleaved, medians
   over ``--repeats``; the share at batch 256 is the draw's time over the step's
   time per image × 256, from the faster per-image time of ``--batch`` and half
   of it (the larger share: on a CPU a larger batch is not always faster per
   image).

Writes ``summary.json`` and ``table.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from benchlib import cpu_name  # noqa: E402

IMAGENET_TRAIN = 1_281_167
IMAGENET_BATCH = 256


def build(model: str, xp, seed: int = 0):
    from weightmirror.models.backend import make_rng
    from weightmirror.models.zoo import build_model
    from weightmirror.sims.config import TrainConfig

    rule = TrainConfig().wm
    rng = make_rng(xp, seed)
    net = build_model(model, (3, 224, 224), 1000, rule, xp, rng)
    return net, rule, rng


def layer_label(layer) -> str:
    shape = "x".join(str(s) for s in layer.W.shape)
    hw = getattr(layer, "input_hw", None)
    return f"{type(layer).__name__} {shape}" + (f" @ {hw[0]}x{hw[1]}" if hw else "")


def initial_phase_work(rule, layer) -> float:
    """Multiply-adds of the adaptive initial phase for one layer, as the rule draws it."""
    samples = rule._fan_in(layer) / math.tan(math.radians(rule.initial_angle)) ** 2
    if rule._uses_moments(layer, samples):
        return rule.moment_work(layer)
    per_input = rule._samples_per_input(layer)
    return math.ceil(samples / per_input) * per_input * rule._work(layer)[0]


def measure(model: str, batch: int, repeats: int, device: str = "cpu") -> dict:
    from weightmirror.circuits.rules import angle_degrees
    from weightmirror.models.backend import get_array_module, make_rng, synchronize
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.optim import SGD

    xp = get_array_module(device)
    net, rule, rng = build(model, xp)
    mirrored = rule.mirrored(net.weight_layers)
    synchronize(xp)
    t0 = time.perf_counter()
    rule.initial_phase(net.weight_layers, xp, rng)
    synchronize(xp)
    initial_s = time.perf_counter() - t0
    layers = []
    for layer in net.weight_layers:
        is_mirrored = layer in mirrored
        layers.append({
            "layer": layer_label(layer),
            "fan_in": rule._fan_in(layer),
            "mirrored": is_mirrored,
            "angle_deg": angle_degrees(layer.B, layer.W, xp) if is_mirrored else None,
            "initial_madds": initial_phase_work(rule, layer) if is_mirrored else 0.0,
            "draw_madds": rule.moment_work(layer) if is_mirrored else 0.0,
            "train_madds_per_image": rule._work(layer)[1],
        })
    bp_per_image = sum(l["train_madds_per_image"] for l in layers)
    draw_per_step = sum(l["draw_madds"] for l in layers)
    initial = sum(l["initial_madds"] for l in layers)
    steps = math.ceil(IMAGENET_TRAIN / IMAGENET_BATCH)
    bp_epoch = bp_per_image * IMAGENET_TRAIN
    mirror_epoch = draw_per_step * steps

    # -- timing: a BP step against one moment draw per mirrored layer --------
    opt = SGD(net.parameter_modules(), rule, xp, momentum=0.9, weight_decay=1e-4)
    data_rng = make_rng(xp, 1)
    images = {n: data_rng.standard_normal((n, 3, 224, 224), dtype=xp.float32) for n in (batch, batch // 2)}
    labels = {n: data_rng.integers(0, 1000, n) for n in (batch, batch // 2)}

    def bp_step(n):
        _, d = softmax_cross_entropy(net.forward(images[n]), labels[n], xp)
        net.backward(d, rng=rng, use_backprop=True)
        opt.step(0.01)

    def draws():
        for layer in mirrored:
            lam = 0.01
            rule.mirror_update(layer, xp, rng, lam / rule.sigma ** 2, lam, 0, moments=1000.0)

    def timed(fn, *args):
        synchronize(xp)
        t = time.perf_counter()
        fn(*args)
        synchronize(xp)
        return time.perf_counter() - t

    bp_step(batch)  # warm-up: buffers, workspaces, the convolutions' autotune
    bp_step(batch // 2)
    draws()
    step_t, half_t, draw_t = [], [], []
    for _ in range(repeats):
        step_t.append(timed(bp_step, batch))
        draw_t.append(timed(draws))
        half_t.append(timed(bp_step, batch // 2))
    step = statistics.median(step_t)
    half = statistics.median(half_t)
    draw = statistics.median(draw_t)
    per_image = step / batch
    return {
        "model": model,
        "device": device,
        "rule": rule.params(),
        "layers": layers,
        "initial_phase_s": initial_s,
        "initial_madds": initial,
        "max_angle_after_initial_deg": max(l["angle_deg"] for l in layers if l["mirrored"]),
        "bp_madds_per_image": bp_per_image,
        "draw_madds_per_step": draw_per_step,
        "epoch": {"images": IMAGENET_TRAIN, "batch": IMAGENET_BATCH, "steps": steps,
                  "bp_madds": bp_epoch, "mirror_bound_madds": mirror_epoch + initial,
                  "flop_share_bound": (mirror_epoch + initial) / bp_epoch},
        "timing": {"batch": batch, "repeats": repeats, "bp_step_s": step, "bp_step_s_all": step_t,
                   "bp_half_batch_step_s": half, "per_image_s": per_image,
                   "per_image_s_half_batch": half / (batch // 2),
                   "draws_s": draw, "draws_s_all": draw_t,
                   # the larger share of the two batch sizes' per-image times (the conservative one)
                   "time_share_at_256": draw / (min(per_image, half / (batch // 2)) * IMAGENET_BATCH),
                   "time_share_at_measured_batch": draw / step},
    }


def table(results: list[dict], header: str) -> str:
    lines = [header, ""]
    lines.append("| model | mirror MAdds / step (bound) | BP MAdds / step (256) | FLOP share per ImageNet epoch "
                 "(initial + running, bound) | initial phase | largest angle after it | measured: BP step "
                 "(batch) | one draw per layer | time share at 256 |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        t, e = r["timing"], r["epoch"]
        lines.append(
            f"| {r['model']} | {r['draw_madds_per_step'] / 1e9:.1f} G | "
            f"{r['bp_madds_per_image'] * IMAGENET_BATCH / 1e9:.0f} G | **{e['flop_share_bound']:.2%}** | "
            f"{r['initial_phase_s']:.1f} s ({r['initial_madds'] / 1e9:.1f} G) | "
            f"**{r['max_angle_after_initial_deg']:.2f}°** | {t['bp_step_s']:.2f} s ({t['batch']}; "
            f"{t['per_image_s'] * 1e3:.0f} ms/image, {t['per_image_s_half_batch'] * 1e3:.0f} at {t['batch'] // 2}) | "
            f"{t['draws_s']:.2f} s | **{t['time_share_at_256']:.2%}** |")
    for r in results:
        lines += ["", f"Per-layer angles after the initial phase, {r['model']} (θ₀ = {r['rule']['initial_angle']}°):", "",
                  "| layer | fan-in F | angle | initial-phase MAdds |", "|---|---:|---:|---:|"]
        for l in r["layers"]:
            angle = f"{l['angle_deg']:.2f}°" if l["mirrored"] else "not mirrored (input layer)"
            lines.append(f"| {l['layer']} | {l['fan_in']} | {angle} | {l['initial_madds'] / 1e9:.2f} G |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", type=Path, default=Path("bench/results_mirror_cost"))
    args = p.parse_args()
    if args.batch < 2 or args.repeats < 1:
        p.error("--batch must be >= 2 and --repeats >= 1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for model in args.models.split(","):
        results.append(measure(model.strip(), args.batch, args.repeats, args.device))
        (args.out / "summary.json").write_text(json.dumps(results, indent=1))  # each model as it ends
    where = f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads, NumPy {np.__version__}"
    if args.device == "cuda":
        import cupy

        where = f"{cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}"
    header = (f"`python3 bench/mirror_cost.py --models {args.models} --batch {args.batch} --repeats {args.repeats} "
              f"--threads {args.threads} --device {args.device}`; {where}; medians of {args.repeats}.")
    (args.out / "table.md").write_text(table(results, header))
    print(table(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
