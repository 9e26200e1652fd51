"""The shared look of every figure: Agg backend, sizes, one colour per rule.

Import this module before ``matplotlib.pyplot`` (it selects the Agg backend,
so figures are made without a display).

Colours: BP black, FA grey, the sign-symmetry family (uSF, brSF, frSF)
blues, WM orange-red, KP green. The same rule has the same colour, marker and
line style in every figure; its names (``WM``, "weight mirror") are the rule
class's own (:func:`weightmirror.circuits.rules.rule_label` /
``rule_display_name``). A second run of the same rule in one figure keeps the
colour and marker and takes another line style and hollow markers
(``line_kwargs(rule, variant)``). A diverged run's curves end at its last
finite epoch with a red ✕ (:func:`mark_diverged`), named in the legend
``<run>: diverged at epoch E``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

from weightmirror.circuits import rules as _rules  # pure: no backend, no Brian2

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

DPI = 150

#: rule key -> colour
RULE_COLORS = {
    "bp": "#000000",
    "fa": "#8c8c8c",
    "ss": "#08306b",
    "usf": "#2171b5",
    "brsf": "#6baed6",
    "frsf": "#08519c",
    "wm": "#e6550d",
    "kp": "#2ca02c",
}
RULE_ORDER = ("bp", "fa", "ss", "usf", "brsf", "frsf", "wm", "kp")
#: line styles within the sign-symmetry blues, so they stay apart in grey print
RULE_LINESTYLES = {"usf": "-", "brsf": "--", "frsf": "-.", "ss": ":"}
#: line styles of the second, third ... run of one rule in a figure
VARIANT_LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
RULE_MARKERS = {"bp": "o", "fa": "s", "ss": "v", "usf": "^", "brsf": "<", "frsf": ">", "wm": "D", "kp": "P"}

#: the end of a diverged run's curve (at its last finite epoch): a red ✕
DIVERGED_COLOR = "#d62728"
DIVERGED_MARKER = {"marker": "x", "color": DIVERGED_COLOR, "markersize": 9, "markeredgewidth": 2.2,
                   "linestyle": "none", "zorder": 6}

FORWARD_COLOR = "#3b6ea8"   # forward populations y_l
FEEDBACK_COLOR = "#c8553d"  # feedback populations δ_l
NOISE_COLOR = "#7a7a7a"
MIRROR_SHADE = "#fde0c5"    # background of mirror-mode intervals
ENGAGED_SHADE = "#e5f0e0"   # background of engaged-mode intervals

RCPARAMS = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "figure.dpi": 100,
}


def apply() -> None:
    """Set the shared rcParams (called by every figure before drawing)."""
    matplotlib.rcParams.update(RCPARAMS)


def rule_color(rule: str) -> str:
    return RULE_COLORS.get(rule, "#9467bd")


def rule_label(rule: str) -> str:
    """The rule's short label (``WM``, ``uSF`` ...); an unknown key (an old results folder) as it is."""
    try:
        return _rules.rule_label(rule)
    except _rules.RuleError:
        return rule


def rule_display_name(rule: str) -> str:
    """The rule in words (``weight mirror`` ...); an unknown key as it is."""
    try:
        return _rules.rule_display_name(rule)
    except _rules.RuleError:
        return rule


def rule_sort_key(rule: str):
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), rule)


def line_kwargs(rule: str, variant: int = 0) -> dict:
    """Colour, line style and marker of a rule's line.

    ``variant`` k > 0: the (k+1)-th run of the same rule in one figure; same
    colour and marker, another line style, hollow markers.
    """
    base = RULE_LINESTYLES.get(rule, "-")
    kwargs = {"color": rule_color(rule), "linestyle": base, "marker": RULE_MARKERS.get(rule), "markersize": 3.5}
    if variant > 0:
        styles = [s for s in VARIANT_LINESTYLES if s != base]
        kwargs.update(linestyle=styles[(variant - 1) % len(styles)], fillstyle="none")
    return kwargs


