"""One registration per analysis: the analysis list, the CLI's sub-commands and ``wb``'s exports all follow
``analyses.PACKAGES`` and each package's ``ANALYSES`` / ``api.__all__``.

The toy analysis of :mod:`tests.support.toy_analysis` is added to a copy of the package, and the copy is run in a
fresh interpreter: the files that took are exactly those ``workbench/README.md`` lists, and leaving out any one of
the registration edits breaks something a user sees (the negative controls)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import workbench as wb
from workbench.analyses import PACKAGES
from workbench.engine import list_analyses

from support.toy_analysis import PACKAGE as TOY

ROOT = Path(__file__).resolve().parent.parent

# What adding an analysis package touches (workbench/README.md, "Adding an analysis", says the same)
TOUCHED = {
    "workbench/analyses/toy/__init__.py", "workbench/analyses/toy/norms.py", "workbench/analyses/toy/api.py",
    "workbench/analyses/__init__.py", "workbench/_api.py", "workbench/render/toy.py", "workbench/render/views.py",
    "workbench/commands/toy.py", "tests/analyses/toy/test_toy.py",
}
# each registration edit, and what goes missing without it
REGISTRATIONS = {"workbench/analyses/__init__.py": "not registered", "workbench/_api.py": "has no attribute 'toy_norms'",
                 "workbench/render/views.py": "no view", "workbench/commands/toy.py": "workbench.commands.toy"}

CHECK = """
import sys
import pandas as pd
import workbench as wb
from workbench.cli import build_parser, main
from workbench.analyses.toy.norms import ToyConfig, ToyResult

# what each registration edit provides, checked before any model is loaded (so a negative control fails fast)
assert "toy_norms" in [a.name for a in wb.list_analyses()], "not registered"
assert "toy_norms" in wb.__all__ and callable(wb.toy_norms), "not exported"
assert build_parser().parse_args(["toy", "--top", "2"]).top == 2, "no command"
planted = ToyResult(config=ToyConfig(), model_id="planted", fingerprint="0",
                    tables={"top": pd.DataFrame({"token_id": [1], "norm": [2.0]})})
assert set(planted.figures()) == {"norms"}, "no view"
# and the whole path on a model
model = wb.load_model("tiny-llama")
result = wb.toy_norms(model, top=3)
assert type(result) is ToyResult and len(result.top_tokens) == 3
assert main(["toy", "--model", "tiny-llama", "--top", "2"]) == 0
assert main(["report", "--model", "tiny-llama", "--analyses", "toy_norms", "--out", sys.argv[1]]) == 0
assert "Toy: unembedding norms" in open(sys.argv[1], encoding="utf-8").read()
print("TOY OK")
"""


def test_exports_are_the_packages_api():
    exported = {name for package in PACKAGES for name in package.api.__all__}
    assert exported <= set(wb.__all__)
    assert all(getattr(wb, name) is getattr(package.api, name) for package in PACKAGES for name in package.api.__all__)
    registered = [a.name for a in list_analyses()]
    assert registered == [a.name for package in PACKAGES for a in package.ANALYSES]


def test_no_name_is_both_a_function_and_a_module():
    import workbench.analyses as analyses
    from workbench.analyses import attribution

    assert isinstance(analyses.super_weights, type(os)) and isinstance(attribution.reagent, type(os))
    assert callable(wb.super_weights) and callable(wb.reagent)


def _copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "workbench", dest / "workbench", ignore=ignore)
    (dest / "tests").mkdir()


def _apply(root: Path, files: dict, leave_out: str | None = None) -> None:
    for rel, (kind, arg) in files.items():
        if rel == leave_out:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "new":
            path.write_text(arg)
            continue
        text = path.read_text()
        for old, new in zip(arg[::2], arg[1::2]):
            assert old in text, f"{rel} no longer has {old!r}: update tests/support/toy_analysis.py and the README"
            text = text.replace(old, new)
        path.write_text(text)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _run(root: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "WORKBENCH_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHECK, str(tmp / "report.html")], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_toy_analysis_takes_the_documented_files(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    _copy(before)
    _copy(after)
    _apply(after, TOY)
    old, new = _files(before), _files(after)
    touched = {name for name in new if old.get(name) != new[name]} | (set(old) - set(new))
    print("files touched by the toy analysis:", *sorted(touched), sep="\n  ")
    assert touched == TOUCHED
    readme = (ROOT / "workbench" / "README.md").read_text()
    documented = {path.replace("norms", "<module>").replace("toy", "<name>").removeprefix("workbench/")
                  for path in TOUCHED}
    assert all(f"`{path}`" in readme for path in documented), sorted(p for p in documented if f"`{p}`" not in readme)
    done = _run(after, tmp_path)
    assert done.returncode == 0 and "TOY OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("leave_out", sorted(REGISTRATIONS))
def test_each_registration_edit_is_needed(tmp_path, leave_out):
    """The negative controls: without any one of the edits, the toy is missing somewhere a user looks."""
    root = tmp_path / "tree"
    _copy(root)
    _apply(root, TOY, leave_out=leave_out)
    done = _run(root, tmp_path)
    assert done.returncode != 0 and "TOY OK" not in done.stdout, done.stdout
    assert REGISTRATIONS[leave_out] in done.stderr, done.stderr[-2000:]
