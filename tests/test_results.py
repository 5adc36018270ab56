"""The Result protocol: file round trips, tables of every dtype, registry rules, reprs."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

import workbench as wb
from workbench import results
from workbench.analyses.overview.card import OverviewConfig, OverviewResult
from workbench.engine import registry
from workbench.engine.registry import Analysis, get_analysis, register_analysis
from workbench.render import page, render_html


def _result(**tables) -> OverviewResult:
    return OverviewResult(
        config=OverviewConfig(sample_text="<b>x</b>"),
        model_id="m",
        fingerprint="f",
        tensors={"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int16),
                 "c": torch.ones(2, dtype=torch.bfloat16)},
        tables=tables,
        meta={"architecture": {"n_layers": 1}, "nested": [1, {"k": "v"}]},
    )


def test_round_trip_keeps_tensors_tables_config_and_meta(tmp_path):
    table = pd.DataFrame({
        "f": [0.5, float("nan")], "i": [1, -2], "b": [True, False],
        "s": ["<script>", "tok en"], "o": [None, "x"],
    })
    original = _result(main=table, empty=pd.DataFrame({"x": pd.Series([], dtype="float64")}))
    loaded = wb.Result.load(original.save(tmp_path / "r.safetensors"))
    assert type(loaded) is OverviewResult and loaded.config == original.config
    assert (loaded.model_id, loaded.fingerprint, loaded.meta) == ("m", "f", original.meta)
    for name, tensor in original.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor) and loaded.tensors[name].dtype == tensor.dtype
    pd.testing.assert_frame_equal(loaded.to_frame("main"), table)
    assert list(loaded.tables) == ["main", "empty"] and len(loaded.to_frame("empty")) == 0


def test_config_tuples_survive_json(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_RESULT_TYPES", dict(results._RESULT_TYPES))  # register for this test only

    @dataclasses.dataclass(frozen=True)
    class TupleConfig:
        layers: tuple = (1, 2)

    @dataclasses.dataclass(frozen=True)
    class TupleResult(wb.Result):
        analysis = "test-tuples"
        config_cls = TupleConfig

    r = TupleResult(config=TupleConfig(), model_id="m", fingerprint="f")
    loaded = wb.Result.load(r.save(tmp_path / "t.safetensors"))
    assert type(loaded) is TupleResult
    assert loaded.config == TupleConfig() and hash(loaded.config) == hash(TupleConfig())


def test_load_needs_no_analysis_registry(tmp_path, monkeypatch):
    path = _result(main=pd.DataFrame({"x": [1]})).save(tmp_path / "r.safetensors")
    monkeypatch.setattr(registry, "_REGISTRY", {})  # results find their class by themselves
    assert type(wb.Result.load(path)) is OverviewResult


def test_result_types_register_once_and_match_their_analysis(monkeypatch):
    monkeypatch.setattr(results, "_RESULT_TYPES", dict(results._RESULT_TYPES))
    assert results.result_type("overview") is OverviewResult
    with pytest.raises(ValueError, match="both hold results of 'overview'"):
        type("Impostor", (wb.Result,), {"analysis": "overview"})
    with pytest.raises(wb.InputError, match="known: .*overview"):
        results.result_type("no-such-analysis")

    @dataclasses.dataclass(frozen=True)
    class Unconfigured(wb.Result):
        analysis = "test-unconfigured"

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="config_cls must be OverviewConfig"):
        register_analysis(Analysis("test-unconfigured", "d", OverviewConfig, Unconfigured, compute=lambda m, c: None))


def test_titles_are_written_once_on_the_result():
    assert all(spec.title == spec.result_cls.title for spec in wb.list_analyses())
    with pytest.raises(ValueError, match="the title is OverviewResult.title"):
        Analysis("overview", "d", OverviewConfig, OverviewResult, compute=lambda m, c: None, title="Another title")


def test_registry_refuses_duplicates_and_names_choices():
    with pytest.raises(ValueError, match="already registered"):
        register_analysis(get_analysis("overview"))
    with pytest.raises(wb.InputError, match="available: .*overview"):
        get_analysis("no-such-analysis")


def test_unknown_option_lists_the_real_ones(tiny_llama):
    with pytest.raises(wb.InputError, match="sample_text"):
        wb.model_overview(tiny_llama, sampel_text="typo")


def test_results_are_frozen_and_tables_are_copied():
    r = _result(main=pd.DataFrame({"x": [1]}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.model_id = "other"
    copy = r.to_frame()
    copy.loc[0, "x"] = 99
    assert r.tables["main"]["x"].tolist() == [1]


def test_table_accessors_hand_out_frames_that_cannot_reach_the_result():
    r = _result(matrices=pd.DataFrame({"x": [1.0, 2.0]}), parameters=pd.DataFrame({"n": [3]}))
    for frame in (r.matrix_stats, r.tables["matrices"]):  # an accessor and the mapping alike
        frame.loc[0, "x"] = 99.0
        frame["y"] = 1
        assert not frame["x"].to_numpy().flags.writeable or frame is not r.tables["matrices"]
    with pytest.raises(ValueError):  # the arrays they hold are read-only views
        r.matrix_stats["x"].to_numpy()[0] = 5.0
    with pytest.raises(TypeError):
        r.tables["other"] = pd.DataFrame()  # type: ignore[index]
    assert r.tables["matrices"]["x"].tolist() == [1.0, 2.0] and list(r.tables["matrices"].columns) == ["x"]
    # the negative control: the frame stored inside is the live one
    stored = r.tables._tables["matrices"]  # type: ignore[attr-defined]
    stored.loc[0, "x"] = 7.0
    assert r.matrix_stats["x"].tolist() == [7.0, 2.0]


def test_repr_html_escapes_everything():
    r = wb.Result(config=None, model_id="<i>m</i>", fingerprint="f", tables={"t": pd.DataFrame({"token": ["<script>alert(1)</script>"]})})
    html = r._repr_html_()
    assert "<i>m</i>" not in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_repr_and_report_show_the_same_section(tiny_llama):
    page.reset_notebook_plotly()
    overview = wb.model_overview(tiny_llama, cache=False)
    repr_html, report = overview._repr_html_(), wb.build_report([overview])
    section = render_html(overview)
    assert repr_html.endswith(section) and repr_html.count("plotly.js v") == 1  # figures work offline in a cell
    assert section.count('class="wb-figure"') == len(overview.figures()) > 0
    assert render_html(overview, anchor="s0-overview") in report
    assert report.count("plotly.js v") == 1  # the report carries its own, whatever the kernel sent before


def test_plotly_js_once_per_kernel(tiny_llama, monkeypatch):
    page.reset_notebook_plotly()
    overview = wb.model_overview(tiny_llama, cache=False)
    first, later = overview._repr_html_(), overview._repr_html_()
    assert first.count("plotly.js v") == 1 and len(first) > 3_000_000
    assert later.count("plotly.js v") == 0 and len(later) < 200_000
    assert later.endswith(render_html(overview)) and "wb-plotly-missing" in later  # says so if the page has none
    bare = wb.Result(config=None, model_id="m", fingerprint="f", tables={"t": pd.DataFrame({"x": [1]})})
    assert "plotly" not in bare._repr_html_().lower()  # no figures: neither the library nor the note
    # in a kernel: a new run of the cell that carried the library replaces its output, so it carries it again
    runs = iter([("cell-a", 1), ("cell-b", 2), ("cell-a", 3), ("cell-a", 3), (None, 4)])
    monkeypatch.setattr(page, "_current_cell", lambda: next(runs))
    page.reset_notebook_plotly()
    assert [overview._repr_html_().count("plotly.js v") for _ in range(5)] == [1, 0, 1, 0, 0]


def test_every_result_is_shown_and_explored_through_the_same_dispatch():
    for cls in {*results._RESULT_TYPES.values(), wb.Result}:
        for method in ("figures", "figure", "widget", "_repr_html_"):
            assert getattr(cls, method) is getattr(wb.Result, method), f"{cls.__name__}.{method} bypasses the registry"


def _fake_cuda(*values: float) -> torch.Tensor:
    """A tensor that says it lives on ``cuda:0`` with no GPU present (a fake tensor: device and shape, no data)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(len(values), device="cuda")


