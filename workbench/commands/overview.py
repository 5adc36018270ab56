"""``workbench overview``: parameter counts and the most outlying weight matrices."""

from __future__ import annotations

from .common import add_model_args, load, print_frame


def run(args) -> None:
    from ..analyses.overview.api import model_overview

    result = model_overview(load(args))
    print_frame(result.to_frame("parameters"))
    print()
    print_frame(result.to_frame("matrices").sort_values("outlier_ratio", ascending=False).head(args.top))


def add_parser(sub) -> None:
    p = sub.add_parser("overview", help="print parameter counts and the most outlying weight matrices")
    p.add_argument("--top", type=int, default=15, help="rows of the matrix table to print")
    add_model_args(p)
    p.set_defaults(func=run)
