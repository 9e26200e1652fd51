"""The plasticity of the feedback synapses ``B``: one registered builder per rule.

Circuit mode learns W the same way under every rule (the engaged-mode
update of :mod:`circuits.brian.network`); the rules differ in how ``B``
learns. Each rule that circuit mode builds (``circuits.spec.CIRCUIT_RULES``,
the names of ``circuits.spec.CIRCUIT_RULE_REGISTRY``) registers here, by its
config name, one builder that writes the plasticity of one feedback pathway
``B_l`` (Brian2 ``run_regularly`` operations on its synapses), in the manner
of Nengo's builder registry::

    @register_feedback_plasticity("wm")
    def _weight_mirror(pathway: FeedbackPathway) -> None:
        pathway.synapses.run_regularly(...)

A builder receives a :class:`FeedbackPathway`: the declaration, the synapse
object, the gate expressions, the rates, and the names of the activities
its code reads, so that another neuron model (or delays, or sign-constrained
synapses) changes what the network hands over, not the builders' signature.
Looking up a rule that is not registered raises
:class:`~circuits.spec.SpecError` listing the registered ones.
"""
from __future__ import annotations

import math

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..spec import CircuitSpec, SpecError

__all__ = ["FeedbackPathway", "FEEDBACK_PLASTICITY", "register_feedback_plasticity",
           "feedback_plasticity", "build_feedback_plasticity", "engaged_update", "signed_update",
           "stdp_mirror_code", "STDP_GATE"]


@dataclass(frozen=True)
class FeedbackPathway:
    """What a rule's builder gets for one feedback pathway ``B_l`` (``δ_l → δ_{l-1}``).

    Parameters
    ----------
    spec : the declaration (``spec.rule``, ``spec.mirror``, ``spec.noise`` ...).
    layer : ``l`` (1..L); the synapse object's names end in it.
    synapses : the Brian2 ``Synapses`` of ``B_l``; its weight variable is ``b``,
        synapse ``k`` holds ``layer.B[i, j]`` (W's layout).
    gate_engaged : expression that is 1 while engaged-mode plasticity is on
        (the learning half of a presentation), else 0.
    gate_mirror : expression that is 1 at a mirror-mode plasticity event
        whose noise source was layer ``l-1``, else 0.
    plasticity_dt : seconds between engaged-mode plasticity updates.
    engaged_rate : ``η_W'``, the engaged learning rate per learning second.
    engaged_keep : ``e^{-λ' Δt}``, the engaged decay factor per update
        (``λ'`` from ``CircuitRule.engaged_decay``).
    mirror_gain : ``κ``, the settled correlation gain of the neuron filters
        at a mirror event (``network.mirror_gain``).
    var, sign : the synapses' weight variable and the sign with which the
        signed rule's change enters it: ``("b", +1)``, or under Dale's law the
        excitatory part ``("b", +1)`` and the inhibitory part ``("b", -1)``,
        each kept ≥ 0 (``dale``), see :func:`signed_update`.
    pre : the presynaptic feedback unit's activity ``δ_l`` in the synapse code.
    post : the postsynaptic feedback unit's activity ``δ_{l-1}``.
    post_forward : the postsynaptic cell's forward activity ``y_{l-1}``.
    mirror_pre, mirror_post : what the mirror's sample rule multiplies: ``pre``
        and ``post``, or for spiking units their centred versions (each
        decoded train less its own running mean in the current parity regime,
        ``rc``; see ``circuits.brian.network``'s module docstring).
    """

    spec: CircuitSpec
    layer: int
    synapses: Any
    gate_engaged: str
    gate_mirror: str
    plasticity_dt: float
    engaged_rate: float
    engaged_keep: float
    mirror_gain: float
    pre: str = "r_pre"
    post: str = "r_post"
    post_forward: str = "ycopy_post"
    mirror_pre: str = "r_pre"
    mirror_post: str = "r_post"
    var: str = "b"
    sign: float = 1.0
    dale: bool = False


