"""Build a :class:`~circuits.spec.CircuitSpec` as Brian2 neuron populations.

Populations (``l = 0..L``)
--------------------------
``Y_l`` (forward, ``y_l``) and ``D_l`` (feedback, ``δ_l``), both rate units

    τ dv/dt = -v + I            (integrated exactly)

``Y_l``: ``I = (1 - src)·drive + src·ξ``. ``drive`` is the summed input of
the forward synapses ``W_l`` (the data for ``l = 0``, in engaged mode);
``ξ`` is the layer's own noise (a Gaussian sample per unit, redrawn every
noise correlation time); ``src = 1`` only in mirror mode while layer ``l`` is
a noise source. The output is ``y = φ(v)`` in engaged mode (φ = ReLU for
hidden layers) and ``y = v`` in mirror mode (the mirror reads linear
responses, as ``WeightMirror(response="linear")``).

``D_l``: ``I = mirror_on·ŷ + engaged_on·e`` where ``ŷ`` is the one-to-one copy
of ``y_l`` (synapses ``Y_l → D_l``) and ``e = ŷ - target`` for the output
layer, ``e = φ'(v_l) ⊙ Σ B δ_{l+1}`` below it (summed input of ``B_{l+1}``).

Synapses
--------
``W_l``: ``Y_{l-1} → Y_l``, ``drive_post = Σ w·y_pre``; ``B_l``: ``D_l →
D_{l-1}``, ``fb_post = Σ b·δ_pre``; the one-to-one ``Y_l → D_l`` (copy of y
and φ') and ``D_l → Y_l`` (the cell's teaching signal δ for W's plasticity).
Synapse ``k`` of ``W_l`` connects ``i = k // n_l`` to ``j = k % n_l`` and holds
``W[j, i]``; synapse ``k`` of ``B_l`` connects ``δ_l[i]`` to ``δ_{l-1}[j]`` and
holds ``layer.B[i, j]`` (W's layout, the paper's ``Bᵀ``).

Plasticity (every ``plasticity_dt``, gated by shared variables)
---------------------------------------------------------------
- mirror (WM): ``b ← b·e^{-λ_B' Δt} + η_B' Δt · δ_pre δ_post`` while layer
  ``l-1`` is the noise source of ``B_l``;
- engaged: ``w ← w·e^{-λ' Δt} - η_W' Δt · y_pre δ_post`` in the second half
  of each presentation; KP: ``b ← b·e^{-λ' Δt} - η_W' Δt · δ_pre y_post``
  (the same local product in W's layout); FA: B fixed.

W's plasticity is the same under every rule; B's is written by the rule's
builder, registered by config name in :mod:`circuits.brian.plasticity`.

Mirror-mode sources take turns by layer parity (every ``parity_period``):
a source's forward input is silenced, so each ``B_l`` sees the white noise of
layer ``l-1`` and its linear response ``W_l ξ``, independent of the layers
below, exactly as the rate-mode rule draws noise per layer.

Spiking variant: every unit also fires Poisson spikes at ``ν = clip(ν₀ +
g·y, 0, ν_max)`` (``ν₀ + g·δ`` for feedback units); all synapses and
Hebbian terms read the filtered spike train ``a`` decoded as ``(a - ν₀)/g``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..spec import CircuitSpec, SpecError
from . import devices
from .plasticity import STDP_GATE, FeedbackPathway, build_feedback_plasticity, engaged_update, stdp_mirror_code

#: plasticity gates: engaged mode in the learning half of a presentation;
#: mirror mode while the presynaptic layer of W (postsynaptic of B) is the source.
GATE_E = "(engaged_on_post*learn_window(t))"
#: (the mirror samples the hold that just ended: its parity, and only if the previous event was in mirror mode)
GATE_M = "(armed*mirror_on_post*(1 - abs(parity(t - {half_dt}*second) - source_parity)))"

#: Spiking units' mirror (sample rule): each feedback unit's decoded train enters the Hebbian product less
#: its own running mean over this many past events of the same parity regime (its layer the noise source,
#: or not). A decoded train's mean is not exactly 0: a LIF neuron fires a little off its Siegert rate, and a
#: unit whose input carries its sources' spike noise is rectified at 0 Hz and fires above its baseline
#: (responders at 20 Hz measured 22-29 Hz on 784-100-10). Uncentred, E[x y] = Cov(x, y) + E[x] E[y] adds a
#: matrix that is not W's direction, and E[y] multiplies every source sample's error into a whole column of
#: B. Centring by the regime's own mean (the covariance rule; Sejnowski 1977) keeps E[h] = Cov(x, y) ∝ W.
#: 200 events put the mean's own error at ~7 % of a sample's spread, a slowly varying offset that adds
#: ~0.3 % to the product's variance.
CENTRING_EVENTS = 200

#: Brian2 code of one noise sample per unit, by ``spec.noise_distribution`` (variance s_noise²).
NOISE_CODE = {
    "gaussian": "s_noise*randn()",
    "uniform": "s_noise*sqrt(12.0)*(rand() - 0.5)",
}

__all__ = ["BrianCircuit", "init_weights", "unit_noise", "filter_gain", "mirror_gain", "lif_mirror_gain", "stdp_mirror_gain", "shot_noise_gain", "mirror_mean_scale", "closed_form_moments", "predicted_angle_from_moments", "angle_terms", "angle_from_terms", "spiking_mirror_responses",
           "spiking_mirror_noise", "predicted_spiking_angle", "spiking_angle_band", "plan_spiking_decay",
           "lif_equations",
           "lif_group_options", "lif_namespace", "PopulationNames",
           "NOISE_CODE"]


def unit_noise(distribution: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance samples of ``distribution`` (``NOISE_CODE``'s, before the amplitude)."""
    if distribution == "gaussian":
        return rng.standard_normal(shape)
    return math.sqrt(12.0) * (rng.random(shape) - 0.5)


