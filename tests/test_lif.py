"""LIF neurons: the closed-form f–I curve, the signed-rate code, and the Brian2 neurons circuit mode builds."""
from __future__ import annotations

import math

import numpy as np
import pytest

from weightmirror.circuits.lif import calibrate, lif_rate, lif_rate_deterministic
from weightmirror.circuits.spec import CircuitSpec, NeuronModel, SpecError

#: a cortical pyramidal cell's textbook values (Gerstner et al. 2014, ch. 1 and 8)
CELL = dict(tau_m=20e-3, tau_ref=2e-3, threshold=-50e-3, reset=-60e-3)


# ---------------------------------------------------------------------------
# the closed form
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mu", [-0.049, -0.045, -0.030, 0.0])
def test_siegert_rate_tends_to_the_deterministic_rate_without_noise(mu):
    exact = 1.0 / (CELL["tau_ref"] + CELL["tau_m"] * math.log((mu - CELL["reset"]) / (mu - CELL["threshold"])))
    assert lif_rate_deterministic(mu, **CELL) == pytest.approx(exact, rel=1e-12)
    assert lif_rate(mu, 1e-5, **CELL) == pytest.approx(exact, rel=2e-3)


def test_siegert_rate_below_threshold_is_fluctuation_driven():
    """Without noise a neuron below threshold is silent; with it, it fires, more with more noise, and the
    rate never exceeds 1/τ_ref."""
    assert lif_rate_deterministic(-0.052, **CELL) == 0.0
    rates = [lif_rate(-0.052, s, **CELL) for s in (1e-3, 3e-3, 6e-3)]
    assert 0 < rates[0] < rates[1] < rates[2]
    assert lif_rate(1.0, 5e-3, **CELL) < 1 / CELL["tau_ref"]


def test_calibration_gives_the_baseline_and_the_gain():
    code = calibrate(20.0, 10.0, 5e-3, CELL["tau_m"], CELL["tau_ref"], -0.07, CELL["threshold"], CELL["reset"])
    rate = lambda x: lif_rate(-0.07 + code.mu0 + code.k * x, 5e-3, **CELL)  # noqa: E731
    assert rate(0.0) == pytest.approx(20.0, rel=1e-9)
    assert (rate(1e-4) - rate(-1e-4)) / 2e-4 == pytest.approx(10.0, rel=1e-4)
    # one unit of signal either way stays within 10 % of the gain of the linear code
    assert code.linear_range < 0.12
    with pytest.raises(ValueError, match="1/τ_ref"):
        calibrate(600.0, 10.0, 5e-3, CELL["tau_m"], CELL["tau_ref"], -0.07, CELL["threshold"], CELL["reset"])


# ---------------------------------------------------------------------------
# the declaration
# ---------------------------------------------------------------------------
def test_lif_declaration_defaults_units_and_checks():
    n = NeuronModel(kind="lif")
    assert (n.baseline_rate, n.gain, n.max_rate) == (20.0, 10.0, 500.0)  # max = 1/refractory
    assert NeuronModel(kind="spiking").baseline_rate == 200.0  # Poisson units keep their values
    spec = CircuitSpec.from_dict({"layers": [4, 2], "neuron": {"kind": "lif", "v_threshold": "-52mV",
                                                               "refractory": "3ms", "v_noise": "4 mV"}})
    assert spec.neuron.v_threshold == pytest.approx(-0.052) and spec.neuron.refractory == pytest.approx(3e-3)
    assert spec.neuron.v_noise == pytest.approx(4e-3)
    assert CircuitSpec.from_dict(spec.to_dict()).neuron == spec.neuron  # the resolved config reads back
    for kw, needle in [(dict(v_reset=-0.04), "v_reset (-40 mV) must be below neuron.v_threshold"),
                       (dict(v_noise=0.0), "v_noise must be > 0"),
                       (dict(max_rate=300.0), "largest rate is 1/refractory"),
                       (dict(baseline_rate=600.0), "baseline_rate (600 Hz) must be below 1/refractory (500 Hz)")]:
        with pytest.raises(SpecError, match=None) as info:
            CircuitSpec(layers=(4, 2), neuron=NeuronModel(kind="lif", **kw))
        assert needle in str(info.value)
    with pytest.raises(SpecError, match="cannot read '-70 volts' as a voltage"):
        CircuitSpec.from_dict({"layers": [4, 2], "neuron": {"kind": "lif", "v_rest": "-70 volts"}})