def signed_update(var: str, kept: str, change: str, sign: float = 1.0, dale: bool = False) -> str:
    """``var ← kept + sign·change``, and under Dale's law never below 0.

    Dale's law: a signed weight ``w = w⁺ - w⁻`` is carried by an excitatory
    synapse ``w⁺ ≥ 0`` and an inhibitory pathway of strength ``w⁻ ≥ 0``; the
    signed rule's change ``Δw`` enters ``w⁺`` with ``+`` and ``w⁻`` with ``-``,
    each clipped at 0, so no synapse ever changes sign. While one member of a
    pair is 0 (how the pair starts: ``w⁺ = [w]₊``, ``w⁻ = [-w]₊``) and stays
    there, ``w`` follows the signed rule exactly; where both are above 0 it
    changes twice as fast, and a decay pulls the smaller member back to 0.
    """
    body = f"{kept} + {float(sign)!r}*({change})"
    return f"{var} = clip({body}, 0, inf)" if dale else f"{var} = {body}"


def engaged_update(var: str, gate: str, keep: float, rate: float, dt: float, pre: str, post: str,
                   sign: float = 1.0, dale: bool = False) -> str:
    """``var ← var·(1 - gate·(1-keep)) - gate·η Δt · pre·post``: the engaged-mode
    update of a weight by a local product (W's, and Kolen-Pollack's B); with
    ``sign``/``dale`` as in :func:`signed_update`."""
    return signed_update(var, f"{var}*(1 - {gate}*{float(1 - keep)!r})", f"-{gate}*{float(rate * dt)!r}*{pre}*{post}", sign, dale)


#: rule config name -> builder of one feedback pathway's plasticity.
FEEDBACK_PLASTICITY: dict[str, Callable[[FeedbackPathway], None]] = {}


def register_feedback_plasticity(key: str):
    """Decorator: register the builder of rule ``key``'s B plasticity (once per rule)."""
    def decorate(builder: Callable[[FeedbackPathway], None]):
        if key in FEEDBACK_PLASTICITY:
            raise ValueError(f"feedback plasticity of rule {key!r} is already registered")
        FEEDBACK_PLASTICITY[key] = builder
        return builder
    return decorate


def feedback_plasticity(key: str) -> Callable[[FeedbackPathway], None]:
    """The registered builder of rule ``key``; a :class:`SpecError` lists the registered rules."""
    builder = FEEDBACK_PLASTICITY.get(key)
    if builder is None:
        raise SpecError(f"rule {key!r} has no Brian2 feedback plasticity; allowed rules: "
                        f"{', '.join(FEEDBACK_PLASTICITY)}")
    return builder


def build_feedback_plasticity(pathway: FeedbackPathway) -> None:
    """Write the plasticity of ``pathway`` with the builder of its rule."""
    feedback_plasticity(pathway.spec.rule.key)(pathway)


# ---------------------------------------------------------------------------
# the builders
# ---------------------------------------------------------------------------
#: while layer l-1 is the mirror's noise source (the spike-timing rule's gate, evaluated at every event)
STDP_GATE = "stdp_gate = mirror_on_post*(1 - abs(parity(t) - source_parity)) : 1"