def init_weights(spec: CircuitSpec, seed: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial ``(W, B)`` per weight layer (W's layout, float64).

    ``W ~ N(0, gain/n_in)`` (He: gain 2, LeCun: 1); ``B`` from the rule's
    ``init_feedback`` (circuits.rules), so rate mode and circuit mode start
    alike for the same seed.
    """
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    gain = 2.0 if spec.init == "he" else 1.0
    out = []
    for n_in, n_out in zip(spec.layers[:-1], spec.layers[1:]):
        W = (rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(math.sqrt(gain / n_in)))
        B = spec.rule.init_feedback(W, np, rng)
        out.append((W.astype(np.float64), np.asarray(B, dtype=np.float64)))
    return out


def _step_response(taus: list[float], grid: float, n: int) -> np.ndarray:
    """``S(u) = ∫_0^u k`` on ``u = 0, grid, ..., (n-1)·grid`` for the kernel
    ``k`` = chain of unit-area exponential filters (step response of the chain)."""
    from scipy.signal import lfilter

    s = np.ones(n)
    for tau in taus:
        alpha = math.exp(-grid / tau)
        s = lfilter([1 - alpha], [1, -alpha], s)
    return np.concatenate([[0.0], s[:-1]])


def filter_gain(taus_a: list[float], taus_b: list[float], hold: float) -> float:
    """``E[(k_a∗ξ)(t) (k_b∗ξ)(t)] / s²`` for held noise ``ξ`` (variance s²).

    ``ξ`` holds an independent sample for ``hold`` seconds; ``k_a``, ``k_b``
    are chains of exponential filters (unit area); averaged over the phase of
    ``t`` within a hold interval.
    """
    grid = min(list(taus_a) + list(taus_b) + [hold]) / 50.0
    span = 30.0 * (sum(taus_a) + sum(taus_b)) + 2 * hold
    n = int(math.ceil(span / grid)) + 2
    u = np.arange(n) * grid
    Sa = _step_response(taus_a, grid, n)
    Sb = _step_response(taus_b, grid, n)
    phases = (np.arange(200) + 0.5) / 200 * hold
    K = int(math.ceil(span / hold)) + 1
    total = 0.0
    for jj in range(K):
        xa = phases + jj * hold
        xb = np.clip(xa - hold, 0.0, None)
        A = np.interp(xa, u, Sa) - np.interp(xb, u, Sa)
        Bv = np.interp(xa, u, Sb) - np.interp(xb, u, Sb)
        total += float(np.mean(A * Bv))
    return total


def mirror_gain(tau: float, dt: float, hold_steps: int, tau_trace: float | None = None) -> float:
    """``E[δ_l δ_{l-1}ᵀ] = κ σ² W`` at a mirror plasticity event.

    Exact for the discrete-time network as Brian2 runs it (rate neurons):
    each step the summed inputs are computed from the previous step's
    outputs (one step per synaptic hop), then every unit is integrated
    exactly, ``v ← a v + (1-a) I`` with ``a = e^{-dt/τ}``. The noise sample
    is held for ``hold_steps`` steps and the Hebbian product is taken just
    before the next sample, from the source's copy ``δ_{l-1}`` and the
    response's copy ``δ_l``. κ sums, over past samples, the product of the
    two copies' responses to a unit sample (samples are independent). With
    ``tau_trace`` (spiking variant) every output is the expected filtered
    spike train (``(a - ν₀)/g``), one more exponential filter.
    """
    a = math.exp(-dt / tau)
    at = math.exp(-dt / tau_trace) if tau_trace else None
    K = int(hold_steps)
    slow = max(tau, tau_trace or 0.0)
    M = int(math.ceil(60 * slow / (K * dt))) + 3
    names = ("src", "resp", "dsrc", "dresp")
    v = dict.fromkeys(names, 0.0)
    r = dict.fromkeys(names, 0.0)
    kappa = 0.0
    for n in range(M * K):
        xi = 1.0 if n < K else 0.0
        if n % K == 0 and n > 0:  # a plasticity event reads the previous step's outputs
            kappa += r["dsrc"] * r["dresp"]
        inputs = {"src": xi, "resp": r["src"], "dsrc": r["src"], "dresp": r["resp"]}
        for k in names:
            v[k] = a * v[k] + (1 - a) * inputs[k]
            r[k] = v[k] if at is None else at * r[k] + (1 - at) * v[k]
    return kappa


def lif_equations(var: str) -> str:
    """Brian2 equations of a LIF unit that carries ``var`` (a dimensionless signal) in its rate.

    The membrane of ``circuits.lif`` with drive ``mu0 + kv*var`` (``mu0``,
    ``kv`` from :meth:`NeuronModel.lif_code`: it fires ``nu0 + gain*var`` to
    first order), the filtered spike train ``a`` and its decoded value ``r``.
    Namespace: ``v_rest, mu0, kv, tau_m, v_noise, tau_a, nu0, gain``.
    """
    return (f"dV/dt = (v_rest + mu0 + kv*{var} - V)/tau_m + v_noise*sqrt(2/tau_m)*xi : volt (unless refractory)\n"
            "da/dt = -a/tau_a : Hz\n"
            "r = (a - nu0)/gain : 1\n")


def lif_group_options(neuron) -> dict:
    """``NeuronGroup`` keywords of a LIF population: threshold, reset (the trace jumps), refractoriness,
    and Euler-Maruyama integration (the membrane noise makes the equations stochastic)."""
    from brian2 import second

    return dict(threshold="V > v_th", reset="V = v_reset\na += 1/tau_a", refractory=neuron.refractory * second,
                method="euler")


def lif_namespace(neuron) -> dict:
    """The constants :func:`lif_equations` and :func:`lif_group_options` read, with units."""
    from brian2 import Hz, second, volt

    code = neuron.lif_code()
    return dict(tau_m=neuron.tau_m * second, v_rest=neuron.v_rest * volt, v_th=neuron.v_threshold * volt,
                v_reset=neuron.v_reset * volt, v_noise=neuron.v_noise * volt, tau_syn=neuron.tau_syn * second,
                mu0=code.mu0 * volt, kv=code.k * volt, tau_a=neuron.tau_trace * second,
                nu0=neuron.baseline_rate * Hz, gain=neuron.gain * Hz)


def spiking_mirror_responses(neuron, dt: float, hold_steps: int, shot: bool | str = False) -> dict[str, np.ndarray]:
    """Expected responses of the mirror's four spiking units to one noise sample of unit size.

    ``shot = True`` (or ``"src"``): instead, to one extra spike of the source
    unit (its rate stage carries ``1/(g dt)`` for one step, which its train
    and, for LIF, the forward synapses read), the response that the source's
    spike noise drives in both feedback units; ``"resp"``, ``"dsrc"``,
    ``"dresp"``: one extra spike of that unit (its own train).

    The source unit ``y_{l-1}`` holds the sample for ``hold_steps`` steps; the
    responding unit ``y_l`` reads it through the forward synapses; the
    feedback units ``δ_{l-1}`` (``dsrc``) and ``δ_l`` (``dresp``) copy them
    one to one. For each of ``dsrc``, ``dresp``: ``"<unit>_m"``, the rate
    stage (the deviation of the firing rate from ν₀, over g), and
    ``"<unit>_r"``, the decoded filtered spike train, after every step.

    Poisson units: ``v`` integrated exactly, the rate is ``ν₀ + g v`` at once,
    the forward synapses read the source's decoded train. LIF units: ``v``
    by Euler's method (LIF groups are stochastic), then the membrane, whose
    rate response is taken as one more exponential low-pass of time
    constant ``τ_m`` (exact at low frequencies; a noisy LIF neuron follows
    fast input changes somewhat faster, so κ is slightly underestimated and
    B's scale, not its direction, slightly overestimated); the forward hop
    is the synaptic current (``τ_syn``) that the source's spikes drive,
    ``neuron.delay_forward`` late. The one-to-one copies read decoded trains.
    One step per hop, as Brian2 runs it.
    """
    lif = neuron.kind == "lif"
    shot = "src" if shot is True else (shot or "")
    a_v = 1.0 - dt / neuron.tau if lif else math.exp(-dt / neuron.tau)
    a_m = math.exp(-dt / neuron.tau_m) if lif else 0.0  # Poisson: the rate follows v at once
    a_t = math.exp(-dt / neuron.tau_trace)
    a_s = math.exp(-dt / neuron.tau_syn)
    K = int(hold_steps)
    slow = neuron.tau + neuron.tau_trace + (neuron.tau_m + neuron.tau_syn + neuron.delay_forward if lif else 0.0)
    n_steps = (int(math.ceil(60 * slow / (K * dt))) + 3) * K

    def unit():
        return {"v": 0.0, "m": 0.0, "r": 0.0}

    def advance(u, inp):
        u["v"] = a_v * u["v"] + (1 - a_v) * inp
        u["m"] = a_m * u["m"] + (1 - a_m) * u["v"]
        u["r"] = a_t * u["r"] + (1 - a_t) * u["m"]

    src, resp, dsrc, dresp = unit(), unit(), unit(), unit()
    syn = 0.0
    lag = int(round(neuron.delay_forward / dt)) if lif else 0
    sent = [0.0] * (lag + 1)  # the source's rate, as the forward synapses deliver it lag steps later
    out = {k: np.zeros(n_steps) for k in ("dsrc_m", "dsrc_r", "dresp_m", "dresp_r")}
    for n in range(n_steps):
        xi = 1.0 if n < K and not shot else 0.0
        if lif:
            inputs = (xi, syn, src["r"], resp["r"])
            spike = 1.0 / (neuron.gain * dt) if shot == "src" and n == 1 else 0.0  # step 0's extra spike, sent on
            sent = sent[1:] + [src["m"] + spike]
            syn = a_s * syn + (1 - a_s) * sent[0]  # the current the source's spikes drive in the response
        else:
            inputs = (xi, src["r"], src["r"], resp["r"])
        for u, inp in zip((src, resp, dsrc, dresp), inputs):
            advance(u, inp)
        if shot and n == 0:  # the spike: one step of rate 1/dt in the unit's train (LIF source: and its synapses)
            {"src": src, "resp": resp, "dsrc": dsrc, "dresp": dresp}[shot]["r"] += (1 - a_t) / (neuron.gain * dt)
        for name, u in (("dsrc", dsrc), ("dresp", dresp)):
            out[f"{name}_m"][n] = u["m"]
            out[f"{name}_r"][n] = u["r"]
    return out


def spiking_mirror_noise(neuron, dt: float, hold_steps: int) -> dict[str, float]:
    """The moments of the sample rule's two factors at a mirror event, per unit of σ² (spiking units).

    With ``x`` the source's feedback copy ``δ_{l-1,j}`` and ``y`` the response's
    ``δ_{l,i}`` (decoded trains, read at an event), for a layer ``W``:

    - ``E[x y] = (κ σ² + κ_shot) W_ij`` (``kappa``, ``kappa_shot``);
    - ``E[x²] = s_x σ² + n_x``: the held noise's share (``s_x = Σ_j h_x(jK⁻)²``
      over past samples) and the spike noise of the source's and the copy's
      own trains (``n_x = ν₀ dt Σ_n h²`` of each, as for any shot noise);
    - ``E[y²] = ‖W_i‖² (s_y σ² + n_yW) + n_y``: the noise and the source's
      spikes through W, and the response's and its copy's own spikes;
    - ``correlation``: ``1 + 2 Σ_k ρ_x(k) ρ_y(k)``, how much the correlation of
      successive events' products (trains filtered longer than a sample is
      held) inflates the variance of their exponential average (the unit-
      weighted autocorrelations; exact for Gaussian factors up to the small
      cross term). Approximate: held noise and shots with a unit's
      normalisation, the W-weighting of ``y``'s parts not separated.

    Spikes are taken as Poisson at ν₀ (Bernoulli per step for Poisson units).
    """
    K = int(hold_steps)
    at = np.arange(K - 1, 10**9, K)
    h = spiking_mirror_responses(neuron, dt, hold_steps)
    at = at[at < len(h["dsrc_r"])]
    rate = neuron.baseline_rate * dt * ((1 - neuron.baseline_rate * dt) if neuron.kind == "spiking" else 1.0)
    shots = {u: spiking_mirror_responses(neuron, dt, hold_steps, shot=u) for u in ("src", "resp", "dsrc", "dresp")}

    def autocov(sig, noises, lag: int) -> float:
        """Covariance of a factor at two events ``lag`` samples apart (held noise and shot noises)."""
        a = float(np.sum(sig[at[:len(at) - lag]] * sig[at[lag:]])) if lag < len(at) else 0.0
        for g in noises:
            a += rate * float(np.sum(g[:len(g) - lag * K] * g[lag * K:]))
        return a

    # successive events of one layer read filtered trains that still carry the samples before: their
    # products are correlated, which an exponential average sees as fewer independent events
    x_parts = (h["dsrc_r"], [shots["src"]["dsrc_r"], shots["dsrc"]["dsrc_r"]])
    y_parts = (h["dresp_r"], [shots["src"]["dresp_r"], shots["resp"]["dresp_r"], shots["dresp"]["dresp_r"]])
    x0, y0 = autocov(*x_parts, 0), autocov(*y_parts, 0)
    inflation = 1.0
    for lag in range(1, 200):
        term = autocov(*x_parts, lag) * autocov(*y_parts, lag) / (x0 * y0)
        inflation += 2 * term
        if abs(term) < 1e-6:
            break
    return {
        "kappa": float(np.sum(h["dsrc_r"][at] * h["dresp_r"][at])),
        "kappa_shot": rate * float(np.sum(shots["src"]["dsrc_r"] * shots["src"]["dresp_r"])),
        "s_x": float(np.sum(h["dsrc_r"][at] ** 2)),
        "s_y": float(np.sum(h["dresp_r"][at] ** 2)),
        "n_x": rate * float(np.sum(shots["src"]["dsrc_r"] ** 2) + np.sum(shots["dsrc"]["dsrc_r"] ** 2)),
        "n_yW": rate * float(np.sum(shots["src"]["dresp_r"] ** 2)),
        "n_y": rate * float(np.sum(shots["resp"]["dresp_r"] ** 2) + np.sum(shots["dresp"]["dresp_r"] ** 2)),
        "correlation": inflation,
    }


def mirror_mean_scale(noise: dict[str, float], sigma: float = 1.0, lr_ratio: float = 1.0) -> float:
    """``S`` with ``E[B] → S Wᵀ`` under the sample rule: ``S = (η/λ)(κσ² + κ_shot)/κ``.

    The circuit divides each Hebbian increment by κ, the gain of the mirror's
    own noise (:meth:`BrianCircuit.gains`), so rate units give ``S = (η/λ) σ²``
    as rate mode does, and spiking units ``1 + κ_shot/(κσ²)`` times that: the
    source's spike noise correlates the two factors like the mirror's noise
    (:func:`shot_noise_gain`). ``lr_ratio = η/λ`` per event.
    """
    return float(lr_ratio) * (noise["kappa"] * sigma ** 2 + noise["kappa_shot"]) / noise["kappa"]


def predicted_spiking_angle(noise: dict[str, float], W: np.ndarray, B0: np.ndarray, events: int, decay: float,
                            sigma: float = 1.0, lr_ratio: float = 1.0) -> float:
    """angle(B, Wᵀ) (degrees) after ``events`` mirror events of the sample rule with spike noise.

    Each event adds ``η h`` and keeps ``(1-λ)`` of B (``λ = decay`` per event);
    over events B's mean relaxes to ``M ∝ E[h] ∝ W`` and its fluctuation to
    the stationary variance of an exponential average of independent
    products, ``Var(h_ij) ≈ E[y_i²] E[x_j²] + E[h_ij]²`` (products of jointly
    Gaussian factors). With ``q = (1-λ)^N``:

    ``tan² θ = (q² ‖B₀⊥‖² + (1-q²) λ/(2-λ) S² Σ Var(h)/c²) / (q B₀·Ŵ + (1-q) S ‖W‖)²``

    with ``c = κσ² + κ_shot`` and ``S`` the scale B's mean tends to, ``M = S W``:
    the circuit divides each increment by κ (the noise's gain alone), so
    ``S = (η/λ) c/κ`` (``lr_ratio = η/λ`` per event) — for spiking units the
    source's shot noise makes S many times 1 (:func:`shot_noise_gain`), and
    B₀ is forgotten relative to that larger mean. For rate units (``n = 0``,
    ``s = κ = 1``, ``S = σ²``) the fluctuation term is the closed form of
    ``WeightMirror``, ``ε² = F λ/2``.
    """
    return predicted_angle_from_moments(closed_form_moments(noise, W, sigma), W, B0, events, decay, lr_ratio)


def closed_form_moments(noise: dict[str, float], W: np.ndarray, sigma: float = 1.0) -> dict[str, float]:
    """One layer's mirror moments from the closed form of :func:`spiking_mirror_noise`.

    ``scale``: ``E[h]/κ = (c/κ) W`` per unit of W (``c = κσ² + κ_shot``, for ``η = λ``);
    ``event_variance``: ``Σ_ij Var(h_ij)/κ² · correlation``, the variance one event's increment
    (over η) would have if events were independent, times the inflation that the correlation of
    successive events gives a long exponential average. :func:`pilot_mirror_moments` in
    ``sims.circuit`` measures the same two numbers from a short simulation of the circuit itself.
    """
    W = np.asarray(W, dtype=np.float64)
    c = noise["kappa"] * sigma ** 2 + noise["kappa_shot"]
    ex2 = noise["s_x"] * sigma ** 2 + noise["n_x"]
    ey2 = (W ** 2).sum(axis=1) * (noise["s_y"] * sigma ** 2 + noise["n_yW"]) + noise["n_y"]
    var = float(ey2.sum() * W.shape[1] * ex2 + ((c * W) ** 2).sum())
    return {"scale": c / noise["kappa"], "event_variance": var / noise["kappa"] ** 2 * noise.get("correlation", 1.0)}


def predicted_angle_from_moments(moments: dict[str, float], W: np.ndarray, B0: np.ndarray, events: int,
                                 decay: float, lr_ratio: float = 1.0) -> float:
    """angle(B, Wᵀ) (degrees) after ``events`` events ``B ← (1-λ) B + η h/κ`` of one layer.

    With ``q = (1-λ)^N``, ``r = η/λ`` and the moments of one event's increment
    ``E[h/κ] = s W + a W∘W`` (``moments["scale"]``, ``moments.get("square", 0)``)
    and ``V`` its event variance (``moments["event_variance"]``, see
    :func:`closed_form_moments`): B's mean is ``M = q B₀ + (1-q) r (s W + a W∘W)``
    and its fluctuation, an exponential average of the increments, has total
    variance ``(1-q²) λ/(2-λ) r² V``, so

    ``tan θ = √(‖M⊥‖² + (1-q²) λ/(2-λ) r² V) / (M·Ŵ)``

    (``⊥``: the part orthogonal to W). The ``W∘W`` term is what a rectifying
    responder adds: its rate's curvature times the skewed spike noise that the
    source shares with its feedback copy (second order in W; the closed form,
    linear, has ``a = 0``; ``sims.circuit.pilot_mirror_moments`` measures it).
    """
    terms = angle_terms(W, B0)
    return float(angle_from_terms(terms, moments, events, decay, lr_ratio))


def angle_terms(W: np.ndarray, B0: np.ndarray) -> dict[str, float]:
    """The scalars of ``(W, B₀)`` that :func:`angle_from_terms` needs (one pass over the matrix):
    ``‖W‖``, ``B₀·Ŵ``, ``‖B₀⊥‖²``, and for the ``W∘W`` term ``(W∘W)·Ŵ``, ``B₀⊥·(W∘W)⊥``, ``‖(W∘W)⊥‖²``."""
    W = np.asarray(W, dtype=np.float64)
    B0 = np.asarray(B0, dtype=np.float64)
    norm = float(np.linalg.norm(W))
    w_hat = W / norm
    b_along = float((B0 * w_hat).sum())
    b_perp = B0 - b_along * w_hat
    sq = W * W
    sq_along = float((sq * w_hat).sum())
    sq_perp = sq - sq_along * w_hat
    return {"norm": norm, "b_along": b_along, "b_perp2": float((b_perp ** 2).sum()), "sq_along": sq_along,
            "cross": float((b_perp * sq_perp).sum()), "sq_perp2": float((sq_perp ** 2).sum())}


def angle_from_terms(terms: dict[str, float], moments: dict[str, float], events, decay, lr_ratio=1.0):
    """:func:`predicted_angle_from_moments` from :func:`angle_terms`; ``events`` and ``decay`` may be arrays
    (NumPy broadcasting), so a planner scans a grid of decays in one call."""
    r = np.asarray(lr_ratio, dtype=np.float64)
    decay = np.asarray(decay, dtype=np.float64)
    q = (1.0 - decay) ** np.asarray(events, dtype=np.float64)
    a = float(moments.get("square", 0.0))
    along = q * terms["b_along"] + (1 - q) * r * (moments["scale"] * terms["norm"] + a * terms["sq_along"])
    mean_perp2 = q ** 2 * terms["b_perp2"] + 2 * q * (1 - q) * r * a * terms["cross"] + \
        ((1 - q) * r * a) ** 2 * terms["sq_perp2"]
    perp2 = mean_perp2 + (1 - q ** 2) * decay / (2 - decay) * r ** 2 * moments["event_variance"]
    return np.degrees(np.arctan2(np.sqrt(np.maximum(perp2, 0.0)), along))


def plan_spiking_decay(noise: dict[str, float] | None, layers, events: int, sigma: float = 1.0,
                       grid=None, moments=None) -> tuple[float, float]:
    """``(λ, θ)``: the decay per event (with the Hebbian rate equal to it: B's mean tends to
    ``S Wᵀ``, :func:`mirror_mean_scale`) among ``grid`` (default: 80 values from 10⁻⁴ to 0.3, log-spaced) whose largest
    :func:`predicted_spiking_angle` over ``layers`` (``[(W, B₀)]``) after ``events`` events is
    smallest, and that angle (degrees). Too large a λ leaves B as noisy as a few events; too small
    a λ leaves it near B₀: the closed form picks the trade-off for a run of a given length.
    ``moments`` (one dict per layer, e.g. measured by ``sims.circuit.pilot_mirror_moments``)
    replace the closed form's (``noise`` is then not read).
    """
    grid = np.asarray(np.geomspace(1e-4, 0.3, 80) if grid is None else grid, dtype=np.float64)
    if moments is None:
        moments = [closed_form_moments(noise, W, sigma) for W, _ in layers]
    terms = [angle_terms(W, B) for W, B in layers]
    return best_decay(terms, moments, events, grid)


def best_decay(terms, moments, events: int, grid) -> tuple[float, float]:
    """:func:`plan_spiking_decay` from the layers' :func:`angle_terms` (the grid scanned at once)."""
    grid = np.asarray(grid, dtype=np.float64)
    worst = np.max([angle_from_terms(t, m, events, grid) for t, m in zip(terms, moments)], axis=0)
    k = int(np.argmin(worst))
    return float(grid[k]), float(worst[k])


def spiking_angle_band(noise: dict[str, float], W: np.ndarray, B0: np.ndarray, events: int, decay: float,
                       sigma: float = 1.0, draws: int = 2000, seed: int = 0, quantiles=(0.1, 0.9),
                       lr_ratio: float = 1.0) -> tuple[float, float]:
    """The spread of angle(B, Wᵀ) that the noise-aware closed form expects over realisations (degrees).

    Under the same model as :func:`predicted_spiking_angle`, after ``N = events`` events B is
    Gaussian around its mean, ``B_N = M + E`` with ``M = q B₀ + (1-q) S W`` and independent entries
    ``E_ij ~ N(0, s_ij²)``, ``s_ij² = (1-q²) λ/(2-λ) S² Var(h_ij)/c² · correlation`` (``q = (1-λ)^N``,
    ``S`` = :func:`mirror_mean_scale`;
    ``Var(h_ij) ≈ E[y_i²] E[x_j²] + (c W_ij)²``). With ``ŵ = W/‖W‖`` the angle needs three
    scalars only: ``cos θ = (M·ŵ + u) / √(‖M‖² + 2v + ‖E‖²)``, where ``u = E·ŵ`` and ``v = M·E``
    are jointly Gaussian (variances ``Σ s² ŵ²``, ``Σ s² M²``, covariance ``Σ s² ŵ M``) and
    ``‖E‖²`` (mean ``Σ s²``, variance ``2 Σ s⁴``, uncorrelated with them) is drawn from the gamma
    law of those two moments. ``draws`` draws of the three give the ``quantiles`` of θ: the band a
    single run is expected to fall in if the model holds (it says nothing of the model's own
    error, e.g. a saturating rate code). The cost is one pass over the matrix, whatever ``draws``.
    """
    W = np.asarray(W, dtype=np.float64)
    B0 = np.asarray(B0, dtype=np.float64)
    c = noise["kappa"] * sigma ** 2 + noise["kappa_shot"]
    ex2 = noise["s_x"] * sigma ** 2 + noise["n_x"]
    ey2 = (W ** 2).sum(axis=1) * (noise["s_y"] * sigma ** 2 + noise["n_yW"]) + noise["n_y"]
    scale = mirror_mean_scale(noise, sigma, lr_ratio)
    var = (ey2[:, None] * ex2 + (c * W) ** 2) / c ** 2 * scale ** 2
    q = (1.0 - decay) ** events
    s2 = (1 - q ** 2) * decay / (2 - decay) * var * noise.get("correlation", 1.0)
    M = q * B0 + (1 - q) * scale * W
    w = W / np.linalg.norm(W)
    cov = np.array([[(s2 * w * w).sum(), (s2 * w * M).sum()],
                    [(s2 * w * M).sum(), (s2 * M * M).sum()]])
    rng = np.random.default_rng(seed)
    u, v = rng.multivariate_normal([0.0, 0.0], cov, size=int(draws), method="eigh").T
    mean_e2, var_e2 = float(s2.sum()), float(2 * (s2 ** 2).sum())
    e2 = rng.gamma(mean_e2 ** 2 / var_e2, var_e2 / mean_e2, size=int(draws)) if var_e2 > 0 else np.full(int(draws), mean_e2)
    norm2 = np.maximum(float((M * M).sum()) + 2 * v + e2, 1e-300)
    cos = np.clip((float((M * w).sum()) + u) / np.sqrt(norm2), -1.0, 1.0)
    lo, hi = np.quantile(np.degrees(np.arccos(cos)), quantiles)
    return float(lo), float(hi)


def lif_mirror_gain(neuron, dt: float, hold_steps: int) -> float:
    """κ of :func:`mirror_gain` for LIF neurons: ``Σ_j δ_{l-1}(jK⁻) δ_l(jK⁻)`` of the expected responses of
    :func:`spiking_mirror_responses` (an approximation of the LIF rate response, stated there)."""
    h = spiking_mirror_responses(neuron, dt, hold_steps)
    K = int(hold_steps)
    at = np.arange(K - 1, len(h["dsrc_r"]), K)  # the event at step jK (j ≥ 1) reads the outputs of step jK - 1
    return float(np.sum(h["dsrc_r"][at] * h["dresp_r"][at]))


def shot_noise_gain(neuron, dt: float, hold_steps: int, rule: str = "sample") -> float:
    """What the source's own spike noise adds to the mirror's κ (per unit of σ², for a mean rate ν₀).

    The source population's spikes are a Poisson-like train around its rate;
    that noise reaches the Hebbian term twice, through the source's own
    feedback copy ``δ_{l-1}`` and, weighted by W, through the responding
    layer into ``δ_l``, so it correlates like the mirror's noise and adds to
    the expected Hebbian product in W's direction:
    ``E[δ_l δ_{l-1}] = (κ σ² + κ_shot) W`` with, for spikes at rate ν₀,
    ``κ_shot = ν₀ dt Σ_n h_pre[n] h_post[n]`` over the responses to one spike
    (``shot=True`` of :func:`spiking_mirror_responses`): the stationary
    covariance of two filtered shot noises. For the spike-timing rule the
    pairs are (rate, train) both ways, halved as in :func:`stdp_mirror_gain`.
    Independent noise (the feedback units' own spikes, the responding
    layer's) adds variance but no mean. Returned as ``κ_shot / κ``, the
    relative excess of B's expected scale over ``(η_B' σ²/λ_B') Wᵀ``.
    """
    h = spiking_mirror_responses(neuron, dt, hold_steps, shot=True)
    # spikes per step: Bernoulli(ν₀ dt) for Poisson units (variance ν₀ dt (1 - ν₀ dt)); LIF trains taken as
    # Poisson (their irregular firing at the baseline has a Fano factor near 1)
    rate = neuron.baseline_rate * dt * ((1 - neuron.baseline_rate * dt) if neuron.kind == "spiking" else 1.0)
    if rule == "stdp":
        shot = rate * float(np.sum(h["dresp_m"] * h["dsrc_r"] + h["dsrc_m"] * h["dresp_r"])) / 2
        return shot / stdp_mirror_gain(neuron, dt, hold_steps)
    shot = rate * float(np.sum(h["dsrc_r"] * h["dresp_r"]))
    kappa = lif_mirror_gain(neuron, dt, hold_steps) if neuron.kind == "lif" else \
        mirror_gain(neuron.tau, dt, hold_steps, neuron.tau_trace)
    return shot / kappa


def stdp_mirror_gain(neuron, dt: float, hold_steps: int) -> float:
    """κ of the spike-timing mirror rule (:func:`circuits.brian.plasticity.stdp_mirror_code`).

    That rule changes ``b`` at each presynaptic spike by the postsynaptic
    decoded train and at each postsynaptic spike by the presynaptic one, so
    its expected change per second is ``c g E[m_pre r_post + m_post r_pre]``
    (``m``: rate deviations over g, ``r``: decoded trains; the baseline
    parts average out, the noise having zero mean). For held white noise of
    variance σ², ``E[m_pre r_post + m_post r_pre] = 2 κ σ² W`` with the time
    average ``κ = (1/K) Σ_n (h_{m,pre} h_{r,post} + h_{m,post} h_{r,pre})[n] / 2``
    over the responses to one sample (all lags, since samples are
    independent).
    """
    h = spiking_mirror_responses(neuron, dt, hold_steps)
    both = h["dresp_m"] * h["dsrc_r"] + h["dsrc_m"] * h["dresp_r"]
    return float(np.sum(both) / (2 * int(hold_steps)))


@dataclass(frozen=True)
class PopulationNames:
    forward: tuple[str, ...]
    feedback: tuple[str, ...]


class BrianCircuit:
    """The Brian2 network of one circuit declaration.

    Parameters
    ----------
    spec : the declaration.
    weights : ``[(W_l, B_l)]`` NumPy matrices in W's layout (``(n_l, n_{l-1})``
        each); None draws them with :func:`init_weights`.
    stimulus : ``(x, labels)`` for engaged mode: ``x`` of shape
        ``(n_presentations, n_0)`` shown in order, one per presentation
        (the caller repeats/permutes), integer labels of length
        ``n_presentations``.
    directory : standalone build directory (a temporary one when None).
    record_weights : record W and B every ``record_interval`` (for metrics).
    spike_neurons : neurons per population whose spikes are recorded
        (spiking variant).
    """

    def __init__(self, spec: CircuitSpec, weights=None, stimulus=None, directory: str | None = None,
                 record_weights: bool = True, record_rates: bool = True, spike_neurons: int = 20):
        self.spec = spec
        self.weights_in = [(np.array(W, dtype=np.float64), np.array(B, dtype=np.float64))
                           for W, B in (weights if weights is not None else init_weights(spec))]
        self._check_weights(self.weights_in)
        self.stimulus = stimulus
        self.record_weights = record_weights
        self.record_rates = record_rates
        self.spike_neurons = spike_neurons
        self.directory = devices.activate(spec.device, spec.threads, directory)
        self.standalone = devices.is_standalone(spec.device)
        self.simulated = 0.0
        #: ``(phase, start, stop)`` of every run_phase call, in simulated seconds
        self.segments: list[tuple[str, float, float]] = []
        self._finished = False
        try:
            self._build()
        except Exception:
            devices.release(spec.device)
            raise

    # ------------------------------------------------------------------
    def _check_weights(self, weights) -> None:
        L = self.spec.n_weight_layers
        if len(weights) != L:
            raise SpecError(f"weights: expected {L} (W, B) pairs for layers {list(self.spec.layers)}, got {len(weights)}")
        for l, (W, B) in enumerate(weights, 1):
            shape = (self.spec.layers[l], self.spec.layers[l - 1])
            if W.shape != shape or B.shape != shape:
                raise SpecError(f"weights: layer {l} needs W and B of shape {shape} (W's layout), "
                                f"got {W.shape} and {B.shape}")

    @property
    def names(self) -> PopulationNames:
        n = len(self.spec.layers)
        return PopulationNames(tuple(f"y{l}" for l in range(n)), tuple(f"delta{l}" for l in range(n)))

    def gains(self) -> dict[str, float]:
        """Noise amplitude (σ, as in rate mode) and the mirror's settled gain κ (see :func:`mirror_gain`).

        LIF neurons: :func:`lif_mirror_gain`; the spike-timing mirror
        (``mirror_plasticity = "stdp"``): :func:`stdp_mirror_gain`.
        """
        spec = self.spec
        hold = int(round(spec.noise.correlation_time / spec.dt))
        neuron = spec.neuron
        if spec.mirror_plasticity == "stdp":
            return {"noise_amplitude": spec.sigma, "kappa": stdp_mirror_gain(neuron, spec.dt, hold)}
        if neuron.kind == "lif":
            return {"noise_amplitude": spec.sigma, "kappa": lif_mirror_gain(neuron, spec.dt, hold)}
        trace = neuron.tau_trace if neuron.spikes else None
        return {"noise_amplitude": spec.sigma, "kappa": mirror_gain(neuron.tau, spec.dt, hold, trace)}

    # ------------------------------------------------------------------
    def _build(self) -> None:
        import brian2 as b2
        from brian2 import (Hz, NeuronGroup, Network, PopulationRateMonitor, SpikeMonitor, StateMonitor,
                            Synapses, TimedArray, defaultclock, second)

        spec = self.spec
        nL = len(spec.layers)
        L = nL - 1
        dt = spec.dt * second
        defaultclock.dt = dt
        b2.seed(spec.seed)
        spiking = spec.neuron.spikes
        lif = spec.neuron.kind == "lif"
        stdp = spec.mirror_plasticity == "stdp" and spec.mirror is not None
        g = self.gains()
        self.kappa = g["kappa"]
        gate_m = GATE_M.format(half_dt=repr(float(spec.dt) / 2))
        eta_e, lam_e = spec.engaged_rates()
        dtp = spec.plasticity_dt
        ns = {
            "tau": spec.neuron.tau * second,
            "nu0": spec.neuron.baseline_rate * Hz,
            "gain": spec.neuron.gain * Hz,
            "numax": spec.neuron.max_rate * Hz,
            "tau_a": spec.neuron.tau_trace * second,
            "s_noise": g["noise_amplitude"],
        }
        if lif:
            ns.update(lif_namespace(spec.neuron))
        # time-dependent inputs -------------------------------------------
        total = spec.phases.duration
        n_par = int(math.ceil(total / spec.phases.parity_period)) + 2
        parity = TimedArray((np.arange(n_par) % 2).astype(float), dt=spec.phases.parity_period * second, name="parity")
        T = spec.phases.presentation
        n_pres = int(math.ceil(total / T)) + 2
        learn = TimedArray(np.tile([0.0, 1.0], n_pres), dt=(T / 2) * second, name="learn_window")
        ns.update(parity=parity, learn_window=learn)
        engaged_used = spec.phases.schedule != "mirror"
        if engaged_used:
            if self.stimulus is None:
                raise SpecError("engaged mode needs data: pass stimulus=(x, labels)")
            x, labels = self.stimulus
            x = np.asarray(x, dtype=np.float64)
            labels = np.asarray(labels, dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != spec.layers[0]:
                raise SpecError(f"stimulus: inputs of shape (n, {spec.layers[0]}) needed, got {x.shape}")
            if labels.shape != (x.shape[0],) or labels.min() < 0 or labels.max() >= spec.layers[-1]:
                raise SpecError(f"stimulus: {x.shape[0]} labels in 0..{spec.layers[-1] - 1} needed")
            reps = int(math.ceil(n_pres / x.shape[0]))
            idx = np.tile(np.arange(x.shape[0]), reps)[:n_pres]
            targets = np.zeros((n_pres, spec.layers[-1]))
            targets[np.arange(n_pres), labels[idx]] = 1.0
            ns["stim"] = TimedArray(x[idx], dt=T * second, name="stim")
            ns["target_values"] = TimedArray(targets, dt=T * second, name="target_values")
            self.presented_labels = labels[idx]
        else:
            self.presented_labels = None

        # A mirror-only run never changes W, and its feedback units do not read B's summed input (only
        # their one-to-one copy), so the LIF synapses' baseline bias Σ_i w ν₀/g is a constant that
        # set_weights computes once, instead of a summed variable over every synapse at every step
        # (which cost more than half of a 784-100-10 LIF mirror's run time).
        constant_offsets = lif and not engaged_used
        self._constant_offsets = constant_offsets
        # spiking units, sample rule, no Dale: the mirror multiplies centred trains (CENTRING_EVENTS)
        centre = (spiking and spec.mirror is not None and spec.mirror_plasticity == "sample" and not spec.dale
                  and spec.mirror_centring)
        self.centred = centre
        noise_code = NOISE_CODE[spec.noise_distribution]
        #: per population y_l, the unit-variance noise samples (one row per hold) when noise.source = "arrays"
        self.noise_samples = None
        if spec.noise.source == "arrays":
            n_holds = int(math.ceil(total / spec.noise.correlation_time)) + 2
            self.noise_samples = [unit_noise(spec.noise_distribution, (n_holds, n), np.random.default_rng(
                [spec.seed, 7919, l])) for l, n in enumerate(spec.layers)]

        # populations --------------------------------------------------------
        def out_eqs(var: str) -> str:
            if not spiking:
                return f"r = {var} : 1\n"
            if lif:
                return lif_equations(var)
            return (f"nu = clip(nu0 + gain*{var}, 0*Hz, numax) : Hz\n"
                    "da/dt = -a/tau_a : Hz\n"
                    "r = (a - nu0)/gain : 1\n")

        def synaptic_input(name: str) -> str:
            """``name``: the summed input of W (``drive``) or B (``fb``) synapses; for LIF the current their
            spikes drive, less its baseline part (see ``NeuronModel``). Under Dale's law the excitatory and
            the inhibitory pathway each write their own part (``_exc``, ``_inh``)."""
            if not lif:
                if spec.dale:
                    return f"{name} = {name}_exc - {name}_inh : 1\n{name}_exc : 1\n{name}_inh : 1\n"
                return f"{name} : 1\n"
            if constant_offsets:  # set from the weights by set_weights
                offset = f"offset_{name} : 1 (constant)\n"
            elif spec.dale:
                offset = (f"offset_{name} = offset_{name}_exc - offset_{name}_inh : 1\noffset_{name}_exc : 1\n"
                          f"offset_{name}_inh : 1\n")
            else:
                offset = f"offset_{name} : 1\n"
            return (f"dI_{name}/dt = -I_{name}/tau_syn : 1\n" + offset +
                    f"{name} = I_{name} - offset_{name} : 1\n")

        if lif:
            spike_kw = lif_group_options(spec.neuron)
        elif spiking:
            spike_kw = dict(threshold="rand() < nu*dt", reset="a += 1/tau_a", method="exact")
        else:
            spike_kw = dict(method="exact")
        Y, D = [], []
        for l in range(nL):
            hidden = 0 < l < L
            use_phi = hidden and spec.neuron.activation == "relu"
            eqs = ("dv/dt = (-v + I_in)/tau : 1\n"
                   "I_in = (1 - src)*drive + src*noise_in : 1\n"
                   "src = mirror_on*(1 - abs(parity(t) - par)) : 1\n"
                   "noise_in : 1\n"
                   "mirror_on : 1 (shared)\n"
                   "engaged_on : 1 (shared)\n"
                   "par : 1 (shared, constant)\n")
            if use_phi:
                eqs += ("y = v + engaged_on*(clip(v, 0, inf) - v) : 1\n"
                        "slope = int(v > 0) : 1\n")
            else:
                eqs += "y = v : 1\n"
            if l > 0:
                eqs += "err : 1\n"
            if l == 0:
                eqs += "drive = engaged_on*stim(t, i) : 1\n" if engaged_used else "drive = 0 : 1\n"
            else:
                eqs += synaptic_input("drive")
            eqs += out_eqs("y")
            G = NeuronGroup(spec.layers[l], eqs, name=f"y{l}", namespace=ns, **spike_kw)
            G.par = l % 2
            if spec.noise.source == "arrays":  # the samples drawn beforehand, played in (noise_samples[l])
                ns[f"noise_values_{l}"] = TimedArray(self.noise_samples[l], dt=spec.noise.correlation_time * second,
                                                     name=f"noise_values_{l}")
                code = f"noise_in = s_noise*noise_values_{l}(t, i)"
            else:
                code = f"noise_in = {noise_code}"
            G.run_regularly(code, dt=spec.noise.correlation_time * second, when="start", order=-1,
                            name=f"y{l}_noise")
            if spiking:
                G.a = spec.neuron.baseline_rate * Hz
            if lif:  # desynchronised: membranes spread between reset and threshold
                G.V = "v_reset + rand()*(v_th - v_reset)"
            Y.append(G)

            top = l == L
            eqs = ("dv/dt = (-v + I_in)/tau : 1\n"
                   "ycopy : 1\n"
                   "mirror_on : 1 (shared)\n"
                   "engaged_on : 1 (shared)\n")
            if top:
                target = "target_values(t, i)" if engaged_used else "0"
                eqs += f"I_in = mirror_on*ycopy + engaged_on*(ycopy - target) : 1\ntarget = {target} : 1\n"
            elif use_phi:
                eqs += "I_in = mirror_on*ycopy + engaged_on*yslope*fb : 1\nyslope : 1\n" + synaptic_input("fb")
            else:
                eqs += "I_in = mirror_on*ycopy + engaged_on*fb : 1\n" + synaptic_input("fb")
            eqs += out_eqs("v")
            if centre:  # the decoded train less its running mean in the present parity regime
                eqs += ("mean_src : 1\nmean_resp : 1\nseen_src : 1\nseen_resp : 1\npar : 1 (shared, constant)\n"
                        f"on_src = 1 - abs(parity(t - {float(spec.dt) / 2!r}*second) - par) : 1\n"
                        "rc = r - on_src*mean_src - (1 - on_src)*mean_resp : 1\n")
            H = NeuronGroup(spec.layers[l], eqs, name=f"delta{l}", namespace=ns, **spike_kw)
            if centre:
                H.par = l % 2
                n = float(CENTRING_EVENTS)
                # the plain mean of the events seen so far, then an exponential average over the last n; after
                # the B updates of this event (order -0.5): an event's product never reads its own sample
                H.run_regularly(f"mean_src += mirror_on*on_src*(r - mean_src)/clip(seen_src + 1, 1, {n!r})\n"
                                f"seen_src += mirror_on*on_src\n"
                                f"mean_resp += mirror_on*(1 - on_src)*(r - mean_resp)/clip(seen_resp + 1, 1, {n!r})\n"
                                f"seen_resp += mirror_on*(1 - on_src)",
                                dt=spec.noise.correlation_time * second, when="groups", order=-0.45,
                                name=f"delta{l}_centring")
            if spiking:
                H.a = spec.neuron.baseline_rate * Hz
            if lif:
                H.V = "v_reset + rand()*(v_th - v_reset)"
            D.append(H)

        # one-to-one links -------------------------------------------------
        objects = list(Y) + list(D)
        for l in range(nL):
            hidden = 0 < l < L
            model = "ycopy_post = r_pre : 1 (summed)"
            if hidden and spec.neuron.activation == "relu":
                model += "\nyslope_post = slope_pre : 1 (summed)"
            up = Synapses(Y[l], D[l], model, name=f"y{l}_to_delta{l}", namespace=ns)
            up.connect(j="i")
            objects.append(up)
            if l > 0:
                down = Synapses(D[l], Y[l], "err_post = r_pre : 1 (summed)", name=f"delta{l}_to_y{l}", namespace=ns)
                down.connect(j="i")
                objects.append(down)

        # Dale's law: inhibitory interneurons that relay each forward and feedback unit (one to one) ----
        relay_Y, relay_D = {}, {}
        if spec.dale:
            relay_eqs = "dv/dt = (-v + rin)/tau : 1\nrin : 1\n" + out_eqs("v")
            for l in range(nL):
                for kind, source, store in (("y", Y[l], relay_Y), ("delta", D[l], relay_D)):
                    if (kind == "y" and l == L) or (kind == "delta" and l == 0):
                        continue  # y_L has no W above it, delta_0 no B below it
                    G = NeuronGroup(spec.layers[l], relay_eqs, name=f"inh_{kind}{l}", namespace=ns, **spike_kw)
                    if spiking:
                        G.a = spec.neuron.baseline_rate * Hz
                    if lif:
                        G.V = "v_reset + rand()*(v_th - v_reset)"
                    link = Synapses(source, G, "rin_post = r_pre : 1 (summed)", name=f"{kind}{l}_to_inh_{kind}{l}",
                                    namespace=ns)
                    link.connect(j="i")
                    store[l] = G
                    objects += [G, link]

        def weight_synapses(pre, post, var: str, target: str, name: str, sign: float, extra: str = "",
                            on_pre=(), on_post=()):
            """One projection of ``pre`` onto ``post``: its weights ``var`` add (``sign`` +1) or, as an
            inhibitory pathway under Dale's law, subtract (-1) their input to ``post``'s ``target``."""
            part = "" if not spec.dale else ("_exc" if sign > 0 else "_inh")
            if lif:  # each spike moves the current by var/(gain*tau_syn); its baseline part is taken away
                op = "+=" if sign > 0 else "-="
                summed = "" if constant_offsets else f"offset_{target}{part}_post = {var}*nu0/gain : 1 (summed)\n"
                model = f"{var} : 1\n{summed}" + extra
                pre_code = [f"I_{target}_post {op} {var}/(gain*tau_syn)", *on_pre]
            else:
                model = f"{var} : 1\n{target}{part}_post = {var}*r_pre : 1 (summed)\n" + extra
                pre_code = list(on_pre)
            return Synapses(pre, post, model, on_pre="\n".join(pre_code) or None,
                            on_post="\n".join(on_post) or None, name=name, namespace=ns)

        # weight synapses ----------------------------------------------------
        self.S_W, self.S_B = [], []
        self.S_W_inh, self.S_B_inh = [], []
        keep_e = math.exp(-lam_e * dtp)
        for l in range(1, nL):
            n_pre, n_post = spec.layers[l - 1], spec.layers[l]
            ii = np.repeat(np.arange(n_pre), n_post)
            jj = np.tile(np.arange(n_post), n_pre)
            parts = [(Y[l - 1], +1.0, f"W{l}")] + ([(relay_Y[l - 1], -1.0, f"W{l}_inh")] if spec.dale else [])
            for pre, sign, name in parts:
                SW = weight_synapses(pre, Y[l], "w", "drive", name, sign)
                SW.connect(i=ii, j=jj)
                if lif and spec.neuron.delay_forward > 0:
                    SW.delay = spec.neuron.delay_forward * second
                if engaged_used:  # (W never learns in a mirror-only run: no per-synapse update to run)
                    SW.run_regularly(engaged_update("w", GATE_E, keep_e, eta_e, dtp, "r_pre", "err_post", sign,
                                                    spec.dale),
                                     dt=dtp * second, when="groups", order=-0.5, name=f"{name}_plasticity")
                (self.S_W if sign > 0 else self.S_W_inh).append(SW)
                objects.append(SW)
            # B_l: delta_l (pre, index i over n_l) -> delta_{l-1} (post, j over n_{l-1})
            bi = np.repeat(np.arange(n_post), n_pre)
            bj = np.tile(np.arange(n_pre), n_post)
            shared = "source_parity : 1 (shared, constant)\narmed : 1 (shared)"
            on_pre, on_post = [], []
            if stdp:  # the spike-timing mirror: b changes at the synapse's own spikes
                shared += "\n" + STDP_GATE
                pre_code, post_code = stdp_mirror_code(spec, self.kappa)
                on_pre.append(pre_code)
                on_post.append(post_code)
            parts = [(D[l], +1.0, f"B{l}")] + ([(relay_D[l], -1.0, f"B{l}_inh")] if spec.dale else [])
            for pre, sign, name in parts:
                SB = weight_synapses(pre, D[l - 1], "b", "fb", name, sign, shared, on_pre, on_post)
                SB.connect(i=bi, j=bj)
                if lif and spec.neuron.delay_feedback > 0:
                    SB.delay = spec.neuron.delay_feedback * second
                SB.source_parity = (l - 1) % 2
                build_feedback_plasticity(FeedbackPathway(
                    spec=spec, layer=l, synapses=SB, gate_engaged=GATE_E, gate_mirror=gate_m, plasticity_dt=dtp,
                    engaged_rate=eta_e, engaged_keep=keep_e, mirror_gain=self.kappa, sign=sign, dale=spec.dale,
                    **(dict(mirror_pre="rc_pre", mirror_post="rc_post") if centre else {})))
                (self.S_B if sign > 0 else self.S_B_inh).append(SB)
                objects.append(SB)
        self.Y, self.D = Y, D
        #: Dale's law: the inhibitory interneuron populations (inh_y<l>, inh_delta<l>), else empty
        self.relays = [relay_Y[l] for l in sorted(relay_Y)] + [relay_D[l] for l in sorted(relay_D)]
        self.set_weights(self.weights_in)

        # monitors -----------------------------------------------------------
        iv = spec.phases.record_interval * second
        self.mon_W, self.mon_B = [], []
        self.mon_W_inh, self.mon_B_inh = [], []
        if self.record_weights:
            for l in range(L):
                # at the start of the step t = k·iv: the weights as they are at time k·iv
                self.mon_W.append(StateMonitor(self.S_W[l], "w", record=True, dt=iv, when="start", order=-10,
                                               name=f"W{l + 1}_mon"))
                self.mon_B.append(StateMonitor(self.S_B[l], "b", record=True, dt=iv, when="start", order=-10,
                                               name=f"B{l + 1}_mon"))
                if spec.dale:
                    self.mon_W_inh.append(StateMonitor(self.S_W_inh[l], "w", record=True, dt=iv, when="start",
                                                       order=-10, name=f"W{l + 1}_inh_mon"))
                    self.mon_B_inh.append(StateMonitor(self.S_B_inh[l], "b", record=True, dt=iv, when="start",
                                                       order=-10, name=f"B{l + 1}_inh_mon"))
        self.mon_rates = {}
        self.mon_spikes = {}
        if self.record_rates:
            for G in Y + D + self.relays:
                if spiking:
                    self.mon_rates[G.name] = PopulationRateMonitor(G, name=f"{G.name}_rate")
                    k = min(self.spike_neurons, len(G))
                    self.mon_spikes[G.name] = SpikeMonitor(G[:k], name=f"{G.name}_spikes")
                else:
                    k = min(32, len(G))
                    self.mon_rates[G.name] = StateMonitor(G, "r", record=np.arange(k), dt=iv / 10,
                                                          when="end", name=f"{G.name}_r")
        self.mon_out = None
        if engaged_used:
            # at the start of the step t = pT + T/2: the output of presentation p after settling,
            # before it learns from that input (even samples are discarded)
            self.mon_out = StateMonitor(Y[L], "r", record=True, dt=(T / 2) * second, when="start",
                                        name="output_mon")
        objects += self.mon_W + self.mon_B + self.mon_W_inh + self.mon_B_inh + list(self.mon_rates.values()) + list(self.mon_spikes.values())
        if self.mon_out is not None:
            objects.append(self.mon_out)
        self.net = Network(*objects)
        self._set_phase(None)

    # ------------------------------------------------------------------
    def set_weights(self, weights) -> None:
        """Copy NumPy ``[(W, B)]`` (W's layout) into the synapses (before running)."""
        weights = [(np.asarray(W, dtype=np.float64), np.asarray(B, dtype=np.float64)) for W, B in weights]
        self._check_weights(weights)
        for l, ((W, B), SW, SB) in enumerate(zip(weights, self.S_W, self.S_B)):
            if self._constant_offsets:  # the bias that cancels the baseline rates' current (mirror-only LIF)
                scale = self.spec.neuron.baseline_rate / self.spec.neuron.gain
                self.Y[l + 1].offset_drive = scale * W.sum(axis=1)
                self.D[l].offset_fb = scale * B.sum(axis=0)
            if self.spec.dale:  # w = w⁺ - w⁻: the excitatory part and the inhibitory pathway's, both ≥ 0
                SW.w[:] = np.maximum(W, 0).T.ravel()
                self.S_W_inh[l].w[:] = np.maximum(-W, 0).T.ravel()
                SB.b[:] = np.maximum(B, 0).ravel()
                self.S_B_inh[l].b[:] = np.maximum(-B, 0).ravel()
                continue
            SW.w[:] = W.T.ravel()  # synapse k = (i, j) = (k // n_post, k % n_post) holds W[j, i]
            SB.b[:] = B.ravel()    # synapse k = (i, j) of delta_l -> delta_{l-1} holds B[i, j]

    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, B)]`` as NumPy float64 matrices in W's layout (after running)."""
        out = []
        for l, (SW, SB) in enumerate(zip(self.S_W, self.S_B), 1):
            n_pre, n_post = self.spec.layers[l - 1], self.spec.layers[l]
            w = np.asarray(SW.w[:], dtype=np.float64)
            b = np.asarray(SB.b[:], dtype=np.float64)
            if self.spec.dale:  # the effective signed matrices the two pathways implement
                w = w - np.asarray(self.S_W_inh[l - 1].w[:], dtype=np.float64)
                b = b - np.asarray(self.S_B_inh[l - 1].b[:], dtype=np.float64)
            out.append((w.reshape(n_pre, n_post).T.copy(), b.reshape(n_post, n_pre).copy()))
        return out

    def synapse_signs(self) -> dict[str, tuple[float, float]]:
        """``{synapses name: (smallest, largest) weight}`` of every W and B projection (Dale's law: the
        excitatory ones never below 0, the inhibitory pathways' strengths never below 0)."""
        out = {}
        for S, var in [(S, "w") for S in self.S_W + self.S_W_inh] + [(S, "b") for S in self.S_B + self.S_B_inh]:
            v = np.asarray(getattr(S, var)[:])
            out[S.name] = (float(v.min()), float(v.max()))
        return out

    def _set_phase(self, phase: str | None) -> None:
        m = 1 if phase == "mirror" else 0
        e = 1 if phase == "engaged" else 0
        for G in list(self.Y) + list(self.D):
            G.mirror_on = m
            G.engaged_on = e

    def run_phase(self, phase: str, duration: float, progress=None) -> None:
        """Run ``duration`` seconds of ``phase`` (``mirror``/``engaged``/``idle``).

        Only gating variables change between calls; the network is not
        rebuilt. In runtime mode the run is split into chunks so that
        ``progress`` (a callable taking simulated seconds) can report.
        """
        from brian2 import second

        if phase not in ("mirror", "engaged", "idle"):
            raise SpecError(f"unknown phase {phase!r}; allowed: mirror, engaged, idle")
        self._set_phase(None if phase == "idle" else phase)
        dt = self.spec.dt
        steps = int(round(duration / dt))
        if steps <= 0:
            return
        if self.simulated + steps * dt > self.spec.phases.duration + 1e-9:
            raise SpecError(f"running {phase} to {self.simulated + steps * dt:.4f} s goes past the declared "
                            f"phases.duration ({self.spec.phases.duration} s), which sizes the inputs")
        chunk_steps = steps if (self.standalone or progress is None) else \
            max(1, int(round(max(self.spec.phases.record_interval, duration / 100) / dt)))
        done = 0
        while done < steps:
            n = min(chunk_steps, steps - done)
            self.net.run(n * dt * second, namespace={})
            done += n
            if progress is not None and not self.standalone:
                progress(n * dt)
        self._account(phase, self.simulated, self.simulated + steps * dt)
        self.simulated += steps * dt

    def _account(self, phase, start, stop) -> None:
        """Record a phase segment (for :meth:`mirror_plastic_time` and the metrics rows); a run of the same
        phase straight after another (a segment split to switch a monitor) extends it."""
        if self.segments and self.segments[-1][0] == phase and abs(self.segments[-1][2] - start) < 1e-12:
            self.segments[-1] = (phase, self.segments[-1][1], stop)
            return
        self.segments.append((phase, start, stop))

    def record_activity(self, on: bool) -> None:
        """Switch the activity monitors (rates, spikes) on or off for the following runs (the weights'
        monitors stay on); ``phases.record_activity`` keeps them to the end of a long run."""
        for mon in list(self.mon_rates.values()) + list(self.mon_spikes.values()):
            mon.active = bool(on)

    def mirror_plastic_time(self, t: float) -> list[float]:
        """Seconds of mirror plasticity of each ``B_l`` up to simulated time ``t``.

        One plasticity event per noise sample: at ``k·τ_ξ``, counted when the
        sample that just ended had layer ``l-1`` as its source and the
        previous event was in mirror mode too (``armed``). Returns the number
        of counted samples times ``τ_ξ``.
        """
        tn = self.spec.noise.correlation_time
        P = self.spec.phases.parity_period
        half = self.spec.dt / 2
        out = []
        for l in range(1, self.spec.n_weight_layers + 1):
            par = (l - 1) % 2
            count = 0
            for phase, a, b in self.segments:
                if phase != "mirror":
                    continue
                k0 = int(math.ceil(a / tn - 1e-9)) + 1  # the first event after a is not armed
                k1 = int(math.ceil(min(b, t + 1e-12) / tn - 1e-9))
                ks = np.arange(k0, k1)
                if ks.size:
                    count += int(np.count_nonzero((np.floor((ks * tn - half) / P).astype(int) % 2) == par))
            out.append(count * tn)
        return out

    def finish(self) -> None:
        """Standalone: compile and run the project. Runtime: nothing to do."""
        if self._finished:
            return
        if self.standalone:
            devices.build(self.directory)
        self._finished = True

    def release(self) -> None:
        """Back to the runtime device (call after reading the results out)."""
        devices.release(self.spec.device)

    # -- results ---------------------------------------------------------------
    def recorded(self) -> dict:
        """Monitors as NumPy arrays (call after :meth:`finish`)."""
        from brian2 import second

        out = {"weights_t": None, "W": [], "B": [], "rates": {}, "spikes": {}}
        if self.mon_W:
            out["weights_t"] = np.asarray(self.mon_W[0].t / second)
            for l, (mw, mb) in enumerate(zip(self.mon_W, self.mon_B), 1):
                n_pre, n_post = self.spec.layers[l - 1], self.spec.layers[l]
                w = np.asarray(mw.w)  # (n_syn, n_t)
                b = np.asarray(mb.b)
                if self.spec.dale:  # the effective signed matrices
                    w = w - np.asarray(self.mon_W_inh[l - 1].w)
                    b = b - np.asarray(self.mon_B_inh[l - 1].b)
                out["W"].append(w.T.reshape(-1, n_pre, n_post).transpose(0, 2, 1))
                out["B"].append(b.T.reshape(-1, n_post, n_pre))
        for name, mon in self.mon_rates.items():
            if self.spec.neuron.spikes:
                out["rates"][name] = (np.asarray(mon.t / second), np.asarray(mon.rate / (1 / second)))
            else:
                out["rates"][name] = (np.asarray(mon.t / second), np.asarray(mon.r))
        for name, mon in self.mon_spikes.items():
            out["spikes"][name] = (np.asarray(mon.i), np.asarray(mon.t / second))
        if self.mon_out is not None:
            out["output_t"] = np.asarray(self.mon_out.t / second)
            out["output"] = np.asarray(self.mon_out.r).T
        return out
