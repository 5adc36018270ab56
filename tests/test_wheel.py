"""A package that installs anywhere: a wheel built from the repository, installed in a fresh virtual
environment, runs from outside the repository and finds the data it ships (no network: the heavy
dependencies come from the test's own environment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import pathlib, sys
import workbench
from workbench._paths import DATA_DIR
from workbench.corpus import eval_text
from workbench.analyses.super_weights.published import published_index

prefix = pathlib.Path(sys.prefix).resolve()
assert pathlib.Path(workbench.__file__).resolve().is_relative_to(prefix), workbench.__file__
assert DATA_DIR.resolve() == pathlib.Path(workbench.__file__).resolve().parent / "data", DATA_DIR
assert len(eval_text()) > 10_000
assert {"model", "layer", "row", "col"} <= set(published_index().columns) and len(published_index()) > 5
print("ok", workbench.__version__)
"""


def _run(*cmd, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_in_a_fresh_venv_and_finds_its_data(tmp_path):
    # Build from a copy: the build leaves build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("workbench", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lm_workbench-*.whl")

    env = tmp_path / "env"
    venv.create(env, with_pip=False, symlinks=True)
    python = str(env / "bin" / "python")
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).strip())
    # torch, transformers, pip ... from this environment; a path in a .pth file is searched after the venv's
    # own site-packages, and the .pth files there (this checkout's editable install) are not run.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)

    assert _run(python, "-c", CHECK, cwd=tmp_path).startswith("ok")
    assert _run(str(env / "bin" / "workbench"), "--version", cwd=tmp_path).startswith("workbench ")
