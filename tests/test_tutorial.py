"""docs/tutorial.py, the notebook-style tutorial, runs as written: it fails here if the API changes."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

# imported before any test captures the output, so that Brian2's log handler
# holds the real stderr rather than a capture stream closed later
pytest.importorskip("brian2")

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.py"


def test_the_tutorial_runs_and_shows_what_it_says(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(TUTORIAL), run_name="__main__")
    out = capsys.readouterr().out
    # what the text of the tutorial promises
    assert set(ns["runs"]) == {"bp", "fa", "wm", "kp"}
    assert all(r.summary["completed"] for r in ns["runs"].values())
    assert ns["runs"]["bp"].summary["angles_deg"] == [0.0, 0.0]
    assert (ns["workdir"] / "compare" / "wm" / "summary.json").is_file()
    assert any(Path(p).name == "feedback_angles.png" for p in ns["report"]["made"])
    # the hand-written loop: the mirror keeps B near W^T while W learns
    assert max(ns["angles"][1:]) < 15 and ns["error"] < 15  # the input layer's B carries no error
    assert ns["monitor"].v.shape[0] == 3
    assert "circuit angles after 0.4 s" in out


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, as printed there."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "runs" / "demo-api" / "wm" / "summary.json").is_file()