# ---------------------------------------------------------------------------
# the Brian2 neurons
# ---------------------------------------------------------------------------
brian2 = pytest.importorskip("brian2")


def _simulate_code(neuron: NeuronModel, xs, n_per: int, duration: float, dt: float = 0.1e-3):
    """Rates (Hz) and the spike trains of LIF groups built from circuit mode's own equations, each
    neuron driven by a constant signal ``x``."""
    from brian2 import NeuronGroup, SpikeMonitor, Network, defaultclock, second, prefs, seed

    from weightmirror.circuits.brian.network import lif_equations, lif_group_options, lif_namespace

    prefs.codegen.target = "numpy"
    defaultclock.dt = dt * second
    seed(3)
    xs = np.repeat(np.asarray(xs, dtype=float), n_per)
    ns = lif_namespace(neuron)
    G = NeuronGroup(len(xs), lif_equations("x") + "x : 1 (constant)", namespace=ns, **lif_group_options(neuron))
    G.x = xs
    G.V = "v_reset + rand()*(v_th - v_reset)"
    G.a = neuron.baseline_rate * brian2.Hz
    mon = SpikeMonitor(G)
    net = Network(G, mon)
    net.run(0.2 * second, namespace={})  # settle
    t0 = 0.2
    net.run(duration * second, namespace={})
    i, t = np.asarray(mon.i), np.asarray(mon.t / second)
    keep = t >= t0
    counts = np.bincount(i[keep], minlength=len(xs)).reshape(-1, n_per)
    return counts.sum(axis=1) / (n_per * duration), i, t


def test_lif_neurons_fire_the_signed_rate_code():
    """Built with circuit mode's equations, the neurons fire ν₀ + G x to first order and the Siegert
    rate (within the sampling error of the spike counts, ~3 %, and the crossings Euler's method misses at
    dt = 0.05 ms, which lower the rate by ~5 % where fluctuations drive the firing)."""
    neuron = NeuronModel(kind="lif")
    code = neuron.lif_code()
    xs = [-1.0, 0.0, 1.0, 4.0]
    rates, i, t = _simulate_code(neuron, xs, n_per=100, duration=2.0, dt=0.05e-3)
    siegert = [lif_rate(neuron.v_rest + code.mu0 + code.k * x, neuron.v_noise, neuron.tau_m, neuron.refractory,
                        neuron.v_threshold, neuron.v_reset) for x in xs]
    for x, r, s in zip(xs, rates, siegert):
        assert r == pytest.approx(s, rel=0.09), (x, r, s)
    assert rates[1] == pytest.approx(20.0, rel=0.08)
    assert (rates[2] - rates[0]) / 2 == pytest.approx(10.0, rel=0.15)  # the gain G
    assert rates[3] > rates[2] + 20  # a strong signal still raises the rate


def test_lif_neurons_are_refractory():
    """No interspike interval is shorter than τ_ref, and a strong drive saturates near 1/τ_ref."""
    neuron = NeuronModel(kind="lif", refractory=5e-3)
    rates, i, t = _simulate_code(neuron, [200.0], n_per=20, duration=0.5)
    isis = np.concatenate([np.diff(np.sort(t[i == k])) for k in range(20)])
    assert isis.min() >= 5e-3 - 1e-9
    assert 150 < rates[0] < 200


def test_lif_circuit_mirror_fires_at_cortical_rates_and_moves_b_towards_w(tmp_path):
    """A LIF circuit in mirror mode: every population fires around its 20 Hz baseline, no recorded neuron
    fires within its refractory period, and the Hebbian feedback synapses turn B towards Wᵀ (by more than
    20° in 4 s with a noise sample held 100 ms). How close it gets is bounded by the spike-count noise of
    20 Hz trains (B's norm grows past W's): the noise-aware prediction is still to be built (issue 12)."""
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Noise, Phases
    from weightmirror.sims import circuit as sim_circuit

    spec = CircuitSpec(layers=(8, 6), rule=WeightMirror(lr=0.1, decay=0.1, mirror_batch_size=2, adaptive=False),
                       neuron=NeuronModel(kind="lif", tau_trace=0.05), noise=Noise(correlation_time=0.1),
                       phases=Phases(schedule="mirror", duration=4.0, record_interval=1.0, parity_period=0.2))
    run = sim_circuit.simulate(spec, tmp_path / "lif", progress=False)
    assert run.summary["neuron"] == "lif"
    assert run.summary["angles_deg"][0] < run.summary["initial_angles_deg"][0] - 20
    for row in run.metrics[1:]:
        assert all(12 < hz < 32 for hz in row["rates_hz"].values()), row["rates_hz"]
    spikes = np.load(tmp_path / "lif" / "spikes.npz")
    for pop in ("y0", "y1", "delta0", "delta1"):
        i, t = spikes[f"{pop}_i"], spikes[f"{pop}_t"]
        assert len(t) > 50
        for k in np.unique(i):
            assert np.diff(np.sort(t[i == k])).min() >= spec.neuron.refractory - 1e-9


