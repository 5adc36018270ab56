"""The HTML report as text: self-contained, escaped, one plotly.js."""

from __future__ import annotations

import re

import pytest

import workbench as wb

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def html(tiny_llama):
    result = wb.model_overview(tiny_llama, sample_text=XSS, cache=False)
    return wb.build_report([result, result], title=f"report {XSS}")


def test_plotly_js_inlined_once_and_nothing_external(html):
    assert html.count("plotly.js v") >= 1 and html.count('<script type="text/javascript">/**') == 1
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_user_and_model_strings_are_escaped(html):
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_sections_have_unique_anchors(html):
    ids = re.findall(r'<section id="([^"]+)"', html)
    assert len(ids) == 2 and len(set(ids)) == 2
    assert len(set(re.findall(r'<div id="(s\d-[^"]+)"', html))) == 2 * 6


def test_report_writes_file_and_refuses_nothing(tmp_path, tiny_llama):
    with pytest.raises(wb.InputError):
        wb.report([], tmp_path / "x.html")
    path = wb.report(wb.model_overview(tiny_llama), tmp_path / "sub" / "x.html")
    assert path.is_file() and path.read_text().startswith("<!DOCTYPE html>")
