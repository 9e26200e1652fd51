"""One declaration, two modes: the mapping of rule parameters, the rate-mode engine running a
``CircuitSpec`` presentation by presentation, and a rate-mode MLP config written as a circuit."""
from __future__ import annotations

import math

import numpy as np
import pytest

from weightmirror.circuits.rules import FeedbackAlignment, KolenPollack, WeightMirror, angle_degrees
from weightmirror.circuits.spec import CircuitSpec, Noise, Phases, SpecError
from weightmirror.sims import circuit as sim_circuit
from weightmirror.sims.config import resolve
from weightmirror.sims.transfer import TransferError, circuit_config_for


def _engaged(rule, presentations=6, layers=(5, 4, 3), lr=0.01, seed=2):
    return CircuitSpec(layers=layers, rule=rule, engaged_lr=lr, seed=seed,
                       phases=Phases(schedule="engaged", duration=presentations * 0.02, presentation=0.02,
                                     record_interval=presentations * 0.02))


def _data(n=7, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in))
    y = rng.integers(0, n_out, n)
    return x, y, x, y


# ---------------------------------------------------------------------------
# ModeMapping: the closed forms
# ---------------------------------------------------------------------------
def test_mode_mapping_mirror_adds_up_per_batch_and_per_second():
    spec = CircuitSpec(layers=(6, 4), rule=WeightMirror(adaptive=False, lr=0.08, decay=0.05, mirror_batch_size=8),
                       noise=Noise(correlation_time=0.005))
    modes, mirror = spec.modes, spec.mirror
    assert modes.mirror_batch_time == pytest.approx(8 * 0.005)
    # a batch split into 3 + 5 samples: the rates add, the decays multiply, to the batch's
    (lr3, d3), (lr5, d5) = mirror.step(3), mirror.step(5)
    assert lr3 + lr5 == pytest.approx(0.08)
    assert (1 - d3) * (1 - d5) == pytest.approx(1 - 0.05)
    # per second: one batch time of plasticity is one batch
    eta, lam = modes.mirror_rates()
    assert eta * modes.mirror_batch_time == pytest.approx(0.08)
    assert math.exp(-lam * modes.mirror_batch_time) == pytest.approx(1 - 0.05)
    assert modes.mirror_samples(0.1) == 20
    # the circuit's per-event plasticity is one sample's step
    hebb, keep = mirror.per_sample(gain=2.0)
    assert hebb == pytest.approx(mirror.step(1)[0] / 2.0) and keep == pytest.approx(1 - mirror.step(1)[1])
    assert spec.mirror_rates() == modes.mirror_rates()


@pytest.mark.parametrize("hold, period, ok", [(0.1, 0.05, False), (0.1, 0.5, True), (0.03, 0.1, False),
                                               (0.005, 0.05, True)])
def test_parity_period_must_hold_whole_noise_samples(hold, period, ok):
    """A 100 ms hold with a 50 ms parity period would give every mirror event to one parity: refused."""
    def make():
        return CircuitSpec(layers=(6, 4, 3), noise=Noise(correlation_time=hold),
                           phases=Phases(schedule="mirror", duration=1.0, record_interval=0.5, parity_period=period))
    if ok:
        make()
    else:
        with pytest.raises(SpecError, match="parity_period .* whole multiple of noise.correlation_time"):
            make()


def test_mode_mapping_engaged_presentation_is_one_step_in_k_parts():
    spec = _engaged(KolenPollack(decay=0.01, decay_total=0.0), lr=0.03)
    spec = CircuitSpec(layers=spec.layers, rule=spec.rule, engaged_lr=0.03, plasticity_dt=1e-3,
                       phases=Phases(schedule="engaged", duration=0.2, presentation=0.02, record_interval=0.2))
    modes = spec.modes
    assert modes.learn_window == pytest.approx(0.01) and modes.steps_per_presentation == 10
    lr, decay = modes.engaged_step(10)
    assert 10 * lr == pytest.approx(0.03)
    assert (1 - decay) ** 10 == pytest.approx(1 - 0.01)
    eta, lam = modes.engaged_rates()
    assert eta * modes.learn_window == pytest.approx(0.03)
    assert math.exp(-lam * modes.learn_window) == pytest.approx(1 - 0.01)
    with pytest.raises(SpecError, match="steps per presentation"):
        modes.engaged_step(0)


# ---------------------------------------------------------------------------
# the rate-mode engine running the circuit's schedule
# ---------------------------------------------------------------------------
def test_rate_network_holds_the_circuits_weights_without_biases():
    spec = _engaged(FeedbackAlignment())
    from weightmirror.circuits.brian.network import init_weights

    w0 = init_weights(spec)
    net = sim_circuit.rate_network(spec)
    assert [type(m).__name__ for m in net.modules] == ["Linear", "ReLU", "Linear"]
    for layer, (W, B) in zip(net.weight_layers, w0):
        assert "b" not in layer.params
        np.testing.assert_array_equal(layer.W, W.astype(np.float32))
        np.testing.assert_array_equal(layer.B, B.astype(np.float32))
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    expected = np.maximum(x @ w0[0][0].T, 0) @ w0[1][0].T
    np.testing.assert_allclose(net.forward(x, train=False), expected, rtol=1e-5, atol=1e-6)