def _arrivals(delay: float) -> tuple[np.ndarray, np.ndarray]:
    """Step indices of the input population's spikes and of the jumps of the next population's synaptic
    current, in a LIF mirror circuit whose forward synapses have ``delay``."""
    from brian2 import SpikeMonitor, StateMonitor

    from weightmirror.circuits.brian.network import BrianCircuit
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Noise, Phases

    spec = CircuitSpec(layers=(3, 2), rule=WeightMirror(adaptive=False, lr=0.05, decay=0.05, mirror_batch_size=8),
                       neuron=NeuronModel(kind="lif", delay_forward=delay), noise=Noise(correlation_time=0.01),
                       phases=Phases(schedule="mirror", duration=0.3, record_interval=0.1, parity_period=0.05))
    circuit = BrianCircuit(spec, record_weights=False, record_rates=False)
    try:
        pre = SpikeMonitor(circuit.Y[0], name="test_pre")
        post = StateMonitor(circuit.Y[1], "I_drive", record=[0], when="end", name="test_post")
        circuit.net.add(pre, post)
        circuit.run_phase("mirror", 0.3)
        dt = spec.dt
        current = np.asarray(post.I_drive[0])
        decay = 1 - dt / spec.neuron.tau_syn  # Euler's step of τ_syn dI/dt = -I
        jumps = np.flatnonzero(np.abs(current[1:] - decay * current[:-1]) > 1e-9) + 1
        spikes = np.unique(np.round(np.asarray(pre.t / brian2.second) / dt).astype(int))
    finally:
        circuit.release()
    return spikes, jumps


def test_a_delay_shifts_every_synaptic_arrival_by_exactly_its_value():
    """The same circuit and seed with and without a 3 ms forward delay: the input population spikes at
    the same steps, and every jump of the next population's synaptic current comes exactly 3 ms later."""
    spikes0, jumps0 = _arrivals(0.0)
    spikes3, jumps3 = _arrivals(3e-3)
    assert len(spikes0) > 10 and np.array_equal(spikes0, spikes3)
    assert len(jumps0) > 10
    shift = int(round(3e-3 / 0.5e-3))
    assert np.array_equal(jumps3, jumps0[jumps0 + shift < 600] + shift)
    # and with no delay a jump follows each spike at once (in the same step's synaptic update)
    assert set(jumps0) <= set(spikes0)


def test_delays_are_checked():
    with pytest.raises(SpecError, match="delays need spike-driven synapses"):
        NeuronModel(kind="spiking", delay_forward=1e-3)
    with pytest.raises(SpecError, match="whole multiple of dt"):
        CircuitSpec(layers=(4, 2), neuron=NeuronModel(kind="lif", delay_forward=0.7e-3))
    from weightmirror.circuits.rules import KolenPollack
    from weightmirror.circuits.spec import Phases

    with pytest.raises(SpecError, match="outlast the delays of a round trip"):
        CircuitSpec(layers=(4, 3, 2), rule=KolenPollack(), neuron=NeuronModel(kind="lif", delay_forward=3e-3,
                                                                                delay_feedback=2e-3),
                    phases=Phases(schedule="engaged", presentation=0.02))


