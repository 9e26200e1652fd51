"""Realignment: a spiking (LIF) mirror phase in Brian2 repairs a rate-mode network's scrambled feedback.

The experiment of issue 12 (4), with weights that travel between the modes through results folders:

1. **rate mode** trains an MLP 784-100-100-100-10 (ReLU) on Fashion-MNIST with the weight mirror for
   ``--source-epochs`` (``OUT/source``): its feedback weights B are aligned with Wᵀ;
2. its feedback is **scrambled** (``OUT/scrambled``): every B whose error is used (layers 2-4) gets its
   own entries in a random order (the same numbers, angle(B, Wᵀ) ≈ 90°); the forward weights and
   biases are untouched, so the network's accuracy is too;
3. a **LIF mirror phase** in Brian2 (``OUT/lif-mirror``: ``weightmirror circuit --init-from
   OUT/scrambled --neuron lif --phase mirror``, cpp_standalone; 20 Hz baselines, each layer's noise
   held 100 ms, spike trains read through 50 ms traces, even and odd layers the noise source in turn
   for 500 ms) re-aligns B by Hebbian plasticity alone; its
   Hebbian rate and decay are chosen from the noise-aware closed form
   (``predicted_spiking_angle``) for the simulated time given, before the run; the network's biases
   are carried through the circuit unchanged;
4. the **rate-mode mirror** does the same on the same number of noise samples per layer
   (``OUT/rate-mirror``: ``WeightMirror.mirror_update``, as ``predict_mirror_angles``);
5. every B is scaled to its W's norm (one scalar per layer, a homeostatic scaling of the feedback
   pathway that leaves every angle as it is: a spiking mirror's B carries its spike noise and the
   source's expected scale ``1 + κ_shot/κ``, and learning on must not depend on it); each network then
   **learns on**, ``--continue-epochs`` in rate mode with Kolen-Pollack's shared
   updates and no decay (``kp.decay_total = 0``: ``W - Bᵀ`` keeps the value it starts from, so what the
   feedback is worth is exactly what the mirror made of it), for every seed of ``--seeds``:
   from the aligned source, the scrambled one, the LIF-realigned and the rate-realigned one.

Writes ``OUT/realign.json`` (every number), ``OUT/realign.md`` (the table) and ``OUT/realignment.png``
(angle per layer before and after, the LIF mirror's time course against its noise-aware prediction,
and the test error while learning on, mean ± sd over seeds). Finished steps are kept: a rerun goes
on where it stopped.

    python3 bench/realign.py --out runs/realign --seconds 300 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import weightmirror as wm
from weightmirror import results
from weightmirror.sims.stats import paired_t

HIDDEN = [100, 100, 100]
HOLD, TRACE = 0.1, 0.05  # s: the noise sample's hold, the LIF trains' trace filter
PARITY = 0.5  # s: even and odd layers take turns as noise sources every 5 holds


def _train_common() -> dict:
    return dict(data="fashion-mnist", model_options={"hidden": HIDDEN}, progress=False)


def _layer_keys(checkpoint) -> list[int]:
    import re

    return sorted(int(m.group(1)) for k in checkpoint if (m := re.fullmatch(r"net\.(\d+)\.W", k)))


def _with_feedback(src: Path, dst: Path, feedbacks: dict[int, np.ndarray]) -> None:
    """A copy of the training run ``src`` whose checkpoint holds other B (by module index)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "predictions.npz"))
    arrays = dict(results.load_arrays(src / results.CHECKPOINT))
    for i, B in feedbacks.items():
        arrays[f"net.{i}.B"] = np.asarray(B, dtype=np.float32)
    results.save_arrays(dst / results.CHECKPOINT, arrays)


def _angles(folder: Path) -> list[float]:
    from weightmirror.circuits.rules import angle_degrees
    from weightmirror.sims.transfer import read_weights

    return [angle_degrees(B, W) for W, B in read_weights(folder).layers]


