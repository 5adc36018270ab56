"""Attribution results: cache round trip, escaped token heat maps, figures, widgets, report, CLI."""

from __future__ import annotations

import dataclasses
import html

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.render.attribution import readable_token, token_heatmap_html
from workbench.render.registry import extra_html
from workbench.render.style import plot_text

NASTY = 'a <script>alert("x")</script> & b\n\tc'
TAG = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def result(tiny_llama):
    return wb.reagent(tiny_llama, prompt=NASTY, cache=False, max_new_tokens=2, max_steps=20, adaptive=False)


@pytest.fixture(scope="module")
def tagged(result):
    """``result`` with every token holding a whole tag: the tiny model's byte-level tokens hold one character
    each, so only multi-character tokens (as real tokenizers make) show whether a tag gets through unescaped."""
    tokens = [f"{TAG}{i}" for i in range(len(result.tokens))]
    return dataclasses.replace(result, meta={**result.meta, "tokens": tokens})


def test_readable_tokens():
    assert readable_token(" the") == "·the"
    assert readable_token("\n") == "⏎"
    assert readable_token("\t") == "⇥"
    assert readable_token("\x01") == "\\x01"
    assert readable_token("") == "∅"


def test_heatmap_html_escapes_every_token(result, tagged):
    page = extra_html(result)  # byte-level tokens: one character per token
    assert "&lt;" in page and "&amp;" in page and "&quot;" in page
    assert "⏎" in page and "⇥" in page and "·" in page
    page = extra_html(tagged)
    assert TAG not in page and page.count(html.escape(TAG)) >= len(tagged.tokens)
    line = token_heatmap_html(["<b>", " x", "&"], [0.5, float("nan"), 0.1], 2)
    assert "<b>" not in line.split("</div>", 1)[-1] and "&lt;b&gt;" in line and "·x" in line and "&amp;" in line
    assert "rgba(230,120,20,1.000)" in line  # the largest importance is fully opaque


def test_result_round_trip_through_the_cache(tiny_llama, tmp_path):
    cache = wb.ResultCache(tmp_path)
    a = wb.reagent(tiny_llama, prompt="hello there", cache=cache, max_new_tokens=2, max_steps=20, adaptive=False)
    b = wb.reagent(tiny_llama, prompt="hello there", cache=cache, max_new_tokens=2, max_steps=20, adaptive=False)
    path = a.save(tmp_path / "r.safetensors")
    c = wb.Result.load(path)
    assert type(c).__name__ == "ReagentResult" and c.config == a.config
    for other in (b, c):
        assert torch.equal(other.tensors["importance"].nan_to_num(), a.tensors["importance"].nan_to_num())
        assert other.tables["attribution"].equals(a.tables["attribution"])
    assert c.meta["tokens"] == a.meta["tokens"]


def test_figures_widget_and_report(result, tagged, tiny_llama, tmp_path):
    assert set(result.figures()) == {"heatmap", "probes"}
    heat = tagged.figures()["heatmap"].data[0]
    assert len(heat.y) == 2
    assert all("<script>" not in x and plot_text(TAG) in x for x in (*heat.x, *heat.y))  # plotly reads tags in labels
    w = result.widget()
    w.target.value = 1
    assert "target 1" in w.tokens.value
    page = wb.build_report([tagged])
    assert "<script>alert" not in page and html.escape(TAG) in page
    # a method selector re-runs the attribution when the widget has the model
    w2 = wb.attribute(tiny_llama, prompt="hello there", method="occlusion", cache=False, max_new_tokens=2).widget()
    assert w2.method.disabled
    from workbench.widgets.attribution import AttributionWidget

    w3 = AttributionWidget(result, model=tiny_llama)
    w3.method.value = "gradient_norm"
    assert w3.result.method == "gradient_norm" and w3.result.tokens == result.tokens


def test_comparison_views(tiny_llama):
    comp = wb.compare_attributions(tiny_llama, prompts=["hello <there>", "abc def"], methods=["reagent", "occlusion"],
                                   cache=False, max_new_tokens=1, max_steps=20)
    assert set(comp.figures()) == {"soft", "hard"}
    html = extra_html(comp)
    assert "&lt;" in html and "<there>" not in html and "<t" not in html.replace("<table", "").replace("<td", "").replace("<tr", "").replace("<th", "").replace("<tbody", "").replace("<thead", "")
    w = comp.widget()
    w.prompt.value = 1
    w.method.value = "occlusion"
    assert "occlusion" in w.tokens.value and "random" in w.metrics.value
    assert dict(comp.summary())["methods"] == "reagent, occlusion"


def test_cli_prints_the_top_tokens(capsys):
    code = main(["attribute", "--model", "tiny-llama", "hello world", "--new-tokens", "2", "--max-steps", "20", "--top", "3"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("target ") == 2 and "context_token" in out
    code = main(["attribute", "--model", "tiny-llama", "hello world", "--method", "occlusion", "--new-tokens", "1"])
    assert code == 0
    assert main(["attribute", "--model", "tiny-llama", ""]) == 2  # empty prompt: a clear error, not a traceback
    assert "empty" in capsys.readouterr().err