@pytest.mark.parametrize("plasticity", ["stdp", "sample"])
def test_mirror_weight_change_equals_the_predicted_hebbian_product(plasticity):
    """Poisson units in mirror mode, 1,200 feedback synapses, 6 s, no decay: the mean change of B, regressed
    on W, equals the rate rule's expected Hebbian drift η_B' σ² T times the noise-aware factor 1 + κ_shot/κ
    (the source's own spike noise correlates through W like the mirror's noise: 1.67 for the sample rule,
    1.71 for the spike-timing rule here). Tolerance ±0.25 (the regression's standard error is ~0.1);
    without the shot-noise term the prediction would be 1.0, with a factor 2 wrong in the spike-timing
    rule 0.85 or 3.4."""
    from weightmirror.circuits.brian.network import BrianCircuit, shot_noise_gain
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Noise, Phases

    spec = CircuitSpec(layers=(40, 30), rule=WeightMirror(lr=0.02, decay=1e-9, mirror_batch_size=2, adaptive=False),
                       neuron=NeuronModel(kind="spiking"), noise=Noise(correlation_time=0.03),
                       mirror_plasticity=plasticity,
                       # long parity periods: the first τ + τ_a after each switch still carry the other regime
                       phases=Phases(schedule="mirror", duration=6.0, record_interval=6.0, parity_period=0.3))
    circuit = BrianCircuit(spec, record_weights=False, record_rates=False)
    try:
        (W, B0), = circuit.get_weights()
        circuit.run_phase("mirror", 6.0)
        (_, B1), = circuit.get_weights()
        gated = circuit.mirror_plastic_time(6.0)[0]
    finally:
        circuit.release()
    w, change = W.ravel(), (B1 - B0).ravel()
    slope = (change @ w) / (w @ w)
    eta, _ = spec.mirror_rates()
    hold = int(round(0.03 / spec.dt))
    factor = 1 + shot_noise_gain(spec.neuron, spec.dt, hold, plasticity)
    assert 1.6 < factor < 1.8
    assert slope / (eta * spec.sigma ** 2 * gated) == pytest.approx(factor, abs=0.25)


def test_stdp_needs_spiking_neurons():
    with pytest.raises(SpecError, match="mirror_plasticity = 'stdp' needs spiking neurons"):
        CircuitSpec(layers=(4, 2), mirror_plasticity="stdp")
    with pytest.raises(SpecError, match="mirror_plasticity"):
        CircuitSpec(layers=(4, 2), mirror_plasticity="bcm")


def test_noise_aware_prediction_follows_a_spiking_mirror():
    """Poisson units, 30-20-10, 3 s: the closed form with the spike noise (E[x y] = (κσ² + κ_shot) W and
    Var(x y) from E[x²], E[y²] with every train's shot noise) ends within 6° of the circuit's angle in
    both layers (measured: 68.6 / 67.8° against 70.3 / 66.4°), where the rate-mode prediction, which knows
    no spike noise, is more than 10° too optimistic (54.2° in layer 1)."""
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Noise, Phases
    from weightmirror.sims import circuit as sim_circuit

    spec = CircuitSpec(layers=(30, 20, 10), rule=WeightMirror(lr=0.2, decay=0.2, mirror_batch_size=2, adaptive=False),
                       neuron=NeuronModel(kind="spiking"), noise=Noise(correlation_time=0.03),
                       phases=Phases(schedule="mirror", duration=3.0, record_interval=1.0, parity_period=0.12))
    summary = sim_circuit.simulate(spec, None, progress=False).summary
    for got, aware, rate in zip(summary["angles_deg"], summary["noise_aware_angles_deg"],
                                summary["predicted_angles_deg"]):
        assert abs(got - aware) < 6, (got, aware)
        assert rate < got - 10 and abs(got - aware) < abs(got - rate), (got, aware, rate)


def test_noise_aware_band_matches_repeated_rate_mirrors():
    """The band of the closed form (rate units: κ = s = 1, no shot noise) against 300 independent
    rate-mode mirrors of 8×12 weights (300 events of one Gaussian sample, λ = η = 0.02): its 10 % and
    90 % quantiles of angle(B, Wᵀ) within 1.5° of the empirical ones, and the closed form's angle
    between them."""
    from weightmirror.circuits.brian.network import predicted_spiking_angle, spiking_angle_band
    from weightmirror.circuits.rules import WeightMirror, angle_degrees
    from weightmirror.sims.circuit import _MatrixLayer

    rng = np.random.default_rng(3)
    W = rng.standard_normal((8, 12)) / np.sqrt(12)
    B0 = rng.standard_normal((8, 12)) / np.sqrt(12)
    rate_noise = {"kappa": 1.0, "kappa_shot": 0.0, "s_x": 1.0, "n_x": 0.0, "s_y": 1.0, "n_yW": 0.0, "n_y": 0.0,
                  "correlation": 1.0}
    lam, events = 0.02, 300
    rule = WeightMirror(adaptive=False, lr=lam, decay=lam, mirror_batch_size=1)
    angles = []
    for r in range(300):
        layer = _MatrixLayer(W, B0)
        layer.W, layer.B = W.copy(), B0.copy()
        noise_rng = np.random.default_rng(100 + r)
        for _ in range(events):
            rule.mirror_update(layer, np, noise_rng, lam, lam, 1)
        angles.append(angle_degrees(layer.B, W))
    lo, hi = spiking_angle_band(rate_noise, W, B0, events, lam, draws=2000, seed=1)
    emp_lo, emp_hi = np.quantile(angles, [0.1, 0.9])
    assert abs(lo - emp_lo) < 1.5 and abs(hi - emp_hi) < 1.5, (lo, hi, emp_lo, emp_hi)
    assert hi - lo > 2.0  # a small matrix: a real spread, not a line
    assert lo < predicted_spiking_angle(rate_noise, W, B0, events, lam) < hi


