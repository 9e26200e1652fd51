"""Circuit mode's defaults: layers from the data set, a duration sized by what the schedule needs, a
mirror-only run's decay sized by the closed form, and (slow) that they work without tuning."""
from __future__ import annotations

import math

import numpy as np
import pytest

from weightmirror.circuits.brian.network import init_weights, predicted_spiking_angle
from weightmirror.sims import circuit as sim_circuit
from weightmirror.sims.cli import main


def _predicted(spec) -> list[float]:
    """The rate-mode closed form's angle per layer after the run (rate units)."""
    events = int(spec.phases.duration / (2 * spec.noise.correlation_time))
    decay = spec.mirror.step(1)[1]
    return [predicted_spiking_angle(sim_circuit.RATE_UNIT_NOISE, W, B, events, decay)
            for W, B in init_weights(spec)]


def test_default_layers_follow_the_data_set():
    assert sim_circuit.resolve_spec(None, {}).layers == (64, 32, 10)
    assert sim_circuit.resolve_spec(None, {"data": "fashion-mnist", "rule": "fa"}).layers == (784, 100, 10)
    assert sim_circuit.resolve_spec(None, {"data": "fashion-mnist", "downsample": 2, "rule": "fa"}).layers == (196, 32, 10)
    assert sim_circuit.resolve_spec(None, {"layers": [20, 5]}).layers == (20, 5)


def test_a_mirror_run_without_a_duration_is_sized_to_come_within_ten_degrees():
    """Decay per sample d = 2 tan²(7°)/F for the widest layer, run until (1-d)^N = 2 %: the closed form
    then puts every layer below 8° (the circuit follows it within 2°, tests/test_circuit.py)."""
    spec = sim_circuit.resolve_spec(None, {})
    assert spec.phases.schedule == "mirror"
    d7 = 2 * math.tan(math.radians(7)) ** 2 / 64
    n = math.ceil(math.log(0.02) / math.log1p(-d7))
    assert spec.phases.duration == pytest.approx(2 * n * 0.005, abs=0.5)  # (in whole parity periods)
    assert 50 < spec.phases.duration < 120 and spec.phases.record_interval == pytest.approx(1.0)
    assert max(_predicted(spec)) < 8.0
    wide = sim_circuit.resolve_spec(None, {"layers": [784, 100, 10]})
    assert wide.phases.duration > 10 * spec.phases.duration  # 784 inputs need ~12x the samples of 64
    assert max(_predicted(wide)) < 8.0


def test_a_given_duration_gets_the_decay_that_ends_closest():
    """Shorter runs need faster (noisier) mirrors: the planned decay falls with the duration, and the
    planned angle after 2 s is below what the old fixed default (0.05 per batch of 8) gave (33.8
    against 35.7°)."""
    decays = [sim_circuit.resolve_spec(None, {"phases": {"duration": t}}).rule.decay for t in (2.0, 20.0)]
    assert decays[0] > decays[1] > sim_circuit.resolve_spec(None, {}).rule.decay
    short = sim_circuit.resolve_spec(None, {"phases": {"duration": 2.0}})
    import dataclasses

    old = dataclasses.replace(short, rule=dataclasses.replace(short.rule, lr=0.05, decay=0.05))
    assert max(_predicted(short)) < max(_predicted(old)) - 1
    # a rule that sets its own rates keeps them
    assert sim_circuit.resolve_spec(None, {"rule": {"name": "wm", "lr": 0.1, "decay": 0.1}}).rule.decay == 0.1


