"""Fashion-MNIST: every rule with the same schedule, in parallel (MLP or small convnet).

Run (each run single-threaded, ``--jobs`` at once):

    python3 bench/fmnist_table.py --out runs/fmnist [--jobs 11] [--data-dir DIR] [--epochs 30]
    python3 bench/fmnist_table.py --model convnet --out runs/fmnist-conv [--jobs 5]

``--model mlp`` (default): base configuration ``bench/configs/fmnist_mlp.toml``
(784-500-500-10, 30 epochs, batch 128, SGD momentum 0.9, lr 0.01 with cosine
decay, weight decay 1e-4). The rules BP, FA, uSF, brSF, frSF run on it as they
are; WM and KP also run with a few settings of their own parameters (listed
in VARIANTS), which is the sensitivity Kunin et al. (2020) asked about.

``--model convnet``: base configuration ``bench/configs/fmnist_convnet.toml``
(conv32-pool-conv64-pool-fc128-fc10 with batch norm, same optimiser and
schedule) and the runs in CONV_VARIANTS (BP, FA, uSF, WM, KP);
``--model resnet20``: ``bench/configs/fmnist_resnet20.toml``, the same runs
(best on a GPU: ``--device cuda``, all runs share it).

Each run writes a results folder ``OUT/<name>/``; the table (test error,
per-layer angle(B, Wᵀ), angle to backprop's δ) goes to ``OUT/table.md`` and
stdout.
"""
from __future__ import annotations

import os

# one BLAS thread per run: the runs are the parallelism
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASES = {"mlp": ROOT / "bench" / "configs" / "fmnist_mlp.toml",
         "convnet": ROOT / "bench" / "configs" / "fmnist_convnet.toml",
         "resnet20": ROOT / "bench" / "configs" / "fmnist_resnet20.toml"}

#: run name -> (rule, overrides of the base config)
VARIANTS: dict[str, tuple[str, dict]] = {
    "bp": ("bp", {}),
    "fa": ("fa", {}),
    "usf": ("usf", {}),
    "brsf": ("brsf", {}),
    "frsf": ("frsf", {}),
    "wm": ("wm", {}),  # one batch of 64 uniform noise samples at a random quarter of the steps
    "wm-16u": ("wm", {"wm": {"lr": 0.0005, "decay": 0.0005, "mirror_batch_size": 16, "mirror_batches": 1.0}}),
    "wm-32g": ("wm", {"wm": {"lr": 0.001, "decay": 0.001, "mirror_batch_size": 32, "mirror_batches": 1.0, "noise": "gaussian"}}),
    "wm-32g-slow": ("wm", {"wm": {"lr": 0.0005, "decay": 0.0005, "mirror_batch_size": 32, "mirror_batches": 1.0, "noise": "gaussian"}}),
    "wm-64g": ("wm", {"wm": {"lr": 0.002, "decay": 0.002, "mirror_batch_size": 64, "mirror_batches": 1.0, "noise": "gaussian"}}),
    "kp": ("kp", {}),  # B₀ = 0, kp.weight_decay = 0.15 over the first quarter of training
    # random B₀, the rule's own decay all the time or in a window (kp.decay_until)
    "kp-0.05-all": ("kp", {"kp": {"weight_decay": 0.05, "decay_until": 1.0, "feedback_init": "random"}}),
    "kp-0.1-all": ("kp", {"kp": {"weight_decay": 0.1, "decay_until": 1.0, "feedback_init": "random"}}),
    "kp-0.2-all": ("kp", {"kp": {"weight_decay": 0.2, "decay_until": 1.0, "feedback_init": "random"}}),
    "kp-0.2-u0.25": ("kp", {"kp": {"weight_decay": 0.2, "decay_until": 0.25, "feedback_init": "random"}}),
    "kp-0.15-u0.25": ("kp", {"kp": {"weight_decay": 0.15, "decay_until": 0.25, "feedback_init": "random"}}),
    "kp-0.15-u0.3": ("kp", {"kp": {"weight_decay": 0.15, "decay_until": 0.3, "feedback_init": "random"}}),
    "kp-0.2-u0.3": ("kp", {"kp": {"weight_decay": 0.2, "decay_until": 0.3, "feedback_init": "random"}}),
    "kp-0.1-u0.4": ("kp", {"kp": {"weight_decay": 0.1, "decay_until": 0.4, "feedback_init": "random"}}),
    "kp-0.1-u0.5": ("kp", {"kp": {"weight_decay": 0.1, "decay_until": 0.5, "feedback_init": "random"}}),
    "kp-0.3-u0.2": ("kp", {"kp": {"weight_decay": 0.3, "decay_until": 0.2, "feedback_init": "random"}}),
    "kp-0.4-u0.15": ("kp", {"kp": {"weight_decay": 0.4, "decay_until": 0.15, "feedback_init": "random"}}),
    "kp-0.3-u0.25": ("kp", {"kp": {"weight_decay": 0.3, "decay_until": 0.25, "feedback_init": "random"}}),
}