def test_one_presentation_is_the_hand_computed_fa_step():
    """K = 1: ΔW_2 = -η δ_2 y_1ᵀ, ΔW_1 = -η (φ' ⊙ B_2ᵀ δ_2) xᵀ with δ_2 = y_2 - t, B unchanged (FA)."""
    from weightmirror.circuits.brian.network import init_weights

    spec = _engaged(FeedbackAlignment(), presentations=1, lr=0.05)
    x, y, _, _ = data = _data()
    p = sim_circuit.presentation_order(spec, len(x))[0]
    (W1, B1), (W2, B2) = init_weights(spec)
    h = W1 @ x[p]
    y1 = np.maximum(h, 0)
    t = np.eye(3)[y[p]]
    d2 = W2 @ y1 - t
    d1 = (B2.T @ d2) * (h > 0)
    out = sim_circuit.rate_reference(spec, data, substeps=1)
    (W1n, B1n), (W2n, B2n) = out["weights"]
    np.testing.assert_allclose(W2n, W2 - 0.05 * np.outer(d2, y1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(W1n, W1 - 0.05 * np.outer(d1, x[p]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(B2n, B2, atol=1e-7)
    np.testing.assert_allclose(B1n, B1, atol=1e-7)


@pytest.mark.parametrize("substeps", [1, 4])
def test_kp_reference_shrinks_w_minus_b_by_the_decay_per_presentation(substeps):
    """KP: W and B get the same step, so W - B ← (1 - λ_c)(W - B) per presentation, however it is split."""
    spec = _engaged(KolenPollack(decay=0.02, decay_total=0.0), presentations=5)
    from weightmirror.circuits.brian.network import init_weights

    w0 = init_weights(spec)
    out = sim_circuit.rate_reference(spec, _data(), substeps=substeps)
    for (W, B), (Wn, Bn) in zip(w0, out["weights"]):
        np.testing.assert_allclose(Wn - Bn, (1 - 0.02) ** 5 * (W - B), rtol=1e-4, atol=1e-6)


def test_reference_steps_converge_to_the_gradient_flow_of_a_presentation():
    """K steps of η/K on one example approach the flow of the learning window: K = 10 is much closer
    to K = 80 than one step is (the circuit integrates its window in plasticity_dt steps)."""
    spec = _engaged(FeedbackAlignment(), presentations=4, lr=0.2)
    data = _data()
    w = {k: sim_circuit.rate_reference(spec, data, substeps=k)["weights"] for k in (1, 10, 80)}

    def dist(a, b):
        return sum(np.linalg.norm(Wa - Wb) for (Wa, _), (Wb, _) in zip(w[a], w[b]))

    assert dist(10, 80) < 0.2 * dist(1, 80)


def test_reference_mirror_block_aligns_b_like_the_rules_mirror():
    spec = CircuitSpec(layers=(6, 4), rule=WeightMirror(adaptive=False, lr=0.05, decay=0.05, mirror_batch_size=8),
                       phases=Phases(schedule="mirror", duration=4.0, record_interval=4.0), seed=3)
    out = sim_circuit.rate_reference(spec, _data(n_in=6, n_out=4))
    from weightmirror.circuits.brian.network import init_weights

    (W, B), = init_weights(spec)
    assert angle_degrees(B, W) > 60
    (Wn, Bn), = out["weights"]
    np.testing.assert_array_equal(Wn, W.astype(np.float32).astype(np.float64))  # the mirror leaves W alone
    # 4 s, parity: 2 s of plasticity, 400 samples of 5 ms; stationary angle of the closed form ~ 15°
    assert out["angles_deg"][0] < 25


# ---------------------------------------------------------------------------
# a rate-mode MLP config as a circuit
# ---------------------------------------------------------------------------
def test_mlp_config_becomes_a_circuit_with_the_same_layers():
    cfg = resolve({"rule": "kp", "data": "digits", "seed": 4, "model_options": {"hidden": [32, 16]}})
    spec = sim_circuit.resolve_spec(overrides=circuit_config_for(cfg))
    assert spec.layers == (64, 32, 16, 10) and spec.rule.key == "kp" and spec.seed == 4
    net = sim_circuit.rate_network(spec)
    assert [layer.W.shape for layer in net.weight_layers] == [(32, 64), (16, 32), (10, 16)]
    assert cfg.data == spec.data


@pytest.mark.parametrize("values, needle", [
    ({"rule": "bp"}, "rule 'bp' has no circuit form"),
    ({"rule": "wm", "model_options": {"hidden": [8], "activation": "sigmoid"}}, "activation 'sigmoid'"),
    ({"rule": "fa", "model": "convnet"}, "only an MLP"),
])
def test_configs_without_a_circuit_form_are_refused(values, needle):
    with pytest.raises(TransferError, match=needle):
        circuit_config_for(resolve(values))