def test_plan_spiking_decay_trades_noise_against_the_start():
    """Rate units (κ = s = 1): the chosen decay is the grid's best for the closed form, and a run ten times
    longer takes a smaller decay and ends closer to Wᵀ."""
    from weightmirror.circuits.brian.network import plan_spiking_decay, predicted_spiking_angle

    rng = np.random.default_rng(0)
    W = rng.standard_normal((10, 40)) / np.sqrt(40)
    B0 = rng.standard_normal((10, 40)) / np.sqrt(40)
    rate_noise = {"kappa": 1.0, "kappa_shot": 0.0, "s_x": 1.0, "n_x": 0.0, "s_y": 1.0, "n_yW": 0.0, "n_y": 0.0}
    grid = np.geomspace(1e-4, 0.3, 40)
    short = plan_spiking_decay(rate_noise, [(W, B0)], 300, grid=grid)
    long = plan_spiking_decay(rate_noise, [(W, B0)], 3000, grid=grid)
    assert short[1] == pytest.approx(min(predicted_spiking_angle(rate_noise, W, B0, 300, l) for l in grid))
    assert long[0] < short[0] and long[1] < short[1]


def test_prediction_from_moments_follows_the_exponential_average_it_describes():
    """B ← (1-λ) B + η h with h = s W + a W∘W + Gaussian noise of total variance V (s = 6, η/λ = 0.5: B's mean
    tends to 3 W + 0.5 a W∘W, so B₀ is forgotten three times faster than a prediction that takes the mean to
    be W would say): the closed form's angle after 20, 100 and 1,000 events within 1.5° of the median of
    200 realisations, with a = 0 and with a rectifier's second-order term a = 20; the same formula with the
    scale left out (s = 1, the noise scaled alike) is more than 10° off early on, and with a = 20 left out
    more than 3° too optimistic at the end."""
    from weightmirror.circuits.brian.network import predicted_angle_from_moments
    from weightmirror.circuits.rules import angle_degrees

    rng = np.random.default_rng(5)
    W = rng.standard_normal((10, 30)) / np.sqrt(30)
    B0 = rng.standard_normal((10, 30)) / np.sqrt(30)
    s, V, lam, eta = 6.0, 40.0, 0.004, 0.002
    sd = np.sqrt(V / W.size)
    for a in (0.0, 20.0):
        checkpoints = {20: [], 100: [], 1000: []}
        for r in range(200):
            B = B0.copy()
            for n in range(1, 1001):
                B = (1 - lam) * B + eta * (s * W + a * W * W + sd * rng.standard_normal(W.shape))
                if n in checkpoints:
                    checkpoints[n].append(angle_degrees(B, W))
        moments = {"scale": s, "square": a, "event_variance": V}
        for n, got in checkpoints.items():
            pred = predicted_angle_from_moments(moments, W, B0, n, lam, lr_ratio=eta / lam)
            assert abs(pred - np.median(got)) < 1.5, (a, n, pred, np.median(got))
        if a == 0:
            unscaled = predicted_angle_from_moments({"scale": 1.0, "event_variance": V / s ** 2}, W, B0, 20, lam,
                                                    lr_ratio=eta / lam)
            assert unscaled > np.median(checkpoints[20]) + 10
        else:
            linear = predicted_angle_from_moments({"scale": s, "event_variance": V}, W, B0, 1000, lam,
                                                  lr_ratio=eta / lam)
            assert linear < np.median(checkpoints[1000]) - 3


