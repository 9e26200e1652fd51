"""The robustness grid: every rule, with its defaults, on several data sets, depths and optimisers.

Run (each run single-threaded, ``--jobs`` at once; finished runs are kept and
skipped, interrupted ones go on from their last checkpoint, so an
interrupted grid continues where it stopped):

    python3 bench/grid.py --out runs/grid --seeds 0-4 [--rows digits,fmnist-mlp,...] [--jobs 2]

Rows (the same optimiser for every rule within a row; the rules' own
settings are their defaults, never per row):

``digits``          scikit-learn digits, the default MLP and every default (``weightmirror train --data digits``);
``fmnist-mlp``      Fashion-MNIST, MLP 784-500-500-10 ReLU, SGD momentum 0.9, lr 0.01 cosine, 20 epochs;
``fmnist-sigmoid``  Fashion-MNIST, one hidden layer of 500 sigmoid units, plain SGD (no momentum, no
                    weight decay, constant lr 0.1), as the paper's own code, 20 epochs;
``fmnist-deep4``    Fashion-MNIST, 4 hidden layers of 256 ReLU units, as ``fmnist-mlp``;
``fmnist-deep6``    the same with 6 hidden layers;
``fmnist-convnet``  Fashion-MNIST, the small convnet with batch norm, 10 epochs;
``fmnist-resnet20`` Fashion-MNIST, ResNet-20 on a GPU, 12 epochs (not run by default; see
                    ``bench/gpu_fmnist_resnet20.sh``).

Each run writes ``OUT/<row>/<label>/seed-<s>/``; each row gets its
``comparison.json``/``comparison.md`` (mean ± sd over seeds, paired tests
against BP, see ``weightmirror.sims.comparison``) and ``OUT/grid.md`` puts the
rows together. ``--variant NAME=JSON`` adds runs of a rule with other
settings (label ``<rule>-<NAME>``), for choosing defaults on the validation
error; ``--epochs`` shortens every row (for that choice).
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one BLAS thread per run: the runs are the parallelism

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

FMNIST_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"}
ROWS: dict[str, dict] = {
    "digits": {"data": "digits"},
    "fmnist-mlp": {"data": "fashion-mnist", "epochs": 20, "batch_size": 128,
                   "model_options": {"hidden": [500, 500], "activation": "relu"}, "optim": FMNIST_SGD},
    "fmnist-sigmoid": {"data": "fashion-mnist", "epochs": 20, "batch_size": 128,
                       "model_options": {"hidden": [500], "activation": "sigmoid"},
                       "optim": {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}},
    "fmnist-deep4": {"data": "fashion-mnist", "epochs": 20, "batch_size": 128,
                     "model_options": {"hidden": [256] * 4, "activation": "relu"}, "optim": FMNIST_SGD},
    "fmnist-deep6": {"data": "fashion-mnist", "epochs": 20, "batch_size": 128,
                     "model_options": {"hidden": [256] * 6, "activation": "relu"}, "optim": FMNIST_SGD},
    "fmnist-convnet": {"data": "fashion-mnist", "model": "convnet", "epochs": 10, "batch_size": 128,
                       "model_options": {"hidden": 128, "batchnorm": True}, "optim": FMNIST_SGD},
    # GPU only (bench/gpu_fmnist_resnet20.sh): not in the default rows
    "fmnist-resnet20": {"data": "fashion-mnist", "model": "resnet20", "epochs": 12, "batch_size": 128,
                        "device": "cuda", "optim": FMNIST_SGD},
}
#: the rows run when --rows is not given
DEFAULT_ROWS = ("digits", "fmnist-mlp", "fmnist-sigmoid", "fmnist-deep4", "fmnist-deep6", "fmnist-convnet")
#: rules per row: BP, FA, uSF, WM, KP everywhere; brSF and frSF in the two main MLP rows
RULES = ("bp", "fa", "usf", "wm", "kp")
EXTRA_RULES = {"digits": ("brsf", "frsf"), "fmnist-mlp": ("brsf", "frsf")}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_one(folder: str, values: dict) -> dict:
    """One training run into ``folder`` (skipped when it already finished); its summary."""
    import weightmirror as wm
    from weightmirror.sims.training import DivergedError
    from weightmirror.sims.training import train as train_run

    path = Path(folder)
    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    resume = (path / "checkpoint.npz").is_file()
    if path.exists() and not resume:  # interrupted before its first checkpoint: start it again
        import shutil

        shutil.rmtree(path)
    t = time.time()
    try:
        # an interrupted run goes on from its last checkpoint, with its own config.toml
        run = (train_run(None, path, resume=True, progress=False, log=lambda s: None) if resume
               else wm.train(values, out=path, progress=False))
        summary = run.summary
    except DivergedError as exc:
        summary = exc.summary
    summary["_seconds"] = time.time() - t
    return summary


def jobs(args) -> list[tuple[str, str, str, int, dict]]:
    """``(row, label, folder, seed, values)`` of every run asked for."""
    out = []
    variants = dict(v.split("=", 1) for v in args.variant)
    for row in args.rows:
        base = _merge(ROWS[row], json.loads(args.set)) if args.set else ROWS[row]
        if args.epochs:
            base = {**base, "epochs": args.epochs}
        rules = list(RULES + EXTRA_RULES.get(row, ()) if args.rules is None else args.rules)
        for seed in args.seeds:
            for rule in rules:
                out.append((row, rule, str(Path(args.out) / row / rule / f"seed-{seed}"), seed,
                            _merge(base, {"rule": rule, "seed": seed})))
            for name, text in variants.items():
                over = json.loads(text)
                rule = over.pop("rule")
                label = f"{rule}-{name}"
                out.append((row, label, str(Path(args.out) / row / label / f"seed-{seed}"), seed,
                            _merge(_merge(base, over), {"rule": rule, "seed": seed, "label": label})))
    return out


#: targets of the grid (issue 10): the gap to BP allowed to WM and KP, per kind of row
GAP_MLP, GAP_CONV = 0.5, 1.0
DEEP_ROWS = ("fmnist-deep4", "fmnist-deep6")


def _largest_after_first_epoch(runs) -> float | None:
    """The largest angle(B, Wᵀ) over the layers with error at the end of epochs 1, 2, ... (any seed)."""
    worst = None
    for run in runs:
        used = run.summary.get("feedback_used") or []
        for row in run.metrics:
            if row.get("epoch", 0) < 1:
                continue
            angles = [a for a, u in zip(row.get("angles_deg") or [], used) if u]
            if any(a is None for a in angles):
                return float("nan")
            if angles:
                worst = max(worst or 0.0, max(angles))
    return worst


def check_targets(row: str, result: dict, groups: dict) -> list[str]:
    """Each target of the grid for one row, met or not, in words (one line each)."""
    from weightmirror.sims import comparison

    runs = result["runs"]
    gap = GAP_CONV if "convnet" in row or "resnet" in row else GAP_MLP
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    for rule in ("bp", "wm", "kp"):
        if rule in runs:
            e = runs[rule]
            lines.append(f"- {rule.upper()} never diverges: {verdict(not e['diverged'])} "
                         f"({len(e['diverged'])} of {e['n']} diverged)")
    for rule, limit in (("wm", 10.0), ("kp", 5.0)):
        e = runs.get(rule)
        if e is None:
            continue
        vs = e.get("vs_reference") or {}
        diff, p = vs.get("test_diff_mean"), vs.get("paired_p")
        if diff is not None:
            ok = diff <= gap and (diff <= 0 or (p is not None and p > 0.05))
            untested = diff > 0 and p is None  # one seed: no paired test over seeds
            lines.append(f"- {rule.upper()} within {gap:g} point of BP, not significantly worse: "
                         f"{'**not tested** (fewer than 2 seeds)' if untested else verdict(ok)} "
                         f"(Δ test {diff:+.2f}, paired p {'–' if p is None else f'{p:.3f}'}, "
                         f"n = {len(vs.get('seeds') or [])})")
        ends = [comparison.largest_used_angle(r.summary) or 0.0
                for r in groups.get(rule, []) if r.summary.get("status") != "diverged"]
        if ends:
            worst = max(ends)
            lines.append(f"- {rule.upper()} angle < {limit:g}° at the end in every layer with error: "
                         f"{verdict(worst < limit)} (largest over seeds {worst:.1f}°)")
        if rule == "wm":
            worst = _largest_after_first_epoch(groups.get(rule, []))
            if worst is not None:
                lines.append(f"- WM never above 15° after the first epoch: {verdict(worst <= 15.0)} "
                             f"(largest at any epoch end ≥ 1, any seed: {worst:.1f}°)")
    if row in DEEP_ROWS and "fa" in runs and "kp" in runs:
        fa, kp = runs["fa"], runs["kp"]
        fa_mean, kp_mean = fa["test_top1_error"]["mean"], kp["test_top1_error"]["mean"]
        if fa["n_completed"] == 0:
            lines.append(f"- FA clearly worse than KP: met (FA diverged in {len(fa['diverged'])} of {fa['n']})")
        elif fa_mean is not None and kp_mean is not None:
            note = f", FA diverged in {len(fa['diverged'])} of {fa['n']}" if fa["diverged"] else ""
            lines.append(f"- FA clearly worse than KP (by more than 1 point): {verdict(fa_mean - kp_mean > 1.0)} "
                         f"(FA {fa_mean:.2f} against KP {kp_mean:.2f}{note})")
    return lines


def _seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",") if v]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), type=lambda s: [r for r in s.split(",") if r])
    p.add_argument("--rules", default=None, type=lambda s: [r for r in s.split(",") if r],
                   help="rules to run with their defaults (default: BP, FA, uSF, WM, KP, and brSF, frSF in "
                        "the two main MLP rows; an empty string: only the --variant runs)")
    p.add_argument("--seeds", default="0-4", type=_seeds)
    p.add_argument("--epochs", type=int, default=None, help="shorten every row (for choosing settings)")
    p.add_argument("--variant", action="append", default=[], metavar='NAME={"rule": "wm", ...}',
                   help="also run a rule with these config values, labelled <rule>-<NAME>")
    p.add_argument("--set", default=None, metavar="JSON", help="config values for every run of the rows "
                   "(e.g. a learning rate being chosen)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="only write the comparison tables")
    args = p.parse_args()
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        p.error(f"unknown row(s) {bad}; allowed: {', '.join(ROWS)}")

    if args.report_only and not any((Path(args.out) / row).is_dir() for row in args.rows):
        p.error(f"--report-only: {args.out} holds none of the rows {', '.join(args.rows)}; give the folder the "
                "grid was run into (e.g. runs/grid, after tar xzf bench/results_grid/runs.tgz -C runs)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    todo = jobs(args)
    if not args.report_only:
        # the slowest rows first, so that the pool stays busy to the end
        order = sorted(todo, key=lambda j: (j[0] != "fmnist-convnet", j[3]))
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_one, folder, values): (row, label, seed)
                       for row, label, folder, seed, values in order}
            for f in as_completed(futures):
                row, label, seed = futures[f]
                try:
                    s = f.result()
                    status = s.get("status", "?")
                    print(f"{row:15s} {label:12s} seed {seed}: {status:9s} test {s.get('test_top1_error', float('nan')):6.2f} "
                          f"val {s.get('val_top1_error', float('nan')):6.2f} ({s.get('_seconds', 0):.0f} s)", flush=True)
                except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                    print(f"{row:15s} {label:12s} seed {seed}: FAILED {type(exc).__name__}: {exc}", flush=True)
    from weightmirror.sims import comparison

    lines = ["# The robustness grid", ""]
    for row in args.rows:
        folder = Path(args.out) / row
        if not folder.is_dir():
            continue
        groups = comparison.collect([folder])
        result = comparison.compare(groups, reference="bp")
        comparison.write(result, folder)
        lines += [f"## {row}", "", f"`{json.dumps(ROWS[row])}`", "", comparison.format_markdown(result),
                  "Targets:", "", *check_targets(row, result, groups), ""]
    (Path(args.out) / "grid.md").write_text("\n".join(lines))
    print(f"tables: {Path(args.out) / 'grid.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