def test_results_hold_cpu_tensors_whatever_device_computed_them():
    gpu = _fake_cuda(1.0, 2.0)
    assert gpu.device.type == "cuda"  # the negative control: without the Result's own move it would stay there
    result = dataclasses.replace(_result(), tensors={"on_gpu": gpu, "on_cpu": torch.ones(2)})
    assert {t.device.type for t in result.tensors.values()} == {"cpu"}
    assert result.tensors["on_gpu"].shape == (2,)
    kept = torch.ones(3)
    assert dataclasses.replace(_result(), tensors={"x": kept}).tensors["x"] is kept  # CPU tensors are not copied


def test_a_result_refuses_tensors_without_data():
    with pytest.raises(wb.InputError, match="meta device"):
        dataclasses.replace(_result(), tensors={"x": torch.empty(2, device="meta")})


def test_composition_null_quantiles_take_values_from_any_device():
    """The nulls are drawn on the model's device; the quantile levels are CPU tensors (``torch.quantile`` wants
    both on one device). With fake CUDA values, shapes and devices are checked without a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workbench.analyses.heads.composition import _sampled_quantiles

    with FakeTensorMode():
        values = torch.empty(4, 5, device="cuda")
        v, q = _sampled_quantiles(values)
        assert v.device.type == "cpu" and q.shape == (3,)
        with pytest.raises(RuntimeError, match="device"):  # negative control: the old way, values left on the GPU
            torch.quantile(values.reshape(-1).double(), torch.tensor([0.5, 0.95, 0.99], dtype=torch.float64))
