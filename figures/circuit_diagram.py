"""The circuit itself, drawn from its declaration.

Input: a circuit declaration, either the ``config.toml`` of a
``weightmirror circuit`` run (only that file is needed) or an object with
``to_dict()`` (a :class:`circuits.spec.CircuitSpec`). Drawn: the forward
populations ``y_l`` and feedback populations ``δ_l`` of every layer with
their sizes, the forward pathway ``W_l`` (``y_{l-1} → y_l``), the feedback
pathway ``B_l`` (``δ_l → δ_{l-1}``) and how it learns under the declared
rule, the one-to-one mirror links ``y_l → δ_l``, each layer's noise source
``ξ_l`` (mirror mode), and the stimulus and target of engaged mode.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from weightmirror import results, tomlfile
from weightmirror.circuits.spec import CIRCUIT_RULE_REGISTRY

from . import style
from .inputs import FigureInputError, SkipFigure, no_runs_reason, unique_names, usable

NAME = "circuit_diagram"
NEEDS = "a circuit run's config.toml (or a CircuitSpec)"

_B_RULE = {
    "wm": "Hebbian in mirror mode:\n$\\Delta B_{{{l}}} \\propto \\delta_{{{lm}}}\\,\\delta_{{{l}}}^T - \\lambda_B B_{{{l}}}$",
    "kp": "Kolen-Pollack, engaged mode:\n$\\Delta B_{{{l}}} = -\\eta\\, y_{{{lm}}}\\,\\delta_{{{l}}}^T - \\lambda B_{{{l}}}$",
    "fa": "fixed (feedback alignment)",
}


def declaration(source) -> dict:
    """The declaration as a dict, from a spec object, a dict or a run's ``config.toml``.

    Raises SkipFigure when there is no ``config.toml``, FigureInputError when
    it is not readable TOML.
    """
    if hasattr(source, "to_dict"):
        return source.to_dict()
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / results.CONFIG
    if not path.is_file():
        raise SkipFigure(f"{path}: missing (the circuit declaration is read from a run's config.toml)")
    return tomlfile.read(path, FigureInputError, what="circuit declaration")


def _box(ax, x, y, w, h, text, color):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor="black", linewidth=0.8, alpha=0.9, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=9, color="white", zorder=4)


def _arrow(ax, a, b, color="black", style_="-|>", ls="-", lw=1.4, rad=0.0, zorder=2):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style_, mutation_scale=11, color=color, linestyle=ls,
                                 linewidth=lw, connectionstyle=f"arc3,rad={rad}", zorder=zorder,
                                 shrinkA=0, shrinkB=0))


def draw(source):
    """A figure of the declared circuit (``source``: spec, dict or config.toml path)."""
    d = declaration(source)
    if "layers" not in d:
        raise SkipFigure("the declaration has no 'layers' (not a circuit config.toml)")
    layers = [int(n) for n in d["layers"]]
    rule = d.get("rule", {})
    rule = rule.get("name", "?") if isinstance(rule, dict) else str(rule)
    neuron = d.get("neuron", {}) or {}
    noise = d.get("noise", {}) or {}
    phases = d.get("phases", {}) or {}
    schedule = phases.get("schedule", "mirror")
    L = len(layers) - 1
    entry = CIRCUIT_RULE_REGISTRY.get(rule)  # None for a rule circuit mode does not build
    mirror = entry is not None and entry.has_mirror and schedule in ("mirror", "alternate")
    engaged = schedule in ("engaged", "alternate")

    dy = 2.0
    xf, xb, w, h = 0.0, 4.2, 1.7, 0.8
    fig, ax = style.figure(figsize=(7.6, 1.6 + 1.25 * (L + 1)))
    ax.set_axis_off()
    ax.grid(False)
    for l, n in enumerate(layers):
        y = l * dy
        role = "input" if l == 0 else ("output" if l == L else "hidden")
        _box(ax, xf, y, w, h, f"$y_{{{l}}}$  ({n} units)\n{role}", style.FORWARD_COLOR)
        _box(ax, xb, y, w, h, f"$\\delta_{{{l}}}$  ({n} units)", style.FEEDBACK_COLOR)
        # one-to-one mirror link y_l -> delta_l
        _arrow(ax, (xf + w / 2, y + 0.12), (xb - w / 2, y + 0.12), color="0.25", ls=(0, (4, 2)), lw=1.1)
        ax.text((xf + xb) / 2, y + 0.2, f"one-to-one: $\\delta_{{{l}}} \\leftarrow y_{{{l}}}$",
                ha="center", va="bottom", fontsize=7, color="0.25")
        # noise source
        xn = xf - w / 2 - 1.1
        ax.add_patch(Circle((xn, y), 0.3, facecolor="white", edgecolor=style.NOISE_COLOR, linewidth=1.2,
                            linestyle="-" if mirror else ":", zorder=3))
        ax.text(xn, y, f"$\\xi_{{{l}}}$", ha="center", va="center", fontsize=9, zorder=4)
        _arrow(ax, (xn + 0.3, y), (xf - w / 2, y), color=style.NOISE_COLOR, lw=1.1,
               ls="-" if mirror else ":")
        if l > 0:
            # forward W_l and feedback B_l
            _arrow(ax, (xf, y - dy + h / 2), (xf, y - h / 2), color=style.FORWARD_COLOR, lw=2.0)
            ax.text(xf + 0.12, y - dy / 2, f"$W_{{{l}}}$", ha="left", va="center", fontsize=10,
                    color=style.FORWARD_COLOR)
            _arrow(ax, (xb, y - h / 2), (xb, y - dy + h / 2), color=style.FEEDBACK_COLOR, lw=2.0)
            ax.text(xb - 0.12, y - dy / 2, f"$B_{{{l}}}$", ha="right", va="center", fontsize=10,
                    color=style.FEEDBACK_COLOR)
            ax.text(xb + w / 2 + 0.15, y - dy / 2, _B_RULE.get(rule, rule).format(l=l, lm=l - 1),
                    ha="left", va="center", fontsize=7, color="0.2")
    # noise label
    sigma = noise.get("sigma")
    tau = noise.get("correlation_time")
    text = "noise sources $\\xi_l$" + ("" if mirror else "\n(unused: no mirror phase)")
    if sigma is not None:
        text += f"\n$\\sigma$ = {sigma:g}"
    if tau is not None:
        text += f", redrawn every {1e3 * float(tau):g} ms"
    if mirror and phases.get("parity_period"):
        text += f"\neven/odd layers take turns\nevery {1e3 * float(phases['parity_period']):g} ms"
    ax.text(xb, -0.75, "dashed: one-to-one mirror links\n(mirror mode: $\\delta_l$ copies $y_l$)",
            ha="center", va="top", fontsize=7, color="0.25")
    ax.text(xf - w / 2 - 1.1, -0.75, text, ha="center", va="top", fontsize=7, color=style.NOISE_COLOR)
    if engaged:
        _arrow(ax, (xf, -h / 2 - 0.55), (xf, -h / 2), color="black", lw=1.2)
        ax.text(xf + 0.1, -h / 2 - 0.3, "stimulus $x$\n(engaged mode)", ha="left", va="center", fontsize=7)
        ax.text(xb, L * dy + 0.55, f"engaged mode: $\\delta_{{{L}}} = y_{{{L}}} - t$ (target $t$)",
                ha="center", va="bottom", fontsize=7)
    ax.text(xf, L * dy + 0.95, "forward pathway", ha="center", va="bottom", fontsize=9,
            color=style.FORWARD_COLOR, fontweight="bold")
    ax.text(xb, L * dy + 0.95, "feedback pathway", ha="center", va="bottom", fontsize=9,
            color=style.FEEDBACK_COLOR, fontweight="bold")
    ax.set_xlim(xf - w / 2 - 1.9, xb + w / 2 + 3.0)
    ax.set_ylim(-1.7, L * dy + 1.5)
    ax.set_aspect("equal")
    kind = neuron.get("kind", "rate")
    nd = f"{kind} neurons, τ = {1e3 * float(neuron['tau']):g} ms" if "tau" in neuron else f"{kind} neurons"
    ax.set_title(f"circuit: layers {'-'.join(map(str, layers))}, rule {rule} "
                 f"({style.rule_display_name(rule)}), {nd}, phases: {schedule}")
    fig.tight_layout()
    return fig


def make(runs, out_dir: Path) -> dict:
    ok, why = usable(runs, "circuit", "config")
    if not ok:
        raise SkipFigure(no_runs_reason("circuit", why, ""))
    # one drawing per distinct declaration of the network (not per run)
    seen, chosen = set(), []
    for run in ok:
        c = run.config
        key = (tuple(c.get("layers", [])), str(c.get("rule")), str(c.get("neuron", {}).get("kind")),
               str(c.get("phases", {}).get("schedule")))
        if key not in seen:
            seen.add(key)
            chosen.append(run)
    made, skipped = [], {}
    for run, name in zip(chosen, unique_names(NAME, chosen)):
        try:
            made += style.save(draw(run.config), out_dir, name)
        except SkipFigure as exc:
            skipped[name] = f"{run.path}: {exc}"
    if not made:
        raise SkipFigure("; ".join(skipped.values()))
    return {"made": made, "skipped": skipped, "ignored": why}