def test_the_spiking_closed_form_is_the_moments_formula_with_its_own_moments():
    """predicted_spiking_angle and predicted_angle_from_moments(closed_form_moments(...)) both equal the
    docstring's tan²θ written out by hand, with B's mean at (η/λ)(κσ² + κ_shot)/κ · W (mirror_mean_scale):
    the circuit divides its increments by κ alone."""
    from weightmirror.circuits.brian.network import (closed_form_moments, mirror_mean_scale,
                                                     predicted_angle_from_moments, predicted_spiking_angle)

    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 9)) / 3
    B0 = rng.standard_normal((6, 9)) / 3
    noise = {"kappa": 0.3, "kappa_shot": 6.8, "s_x": 0.4, "n_x": 29.0, "s_y": 0.33, "n_yW": 7.3, "n_y": 29.0,
             "correlation": 1.15}
    m = closed_form_moments(noise, W, sigma=1.5)
    assert m["scale"] == pytest.approx((0.3 * 1.5 ** 2 + 6.8) / 0.3)
    assert mirror_mean_scale(noise, 1.5, 0.5) == pytest.approx(0.5 * m["scale"])
    # the docstring's tan²θ, written out here: c = κσ² + κ_shot, S = r c/κ, Var from E[x²] E[y²] + (cW)²
    c, S, lam = 0.3 * 1.5 ** 2 + 6.8, 0.5 * (0.3 * 1.5 ** 2 + 6.8) / 0.3, 1e-4
    ex2 = 0.4 * 1.5 ** 2 + 29.0
    ey2 = (W ** 2).sum(axis=1) * (0.33 * 1.5 ** 2 + 7.3) + 29.0
    var = (ey2[:, None] * ex2 + (c * W) ** 2).sum() / c ** 2
    w_hat = W / np.linalg.norm(W)
    along0 = (B0 * w_hat).sum()
    perp0 = ((B0 - along0 * w_hat) ** 2).sum()
    for events in (10, 1000, 100000):
        q = (1 - lam) ** events
        perp2 = q ** 2 * perp0 + (1 - q ** 2) * lam / (2 - lam) * S ** 2 * var * 1.15
        along = q * along0 + (1 - q) * S * np.linalg.norm(W)  # negative early here: the angle is above 90°
        expected = np.degrees(np.arctan2(np.sqrt(perp2), along))
        assert predicted_spiking_angle(noise, W, B0, events, lam, 1.5, lr_ratio=0.5) == pytest.approx(expected)
        assert predicted_angle_from_moments(m, W, B0, events, lam, lr_ratio=0.5) == pytest.approx(expected)


def test_pilot_moments_of_rate_units_agree_with_the_closed_form():
    """Rate units (30-20-10, 20 s, 2,000 events per layer): the pilot's measured scale is within 5 % of 1
    and its event variance within 25 % of Σ Var(h) = Σ_i ‖W_i‖² n_in + ‖W‖² (its sampling error: ~6 %
    and ~10 %); the pilot's seed is not the run's (its noise is independent)."""
    from weightmirror.circuits.brian.network import closed_form_moments, init_weights
    from weightmirror.sims import circuit as sim_circuit

    spec = sim_circuit.resolve_spec(None, {"layers": [30, 20, 10], "rule": {"name": "wm", "lr": 0.01, "decay": 0.01},
                                           "phases": {"schedule": "mirror", "duration": 10.0}})
    measured = sim_circuit.pilot_mirror_moments(spec, 20.0)
    for got, (W, _) in zip(measured, init_weights(spec)):
        expected = closed_form_moments(sim_circuit.RATE_UNIT_NOISE, W)
        assert got["events"] == 2000
        assert got["scale"] == pytest.approx(1.0, rel=0.05)
        assert abs(got["square"]) * float((W * W).mean()) < 0.05  # linear units: no second-order term
        assert got["event_variance"] == pytest.approx(expected["event_variance"], rel=0.25)
    with pytest.raises(sim_circuit.CircuitInputError, match="no mirror"):
        sim_circuit.pilot_mirror_moments(sim_circuit.resolve_spec(None, {"layers": [4, 3], "rule": "fa"}), 1.0)


