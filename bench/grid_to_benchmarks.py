"""Rewrite the grid block of BENCHMARKS.md (between ``<!-- GRID TABLES -->`` and ``<!-- /GRID TABLES -->``)
from a grid folder: the at-a-glance table (``bench/grid_summary.py``) and every row's table and targets
(``OUT/grid.md``, as ``bench/grid.py --report-only`` writes it).

    python3 bench/grid.py --out runs/grid --report-only
    python3 bench/grid_to_benchmarks.py runs/grid BENCHMARKS.md
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

START, END = "<!-- GRID TABLES -->", "<!-- /GRID TABLES -->"


def block(grid: Path) -> str:
    here = Path(__file__).resolve().parent
    glance = subprocess.run([sys.executable, str(here / "grid_summary.py"), str(grid), "--angles"],
                            capture_output=True, text=True, check=True).stdout.strip()
    rows = (grid / "grid.md").read_text().split("\n## ")[1:]
    parts = [START, "### The grid at a glance", "",
             "Test top-1 error (%), mean ± sd over the seeds that completed; in brackets the paired t-test "
             "against BP over seeds; then the largest angle(B, Wᵀ) over the layers whose B carries an error "
             "(mean over seeds); `n` seeds (`python3 bench/grid_summary.py runs/grid --angles`).", "", glance, ""]
    for text in rows:
        name, _, body = text.partition("\n")
        body = body.strip().replace("Targets:", "Targets, checked by `bench/grid.py` from the saved runs:")
        parts += [f"### Row `{name.strip()}`", body, ""]
    parts.append(END)
    return "\n".join(parts)


def main() -> int:
    grid, target = Path(sys.argv[1]), Path(sys.argv[2])
    text = target.read_text()
    if START not in text or END not in text:
        print(f"{target}: no {START} ... {END} block", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: block(grid), text, flags=re.S)
    target.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
