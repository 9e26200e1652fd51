"""Circuit-mode cost: wall time per simulated second and synapse updates per second.

For each layer width N the circuit ``layers = (N, N)`` (one weight layer:
``N²`` forward synapses W and ``N²`` feedback synapses B, plus the
populations y0, y1, δ0, δ1 and their one-to-one links) runs its mirror phase
on each device; the script reports

- wall seconds per simulated second (the simulation only: code generation,
  compilation and the standalone project's build are reported apart);
- synapse updates per second, counting what the network executes every
  step: both summed synaptic inputs (``2 N²`` per step), W's gated
  plasticity (``N²`` per ``plasticity_dt``) and B's mirror plasticity (``N²``
  per noise sample);
- the memory-bandwidth bound on synapse updates: a STREAM triad
  (``a = b + s·c``, compiled here with g++ -O3 -fopenmp, 1 and 2 threads)
  measures the bandwidth; Brian's generated loops stream 16 bytes per
  summed-input update (an 8-byte weight and two 4-byte indices) and 24 per
  plasticity update (the weight read and written, two indices), so the bound
  is bandwidth / (weighted bytes per update).

Each measurement runs in its own process (a fresh Brian2 device).

Usage::

    python bench/bench_circuit.py --widths 100,250,500,1000 \\
        --devices runtime,cython,cpp1,cpp2 --out bench/results_circuit_table.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: rough synapse updates per second, to size each run to a few seconds
GUESS = {"runtime": 4e7, "cython": 2e8, "cpp": 4e8, "cuda": 5e9}


def device_of(name: str) -> tuple[str, int]:
    """``runtime``, ``cython``, ``cpp<threads>`` (e.g. cpp1, cpp2, cpp16), ``cuda``."""
    if name.startswith("cpp"):
        return "cpp", int(name[3:] or 1)
    if name in ("runtime", "cython", "cuda"):
        return name, 1
    raise SystemExit(f"unknown device {name!r}; allowed: runtime, cython, cpp<threads>, cuda")


def guess(name: str) -> float:
    device, threads = device_of(name)
    return GUESS[device] * (threads ** 0.7 if device == "cpp" else 1)


#: the neuron model measured (``--neuron``): rate units, Poisson or LIF (whose W and B synapses are driven
#: by spikes, on_pre: ν₀ dt N² spike-driven updates per pathway and step; a mirror-only run's baseline
#: offsets are constants, computed once, and W's plasticity is not built)
NEURON = "rate"


def make_spec(width: int, device: str, threads: int, duration: float):
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import CircuitSpec, NeuronModel, Phases

    return CircuitSpec(layers=(width, width), rule=WeightMirror(lr=0.01, decay=0.01, mirror_batch_size=8),
                       device=device, threads=threads, neuron=NeuronModel(kind=NEURON),
                       phases=Phases(schedule="mirror", duration=duration, record_interval=duration))


def updates_per_step(spec) -> tuple[float, float]:
    """``(synaptic-input updates, plasticity updates)`` per integration step.

    Rate and Poisson units: every synapse adds to its target's summed input every step (2 N² for W
    and B). LIF: each spike updates its row of currents (2 N² ν₀ dt), and only where W learns
    (an engaged phase) the summed baseline offsets every step as well. Plasticity: B's mirror
    events (N² per noise hold), and W's engaged update every plasticity_dt only where W learns.
    """
    n_syn = sum(a * b for a, b in zip(spec.layers[:-1], spec.layers[1:]))
    engaged = spec.phases.schedule != "mirror"
    if spec.neuron.kind == "lif":
        summed = 2.0 * n_syn * spec.neuron.baseline_rate * spec.dt + (2.0 * n_syn if engaged else 0.0)
    else:
        summed = 2.0 * n_syn
    plastic = n_syn * spec.dt / spec.noise.correlation_time + (n_syn * spec.dt / spec.plasticity_dt if engaged else 0.0)
    return summed, plastic


BYTES_SUMMED, BYTES_PLASTIC = 16.0, 24.0


def run_one(name: str, width: int, duration: float, build_root: str) -> dict:
    """One measurement (in this process)."""
    import numpy as np

    from weightmirror.circuits.brian.network import BrianCircuit

    device, threads = device_of(name)
    warm = 0.01 if device in ("runtime", "cython") else 0.0
    spec = make_spec(width, device, threads, duration + warm)
    t0 = time.perf_counter()
    directory = os.path.join(build_root, f"{name}_{width}") if device in ("cpp", "cuda") else None
    c = BrianCircuit(spec, directory=directory, record_weights=False, record_rates=False)
    setup = time.perf_counter() - t0
    try:
        if warm:
            t0 = time.perf_counter()
            c.run_phase("mirror", warm)  # code generation / compilation happens here
            setup += time.perf_counter() - t0
            t0 = time.perf_counter()
            c.run_phase("mirror", duration)
            wall = time.perf_counter() - t0
            compile_s = setup
        else:
            c.run_phase("mirror", duration)
            t0 = time.perf_counter()
            c.finish()
            total = time.perf_counter() - t0
            import brian2

            wall = float(brian2.get_device()._last_run_time)
            compile_s = setup + total - wall
        (W, B), = c.get_weights()
        ok = bool(np.isfinite(B).all())
    finally:
        c.release()
    summed, plastic = updates_per_step(spec)
    steps = duration / spec.dt
    updates = (summed + plastic) * steps
    return {"device": name, "neuron": NEURON, "width": width, "synapses": 2 * width * width, "simulated_s": duration,
            "wall_s": wall, "wall_per_sim_s": wall / duration, "updates_per_s": updates / wall,
            "setup_s": compile_s, "finite": ok,
            "bytes_per_update": (summed * BYTES_SUMMED + plastic * BYTES_PLASTIC) / (summed + plastic)}


TRIAD = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <omp.h>
int main(int argc, char** argv) {
  const long n = atol(argv[1]);
  double *a = (double*)aligned_alloc(64, n * 8), *b = (double*)aligned_alloc(64, n * 8),
         *c = (double*)aligned_alloc(64, n * 8);
  #pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
  double best = 1e30;
  for (int rep = 0; rep < 8; rep++) {
    auto t0 = std::chrono::steady_clock::now();
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  printf("%.6f %.3f\n", 24.0 * n / best / 1e9, a[n / 2]);
  return 0;
}
"""


