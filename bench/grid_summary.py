"""One table across the grid's rows: test error (mean ± sd) of every rule per row, from each row's comparison.json.

    python3 bench/grid_summary.py runs/grid [--rules bp,fa,usf,wm,kp] [--angles]

Rows are the sub-folders of the grid folder that hold a ``comparison.json``
(written by ``bench/grid.py``); a cell gives the mean ± sd over the seeds that
completed, ``n`` and, where any diverged, ``k of n diverged``; ``--angles``
adds, per cell, the largest angle(B, Wᵀ) over the layers whose B carries an
error (mean over seeds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = ("digits", "fmnist-mlp", "fmnist-sigmoid", "fmnist-deep4", "fmnist-deep6", "fmnist-convnet",
         "fmnist-resnet20")


def cell(entry: dict | None, angles: bool, reference: dict | None) -> str:
    if entry is None:
        return "not run"
    stat = entry["test_top1_error"]
    if stat["n"] == 0:
        text = "diverged"
    else:
        text = f"{stat['mean']:.2f}" + (f" ± {stat['sd']:.2f}" if stat["sd"] is not None else "")
    vs = entry.get("vs_reference") or {}
    if reference is not None and vs.get("paired_p") is not None:
        p = vs["paired_p"]
        text += f" (p {'< 0.001' if p < 0.001 else f'{p:.3f}'})"
    if angles and entry["largest_angle_used_deg"]["n"]:
        text += f", {entry['largest_angle_used_deg']['mean']:.1f}°"
    extra = f"n = {entry['n']}"
    if entry["diverged"]:
        extra += f", {len(entry['diverged'])} of {entry['n']} diverged"
    return f"{text} [{extra}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid")
    p.add_argument("--rules", default="bp,fa,usf,wm,kp")
    p.add_argument("--angles", action="store_true")
    args = p.parse_args()
    rules = [r for r in args.rules.split(",") if r]
    rows = [r for r in ORDER if (Path(args.grid) / r / "comparison.json").is_file()]
    if not rows:
        p.error(f"{args.grid}: no row folder with a comparison.json (run bench/grid.py first)")
    print("| row | " + " | ".join(r.upper() if r != "usf" else "uSF" for r in rules) + " |")
    print("|---|" + "---:|" * len(rules))
    for row in rows:
        comparison = json.loads((Path(args.grid) / row / "comparison.json").read_text())
        runs = comparison["runs"]
        print(f"| {row} | " + " | ".join(cell(runs.get(r), args.angles, runs.get("bp") if r != "bp" else None)
                                         for r in rules) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
