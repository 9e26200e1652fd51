"""The LIF weight mirror in Brian2 (runtime device): angle(B, Wᵀ) over simulated time, B's norm against
W's, and the population rates, for a few noise hold / trace / Hebbian-rate settings.

    python3 bench/lif_mirror.py [--layers 8,6] [--duration 8] [--setting HOLD,TRACE,LR ...]

Each setting: the noise sample is held HOLD seconds, the Hebbian terms read spike trains filtered
with TRACE seconds, and the fixed mirror uses lr = decay = LR per batch of 2 noise samples. Prints one
Markdown row per setting (BENCHMARKS.md §6).
"""
from __future__ import annotations

import argparse
import time

from weightmirror.circuits.rules import WeightMirror
from weightmirror.circuits.spec import CircuitSpec, NeuronModel, Noise, Phases
from weightmirror.sims import circuit as sim_circuit


def run(layers, hold: float, trace: float, lr: float, duration: float, seed: int) -> str:
    spec = CircuitSpec(layers=tuple(layers), rule=WeightMirror(lr=lr, decay=lr, mirror_batch_size=2, adaptive=False),
                       neuron=NeuronModel(kind="lif", tau_trace=trace), noise=Noise(correlation_time=hold),
                       phases=Phases(schedule="mirror", duration=duration, record_interval=duration / 4,
                                     parity_period=2 * hold), seed=seed)
    t = time.perf_counter()
    result = sim_circuit.simulate(spec, None, progress=False)
    wall = time.perf_counter() - t
    angles = " → ".join("/".join(f"{a:.0f}" for a in row["angles_deg"]) for row in result.metrics)
    last = result.metrics[-1]
    ratio = "/".join(f"{last['weight_norms'][f'B{l}'] / last['weight_norms'][f'W{l}']:.1f}"
                     for l in range(1, len(layers)))
    rates = ", ".join(f"{k} {v:.0f}" for k, v in last["rates_hz"].items())
    return (f"| {','.join(map(str, layers))} | {hold * 1e3:g} | {trace * 1e3:g} | {lr:g} | {duration:g} | {angles} | "
            f"{ratio} | {rates} | {wall:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="8,6")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--setting", action="append", default=None, metavar="HOLD,TRACE,LR")
    args = p.parse_args()
    layers = [int(n) for n in args.layers.split(",")]
    settings = args.setting or ["0.1,0.05,0.1", "0.1,0.05,0.03", "0.2,0.1,0.05"]
    print("| layers | hold (ms) | trace (ms) | lr per batch | simulated (s) | angle(B, Wᵀ) per layer, every "
          "quarter (°) | ‖B‖/‖W‖ at the end | rates at the end (Hz) | wall (s) |")
    print("|---|---:|---:|---:|---:|---|---|---|---:|")
    for setting in settings:
        hold, trace, lr = (float(v) for v in setting.split(","))
        print(run(layers, hold, trace, lr, args.duration, args.seed), flush=True)


if __name__ == "__main__":
    main()