def plan_mirror(folder: Path, seconds: float) -> dict:
    """Hebbian rate = decay per event that the noise-aware closed form says ends closest to Wᵀ after
    ``seconds`` (each layer learns half of them, one event per held sample), for the layers whose B is used."""
    from weightmirror.circuits.brian.network import plan_spiking_decay, spiking_mirror_noise
    from weightmirror.circuits.spec import NeuronModel
    from weightmirror.sims.transfer import read_weights

    layers = read_weights(folder).layers[1:]
    dt = 0.5e-3
    noise = spiking_mirror_noise(NeuronModel(kind="lif", tau_trace=TRACE), dt, int(round(HOLD / dt)))
    events = int(seconds / 2 / HOLD)
    best = plan_spiking_decay(noise, layers, events)
    return {"decay_per_event": best[0], "predicted_worst_angle_deg": best[1], "events_per_layer": events}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=300.0, help="simulated seconds of the LIF mirror phase")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the learning-on runs")
    ap.add_argument("--source-epochs", type=int, default=1)
    ap.add_argument("--continue-epochs", type=int, default=3)
    ap.add_argument("--device", default="cpp", help="Brian2 device of the LIF circuit (cpp, runtime, cuda)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    record_path = out / "realign.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}

    def save():
        record_path.write_text(json.dumps(record, indent=1))

    source, scrambled = out / "source", out / "scrambled"
    lif, rate = out / "lif-mirror", out / "rate-mirror"
    if not args.report_only:
        record["device"] = args.device
        if not (source / results.SUMMARY).is_file():
            run = wm.train(rule="wm", epochs=args.source_epochs, seed=0, out=str(source), **_train_common())
            record["source"] = {"test_top1_error": run.summary["test_top1_error"], "epochs": args.source_epochs}
            save()
        checkpoint = results.load_arrays(source / results.CHECKPOINT)
        idx = _layer_keys(checkpoint)
        if not (scrambled / results.CHECKPOINT).is_file():
            rng = np.random.default_rng(12345)
            _with_feedback(source, scrambled, {
                i: rng.permutation(checkpoint[f"net.{i}.B"].ravel()).reshape(checkpoint[f"net.{i}.B"].shape)
                for i in idx[1:]})
        if not (lif / results.SUMMARY).is_file():
            plan = plan_mirror(scrambled, args.seconds)
            record["lif_plan"] = plan
            save()
            lam = plan["decay_per_event"]
            t0 = time.perf_counter()
            run = wm.simulate(out=str(lif), init_from=str(scrambled), progress=False, device=args.device,
                              neuron={"kind": "lif", "tau_trace": TRACE}, noise={"correlation_time": HOLD},
                              rule={"name": "wm", "lr": lam, "decay": lam, "mirror_batch_size": 1},
                              phases={"schedule": "mirror", "duration": args.seconds, "parity_period": PARITY,
                                      "record_interval": args.seconds / 10})
            record["lif"] = {k: run.summary.get(k) for k in (
                "initial_angles_deg", "angles_deg", "predicted_angles_deg", "noise_aware_angles_deg",
                "simulated_seconds", "wall_seconds")}
            record["lif"]["wall_seconds_measured"] = time.perf_counter() - t0
            save()
        if not (rate / results.CHECKPOINT).is_file():
            from weightmirror.sims.circuit import mirror_event_samples, predict_mirror_angles, resolve_spec
            from weightmirror.sims.transfer import read_weights

            spec = resolve_spec(wm.load_run(str(lif)).config)
            w0 = read_weights(scrambled).layers
            # each layer's own number of mirror events in the circuit (its parity's share of the time)
            plastic = [len(mirror_event_samples(spec, spec.phases.segments(), l)) * spec.noise.correlation_time
                       for l in range(1, len(w0) + 1)]
            _, finals = predict_mirror_angles(spec, w0, [plastic], seed=1)
            _with_feedback(scrambled, rate, {i: finals[k] for k, i in enumerate(idx) if k >= 1})
        # the starts of learning on: every B scaled to its W's norm (one scalar per layer, angles unchanged)
        from weightmirror.sims.transfer import read_weights

        lif_b = read_weights(lif).layers
        for name, folder, feedback in (("source", source, None), ("scrambled", scrambled, None),
                                       ("lif-mirror", scrambled, [B for _, B in lif_b]), ("rate-mirror", rate, None)):
            start = out / "starts" / name
            if (start / results.CHECKPOINT).is_file():
                continue
            arrays = results.load_arrays(folder / results.CHECKPOINT)
            scaled, factors = {}, []
            for k, i in enumerate(idx):
                W = arrays[f"net.{i}.W"].astype(np.float64)
                B = arrays[f"net.{i}.B"].astype(np.float64) if feedback is None else np.asarray(feedback[k])
                factors.append(float(np.linalg.norm(W) / np.linalg.norm(B)))
                scaled[i] = B * factors[-1]
            _with_feedback(folder, start, scaled)
            record.setdefault("feedback_scale", {})[name] = factors
            save()
        for start in ("source", "scrambled", "lif-mirror", "rate-mirror"):
            for seed in seeds:
                key = f"{start}/seed-{seed}"
                if key in record.get("continue", {}):
                    continue
                dst = out / "continue" / start / f"seed-{seed}"
                if dst.exists():
                    shutil.rmtree(dst)
                run = wm.train(rule="kp", kp={"decay_total": 0.0}, epochs=args.continue_epochs, seed=seed,
                               init_from=str(out / "starts" / start), out=str(dst), **_train_common())
                record.setdefault("continue", {})[key] = {
                    "test_top1_error": [m.get("test_top1_error") for m in run.metrics],
                    "val_top1_error": [m.get("val_top1_error") for m in run.metrics],
                    "angles_deg": [m.get("angles_deg") for m in run.metrics],
                }
                save()
                print(key, run.summary["test_top1_error"], flush=True)
    record["angles_deg"] = {name: _angles(out / "starts" / name)
                            for name in ("source", "scrambled", "lif-mirror", "rate-mirror")
                            if (out / "starts" / name).is_dir()}
    save()
    print(report(record, out, seeds))
    figure(record, out, seeds)
    return 0


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(record: dict, out: Path, seeds) -> str:
    names = {"source": "aligned (the trained network)", "scrambled": "scrambled",
             "lif-mirror": "scrambled, then the LIF mirror (Brian2)", "rate-mirror": "scrambled, then the rate-mode mirror"}
    cont = record.get("continue", {})
    base = [cont[f"scrambled/seed-{s}"]["test_top1_error"][-1] for s in seeds if f"scrambled/seed-{s}" in cont]
    lines = ["| feedback | angle(B, Wᵀ), layers 2-4 (°) | test error before learning on (%) | "
             "test error after learning on (%) | paired t vs scrambled | seeds |",
             "|---|---|---:|---:|---:|---:|"]
    for start, label in names.items():
        ang = record.get("angles_deg", {}).get(start)
        runs = [cont[f"{start}/seed-{s}"] for s in seeds if f"{start}/seed-{s}" in cont]
        if ang is None:
            continue
        before = _ms([r["test_top1_error"][0] for r in runs])
        after = [r["test_top1_error"][-1] for r in runs]
        p = "–"
        if start != "scrambled" and len(after) >= 2 and len(after) == len(base):
            p = f"{paired_t(after, base)[1]:.3g}"
        lines.append(f"| {label} | {', '.join(f'{a:.1f}' for a in ang[1:])} | {before} | {_ms(after)} | {p} | "
                     f"{len(runs)} |")
    text = "\n".join(lines) + "\n"
    lif = record.get("lif")
    if lif:
        text += (f"\nLIF mirror: {lif['simulated_seconds']:.0f} s simulated in {lif['wall_seconds']:.0f} s "
                 f"(device {record.get('device', 'cpp')}); angle per layer {', '.join(f'{a:.1f}' for a in lif['angles_deg'])}°, "
                 f"noise-aware prediction {', '.join(f'{a:.1f}' for a in (lif.get('noise_aware_angles_deg') or []))}°, "
                 f"rate-mode prediction {', '.join(f'{a:.1f}' for a in (lif.get('predicted_angles_deg') or []))}°; "
                 f"decay = Hebbian rate per event {record['lif_plan']['decay_per_event']:.2g} (from the closed form).\n")
    (out / "realign.md").write_text(text)
    return text


