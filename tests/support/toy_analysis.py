"""A toy analysis added the documented way (workbench/README.md, "Adding an analysis"): each entry is one file
of the package, created or edited. ``tests/test_registration.py`` applies them to a copy of the package."""

from __future__ import annotations

# path -> (what to do, text): "new" writes the file, "after" inserts the text after the line given
PACKAGE = {
    "workbench/analyses/toy/__init__.py": ('new', '''"""A toy analysis: the L2 norm of each token's unembedding vector."""

from . import api, norms

ANALYSES = (norms.ANALYSIS,)
'''),
    "workbench/analyses/toy/norms.py": ('new', '''"""Config, Result and compute of the toy analysis."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ...engine.registry import Analysis
from ...models.contract import WeightSource
from ...results import Result


@dataclass(frozen=True)
class ToyConfig:
    top: int = 5  # tokens kept, largest norm first


@dataclass(frozen=True)
class ToyResult(Result):
    analysis = "toy_norms"
    title = "Toy: unembedding norms"
    config_cls = ToyConfig

    @property
    def top_tokens(self) -> pd.DataFrame:
        return self.tables["top"].copy()


def compute(model: WeightSource, config: ToyConfig) -> ToyResult:
    norms = model.W_U.float().norm(dim=0)  # [d_vocab]
    values, ids = norms.topk(config.top)
    table = pd.DataFrame({"token_id": ids.numpy(), "norm": values.numpy()})
    return ToyResult(config=config, model_id=model.name, fingerprint=model.fingerprint(), tables={"top": table})


ANALYSIS = Analysis(name="toy_norms", description="L2 norm of each token's unembedding vector",
                    config_cls=ToyConfig, result_cls=ToyResult, compute=compute)
'''),
    "workbench/analyses/toy/api.py": ('new', '''"""The toy's public function (``__all__``: what ``workbench`` exports)."""

from __future__ import annotations

from ...engine.runner import run_analysis
from . import norms
from .norms import ToyConfig, ToyResult

__all__ = ["toy_norms"]


def toy_norms(model, *, config: ToyConfig | None = None, cache=True, **options) -> ToyResult:
    """The tokens with the largest unembedding norms."""
    return run_analysis(norms.ANALYSIS, model, config, cache=cache, **options)
'''),
    "workbench/analyses/__init__.py": ("replace", (
        "from . import attribution, bilinear, heads, overview, super_weights\n",
        "from . import attribution, bilinear, heads, overview, super_weights, toy\n",
        "PACKAGES = (overview, super_weights, heads, bilinear, attribution)\n",
        "PACKAGES = (overview, super_weights, heads, bilinear, attribution, toy)\n")),
    "workbench/_api.py": ("replace", (
        "from .analyses.attribution.api import *  # noqa: F403\n",
        "from .analyses.attribution.api import *  # noqa: F403\nfrom .analyses.toy.api import *  # noqa: F403\n")),
    "workbench/render/toy.py": ('new', '''"""The toy's figure."""

from __future__ import annotations

import plotly.graph_objects as go

from ..analyses.toy.norms import ToyResult


def toy_figures(result: ToyResult) -> dict[str, go.Figure]:
    table = result.top_tokens
    return {"norms": go.Figure(go.Bar(x=table["token_id"].astype(str), y=table["norm"]))}
'''),
    "workbench/render/views.py": ("replace", (
        "from .view_table import register_view\n",
        "from .view_table import register_view\nfrom ..analyses.toy.norms import ToyResult\nfrom . import toy\n"
        "\nregister_view(ToyResult, figures=toy.toy_figures)\n")),
    "workbench/commands/toy.py": ('new', '''"""``workbench toy``: the tokens with the largest unembedding norms."""

from __future__ import annotations

from .common import add_model_args, load, print_frame


def run(args) -> None:
    from ..analyses.toy.api import toy_norms

    print_frame(toy_norms(load(args), top=args.top).top_tokens)


def add_parser(sub) -> None:
    p = sub.add_parser("toy", help="print the tokens with the largest unembedding norms")
    p.add_argument("--top", type=int, default=5)
    add_model_args(p)
    p.set_defaults(func=run)
'''),
    "tests/analyses/toy/test_toy.py": ('new', '''import workbench as wb


def test_toy_norms(tiny_llama):
    result = wb.toy_norms(tiny_llama, top=3)
    assert len(result.top_tokens) == 3
'''),
}