# ---------------------------------------------------------------------------
# long spiking mirrors: constant offsets, a recording window, centred products
# ---------------------------------------------------------------------------
def test_mirror_only_lif_circuit_takes_its_baseline_offsets_as_constants():
    """W never learns in a mirror-only run, so the bias that cancels the baseline rates' current,
    (ν₀/g) Σ_i w_ij, is set once from the weights (and again by set_weights) instead of summed over
    every synapse at every step; a circuit that learns W keeps the summed version, and both give the
    same numbers."""
    from weightmirror.circuits.brian.network import BrianCircuit, init_weights
    from weightmirror.circuits.rules import KolenPollack
    from weightmirror.circuits.spec import Phases

    neuron = NeuronModel(kind="lif")
    scale = neuron.baseline_rate / neuron.gain
    spec = CircuitSpec(layers=(6, 4, 3), neuron=neuron, phases=Phases(schedule="mirror", duration=0.01))
    circuit = BrianCircuit(spec, record_weights=False, record_rates=False)
    try:
        assert circuit._constant_offsets
        for (W, B), y, d in zip(circuit.get_weights(), circuit.Y[1:], circuit.D[:-1]):
            np.testing.assert_allclose(np.asarray(y.offset_drive[:]), scale * W.sum(axis=1), rtol=1e-12)
            np.testing.assert_allclose(np.asarray(d.offset_fb[:]), scale * B.sum(axis=0), rtol=1e-12)
        new = [(2 * W + 0.1, B - 0.2) for W, B in circuit.get_weights()]
        circuit.set_weights(new)
        np.testing.assert_allclose(np.asarray(circuit.Y[1].offset_drive[:]), scale * new[0][0].sum(axis=1), rtol=1e-12)
        assert not any("plasticity" in obj.name for S in circuit.S_W for obj in S.contained_objects)
    finally:
        circuit.release()

    engaged = CircuitSpec(layers=(6, 4, 3), neuron=neuron, rule=KolenPollack(),
                          phases=Phases(schedule="engaged", duration=0.04, presentation=0.04))
    x = np.random.default_rng(0).random((2, 6))
    circuit = BrianCircuit(engaged, weights=init_weights(spec), stimulus=(x, np.array([0, 1])),
                           record_weights=False, record_rates=False)
    try:
        assert not circuit._constant_offsets
        circuit.run_phase("idle", 0.001)  # the summed updater runs with the first step
        for (W, B), y, d in zip(circuit.get_weights(), circuit.Y[1:], circuit.D[:-1]):
            np.testing.assert_allclose(np.asarray(y.offset_drive[:]), scale * W.sum(axis=1), rtol=1e-9)
            np.testing.assert_allclose(np.asarray(d.offset_fb[:]), scale * B.sum(axis=0), rtol=1e-9)
    finally:
        circuit.release()


