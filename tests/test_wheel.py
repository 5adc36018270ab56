"""A package that installs anywhere: a wheel built from the repository, installed in fresh virtual
environments, with no network.

* It runs from outside the repository and finds the data it ships (the heavy dependencies come from the
  test's own environment through a .pth file).
* It installs beside what an environment already has: into one that holds torch and an older pandas than
  constraints.txt pins, the install changes neither and ``pip check`` is clean.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# the older pandas (and pytz, which it needs), downloaded by ./setup.sh --test
OLD_WHEELS = Path(sys.prefix) / "test-wheels"
OLD_PANDAS = "2.2.3"

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


def _env() -> dict[str, str]:
    # no pip configuration of this machine (its extra indexes and wheel folders): only what a test names
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(*cmd, cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: the build leaves build/ and *.egg-info beside the sources.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("workbench", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp / "dist"), str(src), cwd=tmp)
    (path,) = (tmp / "dist").glob("lm_workbench-*.whl")
    return path


def _new_venv(path: Path) -> tuple[str, Path]:
    venv.create(path, with_pip=False, symlinks=True)
    python = str(path / "bin" / "python")
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=path).strip())
    return python, site


def test_wheel_ships_its_data_types_and_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "workbench/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    assert "workbench/data/published_super_weights.csv" in names


def test_wheel_installs_in_a_fresh_venv_and_finds_its_data(wheel, tmp_path):
    python, site = _new_venv(tmp_path / "env")
    # torch, transformers, pip ... from this environment; a path in a .pth file is searched after the venv's
    # own site-packages, and the .pth files there (this checkout's editable install) are not run.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)

    assert _run(python, "-c", CHECK, cwd=tmp_path).startswith("ok")
    assert _run(str(tmp_path / "env" / "bin" / "workbench"), "--version", cwd=tmp_path).startswith("workbench ")


def _closure(names: list[str], skip: set[str]) -> list[md.Distribution]:
    """The installed distributions ``names`` need (their requirements and those of the extras asked for,
    recursively, markers evaluated)."""
    seen: dict[str, md.Distribution] = {}
    todo = [(Requirement(name), "") for name in names]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        key = req.name.lower().replace("_", "-")
        if key not in skip:
            dist = seen.setdefault(key, md.distribution(req.name))
            todo += [(Requirement(r), e) for r in dist.requires or [] for e in ("", *req.extras)]
    return list(seen.values())


def _expose(dists: list[md.Distribution], folder: Path) -> None:
    """Link each distribution's top-level files (packages, modules, its .dist-info) into ``folder``."""
    folder.mkdir()
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top != ".." and not top.endswith(".pth") and not (folder / top).exists() and (base / top).exists():
                (folder / top).symlink_to(base / top)


def _installed(python: str, cwd: Path) -> dict[str, str]:
    listed = json.loads(_run(python, "-m", "pip", "list", "--format=json", cwd=cwd))
    return {d["name"].lower().replace("_", "-"): d["version"] for d in listed}


def test_install_keeps_the_environments_torch_and_older_pandas(wheel, tmp_path):
    """A researcher's environment: torch already there, pandas older than our pins. Installing the wheel
    with pip's resolver (dependencies included, no index: whatever it would add must already be on disk)
    keeps both, and the environment stays consistent."""
    if not list(OLD_WHEELS.glob(f"pandas-{OLD_PANDAS}-*.whl")):
        pytest.skip(f"no pandas {OLD_PANDAS} wheel in {OLD_WHEELS}: ./setup.sh --test downloads it")
    python, site = _new_venv(tmp_path / "env")
    # The environment's torch and the rest of the workbench's dependencies (and pip), this environment's
    # installed files, linked in and seen through a .pth file rather than installed again (torch alone is
    # ~1 GB to unpack); pandas itself is left out (not its dependencies): the older one is installed into
    # the venv.
    metadata = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    deps = [d for d in _closure([*requires, "pip"], skip={"lm-workbench"}) if d.metadata["Name"].lower() != "pandas"]
    _expose(deps, tmp_path / "deps")
    (site / "deps.pth").write_text(str(tmp_path / "deps") + "\n")
    pip = (python, "-m", "pip")
    _run(*pip, "install", "--no-index", "--find-links", str(OLD_WHEELS), "-q", f"pandas=={OLD_PANDAS}", cwd=tmp_path)
    before = _installed(python, tmp_path)
    assert before["pandas"] == OLD_PANDAS and "torch" in before, before

    out = _run(*pip, "install", "--no-index", "--find-links", str(OLD_WHEELS), str(wheel), cwd=tmp_path)
    after = _installed(python, tmp_path)
    assert after == {**before, "lm-workbench": wheel.name.split("-")[1]}, out  # nothing else added or changed
    _run(*pip, "check", cwd=tmp_path)
    done = _run(python, "-c", "import pandas, workbench; from workbench.analyses.super_weights.published "
                "import published_index; print(pandas.__version__, len(published_index()))", cwd=tmp_path)
    assert done.split()[0] == OLD_PANDAS, done
