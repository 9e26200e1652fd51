"""A spiking mirror that aligns: the mirror phase on 784-100-10 at cortical rates, long enough to reach < 15°.

Poisson units at a 20 Hz baseline (gain 10 Hz per unit) or LIF neurons (20 Hz, the defaults) run the
weight mirror's sample rule on cpp_standalone from the same random W and B as ``bench/mirror_784.py``
(seed 0), for ``--seconds`` of simulated time. The noise hold, the trace filter and the Hebbian
rate (= the decay per event) are chosen with the noise-aware closed form
(``circuits.brian.network.plan_spiking_decay``): the hold and trace from a scan of that closed form
(Poisson: hold 10 ms, trace 5 ms; LIF: hold 20 ms, trace 20 ms, which its membrane's low-pass
needs), the decay as the one that ends closest to Wᵀ after the run. Each run writes its results
folder ``OUT/<name>/`` (time course with the noise-aware prediction and band, rates per population
over the last 20 s) and a row in ``OUT/spiking_mirror_784.json``.

    python3 bench/spiking_mirror_784.py --out runs/spiking784 --only poisson --seconds 9000
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import weightmirror as wm

LAYERS = [784, 100, 10]
DT = 0.5e-3
SETTINGS = {
    "poisson": dict(neuron={"kind": "spiking", "baseline_rate": 20.0, "gain": 10.0, "tau_trace": 0.005}, hold=0.01),
    "lif": dict(neuron={"kind": "lif", "tau_trace": 0.02}, hold=0.02),
}


def planned_decay(name: str, seconds: float, parity_period: float) -> tuple[float, float]:
    """``(λ, predicted angle)`` for a run of ``seconds`` (layers take turns: half the holds each)."""
    from weightmirror.circuits.brian.network import init_weights, plan_spiking_decay, spiking_mirror_noise
    from weightmirror.circuits.spec import CircuitSpec, NeuronModel

    s = SETTINGS[name]
    neuron = NeuronModel(**s["neuron"])
    layers = init_weights(CircuitSpec(layers=tuple(LAYERS), seed=0))
    noise = spiking_mirror_noise(neuron, DT, int(round(s["hold"] / DT)))
    events = int(seconds / 2 / s["hold"])
    return plan_spiking_decay(noise, layers, events, grid=[float(x) for x in __import__("numpy").geomspace(1e-6, 0.3, 160)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=9000.0)
    ap.add_argument("--only", default="poisson,lif", help="comma-separated: poisson, lif")
    ap.add_argument("--parity-period", type=float, default=1.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "spiking_mirror_784.json"
    rows = json.loads(table.read_text()) if table.is_file() else {}
    for name in args.only.split(","):
        if name in rows:
            continue
        lam, planned = planned_decay(name, args.seconds, args.parity_period)
        s = SETTINGS[name]
        print(f"{name}: decay = Hebbian rate per event {lam:.3g}, planned angle {planned:.1f} deg", flush=True)
        run = wm.simulate(out=str(out / name), progress=False, layers=LAYERS, device="cpp", seed=0, dt=DT,
                          neuron=s["neuron"], noise={"correlation_time": s["hold"]},
                          rule={"name": "wm", "lr": lam, "decay": lam, "mirror_batch_size": 1},
                          phases={"schedule": "mirror", "duration": args.seconds, "parity_period": args.parity_period,
                                  "record_interval": args.seconds / 20, "record_activity": 20.0})
        summ = run.summary
        gap = max(abs(a - p) for r in run.metrics[1:] for a, p in zip(r["angles_deg"], r["noise_aware_angles_deg"]))
        rows[name] = {"neuron": s["neuron"], "hold_s": s["hold"], "decay_per_event": lam, "planned_deg": planned,
                      "angles_deg": summ["angles_deg"], "initial_angles_deg": summ["initial_angles_deg"],
                      "noise_aware_angles_deg": summ.get("noise_aware_angles_deg"),
                      "predicted_angles_deg": summ.get("predicted_angles_deg"),
                      "largest_gap_to_noise_aware_deg": gap,
                      "simulated_seconds": summ["simulated_seconds"], "wall_seconds": summ["wall_seconds"],
                      "rates_hz": run.metrics[-1].get("rates_hz")}
        table.write_text(json.dumps(rows, indent=1))
        print(name, json.dumps(rows[name]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
