"""``workbench report`` with every section cached reads them without loading the model (report/plan.py), and a
changed weight in the model's files is never served the old results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from workbench import cli
from workbench.cli import main
from workbench.models.tiny import byte_tokenizer, tiny_model

ANALYSES = ["overview", "head_composition"]


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "tiny-folder"
    tiny_model("tiny-llama", seed=3).save_pretrained(folder)
    byte_tokenizer(tmp_path / "tok").save_pretrained(folder)
    return folder


def _report(folder: Path, out: Path, capsys) -> str:
    assert main(["report", "--model", str(folder), "--analyses", *ANALYSES, "--out", str(out)]) == 0
    return capsys.readouterr().out


def test_a_cached_report_loads_no_model_and_a_changed_weight_is_recomputed(folder, tmp_path, monkeypatch, capsys):
    first = _report(folder, tmp_path / "a.html", capsys)
    assert "model loaded" in first

    real_load = cli.load
    loads = []
    monkeypatch.setattr(cli, "load", lambda args: loads.append(args) or real_load(args))
    second = _report(folder, tmp_path / "b.html", capsys)
    assert "from the cache, model not loaded" in second and not loads
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    # and in a fresh process, the page is written again from its rendered sections without importing torch,
    # transformers or TransformerLens (report/pages.py), the same bytes
    assert _fresh_report(folder, tmp_path / "e.html") == ("from the cache, model not loaded", [])
    assert (tmp_path / "e.html").read_bytes() == (tmp_path / "a.html").read_bytes()

    # the negative control: one weight changed in the folder's file -> the plan is not found, the model is loaded,
    # and the sections are computed on the new weights (their fingerprint differs)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("mlp.down_proj.weight"))
    tensors[name][0, 0] += 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    third = _report(folder, tmp_path / "c.html", capsys)
    assert "model loaded" in third and len(loads) == 1
    assert (tmp_path / "c.html").read_bytes() != (tmp_path / "a.html").read_bytes()
    fourth = _report(folder, tmp_path / "d.html", capsys)  # and the new plan serves the new results
    assert "from the cache, model not loaded" in fourth and len(loads) == 1
    assert (tmp_path / "d.html").read_bytes() == (tmp_path / "c.html").read_bytes()


FRESH = """
import sys
from workbench.cli import main
assert main(sys.argv[1:]) == 0
print(sorted(name for name in ("torch", "transformers", "transformer_lens", "pandas") if name in sys.modules))
"""


def _fresh_report(folder: Path, out: Path) -> tuple[str, list[str]]:
    """``workbench report`` in a new process: how it got its sections (the end of its last line: 'model loaded' or
    'from the cache, model not loaded') and which of the heavy packages it imported."""
    argv = ["report", "--model", str(folder), "--analyses", *ANALYSES, "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", FRESH, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line, modules = done.stdout.strip().splitlines()[-2:]
    return line.rpartition(" s, ")[2].rstrip(")"), eval(modules)  # the list FRESH printed


def test_a_page_is_not_replayed_once_a_section_or_its_plan_is_gone(folder, tmp_path, capsys):
    """The negative controls of the torch-free path: with a rendered section deleted the report reads its results
    again (torch imported, model not loaded), without the plan it loads the model; the same page every time."""
    from workbench._paths import cache_root
    from workbench.report.plan import _path, plan_id

    _report(folder, tmp_path / "a.html", capsys)  # records the page (computed, or from the plan of a test before)
    assert _fresh_report(folder, tmp_path / "b.html") == ("from the cache, model not loaded", [])
    for section in (cache_root() / "report-sections").glob("*.html"):
        section.unlink()
    how, modules = _fresh_report(folder, tmp_path / "c.html")
    assert how == "from the cache, model not loaded" and "torch" in modules
    identity = plan_id(str(folder), ANALYSES)
    assert identity is not None
    _path(identity).unlink()
    how, modules = _fresh_report(folder, tmp_path / "d.html")
    assert how == "model loaded" and "torch" in modules
    pages = [(tmp_path / f"{name}.html").read_bytes() for name in "abcd"]
    assert all(page == pages[0] for page in pages)


def test_a_rendered_section_is_reused_only_for_the_same_result_place_and_code(tiny_llama, tmp_path, monkeypatch):
    import workbench as wb
    from workbench.report import build

    result = wb.model_overview(tiny_llama)
    calls = []
    real = build.render_html
    monkeypatch.setattr(build, "render_html", lambda r, anchor: calls.append(anchor) or real(r, anchor=anchor))
    key = f"planted-{tmp_path.name}"
    first = build.build_report([result], keys=[key])
    assert build.build_report([result], keys=[key]) == first and len(calls) == 1  # read back, not rendered
    build.build_report([result], keys=[None])  # no key: always rendered
    build.build_report([result, result], keys=[key, key])  # the second place is another section
    assert len(calls) == 3
    # the negative control: other code (a view changed) renders again
    monkeypatch.setattr(build, "code_identity", lambda: "other code")
    assert build.build_report([result], keys=[key]) == first and len(calls) == 4
