"""The project installs as one package, ``weightmirror``, and nothing else.

A wheel is built from this checkout and installed (not editable) into a
fresh virtual environment; the tests check what it puts in site-packages
and that a working folder holding a user's own ``models.py``, ``figures/``
and ``circuits/`` changes nothing.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: installed module path -> source folder (pyproject's package-dir mapping)
SOURCES = {"weightmirror": "weightmirror", "weightmirror.circuits": "circuits", "weightmirror.models": "models",
           "weightmirror.sims": "sims", "weightmirror.figures": "figures"}


def _clean_copy(dest: Path) -> Path:
    """The checkout's sources without build leftovers (a stale ``build/`` would leak into the wheel)."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs",
                                    "weightmirror-demo", ".venv")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = _clean_copy(tmp_path_factory.mktemp("src") / "weightmirror")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and ("connection" in proc.stderr.lower() or "no matching distribution" in
                                 proc.stderr.lower()):
        pytest.skip(f"cannot fetch the build backend (setuptools) to build a wheel: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("weightmirror-*.whl")
    return path


def _source_modules() -> set[str]:
    """Every .py file of the source folders, as the path it must have in the wheel."""
    want = set()
    for package, folder in SOURCES.items():
        for p in (ROOT / folder).rglob("*.py"):
            rel = p.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            want.add("/".join([*package.split("."), *rel.parts]))
    return want


def test_the_wheel_holds_weightmirror_only_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert z.read(top_level).decode().split() == ["weightmirror"]
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"weightmirror"}
    missing = _source_modules() - set(names)
    assert not missing, f"modules left out of the wheel (add their package to pyproject): {sorted(missing)}"
    assert "weightmirror/examples/train.toml" in names and "weightmirror/examples/circuit.toml" in names


def test_installed_wheel_ignores_a_users_own_models_figures_and_circuits(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # the dependencies (NumPy, Brian2 ...) come from this interpreter's site-packages
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    work = tmp_path / "work"
    (work / "figures").mkdir(parents=True)
    (work / "circuits").mkdir()
    boom = "raise ImportError('the user\\'s own module was imported by weightmirror')\n"
    (work / "models.py").write_text(boom)
    (work / "figures" / "__init__.py").write_text(boom)
    (work / "circuits" / "__init__.py").write_text(boom)
    (work / "sims.py").write_text(boom)

    def run(*args):
        return subprocess.run([str(python), *args], cwd=work, capture_output=True, text=True, timeout=300)

    proc = run("-m", "weightmirror", "--help")
    assert proc.returncode == 0 and "train" in proc.stdout, proc.stderr
    proc = run("-c", "import weightmirror, weightmirror.sims.cli, weightmirror.sims.training, "
                     "weightmirror.figures.make, weightmirror.circuits.brian.network, weightmirror.models.resnet, sys; "
                     "print(*sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('weightmirror')))")
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split()
    assert len(files) > 20
    # every module comes from the installed copy, none from the checkout or the working folder
    assert all(f.startswith(str(env_dir)) for f in files), [f for f in files if not f.startswith(str(env_dir))]
    proc = subprocess.run([str(env_dir / "bin" / "weightmirror"), "--version"], cwd=work, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("weightmirror "), proc.stderr
    proc = run("-m", "weightmirror", "config", "--example", "circuit")
    assert proc.returncode == 0 and "[phases]" in proc.stdout
