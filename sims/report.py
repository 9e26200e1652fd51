"""What the commands print: the comparison table and the one-line summaries."""
from __future__ import annotations

__all__ = ["format_table", "circuit_line", "diverged_text", "marked_angles"]


def _angle(value) -> str:
    return "–" if value is None or value != value else f"{value:.1f}"


def marked_angles(angles, used=None, sep: str = " / ") -> str:
    """Per-layer angles, one decimal (``–`` for none), a layer whose B carries no error in parentheses.

    ``used``: per layer, does its B carry an error (``feedback_used``)? None: every layer does.
    """
    used = used or [True] * len(angles)
    return sep.join(_angle(a) if u else f"({_angle(a)})" for a, u in zip(angles, used))


def diverged_text(summary: dict) -> str | None:
    """``diverged at epoch E`` for the summary of a diverged run, else None."""
    if summary.get("status") != "diverged":
        return None
    epoch = (summary.get("diverged") or {}).get("epoch")
    return f"diverged at epoch {epoch}" if epoch is not None else "diverged"


def format_table(summaries: list[dict]) -> str:
    """The comparison table of training runs: label, test error, per-layer angles, time.

    A diverged run's row says ``diverged at epoch E`` where the numbers would
    be; the angle of a layer whose B carries no error (the input layer's,
    ``feedback_used``) is in parentheses, and a note under the table says so.
    """
    lines = ["| run | rule | test top-1 error (%) | angle(B, Wᵀ) per layer (°) | angle(δ, δ_BP) per layer (°) "
             "| time (s) |",
             "|---|---|---:|---|---|---:|"]
    for s in summaries:
        failed = diverged_text(s)
        if failed:
            lines.append(f"| {s.get('label') or s['rule']} | {s['rule']} | {failed} | {failed} | {failed} | "
                         f"{s['wall_seconds']:.1f} |")
            continue
        angles = marked_angles(s["angles_deg"], s.get("feedback_used"))
        deltas = " / ".join(_angle(d) for d in s["delta_angles_deg"])
        lines.append(f"| {s.get('label') or s['rule']} | {s['rule']} | {s['test_top1_error']:.2f} | {angles} | "
                     f"{deltas} | {s['wall_seconds']:.1f} |")
    if any(not all(s.get("feedback_used") or [True]) for s in summaries):
        lines.append("")
        lines.append("(angle): that layer's B carries no error (the input layer: no layer below it learns)")
    return "\n".join(lines)


def circuit_line(summary: dict) -> str:
    """One line on a finished circuit run: time simulated, angles, prediction, error."""
    angles = ", ".join(_angle(a) for a in summary["angles_deg"])
    line = (f"circuit {summary.get('label') or summary['rule']} ({summary['rule']}, {summary['neuron']} neurons, "
            f"{summary['device']}): {summary['simulated_seconds']:.3f} s simulated in "
            f"{summary['wall_seconds']:.1f} s; angle(B, W^T) per layer {angles} deg")
    if summary.get("predicted_angles_deg") is not None:
        line += " (rate-mode prediction " + ", ".join(_angle(a) for a in summary["predicted_angles_deg"])
        if summary.get("noise_aware_angles_deg") is not None:
            line += "; with the spike noise " + ", ".join(_angle(a) for a in summary["noise_aware_angles_deg"])
        if summary.get("pilot_angles_deg") is not None:
            line += "; from the pilot's moments " + ", ".join(_angle(a) for a in summary["pilot_angles_deg"])
        line += ")"
    if summary.get("test_top1_error") is not None:
        line += f"; test error {summary['test_top1_error']:.1f} %"
    return line