def measure_bandwidth(threads: int, n: int = 40_000_000) -> float:
    """STREAM-triad bandwidth in GB/s (24 bytes per element: two reads, one write)."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "triad.cpp"
        src.write_text(TRIAD)
        exe = Path(d) / "triad"
        subprocess.run(["g++", "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)], check=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="true")
        best = 0.0
        for _ in range(3):
            out = subprocess.run([str(exe), str(n)], capture_output=True, text=True, env=env, check=True).stdout
            best = max(best, float(out.split()[0]))
        return best


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def table(rows: list[dict], bw: dict[int, float]) -> str:
    lines = ["| device | neuron | width N | synapses (W+B) | simulated s | wall s / simulated s | synapse updates / s "
             "| setup s (codegen/compile) | % of bandwidth bound |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['device']} | {NEURON} | {r['width']} | {2 * r['width'] ** 2:,} | – | – | – | – | "
                         f"failed: {r['error']} |")
            continue
        bound = bw_for(bw, r["device"]) * 1e9 / r["bytes_per_update"]
        lines.append(f"| {r['device']} | {r.get('neuron', 'rate')} | {r['width']} | {r['synapses']:,} | {r['simulated_s']:.3f} | "
                     f"{r['wall_per_sim_s']:.3g} | {r['updates_per_s']:.3g} | {r['setup_s']:.1f} | "
                     f"{100 * r['updates_per_s'] / bound:.1f} % |")
    return "\n".join(lines)


def bw_for(bw: dict, name: str) -> float:
    """The bandwidth measured with the device's thread count (else the nearest below)."""
    device, threads = device_of(name)
    if device != "cpp":
        threads = 1
    keys = sorted(k for k in bw if int(k) <= threads) or sorted(bw)
    return bw[keys[-1]]


