"""Circuit mode against rate mode on the same noise: the circuit plays NumPy noise arrays in
(``noise.source = "arrays"``) and rate mode's own ``WeightMirror.mirror_update`` consumes the same samples."""
from __future__ import annotations

import numpy as np
import pytest

from weightmirror.circuits.rules import WeightMirror, angle_degrees
from weightmirror.circuits.spec import CircuitSpec, Noise, Phases, SpecError

brian2 = pytest.importorskip("brian2")

from weightmirror.circuits.brian.network import BrianCircuit  # noqa: E402
from weightmirror.sims.circuit import mirror_event_samples, rate_mirror_on_samples  # noqa: E402


def _same_noise(hold: float, noise: str):
    spec = CircuitSpec(layers=(12, 8, 6),
                       rule=WeightMirror(lr=0.1, decay=0.1, mirror_batch_size=4, adaptive=False, noise=noise),
                       noise=Noise(correlation_time=hold, source="arrays"),
                       phases=Phases(schedule="mirror", duration=60 * hold, record_interval=60 * hold,
                                     parity_period=2 * hold))
    circuit = BrianCircuit(spec, record_weights=False, record_rates=False)
    try:
        start = circuit.get_weights()
        circuit.run_phase("mirror", spec.phases.duration)
        end = circuit.get_weights()
        rate = rate_mirror_on_samples(spec, start, circuit.noise_samples, circuit.segments)
        segments = list(circuit.segments)
    finally:
        circuit.release()
    return spec, start, end, rate, segments


@pytest.mark.parametrize("hold, noise, least", [(0.02, "gaussian", 1 - 1e-9), (0.01, "uniform", 0.999)])
def test_linear_rate_circuit_equals_rate_mode_on_the_same_noise(hold, noise, least):
    """Linear rate units, the noise sample held 20 (10) neuron time constants: every layer's B equals rate
    mode's to cos ≥ 1 - 1e-9 (≥ 0.999), at the same scale, while B moved ~40° from where it started (so
    the agreement is not that of two copies of B₀). At the default 5 ms hold the filters still carry
    the previous sample and cos is 0.996–0.997."""
    spec, start, end, rate, segments = _same_noise(hold, noise)
    for (W0, B0), (W, B), B_rate in zip(start, end, rate):
        cos = float((B * B_rate).sum() / (np.linalg.norm(B) * np.linalg.norm(B_rate)))
        assert cos >= least, cos
        assert np.linalg.norm(B) / np.linalg.norm(B_rate) == pytest.approx(1.0, abs=1e-3)
        assert angle_degrees(B0, W0) - angle_degrees(B, W) > 30
    # each layer reads the samples of the layer below, in its own parity half of the time
    picks = [mirror_event_samples(spec, segments, l) for l in (1, 2)]
    # events at k τ_ξ, k = 1..59 (the one at t = 0 is not armed), one layer each
    assert len(picks[0]) + len(picks[1]) == 59 and not set(picks[0]) & set(picks[1])


def test_noise_source_is_checked():
    with pytest.raises(SpecError, match="noise.source"):
        Noise(source="urandom")
    assert CircuitSpec.from_dict({"layers": [4, 2], "noise": {"source": "arrays"}}).noise.source == "arrays"