def stdp_mirror_code(spec: CircuitSpec, kappa: float) -> tuple[str, str]:
    """``(on_pre, on_post)`` statements of the spike-timing mirror (``mirror_plasticity = "stdp"``).

    A pair-based trace rule on ``B_l`` (pre ``δ_l``, post ``δ_{l-1}``): at each
    presynaptic spike ``b += c·x̂_post``, at each postsynaptic spike
    ``b += c·x̂_pre``, with ``x̂ = (a - ν₀)/g`` the decoded filtered spike
    train (``τ_a da/dt = -a``, ``a += 1/τ_a`` per spike). Written as a
    window: a pre spike at ``t_pre`` and a post spike at ``t_post`` change
    ``b`` by ``c/(g τ_a) · e^{-|t_post - t_pre|/τ_a}`` (symmetric: either
    order potentiates), and every spike also changes it by ``-c ν₀/g``
    (a depression proportional to the partner's baseline rate), so that only
    deviations from baseline count. Expected change per second:
    ``c g E[m_pre x̂_post + m_post x̂_pre] = 2 c g κ σ² W`` (``m``: rate
    deviation over g; ``κ``: :func:`circuits.brian.network.stdp_mirror_gain`),
    which equals the rate rule's ``η_B' σ² W`` for ``c = η_B'/(2 g κ)``; with
    the decay ``λ_B'`` per second (a ``run_regularly``) B relaxes toward
    ``(η_B' σ²/λ_B') Wᵀ``, as in rate mode. Active only while layer ``l-1`` is
    the noise source (``stdp_gate``).
    """
    eta, _ = spec.mirror_rates()
    c = eta / (2.0 * spec.neuron.gain * kappa)
    return f"b += {float(c)!r}*stdp_gate*r_post", f"b += {float(c)!r}*stdp_gate*r_pre"


@register_feedback_plasticity("wm")
def _weight_mirror(p: FeedbackPathway) -> None:
    """Mirror mode: one event per noise sample (at the end of its hold),
    ``b ← b·(1-λ_B)^{1/m} + lr/(m κ) · δ_pre δ_post`` while layer ``l-1`` was the
    source; ``armed`` marks that the previous event was in mirror mode too.
    With ``mirror_plasticity = "stdp"`` the Hebbian part is the spike-timing
    rule of :func:`stdp_mirror_code` (written with the synapses' events by the
    build) and this writes only its decay, ``b ← b·e^{-λ_B' Δt}`` every
    plasticity step while the gate is open."""
    from brian2 import second

    suffix = "" if p.sign > 0 or not p.dale else "_inh"
    if p.spec.mirror_plasticity == "stdp":
        _, lam = p.spec.mirror_rates()
        keep = math.exp(-lam * p.plasticity_dt)
        p.synapses.run_regularly(f"{p.var} = {p.var}*(1 - stdp_gate*{float(1 - keep)!r})", dt=p.plasticity_dt * second,
                                 when="groups", order=-0.5, name=f"B{p.layer}{suffix}_plasticity")
        return
    hebb, keep = p.spec.mirror.per_sample(p.mirror_gain)
    tn = p.spec.noise.correlation_time * second
    g = p.gate_mirror
    code = signed_update(p.var, f"{p.var}*(1 - {g}*{float(1 - keep)!r})", f"{g}*{float(hebb)!r}*{p.mirror_pre}*{p.mirror_post}", p.sign,
                         p.dale)
    p.synapses.run_regularly(code, dt=tn, when="groups", order=-0.5, name=f"B{p.layer}{suffix}_plasticity")
    p.synapses.run_regularly("armed = mirror_on_post", dt=tn, when="groups", order=-0.4,
                             name=f"B{p.layer}{suffix}_armed")


@register_feedback_plasticity("kp")
def _kolen_pollack(p: FeedbackPathway) -> None:
    """Engaged mode: W's local product transposed and W's decay,
    ``b ← b·e^{-λ' Δt} - η_W' Δt · δ_pre y_post``."""
    from brian2 import second

    code = engaged_update(p.var, p.gate_engaged, p.engaged_keep, p.engaged_rate, p.plasticity_dt,
                          p.pre, p.post_forward, p.sign, p.dale)
    suffix = "" if p.sign > 0 or not p.dale else "_inh"
    p.synapses.run_regularly(code, dt=p.plasticity_dt * second, when="groups", order=-0.5,
                             name=f"B{p.layer}{suffix}_plasticity")


@register_feedback_plasticity("fa")
def _feedback_alignment(p: FeedbackPathway) -> None:
    """B is fixed: nothing to write."""