def ratios(rows: list[dict], bw: dict[int, float]) -> list[str]:
    by = {(r["device"], r["width"]): r for r in rows if "error" not in r}
    out = []
    for width in sorted({r["width"] for r in rows}):
        base = by.get(("runtime", width))
        names = sorted({r["device"] for r in rows if r["width"] == width and "error" not in r})
        for name in names:
            r = by.get((name, width))
            if base and r and name != "runtime":
                out.append(f"- width {width}: {name} / runtime-numpy synapse updates per second = "
                           f"{r['updates_per_s'] / base['updates_per_s']:.1f}x")
        cpps = [by[(n, width)] for n in names if n.startswith("cpp")]
        for r in cpps:
            bound = bw_for(bw, r["device"]) * 1e9 / r["bytes_per_update"]
            out.append(f"- width {width}: {r['device']} reaches {100 * r['updates_per_s'] / bound:.1f} % of the "
                       f"{device_of(r['device'])[1]}-thread bandwidth bound ({bound:.3g} updates/s)")
        cuda = by.get(("cuda", width))
        if cuda and cpps:
            best = max(cpps, key=lambda r: r["updates_per_s"])
            out.append(f"- width {width}: cuda / {best['device']} synapse updates per second = "
                       f"{cuda['updates_per_s'] / best['updates_per_s']:.1f}x")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="100,250,500,1000")
    p.add_argument("--devices", default="runtime,cython,cpp1,cpp2")
    p.add_argument("--seconds", type=float, default=3.0, help="target wall seconds per measurement")
    p.add_argument("--out", default=None, help="Markdown file for the table")
    p.add_argument("--json", default=None, help="JSON file for the raw rows")
    p.add_argument("--neuron", default="rate", choices=("rate", "spiking", "lif"),
                   help="neuron model of the circuit measured (default: rate)")
    p.add_argument("--one", nargs=3, metavar=("DEVICE", "WIDTH", "DURATION"), help=argparse.SUPPRESS)
    p.add_argument("--build-root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global NEURON
    NEURON = args.neuron
    if args.one:
        row = run_one(args.one[0], int(args.one[1]), float(args.one[2]),
                      args.build_root or tempfile.mkdtemp(prefix="bench_circuit_"))
        print("RESULT " + json.dumps(row))
        return 0

    widths = [int(w) for w in args.widths.split(",")]
    names = args.devices.split(",")
    for name in names:
        device_of(name)
    rows, bw = measure_rows(widths, names, args.seconds)
    text = report(rows, bw)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth_gb_s": bw, "rows": rows}, indent=1))
    return 0


def measure_rows(widths, names, seconds: float, timeout: float | None = None):
    """Bandwidth (1 thread and every cpp thread count) and one row per (width, device)."""
    counts = sorted({1} | {device_of(n)[1] for n in names if n.startswith("cpp")})
    bw = {k: measure_bandwidth(k) for k in counts}
    print("STREAM triad bandwidth: " + ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in bw.items()), flush=True)
    rows = []
    build_root = tempfile.mkdtemp(prefix="bench_circuit_")
    for width in widths:
        for name in names:
            spec = make_spec(width, "runtime", 1, 1.0)
            summed, plastic = updates_per_step(spec)
            per_sim_s = (summed + plastic) / spec.dt
            tn = spec.noise.correlation_time
            duration = max(2 * tn, round(seconds * guess(name) / per_sim_s / tn) * tn)
            duration = min(duration, 2.0)
            cmd = [sys.executable, __file__, "--one", name, str(width), repr(duration), "--build-root", build_root,
                   "--neuron", NEURON]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
            except subprocess.TimeoutExpired:
                rows.append({"device": name, "width": width, "error": f"timed out after {timeout} s"})
                print(f"{name:8s} N={width:5d}: timed out", flush=True)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
                row = {"device": name, "width": width, "error": err}
            else:
                row = json.loads(lines[-1][7:])
            rows.append(row)
            print(f"{name:8s} N={width:5d}: "
                  + (f"{row['wall_per_sim_s']:.3g} wall s/sim s, {row['updates_per_s']:.3g} updates/s "
                     f"(setup {row['setup_s']:.1f} s, total {time.perf_counter() - t0:.0f} s)"
                     if "error" not in row else f"FAILED {row['error']}"), flush=True)
    return rows, bw


def report(rows, bw) -> str:
    bws = ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in bw.items())
    return textwrap.dedent(f"""\
        Machine: {machine()}
        STREAM triad (g++ -O3 -fopenmp): {bws}

        {{table}}

        {{ratios}}
        """).format(table=table(rows, bw), ratios="\n".join(ratios(rows, bw)))


if __name__ == "__main__":
    sys.exit(main())
