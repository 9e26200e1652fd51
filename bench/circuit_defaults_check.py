"""The circuit's engaged and alternating defaults in Brian2: `weightmirror circuit --rule R` with nothing
else (but the device and seed) learns digits.

For FA and KP (engaged) and WM (alternating mirror and engaged blocks), seeds 0-2, on the cython device
(the same equations as the default runtime device, compiled): test error and angles per layer, beside
the rate-mode engine's run of the same declaration (``sims.circuit.rate_reference``).

    python3 bench/circuit_defaults_check.py --out runs/circuit_defaults_check
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from weightmirror.sims import circuit as sim_circuit
    from weightmirror.sims.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rules", default="kp,fa,wm")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "check.json"
    rows = json.loads(table.read_text()) if table.is_file() else {}
    for rule in args.rules.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{rule}-seed{seed}"
            if key in rows:
                continue
            phase = ["--phase", "alternate"] if rule == "wm" else []
            folder = out / key
            code = cli(["circuit", "--rule", rule, *phase, "--device", "cython", "--seed", str(seed), "--quiet",
                        "--out", str(folder)])
            summary = json.loads((folder / "summary.json").read_text())
            spec = sim_circuit.resolve_spec(sim_circuit.read_file(folder / "config.toml"))
            ref = sim_circuit.rate_reference(spec, sim_circuit.load_stimulus(spec))
            rows[key] = {"exit": code, "test_error": summary["test_top1_error"], "angles_deg": summary["angles_deg"],
                         "simulated_seconds": summary["simulated_seconds"], "wall_seconds": summary["wall_seconds"],
                         "engine_test_error": ref["test_top1_error"], "engine_angles_deg": ref["angles_deg"]}
            table.write_text(json.dumps(rows, indent=1))
            print(key, json.dumps(rows[key]), flush=True)
    lines = ["| rule | seeds | circuit test error (%) | per seed | engine (%) | circuit angles, layers 1, 2 (°) | simulated s | wall s |",
             "|---|---:|---:|---|---:|---|---:|---:|"]
    for rule in args.rules.split(","):
        rs = [v for k, v in rows.items() if k.startswith(rule + "-")]
        if not rs:
            continue
        e = np.array([r["test_error"] for r in rs])
        g = np.array([r["engine_test_error"] for r in rs])
        a = np.array([r["angles_deg"] for r in rs])
        lines.append(f"| {rule} | {len(rs)} | {e.mean():.1f} ± {e.std(ddof=1) if len(rs) > 1 else 0:.1f} | "
                     + ", ".join(f"{v:.1f}" for v in e) + f" | {g.mean():.1f} | "
                     + ", ".join(f"{m:.1f} ± {sd:.1f}" for m, sd in zip(a.mean(0), a.std(0, ddof=1) if len(rs) > 1 else a.mean(0) * 0))
                     + f" | {rs[0]['simulated_seconds']:.0f} | {np.mean([r['wall_seconds'] for r in rs]):.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
