"""A spiking mirror that aligns: the mirror phase on 784-100-10 at cortical rates, long enough to reach < 15°.

Poisson units at a 20 Hz baseline (gain 10 Hz per unit) or LIF neurons (20 Hz, the defaults) run the
weight mirror's sample rule on cpp_standalone from the same random W and B as ``bench/mirror_784.py``
(seed 0), for ``--seconds`` of simulated time. The noise hold and the trace filter come from a scan of
the noise-aware closed form (Poisson: hold 10 ms, trace 5 ms; LIF: hold 20 ms, trace 20 ms, which its
membrane's low-pass needs). Before the run a **pilot** (``--pilot`` simulated seconds, seed 1000, so
its noise is independent of the run's) measures each layer's mirror moments in the circuit itself
(``sims.circuit.pilot_mirror_moments``): the mean increment along W and the event variance. The run's
decay (= Hebbian rate per event) is the one that the pilot's moments say ends closest to Wᵀ
(``--plan pilot``; ``--plan closed-form`` uses the linear neuron model's moments instead).

Each run writes its results folder ``OUT/<name>/`` and a row in ``OUT/spiking_mirror_784.json``: the
angles at the end, both predictions (closed form and pilot) at every metrics row and their largest gaps
to the circuit after the first row, the rates per population over the last 20 s, and
``OUT/spiking_mirror_784.png`` (time course against both predictions).

    python3 bench/spiking_mirror_784.py --out runs/spiking784 --only poisson --seconds 12000

``--reuse NAME=RUN_DIR`` reads a finished run instead of simulating it (a pilot still runs).
"""
from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np

LAYERS = [784, 100, 10]
DT = 0.5e-3
PARITY_PERIOD = 1.0
SETTINGS = {
    "poisson": dict(neuron={"kind": "spiking", "baseline_rate": 20.0, "gain": 10.0, "tau_trace": 0.005}, hold=0.01),
    "lif": dict(neuron={"kind": "lif", "tau_trace": 0.02}, hold=0.02),
}
GRID = np.geomspace(1e-8, 0.3, 240)


def declaration(name: str, seconds: float, decay: float) -> dict:
    """The run's declaration keys (``weightmirror.simulate`` overrides)."""
    s = SETTINGS[name]
    return dict(layers=LAYERS, device="cpp", seed=0, dt=DT, neuron=s["neuron"], noise={"correlation_time": s["hold"]},
                rule={"name": "wm", "lr": decay, "decay": decay, "mirror_batch_size": 1},
                phases={"schedule": "mirror", "duration": seconds, "parity_period": PARITY_PERIOD,
                        "record_interval": seconds / 20, "record_activity": 20.0})


def predictions(name: str, weights, rows, decay: float, pilot_moments) -> tuple[list, list]:
    """Per metrics row: the closed form's and the pilot's predicted angles (each layer: events = t / (2 τ_ξ))."""
    from weightmirror.circuits.brian.network import (closed_form_moments, predicted_angle_from_moments,
                                                     spiking_mirror_noise)
    from weightmirror.circuits.spec import NeuronModel

    s = SETTINGS[name]
    noise = spiking_mirror_noise(NeuronModel(**s["neuron"]), DT, int(round(s["hold"] / DT)))
    closed = [closed_form_moments(noise, W) for W, _ in weights]
    out_closed, out_pilot = [], []
    for r in rows:
        events = int(round(r["t"] / (2 * s["hold"])))
        out_closed.append([predicted_angle_from_moments(m, W, B, events, decay) for m, (W, B) in zip(closed, weights)])
        out_pilot.append([predicted_angle_from_moments(m, W, B, events, decay) for m, (W, B) in zip(pilot_moments, weights)])
    return out_closed, out_pilot


def largest_gap(rows, predicted) -> float:
    return max(abs(a - p) for r, ps in zip(rows[1:], predicted[1:]) for a, p in zip(r["angles_deg"], ps))


def time_to(name: str, weights, moments, target_deg: float) -> float:
    """Simulated seconds after which every layer can be within ``target_deg`` (the decay planned for each
    length from ``moments``; bisection over the length, 1 % resolution)."""
    from weightmirror.circuits.brian.network import plan_spiking_decay

    hold = SETTINGS[name]["hold"]
    lo, hi = 100.0, 400000.0
    while hi / lo > 1.01:
        mid = (lo * hi) ** 0.5
        worst = plan_spiking_decay(None, weights, int(mid / (2 * hold)), grid=GRID, moments=moments)[1]
        lo, hi = (lo, mid) if worst < target_deg else (mid, hi)
    return hi


def time_table(rows_out: dict) -> dict:
    """Per setting: the simulated time to 15° and 13°, from the closed form's and the pilot's moments."""
    from weightmirror.circuits.brian.network import init_weights
    from weightmirror.circuits.spec import CircuitSpec

    weights = init_weights(CircuitSpec(layers=tuple(LAYERS), seed=0))
    return {name: {source: {f"{t:g}": round(time_to(name, weights, row[key], t)) for t in (15.0, 13.0)}
                   for source, key in (("closed_form", "closed_form_moments"), ("pilot", "pilot_moments"))}
            for name, row in rows_out.items()}


