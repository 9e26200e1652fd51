"""Circuit mode on the GPU (cuda_standalone through brian2cuda), one prepared script.

1. Correctness: the same small circuit on cpp_standalone and
   cuda_standalone.
   - engaged mode with Kolen-Pollack on a fixed stimulus (no random
     numbers in rate neurons' engaged mode): the final W and B must agree to
     1e-6 relative (float64 on both; only the order of summation differs);
   - the mirror phase: both devices' angle(B, Wᵀ) per layer must lie within
     5° of each other and of the rate-mode prediction (their random streams
     differ, so only the statistics can agree).
2. The cost table of ``bench/bench_circuit.py`` for cuda_standalone and,
   for the ratio, cpp_standalone with 1 thread and with every CPU core, at
   widths of at least 1 M synapses.

Writes a Markdown report to the path given on the command line::

    python bench/gpu_circuit.py bench/results_circuit_gpu.md [--widths 1000,2000] [--cpu-threads 16]

brian2cuda on CUDA 13 needs -std=c++17: ``circuits.brian.devices`` sets it
in both the g++ and the nvcc preferences when it activates the device.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _correctness_one(device: str, mode: str, out_json: str) -> None:
    """Run one small circuit on ``device`` and write its weights (own process)."""
    import numpy as np

    from weightmirror.circuits.rules import KolenPollack, WeightMirror
    from weightmirror.circuits.spec import CircuitSpec, Phases
    from weightmirror.sims.circuit import simulate

    rng = np.random.default_rng(0)
    if mode == "engaged":
        spec = CircuitSpec(layers=(16, 12, 4), rule=KolenPollack(decay=0.01), engaged_lr=0.02, device=device,
                           phases=Phases(schedule="engaged", duration=0.5, presentation=0.01, record_interval=0.25))
        x = rng.standard_normal((30, 16))
        y = rng.integers(0, 4, 30)
        data = (x, y, x, y)
    else:
        spec = CircuitSpec(layers=(5, 4, 3), rule=WeightMirror(lr=0.05, decay=0.05, mirror_batch_size=16),
                           device=device, phases=Phases(schedule="mirror", duration=8.0, record_interval=1.0))
        data = None
    out = tempfile.mkdtemp(prefix=f"gpu_check_{device}_{mode}_")
    t0 = time.perf_counter()
    summary = simulate(spec, out, data=data, progress=False).summary
    final = np.load(Path(out) / "weights_final.npz")
    Path(out_json).write_text(json.dumps({
        "summary": summary,
        "weights": {k: final[k].astype(float).tolist() for k in final.files},
        "total_s": time.perf_counter() - t0,
        "angles": summary["angles_deg"],
    }))


def correctness(lines: list[str], timeout: float, dut: str = "cuda") -> bool:
    import numpy as np

    ok = True
    results = {}
    for mode in ("engaged", "mirror"):
        for device in ("cpp", dut):
            path = tempfile.mktemp(suffix=".json")
            cmd = [sys.executable, __file__, "--check-one", device, mode, path]
            if (mode, device) in results:  # --device-under-test cpp: the script checking itself
                continue
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                if proc.returncode:
                    err = (proc.stderr.strip().splitlines() or ["no output"])[-3:]
                    lines.append(f"- {mode} on {device}: FAILED: {' / '.join(err)}")
                    ok = False
                    continue
                results[(mode, device)] = json.loads(Path(path).read_text())
            except subprocess.TimeoutExpired:
                lines.append(f"- {mode} on {device}: timed out after {timeout} s")
                ok = False
    if ("engaged", "cpp") in results and ("engaged", dut) in results:
        a, b = results[("engaged", "cpp")]["weights"], results[("engaged", dut)]["weights"]
        worst = max(float(np.max(np.abs(np.array(a[k]) - np.array(b[k])))) / float(np.max(np.abs(np.array(a[k]))))
                    for k in a)
        good = worst < 1e-6
        ok &= good
        lines.append(f"- engaged KP, fixed stimulus: max |W,B (cuda) - W,B (cpp)| / max|W,B| = {worst:.2e} "
                     f"({'ok' if good else 'MISMATCH'}, tolerance 1e-6)")
    if ("mirror", "cpp") in results and ("mirror", dut) in results:
        ca = results[("mirror", "cpp")]["summary"]
        cu = results[("mirror", dut)]["summary"]
        pred = ca.get("predicted_angles_deg")
        good = all(abs(x - y) <= 5 for x, y in zip(ca["angles_deg"], cu["angles_deg"]))
        good &= all(abs(x - y) <= 5 for x, y in zip(cu["angles_deg"], pred))
        ok &= good
        lines.append("- mirror phase angle(B, Wᵀ) per layer: cpp "
                     + ", ".join(f"{v:.1f}" for v in ca["angles_deg"]) + "°, cuda "
                     + ", ".join(f"{v:.1f}" for v in cu["angles_deg"]) + "°, rate-mode prediction "
                     + ", ".join(f"{v:.1f}" for v in pred) + f"° ({'ok' if good else 'MISMATCH'}, tolerance 5°)")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", help="Markdown report to write")
    p.add_argument("--widths", default="1000,2000", help="layer widths N (2N² synapses each)")
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per build+run")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--device-under-test", default="cuda", choices=("cuda", "cpp"),
                   help="cpp runs the whole script without a GPU (to check the script itself)")
    p.add_argument("--check-one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_one:
        _correctness_one(*args.check_one)
        return 0
    if not args.out:
        p.error("the report path is required")

    from weightmirror.circuits.brian.devices import brian2cuda_available

    lines = ["# Circuit mode on the GPU (cuda_standalone)", ""]
    dut = args.device_under_test
    if dut == "cuda" and not brian2cuda_available():
        lines.append("brian2cuda does not import here: nothing measured.")
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 1
    import brian2

    if dut == "cuda":
        import brian2cuda

        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        lines += [f"GPU: {gpu}; {nvcc[-1] if nvcc else 'nvcc ?'}; brian2 {brian2.__version__}, "
                  f"brian2cuda {getattr(brian2cuda, '__version__', '?')}, Python {sys.version.split()[0]}", ""]
    else:
        lines += ["(dry run: cpp_standalone stands in for cuda_standalone)", ""]
    ok = True
    if not args.skip_check:
        lines += ["## Correctness (cuda_standalone against cpp_standalone)", ""]
        t0 = time.perf_counter()
        ok = correctness(lines, args.timeout, dut)
        lines += ["", f"({time.perf_counter() - t0:.0f} s)", ""]
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_circuit

    widths = [int(w) for w in args.widths.split(",")]
    names = ["cuda" if dut == "cuda" else "cpp2", "cpp1", f"cpp{args.cpu_threads}"]
    rows, bw = bench_circuit.measure_rows(widths, names, args.seconds, timeout=args.timeout)
    lines += ["## Cost", "", bench_circuit.report(rows, bw),
              "Target: cuda_standalone ≥ 10× cpp_standalone (synapse updates per second) at ≥ 1 M synapses."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