def test_a_spiking_mirror_without_settings_gets_the_kind_s_hold_trace_turns_and_duration():
    """LIF: 20 ms holds and traces, turns of 1 s, and the time after which the noise-aware closed form
    puts every layer within 13° (the decay planned for it): the planned angle is below 13° at that
    duration and above it at 0.9 of it. Poisson units: 10 ms holds, 5 ms traces. What the declaration
    gives is kept; a short run's turns are a whole number of holds, about a twentieth of it."""
    from weightmirror.circuits.brian.network import plan_spiking_decay, spiking_mirror_noise

    lif = sim_circuit.resolve_spec(None, {"neuron": {"kind": "lif"}})
    assert (lif.noise.correlation_time, lif.neuron.tau_trace, lif.phases.parity_period) == (0.02, 0.02, 1.0)
    noise = spiking_mirror_noise(lif.neuron, lif.dt, 40)
    layers = init_weights(lif)
    grid = np.geomspace(1e-9, 0.3, 240)
    at = plan_spiking_decay(noise, layers, int(lif.phases.duration / 0.04), grid=grid)[1]
    before = plan_spiking_decay(noise, layers, int(0.9 * lif.phases.duration / 0.04), grid=grid)[1]
    assert at < 13.0 < before, (lif.phases.duration, at, before)
    assert lif.phases.duration % 1.0 == pytest.approx(0.0, abs=1e-6)
    poisson = sim_circuit.resolve_spec(None, {"neuron": {"kind": "spiking"}})
    assert (poisson.noise.correlation_time, poisson.neuron.tau_trace) == (0.01, 0.005)
    kept = sim_circuit.resolve_spec(None, {"neuron": {"kind": "lif", "tau_trace": 0.05},
                                           "noise": {"correlation_time": 0.1}, "phases": {"duration": 30.0}})
    assert (kept.noise.correlation_time, kept.neuron.tau_trace) == (0.1, 0.05)
    short = sim_circuit.resolve_spec(None, {"neuron": {"kind": "lif"}, "phases": {"duration": 3.0}})
    assert short.phases.parity_period == pytest.approx(0.14)  # 7 holds of 20 ms, ≤ 3 s / 20
    rate = sim_circuit.resolve_spec(None, {})
    assert (rate.noise.correlation_time, rate.phases.parity_period) == (0.005, 0.05)  # rate units unchanged


def test_engaged_and_alternating_runs_make_whole_passes_over_the_data():
    kp = sim_circuit.resolve_spec(None, {"rule": "kp"})
    assert kp.phases.schedule == "engaged" and kp.phases.presentation == pytest.approx(0.04)
    assert kp.phases.duration == pytest.approx(3 * 1437 * 0.04, abs=1e-6) and kp.engaged_lr == 0.02
    two = sim_circuit.resolve_spec(None, {"rule": "fa", "phases": {"epochs": 2}})
    assert two.phases.duration == pytest.approx(2 * 1437 * 0.04, abs=1e-6)
    alt = sim_circuit.resolve_spec(None, {"rule": "wm", "phases": {"schedule": "alternate"}})
    blocks = math.ceil(3 * 1437 * 0.04 / alt.phases.engaged_duration)
    assert alt.phases.duration == pytest.approx(blocks * (alt.phases.mirror_duration + alt.phases.engaged_duration))
    engaged_time = sum(b - a for p, a, b in alt.phases.segments() if p == "engaged")
    assert engaged_time >= 3 * 1437 * 0.04 - 1e-6


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs: expected a number above 0"),
    (["--epochs", "nan"], "--epochs: expected a finite number"),
])
def test_bad_epochs_is_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["circuit", *argv, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_default_mirror_run_comes_within_ten_degrees(tmp_path):
    """`weightmirror circuit --out DIR` with nothing else: every layer below 10°."""
    assert main(["circuit", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["layers"] == [64, 32, 10] and max(summary["angles_deg"]) < 10.0, summary["angles_deg"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_default_engaged_run_learns_digits(tmp_path):
    """`weightmirror circuit --rule kp` (only the compiled device and the seed given): below 15 % test
    error on digits, with KP's feedback within 10° of Wᵀ (measured, seeds 0-2: bench/circuit_defaults_check.py)."""
    assert main(["circuit", "--rule", "kp", "--device", "cython", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_top1_error"] < 15.0 and max(summary["angles_deg"]) < 10.0, summary
