"""The project's metadata agrees with itself: the exact pins of constraints.txt fall inside pyproject.toml's
ranges and cover every declared dependency, environment.yml installs with the same pins, CITATION.cff has
the fields the Citation File Format requires and the package's version, and the version is written once."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import workbench
from workbench.errors import MissingExtraError

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt pins exact versions: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _declared() -> list[Requirement]:
    own = canonicalize_name(PROJECT["name"])
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != own]


def test_every_dependency_is_a_range_whose_pin_is_inside_it():
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert not any(s.operator == "==" for s in req.specifier), f"{req}: pyproject.toml declares ranges"
        assert name in pins, f"{req.name} has no exact pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} is outside {req}"
    assert pins["torch"] == "2.13.0"  # the CPU build on disk; another version pulls a CUDA build


def test_core_dependencies_leave_the_server_and_the_demo_data_to_extras():
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not core & {"jupyterlab", "ipywidgets", "anywidget", "scikit-learn", "pytest", "mkdocs"}, core
    extras = PROJECT["optional-dependencies"]
    assert {"lab", "demos", "test", "docs"} <= set(extras)
    assert any(Requirement(r).name == "beartype" for r in extras["test"])  # the pytest options use it


def test_setup_ci_and_conda_install_with_the_constraints():
    assert re.search(r"pip install -c constraints\.txt -e", (ROOT / "setup.sh").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c constraints.txt" in pip and any(p.startswith("-e .") for p in pip), pip
    assert not [p for p in pip if "==" in p], f"environment.yml pins nothing of its own: {pip}"


# The parts of the Citation File Format 1.2.0 that a citation needs: the required keys, persons or entities
# as authors, and version and license as strings.
_PERSON = {"type": "object", "anyOf": [{"required": ["family-names"]}, {"required": ["name"]}],
           "properties": {"family-names": {"type": "string"}, "given-names": {"type": "string"},
                          "name": {"type": "string", "minLength": 1}}}
CFF = {
    "type": "object",
    "required": ["cff-version", "message", "title", "authors"],
    "properties": {
        "cff-version": {"const": "1.2.0"},
        "message": {"type": "string", "minLength": 1},
        "title": {"type": "string", "minLength": 1},
        "type": {"enum": ["software", "dataset"]},
        "authors": {"type": "array", "minItems": 1, "items": _PERSON},
        "version": {"type": "string"},
        "license": {"type": "string"},
        "references": {"type": "array", "items": {
            "type": "object", "required": ["type", "title", "authors"],
            "properties": {"authors": {"type": "array", "minItems": 1, "items": _PERSON}}}},
    },
}


def test_citation_is_valid_and_carries_the_package_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    jsonschema.validate(cff, CFF)
    assert cff["version"] == workbench.__version__
    assert cff["license"] == PROJECT["license"]


def test_the_version_is_written_once():
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    # beside _version.py only CITATION.cff (checked above) states the current version
    version = re.compile(rf"(?<![\d.]){re.escape(workbench.__version__)}(?![\d.])")
    for path in [ROOT / "README.md", ROOT / "workbench" / "README.md", ROOT / "mkdocs.yml", *(ROOT / "docs").rglob("*.md")]:
        assert not (path.exists() and version.search(path.read_text())), f"{path.relative_to(ROOT)} repeats the version"


def test_the_digits_demo_without_scikit_learn_says_to_install_the_demos_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # importing it now raises ImportError
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'lm-workbench[demos]'")):
        workbench.train_digits(cache=False)


@pytest.mark.parametrize("missing", ["ipywidgets", "anywidget"])
def test_the_explorers_without_a_widget_library_say_to_install_the_lab_extra(monkeypatch, missing):
    from workbench.widgets import registry

    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.setattr(registry, "_BUILTINS_LOADED", False)
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'lm-workbench[lab]'")):
        registry._load_builtins()  # what Result.widget() calls first
