"""The mirror phase on 784-100-10 for rate, Poisson and LIF units, and LIF under Dale's law (issue 12).

Each circuit runs a mirror phase of ``--seconds`` simulated seconds on cpp_standalone from the same
random W and B (seed 0), and writes its results folder under ``OUT/<name>/``; the table gives the
angle(B, Wᵀ) per layer at the end, the noise-aware prediction (spiking units, sample rule, no Dale),
the rate-mode prediction on the same samples, the simulated and wall time and the mean rate of each
population. ``weightmirror figures --results OUT/<name> --out FIGS`` draws each run's time course.

    python3 bench/mirror_784.py --out runs/mirror784 --seconds 60
    python3 bench/mirror_784.py --out runs/mirror784 --pilot 200     # adds the pilot's prediction

``--pilot T`` measures each circuit's mirror moments in a pilot of T simulated seconds on independent
noise (``sims.circuit.pilot_mirror_moments``, also under Dale's law: there B follows the signed rule
except at a zero crossing, one step's change) and adds the prediction from them at every metrics row
of the finished run, with the largest gap to the circuit over the run.

Settings: the circuit defaults for rate and Poisson units (noise held 5 ms, Hebbian rate = decay
0.05 per batch of 8 samples); for LIF units a 100 ms hold, 50 ms traces, layers taking turns every
500 ms, and the Hebbian rate = decay per event that the noise-aware closed form says ends closest
to Wᵀ after ``--seconds`` (for the 100-input layer, whose B carries an error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


import weightmirror as wm

LAYERS = [784, 100, 10]


def lif_decay(seconds: float) -> float:
    from weightmirror.circuits.brian.network import init_weights, plan_spiking_decay, spiking_mirror_noise
    from weightmirror.circuits.spec import CircuitSpec, NeuronModel

    neuron = NeuronModel(kind="lif", tau_trace=0.05)
    (_, _), (W, B) = init_weights(CircuitSpec(layers=tuple(LAYERS), seed=0))
    noise = spiking_mirror_noise(neuron, 0.5e-3, 200)
    events = int(seconds / 2 / 0.1)
    return plan_spiking_decay(noise, [(W, B)], events)[0]


def runs(seconds: float) -> dict[str, dict]:
    lam = lif_decay(seconds)
    lif = dict(neuron={"kind": "lif", "tau_trace": 0.05}, noise={"correlation_time": 0.1},
               rule={"name": "wm", "lr": lam, "decay": lam, "mirror_batch_size": 1},
               phases={"schedule": "mirror", "duration": seconds, "parity_period": 0.5,
                       "record_interval": seconds / 10})
    # the table's settings, pinned (a mirror-only run without rates would now get planned ones)
    plain = dict(rule={"name": "wm", "lr": 0.05, "decay": 0.05, "mirror_batch_size": 8}, phases={"schedule": "mirror", "duration": seconds, "record_interval": seconds / 10})
    return {
        "rate": dict(plain),
        "poisson": dict(plain, neuron={"kind": "spiking"}),
        "lif": lif,
        "lif-dale": dict(lif, dale=True),
    }


def pilot_prediction(run_dir: Path, seconds: float) -> dict:
    """The prediction from a pilot's moments at every metrics row of the finished run in ``run_dir``."""
    import tomllib

    import numpy as np

    from weightmirror.circuits.brian.network import predicted_angle_from_moments
    from weightmirror.circuits.spec import CircuitSpec
    from weightmirror.sims import circuit as sc

    config = tomllib.loads((run_dir / "config.toml").read_text())
    config.pop("command", None)
    spec = CircuitSpec.from_dict(config)
    w0 = np.load(run_dir / "weights_initial.npz")
    weights = [(w0[f"W{l}"].astype(np.float64), w0[f"B{l}"].astype(np.float64)) for l in range(1, len(LAYERS))]
    moments = sc.pilot_mirror_moments(spec, seconds, weights=weights)
    hebbian, decay = spec.mirror.step(1)
    run = wm.load_run(run_dir)
    course = [[predicted_angle_from_moments(m, W, B, spec.modes.mirror_samples(r["t"] / 2), decay, hebbian / decay)
               for m, (W, B) in zip(moments, weights)] for r in run.metrics]
    gap = max(abs(a - p) for r, ps in zip(run.metrics[1:], course[1:]) for a, p in zip(r["angles_deg"], ps))
    return {"pilot_seconds": seconds, "pilot_moments": moments, "pilot_angles_deg": course[-1],
            "pilot_time_course_deg": course, "largest_gap_to_pilot_deg": gap}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--only", default=None, help="comma-separated names (rate, poisson, lif, lif-dale)")
    ap.add_argument("--pilot", type=float, default=0.0, help="simulated seconds of a pilot per run (0: none)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "mirror_784.json"
    rows = json.loads(table.read_text()) if table.is_file() else {}
    todo = runs(args.seconds)
    for name, values in todo.items():
        if (args.only and name not in args.only.split(",")) or name in rows:
            continue
        run = wm.simulate(out=str(out / name), progress=False, layers=LAYERS, device="cpp", seed=0, **values)
        s = run.summary
        last = run.metrics[-1]
        rows[name] = {"angles_deg": s["angles_deg"], "initial_angles_deg": s["initial_angles_deg"],
                      "noise_aware_angles_deg": s.get("noise_aware_angles_deg"),
                      "predicted_angles_deg": s.get("predicted_angles_deg"),
                      "simulated_seconds": s["simulated_seconds"], "wall_seconds": s["wall_seconds"],
                      "rates": last.get("rates_hz") or last.get("rates_rms")}
        table.write_text(json.dumps(rows, indent=1))
        print(name, json.dumps(rows[name]), flush=True)

    if args.pilot > 0:
        for name in rows:
            if (args.only and name not in args.only.split(",")) or "pilot_angles_deg" in rows[name]:
                continue
            rows[name].update(pilot_prediction(out / name, args.pilot))
            table.write_text(json.dumps(rows, indent=1))
            print(name, "pilot", json.dumps({k: rows[name][k] for k in ("pilot_angles_deg", "largest_gap_to_pilot_deg")}),
                  flush=True)

    def fmt(values):
        return " / ".join(f"{v:.1f}" for v in values) if values else "–"

    lines = ["| units | angle(B, Wᵀ) layers 1 / 2, start → end (°) | noise-aware prediction (°) | prediction from "
             "the pilot's moments (°; largest gap over the run) | rate-mode prediction (°) | simulated (s) | wall (s) | "
             "mean rate per population at the end |",
             "|---|---|---|---|---|---:|---:|---|"]
    for name, r in rows.items():
        rates = ", ".join(f"{k} {v:.1f}" for k, v in sorted((r["rates"] or {}).items()) if v is not None)
        unit = " Hz" if name != "rate" else " (rms, a.u.)"
        piloted = (f"{fmt(r['pilot_angles_deg'])} ({r['largest_gap_to_pilot_deg']:.1f}°, {r['pilot_seconds']:.0f} s "
                   "pilot)") if r.get("pilot_angles_deg") else "–"
        lines.append(f"| {name} | {fmt(r['initial_angles_deg'])} → {fmt(r['angles_deg'])} | "
                     f"{fmt(r['noise_aware_angles_deg'])} | {piloted} | {fmt(r['predicted_angles_deg'])} | "
                     f"{r['simulated_seconds']:.0f} | {r['wall_seconds']:.0f} | {rates}{unit} |")
    text = "\n".join(lines) + "\n"
    (out / "mirror_784.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