def figure(rows_by_name: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows_by_name)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
    colours = ["tab:blue", "tab:orange"]
    for ax, name in zip(axes[0], names):
        d = rows_by_name[name]
        t = np.array([r["t"] for r in d["rows"]]) / 1000
        for l in range(len(LAYERS) - 1):
            ax.plot(t, [r["angles_deg"][l] for r in d["rows"]], "o-", ms=3, color=colours[l], label=f"circuit, B{l + 1}")
            ax.plot(t, [p[l] for p in d["pilot"]], "-", color=colours[l], alpha=0.5, lw=3,
                    label=f"predicted from a {d['pilot_seconds']:.0f} s pilot, B{l + 1}")
            ax.plot(t, [p[l] for p in d["closed"]], ":", color=colours[l], label=f"closed form (linear units), B{l + 1}")
        ax.axhline(15, color="grey", lw=0.8, ls="--", label="15°")
        ax.set_xlabel("simulated time (10³ s)")
        ax.set_ylabel("angle(B, Wᵀ) (deg)")
        kind = {"poisson": "Poisson units", "lif": "LIF neurons"}[name]
        ax.set_title(f"{kind}, 784-100-10, 20 Hz baseline; λ = {d['decay']:.2g} per event", fontsize=9)
        ax.set_ylim(0, 90)
        ax.legend(fontsize=7, ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    import weightmirror as wm
    from weightmirror.circuits.brian.network import (closed_form_moments, init_weights, plan_spiking_decay,
                                                     spiking_mirror_noise)
    from weightmirror.circuits.spec import NeuronModel
    from weightmirror.sims import circuit as sc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=12000.0)
    ap.add_argument("--only", default="poisson,lif", help="comma-separated: poisson, lif")
    ap.add_argument("--pilot", type=float, default=60.0, help="simulated seconds of the pilot")
    ap.add_argument("--plan", choices=("pilot", "closed-form"), default="pilot")
    ap.add_argument("--reuse", action="append", default=[], help="NAME=RUN_DIR: a finished run to analyse")
    ap.add_argument("--moments", default=None, metavar="JSON",
                    help="an earlier table of this script whose pilot moments (same setting and pilot length) "
                         "are taken instead of running the pilot again (the pilot is deterministic: seed 1000)")
    args = ap.parse_args(argv)
    reuse = dict(item.split("=", 1) for item in args.reuse)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "spiking_mirror_784.json"
    rows_out = json.loads(table.read_text()) if table.is_file() else {}
    for name in args.only.split(","):
        if name in rows_out:
            continue
        s = SETTINGS[name]
        if name in reuse:
            run = wm.load_run(reuse[name])
            seconds = run.summary["simulated_seconds"]
            decay = tomllib.loads((Path(reuse[name]) / "config.toml").read_text())["rule"]["decay"]
            planned_by = "as run"
        else:
            seconds, decay, planned_by = args.seconds, None, args.plan
        spec = sc.resolve_spec(None, declaration(name, seconds, decay or 1e-6))
        weights = init_weights(spec)
        earlier = json.loads(Path(args.moments).read_text()).get(name, {}) if args.moments else {}
        if earlier.get("pilot_seconds") == args.pilot and earlier.get("neuron") == s["neuron"] \
                and earlier.get("hold_s") == s["hold"]:
            pilot = earlier["pilot_moments"]
        else:
            pilot = sc.pilot_mirror_moments(spec, args.pilot)
        noise = spiking_mirror_noise(NeuronModel(**s["neuron"]), DT, int(round(s["hold"] / DT)))
        events = int(seconds / (2 * s["hold"]))
        print(f"{name}: pilot moments {pilot}", flush=True)
        if decay is None:
            moments = pilot if args.plan == "pilot" else None
            decay, planned = plan_spiking_decay(noise, weights, events, grid=GRID, moments=moments)
            print(f"{name}: decay = Hebbian rate per event {decay:.3g} ({args.plan}), planned angle {planned:.1f} deg",
                  flush=True)
            run = wm.simulate(out=str(out / name), progress=False, **declaration(name, seconds, decay))
        closed, piloted = predictions(name, weights, run.metrics, decay, pilot)
        summ = run.summary
        rows_out[name] = {
            "neuron": s["neuron"], "hold_s": s["hold"], "decay_per_event": decay, "decay_planned_by": planned_by,
            "pilot_seconds": args.pilot, "pilot_moments": pilot,
            "closed_form_moments": [closed_form_moments(noise, W) for W, _ in weights],
            "angles_deg": summ["angles_deg"], "initial_angles_deg": summ["initial_angles_deg"],
            "closed_form_angles_deg": closed[-1], "pilot_angles_deg": piloted[-1],
            "largest_gap_to_closed_form_deg": largest_gap(run.metrics, closed),
            "largest_gap_to_pilot_deg": largest_gap(run.metrics, piloted),
            "simulated_seconds": summ["simulated_seconds"], "wall_seconds": summ["wall_seconds"],
            "rates_hz": run.metrics[-1].get("rates_hz"),
            "time_course": [{"t": r["t"], "angles_deg": r["angles_deg"], "closed_form_deg": c, "pilot_deg": p}
                            for r, c, p in zip(run.metrics, closed, piloted)],
        }
        table.write_text(json.dumps(rows_out, indent=1))
        print(name, json.dumps({k: v for k, v in rows_out[name].items() if k != "time_course"}), flush=True)
    if rows_out:
        times = time_table(rows_out)
        (out / "time_to_angle.json").write_text(json.dumps(times, indent=1))
        print("simulated seconds to 15 and 13 degrees:", json.dumps(times), flush=True)
        figure({n: {"rows": d["time_course"], "closed": [r["closed_form_deg"] for r in d["time_course"]],
                    "pilot": [r["pilot_deg"] for r in d["time_course"]], "decay": d["decay_per_event"],
                    "pilot_seconds": d["pilot_seconds"]}
                for n, d in rows_out.items()}, out / "spiking_mirror_784.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