def mark_diverged(ax, x, y, label: str | None = None):
    """A red ✕ at ``(x, y)``, the last finite point of a diverged run's curve; ``label`` for the legend."""
    return ax.plot([x], [y], label=label, **DIVERGED_MARKER)[0]


#: the ±1 sd band around the mean of several seeds, and a diverged seed's own (thin) curve
BAND_ALPHA = 0.18
SEED_LINE = {"linewidth": 0.8, "alpha": 0.55, "marker": None}
#: a panel that is shown for reference only (the input layer, whose B carries no error)
REFERENCE_FACE = "#f3f3f3"
REFERENCE_ALPHA = 0.45


def plot_mean_band(ax, xs, mean, sd, label: str, kwargs: dict, positive: bool = False, alpha: float = BAND_ALPHA):
    """The mean over seeds as a line, ``label``-led, and a ±1 sd band (``fill_between``) of the same colour.

    Returns ``(line, band)``; the band is named ``<label> ±1 sd`` (hidden from
    legends, which show ``(band, line)`` as one entry, see :func:`seed_handle`).
    ``positive``: a log axis; the band's lower edge is kept above 0.
    """
    import numpy as np

    line = ax.plot(xs, mean, label=label, **kwargs)[0]
    lo = np.asarray(mean, dtype=float) - np.asarray(sd, dtype=float)
    hi = np.asarray(mean, dtype=float) + np.asarray(sd, dtype=float)
    if positive:
        lo = np.maximum(lo, np.asarray(mean, dtype=float) * 0.05)
    band = ax.fill_between(xs, lo, hi, color=kwargs.get("color"), alpha=alpha, linewidth=0,
                           label=f"_{label} ±1 sd")
    band.set_gid(f"band:{label}")
    return line, band


def plot_seed_curve(ax, xs, ys, kwargs: dict):
    """A diverged seed's own curve (thin, no marker, not in the legend), up to its last finite epoch."""
    style = {**kwargs, **SEED_LINE}
    style.pop("markersize", None)
    style.pop("fillstyle", None)
    return ax.plot(xs, ys, label="_nolegend_", **style)[0]


def seed_handle(line, band):
    """One legend entry for a mean line and its band."""
    return (band, line)


def diverged_seed_handle():
    """The legend's key to the red ✕ on curves of several seeds."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **DIVERGED_MARKER)


#: the legend text of :func:`diverged_seed_handle`
DIVERGED_SEED_TEXT = "a seed diverged (its last finite epoch)"


def reference_panel(ax, note: str) -> None:
    """Grey a panel shown for reference only and say why under its title."""
    ax.set_facecolor(REFERENCE_FACE)
    for artist in [*ax.get_lines(), *ax.collections]:
        if artist.get_label().startswith("BP ("):
            continue
        artist.set_alpha(min(artist.get_alpha() or 1.0, 1.0) * REFERENCE_ALPHA)
    title = ax.get_title()
    ax.set_title(f"{title}\n{note}", color="0.35", fontsize=8.5)


def epoch_span(ax, last: int | None, first: int = 0) -> None:
    """An epoch axis from ``first`` to ``last`` (no change where ``last`` is None)."""
    if last is not None:
        ax.set_xlim(first - 0.25, last + 0.25)


def figure(*args, **kwargs):
    apply()
    return plt.subplots(*args, **kwargs)


def save(fig, out_dir: Path | str, name: str) -> list[Path]:
    """Write ``name.png`` (dpi 150) and ``name.pdf`` to ``out_dir``; close the figure."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    try:
        for p in paths:
            fig.savefig(p, dpi=DPI)
    finally:
        plt.close(fig)
    return paths


def percent_formatter():
    """Tick labels like ``2``, ``5``, ``10``, ``50`` on a log axis of percentages."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}")


def log_percent_axis(axis) -> None:
    """Ticks at 1, 2, 5, 10, 20, 50, 100 ... labelled plainly, on a log axis of percentages."""
    from matplotlib.ticker import LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(percent_formatter())
    axis.set_minor_formatter(NullFormatter())