#: the convnet table: the rules the ImageNet-scale comparison is about
CONV_VARIANTS: dict[str, tuple[str, dict]] = {
    "bp": ("bp", {}),
    "fa": ("fa", {}),
    "usf": ("usf", {}),
    "wm": ("wm", {}),
    "kp": ("kp", {}),
}
#: ResNet-20: the same, and KP also from a random B₀ (with 19 layers, silent
#: initial feedback reaches the first layers only as the B above them grow)
RESNET_VARIANTS: dict[str, tuple[str, dict]] = {
    **CONV_VARIANTS,
    "kp-b0": ("kp", {"kp": {"feedback_init": "random"}}),
}
TABLES = {"mlp": VARIANTS, "convnet": CONV_VARIANTS, "resnet20": RESNET_VARIANTS}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def run_one(name: str, rule: str, overrides: dict, out: str, data_dir: str | None, epochs: int | None,
            seed: int | None = None, model: str = "mlp", device: str | None = None) -> dict:
    from weightmirror.sims import config
    from weightmirror.sims.training import train

    values = _merge(config.read_file(BASES[model]), overrides)
    values["rule"] = rule
    if data_dir:
        values["data_dir"] = data_dir
    if epochs:
        values["epochs"] = epochs
    if seed is not None:
        values["seed"] = seed
    if device:
        values["device"] = device
    cfg = config.resolve(values)
    summary = train(cfg, Path(out) / name, progress=False, log=lambda s: None).summary
    summary["name"] = name
    return summary


def table(summaries: list[dict]) -> str:
    lines = ["| run | rule | test top-1 error (%) | angle(B, Wᵀ) per layer (°) | angle(δ, δ_BP) per layer (°) | s / epoch |",
             "|---|---|---:|---|---|---:|"]
    for s in summaries:
        a = " / ".join(f"{x:.1f}" for x in s["angles_deg"])
        d = " / ".join(f"{x:.1f}" for x in s["delta_angles_deg"])
        lines.append(f"| {s['name']} | {s['rule']} | {s['test_top1_error']:.2f} | {a} | {d} | "
                     f"{s['wall_seconds'] / max(s['epochs'], 1):.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(TABLES), default="mlp", help="which table (default: mlp)")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    p.add_argument("--seed", type=int, default=None, help="seed for every run (default: the config's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the config's (cpu)")
    args = p.parse_args()
    variants = TABLES[args.model]
    names = args.only.split(",") if args.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        p.error(f"--only: unknown run(s) {', '.join(unknown)}; allowed: {', '.join(variants)}")
    t0 = time.time()
    summaries = {}
    # CUDA does not survive fork: GPU runs start their workers fresh
    context = multiprocessing.get_context("spawn" if args.device == "cuda" else None)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_one, n, *variants[n], args.out, args.data_dir, args.epochs, args.seed, args.model,
                               args.device): n for n in names}
        for fut in as_completed(futures):
            n = futures[fut]
            try:
                summaries[n] = fut.result()
                print(f"done {n}: {summaries[n]['test_top1_error']:.2f}% ({time.time() - t0:.0f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - one failed run must not hide the others
                print(f"FAILED {n}: {type(exc).__name__}: {exc}", flush=True)
    ordered = [summaries[n] for n in names if n in summaries]
    text = table(ordered)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(text + "\n")
    (Path(args.out) / "summaries.json").write_text(json.dumps(ordered, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
