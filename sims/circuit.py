"""Circuit mode in Brian2: run a declared circuit and write its results folder (``weightmirror circuit``).

The circuit is declared once (:class:`circuits.spec.CircuitSpec`), built by
:class:`circuits.brian.network.BrianCircuit` and run phase by phase. The
results folder holds

``config.toml``
    the resolved declaration;
``metrics.jsonl``
    one row per simulated interval: ``t`` (simulated seconds at the end of
    the interval), ``phase``, ``angles_deg`` (angle(B, Wᵀ) per layer),
    ``predicted_angles_deg`` (mirror runs: the rate-mode ``WeightMirror``
    math of ``circuits.rules`` on the same initial weights, with the same
    learning rate and number of noise samples), ``noise_aware_angles_deg``
    (spiking mirror runs, sample rule: the closed form with the spike noise,
    ``circuits.brian.network.predicted_spiking_angle``), ``rates`` (mean activity
    per population and ``rates_rms``, its root mean square, for rate
    neurons; ``rates_hz`` for spiking neurons), ``weight_norms``,
    and for engaged intervals ``task_top1_error`` (%, the top-1 error of
    the outputs at the end of each presentation's settling half, before it
    is learnt) and ``presentations`` (how many it counts);
``summary.json``
    rule, layers, neuron, device, simulated_seconds, wall_seconds,
    angles_deg per layer (and the initial and predicted angles),
    ``correlation_gain`` (κ) and, for a spiking mirror,
    ``mirror_scale_from_spike_noise`` (``1 + κ_shot/κ``) and, after
    engaged learning, ``test_top1_error`` and ``train_top1_error`` (%, of
    the settled circuit on the test and training sets, as training runs
    write ``test_top1_error``) and ``task_top1_error_last_interval`` (%);
``weights_initial.npz`` / ``weights_final.npz``
    ``W1, B1, W2, B2, ...`` in W's layout (``B`` holds the paper's ``Bᵀ``);
``spikes.npz`` (spiking neurons)
    ``<population>_i``, ``<population>_t`` for a few neurons per population.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import results, tomlfile
from ..circuits.rules import angle_degrees
from ..circuits.spec import CIRCUIT_RULE_REGISTRY, CircuitSpec, SpecError, parse_duration
from ..errors import InputError

__all__ = ["CircuitInputError", "simulate", "resolve_spec", "read_file", "DEFAULT_LAYERS", "DATA_SHAPES", "default_layers",
           "auto_duration", "mirror_decay_for", "rate_reference", "rate_network",
           "resolve_from_weights",
           "mirror_event_samples", "rate_mirror_on_samples",
           "presentation_order", "predict_mirror_angles", "load_stimulus", "evaluate"]


class CircuitInputError(InputError):
    """Bad input to circuit mode (a flag, a config key, data that does not fit)."""


# ---------------------------------------------------------------------------
# rate-mode prediction of the mirror phase
# ---------------------------------------------------------------------------
class _MatrixLayer:
    """The minimal weight layer the rules need (see ``circuits.rules``)."""

    def __init__(self, W, B):
        self.W = np.array(W, dtype=np.float32)
        self.B = np.array(B, dtype=np.float32)
        self.mirror_input_shape = (self.W.shape[1],)

    def linear_response(self, x):
        return x @ self.W.T

    def hebbian(self, pre, post):
        return post.T @ pre


def predict_mirror_angles(spec: CircuitSpec, weights, plastic_times: list[list[float]], seed: int = 1):
    """Angle(B, Wᵀ) per layer predicted by the rate-mode weight mirror.

    ``plastic_times[r][l]``: seconds of mirror plasticity of ``B_{l+1}`` up
    to row ``r`` (non-decreasing in ``r``). Each layer gets
    ``round(plastic_time / τ_ξ)`` noise samples in mirror batches of ``m``
    (a last, partial batch of ``k`` samples uses ``lr·k/m`` and decay
    ``1-(1-λ)^{k/m}``), through the rule's ``mirror_update``
    (``WeightMirror.mirror_update``).
    Returns ``(angles per row, final B per layer)``; ``(None, None)`` for a
    rule without a mirror phase.
    """
    rule = spec.rule
    mirror = spec.mirror
    if mirror is None:
        return None, None
    rng = np.random.default_rng(seed)
    layers = [_MatrixLayer(W, B) for W, B in weights]
    m = mirror.batch_size
    modes = spec.modes
    done = [0] * len(layers)
    rows = []
    for times in plastic_times:
        for l, layer in enumerate(layers):
            target = modes.mirror_samples(times[l])
            while done[l] < target:
                k = min(m - done[l] % m, target - done[l])
                lr, decay = mirror.step(k)
                rule.mirror_update(layer, np, rng, lr, decay, k)
                done[l] += k
        rows.append([angle_degrees(layer.B, layer.W) for layer in layers])
    return rows, [layer.B.astype(np.float64) for layer in layers]


class _ReplayNoise:
    """A stand-in for the rule's random generator that hands out given unit-variance samples, one per call,
    in the form ``WeightMirror.sample_noise`` turns into its noise (Gaussian: as is; uniform: as the
    ``U(0, 1)`` draw that maps back to the same value)."""

    def __init__(self, samples):
        self._samples = iter(samples)

    def standard_normal(self, shape, dtype=np.float64):
        return np.asarray(next(self._samples), dtype=dtype).reshape(shape)

    def random(self, shape, dtype=np.float64):
        return (np.asarray(next(self._samples), dtype=dtype) / np.sqrt(12.0) + 0.5).reshape(shape)


def mirror_event_samples(spec: CircuitSpec, segments, layer: int) -> list[int]:
    """Indices of the noise samples of population ``y_{layer-1}`` that ``B_layer``'s mirror events read.

    Events at ``k τ_ξ`` read the sample held over ``[(k-1) τ_ξ, k τ_ξ)`` (index ``k-1``) when layer
    ``layer-1`` was the source then (its parity) and the previous event was in mirror mode too (the
    first event of a mirror block is not armed), as ``circuits.brian.plasticity``'s sample rule gates
    them (and ``BrianCircuit.mirror_plastic_time`` counts them).
    """
    tn = spec.noise.correlation_time
    period = spec.phases.parity_period
    half = spec.dt / 2
    parity = (layer - 1) % 2
    out: list[int] = []
    for phase, a, b in segments:
        if phase != "mirror":
            continue
        k0 = int(math.ceil(a / tn - 1e-9)) + 1
        k1 = int(math.ceil(b / tn - 1e-9))
        for k in range(k0, k1):
            if int(math.floor((k * tn - half) / period)) % 2 == parity:
                out.append(k - 1)
    return out


def rate_mirror_on_samples(spec: CircuitSpec, weights, samples, segments) -> list[np.ndarray]:
    """B per layer from rate mode's ``WeightMirror.mirror_update`` fed the circuit's own noise.

    ``samples``: ``BrianCircuit.noise_samples`` of a circuit run with ``noise.source = "arrays"``;
    ``segments``: its ``(phase, start, stop)`` blocks. Each mirror event of the circuit is one rate-mode
    mirror step of batch size 1 on the same sample (``lr/m``, decay ``1 - (1-λ)^{1/m}`` per sample, as
    the circuit's per-event plasticity), in the same order, with the rule's own code.
    """
    mirror = spec.mirror
    if mirror is None:
        raise CircuitInputError(f"rule {spec.rule.key!r} has no mirror phase")
    lr, decay = mirror.step(1)
    out = []
    for l, (W, B) in enumerate(weights, 1):
        layer = _MatrixLayer(W, B)
        layer.W = layer.W.astype(np.float64)
        layer.B = layer.B.astype(np.float64)
        picks = mirror_event_samples(spec, segments, l)
        rng = _ReplayNoise(samples[l - 1][k] for k in picks)
        for _ in picks:
            spec.rule.mirror_update(layer, np, rng, lr, decay, 1)
        out.append(layer.B)
    return out


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def _downsample(x: np.ndarray, image_shape, factor: int) -> np.ndarray:
    if factor == 1:
        return x
    c, h, w = image_shape
    if h % factor or w % factor:
        raise CircuitInputError(f"downsample {factor} does not divide the {h}x{w} images")
    x = x.reshape(-1, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))
    return x.reshape(x.shape[0], -1)


def load_stimulus(spec: CircuitSpec, data_dir=None):
    """``(x_train, y_train, x_test, y_test)`` flattened, standardised, downsampled."""
    from weightmirror.sims.datasets import DataError, load_dataset

    try:
        ds = load_dataset(spec.data, data_dir=data_dir, flatten=True, seed=spec.seed)
    except DataError as exc:
        raise CircuitInputError(str(exc)) from None
    xtr = _downsample(ds.x_train, ds.image_shape, spec.downsample).astype(np.float64)
    xte = _downsample(ds.x_test, ds.image_shape, spec.downsample).astype(np.float64)
    if xtr.shape[1] != spec.layers[0]:
        raise CircuitInputError(
            f"layers start with {spec.layers[0]} inputs but {spec.data} (downsample {spec.downsample}) "
            f"has {xtr.shape[1]}; use --layers {xtr.shape[1]},...")
    if ds.num_classes != spec.layers[-1]:
        raise CircuitInputError(f"layers end with {spec.layers[-1]} outputs but {spec.data} has "
                                f"{ds.num_classes} classes")
    return xtr, ds.y_train, xte, ds.y_test


def evaluate(spec: CircuitSpec, weights, x, labels) -> float:
    """Top-1 error in percent of the circuit's steady state: ``y_l = φ(W_l y_{l-1})``, argmax of ``y_L``.

    For rate neurons this is the fixed point the populations settle to in
    engaged mode (no biases; φ = the hidden activation).
    """
    y = np.asarray(x, dtype=np.float64)
    L = len(weights)
    for l, (W, _) in enumerate(weights, 1):
        y = y @ W.T
        if l < L and spec.neuron.activation == "relu":
            y = np.maximum(y, 0.0)
    return 100.0 * float(np.mean(np.argmax(y, axis=1) != np.asarray(labels)))


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------
def _weights_npz(weights, biases=None) -> dict[str, np.ndarray]:
    """``W1, B1, W2, ...`` (and ``b1, b2, ...`` when a rate-mode network's biases are carried)."""
    out = {}
    for l, (W, B) in enumerate(weights, 1):
        out[f"W{l}"] = np.asarray(W, dtype=np.float32)
        out[f"B{l}"] = np.asarray(B, dtype=np.float32)
    for l, b in enumerate(biases or [], 1):
        out[f"b{l}"] = np.asarray(b, dtype=np.float32)
    return out


def presentation_order(spec: CircuitSpec, n_train: int) -> np.ndarray:
    """Training-set index of each presentation: a new permutation per epoch."""
    n_pres = int(math.ceil(spec.phases.duration / spec.phases.presentation)) + 2
    rng = np.random.default_rng(spec.seed)
    return np.concatenate([rng.permutation(n_train) for _ in range(n_pres // n_train + 1)])[:n_pres]


def rate_network(spec: CircuitSpec, weights=None):
    """The circuit as a rate-mode network of ``models/``: the engine that ``weightmirror train`` runs.

    One bias-free ``Linear`` per weight layer (the circuit's units have no
    biases) holding the circuit's ``W`` and ``B`` (float32), with a ``ReLU``
    after every hidden layer when ``neuron.activation`` is ``relu`` (``linear``:
    none); the output is linear, as the circuit's top layer. The layers'
    ``mirror_activation`` stays None: in mirror mode the circuit's units respond
    linearly (``y = v``), so the rule's mirror sees ``W ξ`` as there.

    Parameters
    ----------
    spec : the circuit (its layers, rule and activation).
    weights : ``[(W, B)]`` per layer in W's layout; None: the circuit's own
        initial weights (``init_weights(spec)``: the same seed gives the same start).
    """
    from weightmirror.circuits.brian.network import init_weights
    from ..models.layers import Linear, Network, ReLU

    weights = weights if weights is not None else init_weights(spec)
    relu = spec.neuron.activation == "relu"
    modules = []
    rng = np.random.default_rng(0)  # overwritten below: the circuit's weights are loaded
    for l, (W, B) in enumerate(weights, 1):
        W = np.asarray(W)
        layer = Linear(W.shape[1], W.shape[0], np, rng, bias=False)
        layer.W = np.array(W, dtype=np.float32)
        layer.B = np.array(B, dtype=np.float32)
        spec.rule.prepare_layer(layer, np)
        modules.append(layer)
        if relu and l < len(weights):
            modules.append(ReLU())
    return Network(modules, spec.rule, np)


def rate_reference(spec: CircuitSpec, data, weights=None, seed: int = 1, substeps: int | None = None) -> dict:
    """The circuit's schedule run by the rate-mode engine (``models/``, ``circuits.rules``).

    The network is :func:`rate_network` (same initial W and B as the circuit
    for the same ``spec.seed``), driven presentation by presentation in the
    circuit's order (:func:`presentation_order`):

    - an engaged presentation is ``K = substeps`` online steps of the engine
      on the same example and the circuit's loss ``½‖y_L - t‖²``
      (``dL/dy_L = y_L - t``): ``Network.backward`` with the rule's feedback
      ``δ_l = φ'(v_l) ⊙ (B_{l+1}ᵀ δ_{l+1})``, then ``SGD.step`` at
      ``engaged_lr / K`` with no momentum and no weight decay,
      ``ΔW = -(η/K) δ yᵀ``; the rule's per-presentation decay ``λ_c`` (KP's
      ``decay``) is split as ``1 - (1 - λ_c)^{1/K}`` per step, and KP's ``ΔB``
      comes through the optimiser as in ``weightmirror train``. With no
      ``Progress`` the rule's learning-mass-scheduled decay (KP's
      ``decay_total``) is off, as in the circuit, whose engaged decay is
      ``decay`` alone.

      **Why several steps per presentation**: the circuit's synapses change
      every ``plasticity_dt`` of the learning window while the error they
      read follows W (the output settles within a few τ), so a presentation
      is a short gradient flow on its example, not one Euler step. The
      default ``K = learn_window / plasticity_dt`` takes the circuit's own
      steps. With ``K = 1`` and digits' input norms (``η‖y‖² ≈ 0.5`` at
      ``engaged_lr = 0.01``) the single step overshoots: FA, whose B does not
      follow W, then ends at 12–90 % test error over seeds 1–3 where the
      circuit learns (``K = 4``: 10–16 %);
    - a mirror block gives each layer ``plastic time / τ_ξ`` noise samples
      (the parity halves the time each layer learns) through
      ``WeightMirror.mirror_update``, in batches of ``mirror.batch_size``.

    Returns ``{"weights", "test_top1_error", "train_top1_error", "angles_deg", "diverged"}``
    (errors in percent, as in a circuit run's summary; ``diverged``: a weight
    went non-finite, the run stopped there and its errors are those of the
    last weights).
    """
    from ..models.optim import SGD

    xtr, ytr, xte, yte = data
    rule = spec.rule
    modes = spec.modes
    substeps = modes.steps_per_presentation if substeps is None else int(substeps)
    lr_step, decay_step = modes.engaged_step(substeps)
    step_rule = rule
    if modes.engaged_decay > 0:  # the rule's decay per presentation (KP's ``decay``), split over its steps
        step_rule = dataclasses.replace(rule, decay=decay_step)
    net = rate_network(dataclasses.replace(spec, rule=step_rule) if step_rule is not rule else spec, weights)
    layers = net.weight_layers
    opt = SGD(net.parameter_modules(), step_rule, np, momentum=0.0, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    order = presentation_order(spec, len(xtr))
    T = spec.phases.presentation
    n_out = spec.layers[-1]
    mirror = spec.mirror
    target = np.zeros((1, n_out), dtype=np.float32)
    diverged = False
    for phase, a, b in spec.phases.segments():
        if phase == "mirror" and mirror is not None:
            samples = modes.mirror_samples((b - a) / 2)  # parity: each layer learns half the time
            m = mirror.batch_size
            for layer in layers:
                done = 0
                while done < samples:
                    k = min(m, samples - done)
                    lr, decay = mirror.step(k)
                    rule.mirror_update(layer, np, rng, lr, decay, k)
                    done += k
        elif phase == "engaged":
            for p in range(int(round(a / T)), int(round(b / T))):
                x = np.asarray(xtr[order[p]], dtype=np.float32)[None, :]
                y = net.forward(x, train=True)
                target[...] = 0.0
                target[0, ytr[order[p]]] = 1.0
                for k in range(substeps):
                    if k:
                        y = net.forward(x, train=True)
                    net.backward(y - target, rng=rng)
                    opt.step(lr_step)
            if not all(np.isfinite(layer.W).all() and np.isfinite(layer.B).all() for layer in layers):
                diverged = True
                break
    weights_out = [(layer.W.astype(np.float64), layer.B.astype(np.float64)) for layer in layers]
    return {
        "weights": weights_out,
        "test_top1_error": evaluate(spec, weights_out, xte, yte),
        "train_top1_error": evaluate(spec, weights_out, xtr, ytr),
        "angles_deg": [angle_degrees(B, W) for W, B in weights_out],
        "diverged": diverged,
    }


def _phase_at(segments, t: float) -> str:
    for phase, a, b in segments:
        if a <= t < b:
            return phase
    return segments[-1][0] if segments else "idle"


def simulate(spec: CircuitSpec, out: str | Path | None = None, *, data=None, data_dir=None,
             progress: bool = True, weights=None, biases=None, build_dir: str | None = None) -> results.Run:
    """Run the declared circuit; write its results folder ``out`` (None: keep it in memory).

    Parameters
    ----------
    spec : the declaration.
    out : results folder (refused if it already holds a run), or None.
    data : ``(x_train, y_train, x_test, y_test)`` for engaged phases
        (default: :func:`load_stimulus` from ``data_dir``).
    data_dir : folder of the data files (default: the data set's own place).
    progress : show a tqdm bar in simulated seconds.
    weights : initial ``[(W, B)]`` (e.g. from rate mode); default: drawn
        from ``spec.seed``.
    biases : a rate-mode network's biases, one per layer, or None. The
        circuit's units have none, so they are not simulated: they are
        carried unchanged into ``weights_initial.npz`` and
        ``weights_final.npz`` (``b1, b2, ...``), so that a network that went
        through a mirror phase comes back whole (``train --init-from``).
    build_dir : standalone build directory, kept (default: a temporary one,
        removed after the results are read out).

    Returns
    -------
    weightmirror.results.Run
        ``config`` (the declaration), ``metrics`` (one row per simulated
        interval), ``summary``; for a run in memory also ``arrays``
        (``weights_initial``, ``weights_final``, ``spikes``).

    Raises
    ------
    RunExistsError
        ``out`` holds a run (a folder whose run was stopped before its
        ``summary.json`` is reused).
    FolderInUseError
        another run is writing ``out``.
    """
    if isinstance(out, str):
        results.check_out_path(out)
    from weightmirror.sims.datasets import DataError, check_data_dir

    try:  # checked whether or not this circuit reads data (a mirror-only run reads none)
        check_data_dir(spec.data, data_dir)
    except DataError as exc:
        raise CircuitInputError(str(exc)) from None
    out = None if out is None else Path(out)
    if out is None:
        return _simulate(spec, None, data, data_dir, progress, weights, build_dir, biases)
    from weightmirror import locks

    from .training.interrupts import StopRequests, StoppedBeforeStart

    # the folder is this run's to the end; a signal stops it at once (a circuit run cannot be resumed:
    # a folder without summary.json is one a rerun reuses)
    try:
        with locks.claim(out, "circuit") as claim, StopRequests(immediate=True):
            if results.refuse_existing_run(out):  # checked once no other run can start in it
                results.clear_unstarted(out)
            if claim.note:
                print(claim.note, file=sys.stderr)
            return _simulate(spec, out, data, data_dir, progress, weights, build_dir, biases)
    except StoppedBeforeStart:
        if (out / results.SUMMARY).is_file():
            raise StoppedBeforeStart(f"interrupted after the run finished; its results are in {out}") from None
        raise StoppedBeforeStart(f"interrupted; {out} holds no results: run the same command again to start "
                                 "over in it") from None


def _simulate(spec: CircuitSpec, out: Path | None, data, data_dir, progress, weights, build_dir,
              biases=None) -> results.Run:
    from weightmirror.circuits.brian.network import BrianCircuit, init_weights

    segments = spec.phases.segments()
    engaged = any(p == "engaged" for p, _, _ in segments)
    stimulus = None
    if engaged:
        if data is None:
            data = load_stimulus(spec, data_dir)
        xtr, ytr, xte, yte = data
        order = presentation_order(spec, len(xtr))
        stimulus = (xtr[order], ytr[order])
    config = {"command": "circuit", **spec.to_dict()}
    w0 = weights if weights is not None else init_weights(spec)
    w0 = [(np.array(W, dtype=np.float64), np.array(B, dtype=np.float64)) for W, B in w0]
    if biases is not None:
        biases = [np.array(b, dtype=np.float64) for b in biases]
        if [b.shape for b in biases] != [(W.shape[0],) for W, _ in w0]:
            raise CircuitInputError(f"biases of shapes {[b.shape for b in biases]} do not fit the layers "
                                    f"{list(spec.layers)}")
        if spec.phases.schedule != "mirror" and any(b.any() for b in biases):
            raise CircuitInputError("a network with biases can only run a mirror phase in the circuit (its "
                                    "units have no biases: engaged learning would use another network); "
                                    "use --phase mirror")
    arrays = {"weights_initial": _weights_npz(w0, biases)}
    if out is not None:
        results.write_config(out / results.CONFIG, config)
        results.save_arrays(out / "weights_initial.npz", arrays["weights_initial"])

    pilot = None
    if spec.mirror_pilot > 0:  # before the run's own build: a standalone device builds one network at a time
        pilot = pilot_mirror_moments(spec, spec.mirror_pilot, weights=w0)
    own_build_dir = build_dir is None and spec.device in ("cpp", "cuda")
    if own_build_dir:
        build_dir = tempfile.mkdtemp(prefix=f"weightmirror_{spec.device}_")
    wall0 = time.perf_counter()
    circuit = BrianCircuit(spec, weights=w0, stimulus=stimulus, directory=build_dir)
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=round(spec.phases.duration, 6), unit="sim s", desc=f"circuit {spec.label or spec.rule.key}",
                       bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} sim s [{elapsed}<{remaining}]",
                       disable=None)  # no bar where stderr is not a terminal
        tick = (lambda s: bar.update(s)) if bar is not None else None
        # activity (spikes, rates) only in the last phases.record_activity seconds
        window = round(max(spec.phases.duration - spec.phases.record_activity, 0.0) / spec.dt) * spec.dt
        circuit.record_activity(window <= 0)
        for phase, a, b in segments:
            if bar is not None:
                bar.set_postfix_str(phase)
            if a < window < b:
                circuit.run_phase(phase, window - a, progress=tick)
                circuit.record_activity(True)
                a = window
            elif window > 0 and abs(a - window) < 1e-12:
                circuit.record_activity(True)
            circuit.run_phase(phase, b - a, progress=tick)
        if bar is not None and circuit.standalone:
            bar.set_postfix_str(f"building and running {spec.device} standalone")
        circuit.finish()
        if bar is not None:
            if circuit.standalone:
                bar.update(spec.phases.duration)
            bar.close()
        wall = time.perf_counter() - wall0
        final = circuit.get_weights()
        rec = circuit.recorded()
        segs = list(circuit.segments)
        kappa = circuit.kappa
        shot = None
        if spec.neuron.spikes and spec.mirror is not None:
            from ..circuits.brian.network import shot_noise_gain

            hold = int(round(spec.noise.correlation_time / spec.dt))
            shot = shot_noise_gain(spec.neuron, spec.dt, hold, spec.mirror_plasticity)
    finally:
        circuit.release()
        if own_build_dir:
            shutil.rmtree(build_dir, ignore_errors=True)

    rows = _metrics_rows(spec, circuit, w0, final, rec, segs, pilot)
    arrays["weights_final"] = _weights_npz(final, biases)
    if rec["spikes"]:
        spikes = {}
        for name, (i, t) in rec["spikes"].items():
            spikes[f"{name}_i"] = i.astype(np.int32)
            spikes[f"{name}_t"] = t.astype(np.float64)
        arrays["spikes"] = spikes

    summary: dict[str, Any] = {
        "command": "circuit",
        "rule": spec.rule.key,
        "rule_long_name": spec.rule.long_name,
        "label": spec.label or spec.rule.key,
        "layers": list(spec.layers),
        "neuron": spec.neuron.kind,
        "dale": spec.dale,
        "mirror_centred": circuit.centred,
        "mirror_plasticity": spec.mirror_plasticity,
        "device": spec.device,
        "schedule": spec.phases.schedule,
        "simulated_seconds": circuit.simulated,
        "wall_seconds": wall,
        "initial_angles_deg": [angle_degrees(B, W) for W, B in w0],
        "angles_deg": [angle_degrees(B, W) for W, B in final],
        "correlation_gain": kappa,
        "biases_carried": biases is not None,
    }
    if shot is not None:
        # spiking mirror: the source's spike noise adds κ_shot to κ in W's direction (circuits.brian.network.
        # shot_noise_gain): B's expected scale is this factor times rate mode's
        summary["mirror_scale_from_spike_noise"] = 1 + shot
    if rows and rows[-1].get("predicted_angles_deg") is not None:
        summary["predicted_angles_deg"] = rows[-1]["predicted_angles_deg"]
    if rows and rows[-1].get("noise_aware_angles_deg") is not None:
        summary["noise_aware_angles_deg"] = rows[-1]["noise_aware_angles_deg"]
    if pilot is not None:
        summary["pilot_moments"] = pilot
        summary["pilot_angles_deg"] = rows[-1]["pilot_angles_deg"]
        summary["largest_gap_to_pilot_deg"] = max(
            (abs(a - b) for row in rows[1:] for a, b in zip(row["angles_deg"], row["pilot_angles_deg"])),
            default=None)
    if engaged:
        summary["test_top1_error"] = evaluate(spec, final, xte, yte)
        summary["train_top1_error"] = evaluate(spec, final, xtr, ytr)
        errs = [r["task_top1_error"] for r in rows if r.get("task_top1_error") is not None]
        summary["task_top1_error_last_interval"] = errs[-1] if errs else None
    if out is not None:  # summary.json last: a folder without it holds no finished run (a rerun reuses it)
        for name, group in arrays.items():
            if name != "weights_initial":
                results.save_arrays(out / f"{name}.npz", group)
        results.write_metrics(out / results.METRICS, rows)
        results.write_json(out / results.SUMMARY, summary)
    return results.Run(path=out, kind="circuit", config=config, metrics=rows, summary=summary,
                       arrays={} if out is not None else arrays)


def _metrics_rows(spec, circuit, w0, final, rec, segments, pilot=None) -> list[dict]:
    times = [0.0]
    Ws = [[W for W, _ in w0]]
    Bs = [[B for _, B in w0]]
    if rec["weights_t"] is not None:
        for k, t in enumerate(rec["weights_t"]):
            if t <= 0.5 * spec.dt or t >= circuit.simulated - 1e-9:
                continue
            times.append(round(float(t), 9))
            Ws.append([rec["W"][l][k] for l in range(spec.n_weight_layers)])
            Bs.append([rec["B"][l][k] for l in range(spec.n_weight_layers)])
    times.append(circuit.simulated)
    Ws.append([W for W, _ in final])
    Bs.append([B for _, B in final])

    predicted = None
    noise_aware = None
    noise_band = None
    piloted = None
    if spec.mirror is not None and spec.phases.schedule == "mirror":
        plastic = [circuit.mirror_plastic_time(t) for t in times]
        hebbian, decay = spec.mirror.step(1)  # per noise sample; B's mean tends to (hebbian/decay) times M
        ratio = hebbian / decay if decay > 0 else 1.0
        predicted, _ = predict_mirror_angles(spec, w0, plastic, seed=spec.seed + 1)
        if spec.neuron.spikes and spec.mirror_plasticity == "sample" and not spec.dale:
            # the closed form with the spike noise (circuits.brian.network.predicted_spiking_angle)
            from ..circuits.brian.network import predicted_spiking_angle, spiking_angle_band, spiking_mirror_noise

            hold = int(round(spec.noise.correlation_time / spec.dt))
            noise = spiking_mirror_noise(spec.neuron, spec.dt, hold)
            noise_aware = [[predicted_spiking_angle(noise, W, B, spec.modes.mirror_samples(p), decay,
                                                    spec.sigma, lr_ratio=ratio) for (W, B), p in zip(w0, row)]
                           for row in plastic]
            noise_band = [[list(spiking_angle_band(noise, W, B, spec.modes.mirror_samples(p), decay, spec.sigma,
                                                   seed=spec.seed, lr_ratio=ratio)) for (W, B), p in zip(w0, row)]
                          for row in plastic]
        if pilot is not None:  # the prediction from the moments the pilot measured in this circuit
            from ..circuits.brian.network import predicted_angle_from_moments

            piloted = [[predicted_angle_from_moments(m, W, B, spec.modes.mirror_samples(p), decay, ratio)
                        for m, (W, B), p in zip(pilot, w0, row)] for row in plastic]

    names = list(circuit.names.forward) + list(circuit.names.feedback)
    rows = []
    for r, t in enumerate(times):
        t0 = times[r - 1] if r else 0.0
        row: dict[str, Any] = {
            "t": t,
            "phase": _phase_at(segments, max(t - 1e-9, 0.0)) if r else "initial",
            "angles_deg": [angle_degrees(B, W) for W, B in zip(Ws[r], Bs[r])],
        }
        if predicted is not None:
            row["predicted_angles_deg"] = predicted[r]
        if noise_aware is not None:
            row["noise_aware_angles_deg"] = noise_aware[r]
            row["noise_aware_band_deg"] = noise_band[r]
        if piloted is not None:
            row["pilot_angles_deg"] = piloted[r]
        row["weight_norms"] = {f"W{l}": float(np.linalg.norm(W)) for l, W in enumerate(Ws[r], 1)}
        row["weight_norms"].update({f"B{l}": float(np.linalg.norm(B)) for l, B in enumerate(Bs[r], 1)})
        if r and rec["rates"]:
            key = "rates_hz" if spec.neuron.spikes else "rates"
            row[key] = {}
            for name in names:
                tt, vals = rec["rates"][name]
                sel = (tt > t0) & (tt <= t + 1e-12)
                # a row whose interval was recorded only in part reports the part, if it spans the whole
                # recording window or half the interval (not the window's first step alone)
                recorded = t - max(t0, float(tt[0])) if len(tt) else 0.0
                if not np.any(sel) or recorded < min(t - t0, spec.phases.record_activity) / 2:
                    row[key][name] = None
                elif spec.neuron.spikes:
                    row[key][name] = float(np.mean(vals[sel]))
                else:
                    row[key][name] = float(np.mean(vals[:, sel]))
                    row.setdefault("rates_rms", {})[name] = float(np.sqrt(np.mean(vals[:, sel] ** 2)))
        if r and "output" in rec and circuit.presented_labels is not None:
            T = spec.phases.presentation
            out_t = rec["output_t"]
            errs = []
            for k in np.nonzero((out_t > t0 + 1e-12) & (out_t <= t + 1e-12))[0]:
                half = int(round(out_t[k] / (T / 2)))
                if half % 2 == 0:
                    continue  # only the samples at the end of each settling half
                p = half // 2  # the presentation being shown, before it is learnt
                if _phase_at(segments, (p + 0.5) * T) != "engaged":
                    continue
                errs.append(int(np.argmax(rec["output"][k]) != circuit.presented_labels[p]))
            if errs:
                row["task_top1_error"] = 100.0 * sum(errs) / len(errs)
                row["presentations"] = len(errs)
        rows.append(row)
    return rows



# ---------------------------------------------------------------------------
# the declaration from a file and overrides
# ---------------------------------------------------------------------------
#: (image shape (C, H, W), classes, training images) of each data set circuit mode reads: the default
#: layers and an engaged run's default duration follow the data set without loading it
DATA_SHAPES = {
    "digits": ((1, 8, 8), 10, 1437),
    "mnist": ((1, 28, 28), 10, 60000),
    "fashion-mnist": ((1, 28, 28), 10, 60000),
    "cifar10": ((3, 32, 32), 10, 50000),
    "imagenet32": ((3, 32, 32), 1000, 1281167),
    "imagenet64": ((3, 64, 64), 1000, 1281167),
}

#: population sizes of the default data set (digits) when neither a file nor an override gives them
DEFAULT_LAYERS = (64, 32, 10)

#: a mirror-only run's default decay per noise sample puts the stationary angle of its widest layer
#: here (ε² = F d / 2, the rate-mode closed form) ...
MIRROR_STATIONARY_DEG = 7.0
#: ... and its default duration lets the initial B's share decay to this fraction, (1 - d)^N
MIRROR_REMAINDER = 0.02

#: a spiking mirror (sample rule, no Dale) without these settings: per neuron kind, the noise hold and
#: the trace filter (s), from the noise-aware closed form's scan on 784-100-10 at 20 Hz (BENCHMARKS.md
#: §6): Poisson units gain from short holds (an event every 10 ms, each seeing few spikes); a LIF
#: membrane (τ_m 20 ms) cannot follow holds much shorter than itself
SPIKING_MIRROR_TIMES = {"spiking": (0.01, 0.005), "lif": (0.02, 0.02)}
#: ... the layers take turns every this many seconds (a switch's transient, a few trace times, is
#: then a small share of each turn)
SPIKING_PARITY_PERIOD = 1.0
#: ... and a run without a duration lasts until the closed form puts every layer within this angle
#: (the decay planned for that length): the closed form takes the units as linear, which LIF neurons
#: beat and rectified Poisson units at 20 Hz do not (``--pilot`` measures what the circuit does)
SPIKING_MIRROR_TARGET_DEG = 13.0
#: the decays per noise sample a planner chooses among (log-spaced; small enough for runs of 10⁶ samples)
DECAY_GRID = np.geomspace(1e-9, 0.3, 300)


def default_layers(data: str, downsample: int = 1) -> tuple[int, int, int]:
    """``(inputs, hidden, classes)`` for ``data``: its pixels after ``downsample``, 32 hidden units for
    inputs up to 256 (digits) and 100 above (784-100-10 for Fashion-MNIST), its classes."""
    if data not in DATA_SHAPES:
        return DEFAULT_LAYERS
    (c, h, w), classes, _ = DATA_SHAPES[data]
    k = max(int(downsample), 1)
    inputs = c * (h // k) * (w // k)
    return inputs, (32 if inputs <= 256 else 100), classes


def mirror_decay_for(layers, stationary_deg: float = MIRROR_STATIONARY_DEG) -> float:
    """The weight mirror's decay per noise sample whose stationary angle in the widest layer (fan-in
    ``F = max(layers[:-1])``) is ``stationary_deg``: ``d = 2 tan²θ / F`` (``tan² θ = F d / 2``, the
    rate-mode closed form of ``circuits.rules.WeightMirror``)."""
    fan_in = max(int(n) for n in list(layers)[:-1])
    return 2.0 * math.tan(math.radians(stationary_deg)) ** 2 / fan_in


def _mirror_rates(per_sample: float, batch_size: int) -> dict[str, float]:
    """``lr`` and ``decay`` per batch of ``batch_size`` whose per-sample Hebbian rate and decay
    (``Mirror.step(1)``: ``lr/m`` and ``1 - (1-decay)^{1/m}``) both equal ``per_sample``."""
    return {"lr": batch_size * per_sample, "decay": 1.0 - (1.0 - per_sample) ** batch_size}


def auto_duration(spec: CircuitSpec) -> float:
    """The simulated time a declaration needs when it gives none (seconds, a whole number of dt).

    - ``mirror``: ``N`` noise samples per layer with ``(1 - d)^N = MIRROR_REMAINDER`` (``d`` the decay per
      sample), the initial B's share of the mirror's result; the layers take turns, so ``2 N τ_ξ``,
      rounded up to whole parity periods;
    - ``engaged``: ``phases.epochs`` presentations of the training set, ``epochs · n_train · T``;
    - ``alternate``: as many blocks of ``mirror_duration + engaged_duration`` as the engaged part needs.
    """
    ph = spec.phases
    if ph.schedule == "mirror":
        d = spec.mirror.step(1)[1]
        n = math.ceil(math.log(MIRROR_REMAINDER) / math.log1p(-d))
        total = math.ceil(2 * n * spec.noise.correlation_time / ph.parity_period) * ph.parity_period
    else:
        n_train = DATA_SHAPES.get(spec.data, (None, None, 1437))[2]
        engaged = ph.epochs * n_train * ph.presentation
        if ph.schedule == "engaged":
            total = engaged
        else:
            total = math.ceil(engaged / ph.engaged_duration - 1e-9) * (ph.mirror_duration + ph.engaged_duration)
    return round(total / spec.dt) * spec.dt


def auto_record_interval(duration: float, dt: float, rows: int = 50) -> float:
    """A metrics row every 0.1, 0.2, 0.5, 1, 2, 5, ... s: the largest of these at most ``duration / rows``
    (0.1 s for short runs), a whole number of dt."""
    step = 0.1
    for k in range(-1, 6):
        for m in (1, 2, 5):
            if m * 10.0 ** k <= duration / rows:
                step = m * 10.0 ** k
    return max(round(step / dt), 1) * dt


def resolve_from_weights(file_values: dict[str, Any] | None, overrides: dict[str, Any] | None,
                         init_from=None):
    """:func:`resolve_spec`, started from another run's weights when ``init_from`` names a results folder.

    Without ``layers`` in ``file_values`` or ``overrides`` the circuit takes that network's layers.
    Returns ``(spec, source)``: ``source`` is the :class:`sims.transfer.Weights` read (None without
    ``init_from``), whose ``layers`` and ``biases`` :func:`simulate` takes.

    Raises
    ------
    TransferError
        the folder holds no usable weights, or they do not fit the declared layers.
    """
    overrides = dict(overrides or {})
    if init_from is None:
        return resolve_spec(file_values, overrides), None
    from .transfer import TransferError, read_weights

    source = read_weights(init_from)
    if "layers" not in overrides and "layers" not in (file_values or {}):
        overrides["layers"] = source.sizes  # the circuit of that network
    spec = resolve_spec(file_values, overrides)
    if [W.shape for W, _ in source.layers] != [(n_out, n_in) for n_in, n_out in zip(spec.layers[:-1], spec.layers[1:])]:
        raise TransferError(f"--init-from {init_from}: its layers {source.sizes} are not the circuit's "
                            f"{list(spec.layers)}; leave the layers out to take the run's")
    return spec, source


def read_file(path: str | Path) -> dict[str, Any]:
    """A circuit config file's values (not yet resolved); one SpecError line if unreadable."""
    return tomlfile.read(path, SpecError)


def resolve_spec(file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> CircuitSpec:
    """The declaration: ``file_values`` (a parsed config file or a results folder's
    ``config.toml``), then ``overrides`` in the same key form; validated.

    ``rule`` may be a name (``"kp"``) or a table (``{"name": "wm", "lr": 0.05}``);
    a rule of another name replaces the file's rule table, the same name
    updates it. Tables (``neuron``, ``noise``, ``phases``) are merged key by
    key. Without a schedule, rules with a mirror phase run ``mirror`` and the
    others ``engaged``; without layers, :data:`DEFAULT_LAYERS`.
    """
    config = dict(file_values or {})
    if isinstance(config.get("circuit"), dict):  # a [circuit] table inside a larger file
        config = dict(config["circuit"])
    config.pop("command", None)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    def table(value, key):
        if isinstance(value, str) and key == "rule":
            return {"name": value}
        if not isinstance(value, dict):
            raise SpecError(f"[{key}] must be a table, got {value!r}")
        return dict(value)

    rule = table(config.get("rule", {"name": "wm"}), "rule")
    if "rule" in overrides:
        new = table(overrides.pop("rule"), "rule")
        rule = new if new.get("name", rule.get("name")) != rule.get("name") else {**rule, **new}
    config["rule"] = rule
    for key in ("neuron", "noise", "phases"):
        if key in config or key in overrides:
            config[key] = {**table(config.get(key, {}), key), **table(overrides.pop(key, {}), key)}
    config.update(overrides)
    config.setdefault("layers", list(default_layers(config.get("data", "digits"), config.get("downsample", 1))))
    phases = config.setdefault("phases", {})
    if "schedule" not in phases:
        entry = CIRCUIT_RULE_REGISTRY.get(rule.get("name", "wm"))
        phases["schedule"] = "mirror" if entry is not None and entry.has_mirror else "engaged"
    batch = rule.get("mirror_batch_size", CIRCUIT_RULE_REGISTRY["wm"].defaults["mirror_batch_size"])
    size_mirror = (phases["schedule"] == "mirror" and rule.get("name", "wm") == "wm" and "lr" not in rule
                   and "decay" not in rule and _numeric_layers(config["layers"])
                   and isinstance(batch, int) and not isinstance(batch, bool) and batch > 0)
    kind = config.get("neuron", {}).get("kind", "rate") if isinstance(config.get("neuron", {}), dict) else None
    spiking_mirror = (phases["schedule"] == "mirror" and kind in SPIKING_MIRROR_TIMES
                      and config.get("mirror_plasticity", "sample") == "sample" and not config.get("dale", False))
    if spiking_mirror:
        hold, trace = SPIKING_MIRROR_TIMES[kind]
        noise = config.setdefault("noise", {})
        if isinstance(noise, dict) and "correlation_time" not in noise:
            noise["correlation_time"] = hold
        if "parity_period" not in phases:
            # a whole number of holds, at most 1 s, and ~20 turns in a short run
            try:
                hold = parse_duration(noise.get("correlation_time", hold), "noise.correlation_time")
                given = phases.get("duration")
                span = parse_duration(given, "phases.duration") / 20 if given is not None else math.inf
            except (SpecError, AttributeError):
                span = math.inf  # the declaration's own check names the bad value
            if hold > 0:
                turns = math.floor(min(span, SPIKING_PARITY_PERIOD) / hold + 1e-9)
                phases["parity_period"] = max(turns, 1) * hold
        neuron = config["neuron"]
        neuron.setdefault("tau_trace", trace)
    if size_mirror and spiking_mirror and "duration" not in phases:
        provisional = CircuitSpec.from_dict({**config, "phases": {**phases, "duration": 1.0},
                                             "rule": {**rule, "lr": 0.05, "decay": 0.05}})
        phases["duration"] = spiking_mirror_duration(provisional)
        phases.setdefault("record_interval", auto_record_interval(phases["duration"], provisional.dt))
    if size_mirror and "duration" not in phases:
        # a mirror-only run without a duration: as long as a rate mirror whose widest layer settles at
        # MIRROR_STATIONARY_DEG needs
        rule.update(_mirror_rates(mirror_decay_for(config["layers"]), batch))
    if "duration" not in phases:
        provisional = CircuitSpec.from_dict({**config, "phases": {**phases, "duration": 1.0}})
        phases["duration"] = auto_duration(provisional)
        if "record_interval" not in phases:
            phases["record_interval"] = auto_record_interval(phases["duration"], provisional.dt)
    if size_mirror:
        # the decay (= Hebbian rate) that ends closest to Wᵀ after this run, for this kind of unit
        spec = CircuitSpec.from_dict({**config, "rule": {**rule, "lr": 0.05, "decay": 0.05}})
        rule.update(_mirror_rates(planned_mirror_decay(spec), batch))
    return CircuitSpec.from_dict(config)


#: the noise-aware closed form's moments for rate units (no spike noise: it is rate mode's ε² = F d / 2)
RATE_UNIT_NOISE = {"kappa": 1.0, "kappa_shot": 0.0, "s_x": 1.0, "s_y": 1.0, "n_x": 0.0, "n_yW": 0.0, "n_y": 0.0,
                   "correlation": 1.0}


def spiking_mirror_duration(spec: CircuitSpec, target_deg: float = SPIKING_MIRROR_TARGET_DEG,
                            longest: float = 1e6) -> float:
    """Simulated seconds after which the noise-aware closed form puts every layer of a spiking mirror
    within ``target_deg`` of Wᵀ, the decay planned for each length (``plan_spiking_decay``; bisection over
    the length to 1 %), rounded up to whole parity periods; the initial weights of ``spec.seed``.
    Each layer gets ``T / (2 τ_ξ)`` samples (the layers take turns). A target the closed form puts
    beyond ``longest`` is an error naming the angle it reaches there."""
    from weightmirror.circuits.brian.network import (angle_terms, best_decay, closed_form_moments, init_weights,
                                                     spiking_mirror_noise)

    hold = spec.noise.correlation_time
    noise = spiking_mirror_noise(spec.neuron, spec.dt, int(round(hold / spec.dt)))
    layers = init_weights(spec)
    terms = [angle_terms(W, B) for W, B in layers]
    moments = [closed_form_moments(noise, W, spec.sigma) for W, _ in layers]

    def worst(seconds: float) -> float:
        return best_decay(terms, moments, max(int(seconds / (2 * hold)), 1), DECAY_GRID)[1]

    if worst(longest) >= target_deg:
        raise CircuitInputError(f"a spiking mirror of layers {list(spec.layers)} reaches only "
                                f"{worst(longest):.1f} deg after {longest:g} s by the noise-aware closed form "
                                f"(target {target_deg:g} deg); give phases.duration (--duration)")
    lo, hi = 2 * hold, longest
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if worst(mid) < target_deg else (mid, hi)
    period = spec.phases.parity_period
    return round(math.ceil(hi / period) * period / spec.dt) * spec.dt


def planned_mirror_decay(spec: CircuitSpec) -> float:
    """The decay per noise sample (with the Hebbian rate equal to it) whose predicted angle after the
    run, largest over the layers, is smallest (``circuits.brian.network.plan_spiking_decay``): rate
    units with rate mode's closed form, spiking units (sample rule) with their spike noise
    (``spiking_mirror_noise``); the initial weights of ``spec.seed``. Each layer gets
    ``duration / (2 τ_ξ)`` samples (the layers take turns)."""
    from weightmirror.circuits.brian.network import init_weights, plan_spiking_decay, spiking_mirror_noise

    hold = spec.noise.correlation_time
    noise = RATE_UNIT_NOISE
    if spec.neuron.spikes and spec.mirror_plasticity == "sample" and not spec.dale:
        noise = spiking_mirror_noise(spec.neuron, spec.dt, int(round(hold / spec.dt)))
    events = max(int(spec.phases.duration / (2 * hold)), 1)
    return plan_spiking_decay(noise, init_weights(spec), events, spec.sigma, DECAY_GRID)[0]


def _numeric_layers(layers) -> bool:
    return (isinstance(layers, (list, tuple)) and len(layers) >= 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in layers))


#: the pilot's seed, offset from the run's, so that its noise is independent of the run it predicts
PILOT_SEED_OFFSET = 1000


def pilot_mirror_moments(spec: CircuitSpec, seconds: float, weights=None, seed_offset: int = PILOT_SEED_OFFSET,
                         build_dir: str | None = None) -> list[dict[str, float]]:
    """Measure each layer's mirror moments in a short simulation of the circuit itself.

    In a mirror phase B is passive (the feedback units read their one-to-one
    copies, never B), so over ``N`` events ``B_N = (1-λ)^N B₀ + η Σ_k
    (1-λ)^{N-k} h_k/κ`` is a linear functional of the Hebbian products
    ``h_k``: how they grow and how they fluctuate is all the prediction needs
    (:func:`circuits.brian.network.predicted_angle_from_moments`). The pilot
    runs ``spec``'s mirror for ``seconds`` with a negligible decay (10⁻¹²) and
    the seed ``spec.seed + seed_offset`` (noise independent of the run it
    predicts), from ``weights`` (default: ``spec``'s), reads the sum
    ``S = ΔB/η = Σ_k h_k/κ`` over each layer's ``N`` events, and fits
    ``S/N = s W + a W∘W`` by least squares over the matrix entries:

    - ``scale`` = s, the mean increment along W (rate units: σ²; spiking
      units: ``1 + κ_shot/κσ²`` in the linear model, less where the
      responders rectify);
    - ``square`` = a, the second-order term of a rectifying responder (its
      rate's curvature times the skew of the spike noise that the source
      shares with its copy; the linear model has none);
    - ``event_variance`` = V = ‖residual of S‖²/N, the variance of one
      event's increment times the inflation from the correlation of
      successive events, as a long exponential average sees it.

    Where the closed form's linear neuron model fails (rectified responders,
    the LIF's rate response), this measures what the circuit does instead.
    """
    from weightmirror.circuits.brian.network import init_weights

    if spec.mirror is None:
        raise CircuitInputError(f"rule {spec.rule.key!r} has no mirror: nothing to measure")
    config = spec.to_dict()
    eta = 1e-4
    config["rule"].update({"lr": eta, "decay": 1e-12, "mirror_batch_size": 1})
    config["seed"] = spec.seed + int(seed_offset)
    config["mirror_pilot"] = 0.0
    config["phases"].update({"schedule": "mirror", "duration": float(seconds), "record_interval": float(seconds),
                             "record_activity": min(float(seconds), 1.0)})
    pilot = CircuitSpec.from_dict(config)
    w0 = init_weights(spec) if weights is None else [(np.asarray(W, float), np.asarray(B, float)) for W, B in weights]
    run = simulate(pilot, None, progress=False, weights=w0, build_dir=build_dir)
    final = run.arrays["weights_final"]
    events = pilot.modes.mirror_samples(seconds / 2)
    out = []
    for l, (W, B0) in enumerate(w0, 1):
        total = (np.asarray(final[f"B{l}"], np.float64) - B0) / eta
        X = np.stack([W.ravel(), (W * W).ravel()], axis=1)
        (s, a), *_ = np.linalg.lstsq(X, total.ravel() / events, rcond=None)
        resid = total.ravel() - events * (X @ np.array([s, a]))
        out.append({"scale": float(s), "square": float(a), "event_variance": float(resid @ resid) / events,
                    "events": int(events), "seconds": float(seconds)})
    return out