def figure(record: dict, out: Path, seeds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weightmirror.figures import style

    plt.rcParams.update(style.RCPARAMS)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = {"source": style.RULE_COLORS["bp"], "scrambled": style.RULE_COLORS["fa"],
              "lif-mirror": style.RULE_COLORS["wm"], "rate-mirror": style.RULE_COLORS["kp"]}
    labels = {"source": "aligned (trained)", "scrambled": "scrambled", "lif-mirror": "LIF mirror (Brian2)",
              "rate-mirror": "rate-mode mirror"}
    # A: angle per layer whose B is used
    ax = axes[0]
    angles = record.get("angles_deg", {})
    width = 0.2
    for k, name in enumerate(labels):
        if name not in angles:
            continue
        vals = angles[name][1:]
        ax.bar(np.arange(len(vals)) + (k - 1.5) * width, vals, width, color=colors[name], label=labels[name])
    ax.set_xticks(range(3), [f"B{l}" for l in (2, 3, 4)])
    ax.set_ylabel("angle(B, Wᵀ) (°)")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("A  feedback at the start of learning on\n(layers whose error is used)")
    ax.legend(frameon=False, fontsize=8, ncol=2, loc="upper center")
    # B: the LIF mirror's time course
    ax = axes[1]
    lif_dir = out / "lif-mirror"
    if (lif_dir / results.METRICS).is_file():
        rows = results.read_metrics(lif_dir / results.METRICS)
        t = [r["t"] for r in rows]
        for l in range(1, len(rows[0]["angles_deg"])):
            color = plt.cm.viridis(l / len(rows[0]["angles_deg"]))
            ax.plot(t, [r["angles_deg"][l] for r in rows], color=color, label=f"B{l + 1} circuit")
            if rows[-1].get("noise_aware_angles_deg") is not None:
                ax.plot(t, [r.get("noise_aware_angles_deg", [math.nan] * 9)[l] for r in rows], color=color, ls=":",
                        label=f"B{l + 1} noise-aware prediction")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("angle(B, Wᵀ) (°)")
        ax.set_ylim(0, 100)
        ax.set_title("B  LIF mirror phase from the scrambled B\n(20 Hz baselines, Brian2 cpp_standalone)")
        ax.legend(frameon=False, fontsize=7, ncol=2)
    # C: learning on
    ax = axes[2]
    cont = record.get("continue", {})
    for name in labels:
        curves = [cont[f"{name}/seed-{s}"]["test_top1_error"] for s in seeds if f"{name}/seed-{s}" in cont]
        if not curves:
            continue
        arr = np.array(curves, dtype=float)
        mean = arr.mean(axis=0)
        ep = np.arange(arr.shape[1])
        ax.plot(ep, mean, color=colors[name], marker="o", label=f"{labels[name]} (n = {len(curves)})")
        if len(curves) > 1:
            sd = arr.std(axis=0, ddof=1)
            ax.fill_between(ep, mean - sd, mean + sd, color=colors[name], alpha=0.2, lw=0)
    ax.set_xticks(range(int(max((len(c["test_top1_error"]) for c in cont.values()), default=1))))
    ax.set_xlabel("epochs of learning on (Kolen-Pollack updates, no decay)")
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title("C  learning on with that feedback\n(Fashion-MNIST, mean ± sd over seeds)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "realignment.png", dpi=style.DPI)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
