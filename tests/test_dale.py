"""Dale's law in circuit mode: signed weights carried by excitatory projections and inhibitory interneurons."""
from __future__ import annotations

import numpy as np
import pytest

from weightmirror.circuits.rules import KolenPollack, WeightMirror, angle_degrees
from weightmirror.circuits.spec import CircuitSpec, NeuronModel, Phases, SpecError

brian2 = pytest.importorskip("brian2")

from weightmirror.circuits.brian.network import BrianCircuit, init_weights  # noqa: E402
from weightmirror.sims import circuit as sim_circuit  # noqa: E402


def _wm(**kw):
    return WeightMirror(**{"lr": 0.1, "decay": 0.1, "mirror_batch_size": 8, "adaptive": False, **kw})


def test_the_effective_signed_matrix_is_the_declared_one():
    """Every declared (W, B) goes into two non-negative parts (W⁺ = [W]₊ excitatory, W⁻ = [-W]₊ through the
    interneurons) whose difference reads back exactly; the interneuron populations exist, one per relayed
    population, as large as it."""
    spec = CircuitSpec(layers=(7, 5, 3), rule=_wm(), dale=True, phases=Phases(duration=0.05, record_interval=0.05))
    weights = init_weights(spec, seed=4)
    circuit = BrianCircuit(spec, weights=weights)
    try:
        for (W, B), (W2, B2) in zip(weights, circuit.get_weights()):
            np.testing.assert_array_equal(W, W2)
            np.testing.assert_array_equal(B, B2)
        signs = circuit.synapse_signs()
        assert set(signs) == {"W1", "W2", "W1_inh", "W2_inh", "B1", "B2", "B1_inh", "B2_inh"}
        assert all(lo >= 0 for lo, hi in signs.values())
        np.testing.assert_array_equal(np.asarray(circuit.S_W_inh[0].w[:]),
                                      np.maximum(-weights[0][0], 0).T.ravel().astype(np.float64))
        names = {G.name: len(G) for G in circuit.relays}
        assert names == {"inh_y0": 7, "inh_y1": 5, "inh_delta1": 5, "inh_delta2": 3}
    finally:
        circuit.release()


@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_no_synapse_changes_sign_and_the_mirror_still_aligns(kind):
    """A mirror phase under Dale's law: no excitatory weight and no inhibitory strength ever goes below 0
    (every recorded interval), and the effective B turns towards Wᵀ about as without Dale's law."""
    neuron = NeuronModel(kind=kind)
    phases = Phases(schedule="mirror", duration=0.4 if kind == "rate" else 1.2, record_interval=0.1)
    angles = {}
    for dale in (False, True):
        spec = CircuitSpec(layers=(12, 8), rule=_wm(), neuron=neuron, dale=dale, phases=phases)
        circuit = BrianCircuit(spec)
        try:
            w0 = circuit.get_weights()
            circuit.run_phase("mirror", phases.duration)
            w1 = circuit.get_weights()
            if dale:
                assert all(lo >= 0 for lo, hi in circuit.synapse_signs().values())
                for mon in circuit.mon_B + circuit.mon_B_inh:
                    assert np.asarray(mon.b).min() >= 0  # at every recorded interval, too
            np.testing.assert_array_equal(w0[0][0], w1[0][0])  # W does not learn in mirror mode
        finally:
            circuit.release()
        angles[dale] = angle_degrees(w1[0][1], w1[0][0])
        start = angle_degrees(w0[0][1], w0[0][0])
        assert angles[dale] < start - 20, (dale, start, angles[dale])
    assert abs(angles[True] - angles[False]) < 12


def test_engaged_learning_under_dale_keeps_every_sign():
    """KP in engaged mode: W and B learn (the effective matrices change, W's both up and down) and still no
    synapse changes sign."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    spec = CircuitSpec(layers=(6, 5, 4), rule=KolenPollack(decay=0.01), dale=True, engaged_lr=0.05,
                       phases=Phases(schedule="engaged", duration=0.4, presentation=0.02, record_interval=0.2))
    circuit = BrianCircuit(spec, stimulus=(x, y))
    try:
        first = circuit.get_weights()
        circuit.run_phase("engaged", 0.4)
        last = circuit.get_weights()
        signs = circuit.synapse_signs()
    finally:
        circuit.release()
    change = last[1][0] - first[1][0]
    assert change.max() > 1e-4 and change.min() < -1e-4
    assert not np.allclose(first[1][1], last[1][1])
    assert all(lo >= 0 for lo, hi in signs.values()), signs


def test_dale_declaration():
    with pytest.raises(SpecError, match="dale: expected true or false"):
        CircuitSpec(layers=(4, 2), dale="yes")
    with pytest.raises(SpecError, match="not built yet"):
        CircuitSpec(layers=(4, 2), neuron=NeuronModel(kind="spiking"), dale=True, mirror_plasticity="stdp")
    spec = CircuitSpec.from_dict({"layers": [4, 2], "dale": True})
    assert spec.dale and CircuitSpec.from_dict(spec.to_dict()).dale
