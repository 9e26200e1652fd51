"""How far the LIF mirror stays linear: circuit against its noise-aware prediction as the response grows.

One weight layer 60 → 30 of LIF units (20 Hz baselines, 10 Hz per unit of the rate code, noise held
100 ms, 50 ms traces, cpp_standalone), W and B₀ with rows of norm ``r`` (the response to unit noise
then has standard deviation ``r`` units, ``r × 10`` Hz around the baseline), Hebbian rate = decay per
event chosen by the closed form for the simulated time. For each ``r`` it prints the circuit's
angle(B, Wᵀ), the noise-aware prediction (``predicted_spiking_angle``), the rate-mode prediction
and the populations' mean rates:

    python3 bench/lif_linearity.py --norms 0.5,1.5,2.5 --seconds 120
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from weightmirror.circuits.brian.network import plan_spiking_decay, spiking_mirror_noise
from weightmirror.circuits.rules import WeightMirror
from weightmirror.circuits.spec import CircuitSpec, NeuronModel, Noise, Phases
from weightmirror.sims import circuit as sim_circuit

FAN_IN, N_OUT, HOLD, TRACE, DT = 60, 30, 0.1, 0.05, 0.5e-3


def run(norm: float, seconds: float, device: str) -> dict:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N_OUT, FAN_IN)) * norm / np.sqrt(FAN_IN)
    B = rng.standard_normal((N_OUT, FAN_IN)) * norm / np.sqrt(FAN_IN)
    neuron = NeuronModel(kind="lif", tau_trace=TRACE)
    noise = spiking_mirror_noise(neuron, DT, int(round(HOLD / DT)))
    events = int(seconds / 2 / HOLD)
    lam, _ = plan_spiking_decay(noise, [(W, B)], events, grid=np.geomspace(1e-4, 0.3, 60))  # the grid of the measured table
    spec = CircuitSpec(layers=(FAN_IN, N_OUT), rule=WeightMirror(adaptive=False, lr=lam, decay=lam, mirror_batch_size=1),
                       neuron=neuron, noise=Noise(correlation_time=HOLD), device=device, seed=0,
                       phases=Phases(schedule="mirror", duration=seconds, record_interval=seconds / 4,
                                     parity_period=5 * HOLD))
    t0 = time.perf_counter()
    out = sim_circuit.simulate(spec, None, weights=[(W, B)], progress=False)
    s = out.summary
    return {"norm": norm, "decay": lam, "angle": s["angles_deg"][0], "noise_aware": s["noise_aware_angles_deg"][0],
            "rate_mode": s["predicted_angles_deg"][0], "rates_hz": out.metrics[-1]["rates_hz"],
            "wall": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--norms", default="0.5,1.5,2.5")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--device", default="cpp")
    args = p.parse_args()
    print("| row norm r (units) | circuit angle (°) | noise-aware prediction (°) | rate-mode prediction (°) | "
          "mean rate of the response y1 / its copy δ1 (Hz) | wall (s) |")
    print("|---:|---:|---:|---:|---|---:|")
    for norm in (float(v) for v in args.norms.split(",")):
        r = run(norm, args.seconds, args.device)
        print(f"| {norm:g} | {r['angle']:.1f} | {r['noise_aware']:.1f} | {r['rate_mode']:.1f} | "
              f"{r['rates_hz']['y1']:.1f} / {r['rates_hz']['delta1']:.1f} | {r['wall']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