def test_activity_is_recorded_in_the_last_window_only(tmp_path):
    """``phases.record_activity``: spikes and population rates of the last 0.1 s of a 0.4 s run; rows
    before the window carry no rates, and splitting the run there changes no mirror accounting (one
    mirror segment, the same plastic time as an unsplit run)."""
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Phases
    from weightmirror.sims import circuit as sim_circuit

    spec = CircuitSpec(layers=(6, 4), rule=WeightMirror(lr=0.05, decay=0.05, mirror_batch_size=1, adaptive=False),
                       neuron=NeuronModel(kind="spiking"),
                       phases=Phases(schedule="mirror", duration=0.4, record_interval=0.1, record_activity=0.1))
    run = sim_circuit.simulate(spec, tmp_path / "run", progress=False)
    rows = run.metrics
    assert [r["t"] for r in rows] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(v is None for r in rows[1:4] for v in r["rates_hz"].values())
    assert all(v is not None and v > 50 for v in rows[4]["rates_hz"].values())  # Poisson units at 200 Hz
    spikes = np.load(tmp_path / "run" / "spikes.npz")
    times = np.concatenate([spikes[k] for k in spikes.files if k.endswith("_t")])
    assert times.size > 100 and times.min() >= 0.3 - 1e-9
    whole = CircuitSpec(layers=(6, 4), rule=spec.rule, neuron=spec.neuron,
                        phases=Phases(schedule="mirror", duration=0.4, record_interval=0.1))
    assert run.summary["noise_aware_angles_deg"] == pytest.approx(
        sim_circuit.simulate(whole, None, progress=False).summary["noise_aware_angles_deg"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_centred_products_remove_the_mean_product_of_uncentred_trains():
    """Poisson units at a cortical 20 Hz with 5 ms traces: a responding unit's input carries its sources'
    spike noise, is rectified at 0 Hz and fires ~28 Hz, not 20, so uncentred decoded trains add
    E[x] E[y] to every entry of B's change (a matrix outside W's direction: its mean entry measured at
    0.41 and 0.25 of the W-aligned part's rms entry in layers 1 and 2). Centred by their own running
    means (the default), on the very same noise samples, that falls to 0.06 in both layers (asserted:
    below 0.4 of the uncentred value) while the W-aligned part stays within 10 %."""
    from weightmirror.circuits.rules import WeightMirror
    from weightmirror.circuits.spec import Noise, Phases
    from weightmirror.sims import circuit as sim_circuit

    out = {}
    for centred in (False, True):
        spec = CircuitSpec(layers=(40, 20, 10), device="cython", mirror_centring=centred,
                           rule=WeightMirror(lr=2e-3, decay=1e-9, mirror_batch_size=1, adaptive=False),
                           neuron=NeuronModel(kind="spiking", baseline_rate=20.0, gain=10.0, tau_trace=5e-3),
                           noise=Noise(correlation_time=0.01, source="arrays"),
                           phases=Phases(schedule="mirror", duration=20.0, record_interval=20.0, parity_period=1.0))
        run = sim_circuit.simulate(spec, None, progress=False)
        assert run.summary["mirror_centred"] is centred
        f, i = run.arrays["weights_final"], run.arrays["weights_initial"]
        out[centred] = []
        for l in (1, 2):
            W, change = f[f"W{l}"], f[f"B{l}"] - i[f"B{l}"]
            along = (change * W).sum() / (W * W).sum()
            out[centred].append((along, change.mean() / (along * np.sqrt((W ** 2).mean()))))
    for (a_plain, m_plain), (a_centred, m_centred) in zip(out[False], out[True]):
        assert m_plain > 0.2 and abs(m_centred) < 0.4 * m_plain, out
        assert a_centred == pytest.approx(a_plain, rel=0.1), out


def test_mirror_pilot_is_declared_checked_and_parsed():
    from weightmirror.sims import circuit as sim_circuit

    spec = sim_circuit.resolve_spec(None, {"layers": [4, 3], "mirror_pilot": "500ms",
                                           "phases": {"schedule": "mirror", "duration": 1.0}})
    assert spec.mirror_pilot == pytest.approx(0.5) and spec.to_dict()["mirror_pilot"] == pytest.approx(0.5)
    with pytest.raises(SpecError, match="mirror_pilot"):
        sim_circuit.resolve_spec(None, {"layers": [4, 3], "mirror_pilot": -1})
    for extra in ({"rule": "kp"}, {"phases": {"schedule": "alternate"}}):
        with pytest.raises(SpecError, match="mirror_pilot needs a mirror-only run"):
            sim_circuit.resolve_spec(None, {"layers": [4, 3], "mirror_pilot": 2.0, **extra})


def test_a_run_with_a_pilot_reports_the_prediction_from_its_moments(tmp_path):
    """Rate units, 30-20-10, 10 s with a 10 s pilot on independent noise: every metrics row carries
    pilot_angles_deg, equal to the initial angles at t = 0 (no event yet), and the prediction ends within
    3° of the circuit's angles in both layers (rate units: it agrees with the closed form within 3°)."""
    from weightmirror.sims import circuit as sim_circuit

    spec = sim_circuit.resolve_spec(None, {"layers": [30, 20, 10], "mirror_pilot": 10.0,
                                           "rule": {"name": "wm", "lr": 0.01, "decay": 0.01},
                                           "phases": {"schedule": "mirror", "duration": 10.0, "record_interval": 2.0}})
    run = sim_circuit.simulate(spec, tmp_path / "run", progress=False)
    rows = run.metrics
    assert len(rows) == 6 and all(len(r["pilot_angles_deg"]) == 2 for r in rows)
    assert rows[0]["pilot_angles_deg"] == pytest.approx(rows[0]["angles_deg"])
    for got, pilot, closed in zip(run.summary["angles_deg"], run.summary["pilot_angles_deg"],
                                  run.summary["predicted_angles_deg"]):
        assert abs(got - pilot) < 3 and abs(pilot - closed) < 3, (got, pilot, closed)
    assert [m["events"] for m in run.summary["pilot_moments"]] == [1000, 1000]  # 10 s / (2 × 5 ms)
    assert run.summary["largest_gap_to_pilot_deg"] < 6
