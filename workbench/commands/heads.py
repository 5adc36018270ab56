"""``workbench heads``: the most strongly composing attention-head pairs (talking heads)."""

from __future__ import annotations

from .common import add_model_args, given, load, print_frame, print_summary


def run(args) -> None:
    from ..analyses.heads.api import head_composition

    options = given(args, "kinds", "writer_layers", "reader_layers", convert=tuple)
    result = head_composition(load(args), **options)
    print_summary(result)
    pairs = result.to_frame("pairs")
    for kind in result.kinds:
        print(f"\ntop {kind}-composition pairs (score: ||OV_A R_B||_F / (||OV_A||_F ||R_B||_F); vs_null: / random q99)")
        print_frame(pairs[pairs.kind == kind].head(args.top))


def add_parser(sub) -> None:
    p = sub.add_parser("heads", help="print the top composing attention-head pairs (Q/K/V, per SVD component)")
    p.add_argument("--top", type=int, default=10, help="pairs to print per kind")
    p.add_argument("--kinds", nargs="+", choices=("Q", "K", "V"), default=None, help="composition kinds (default: all)")
    p.add_argument("--writer-layers", nargs="+", type=int, default=None, help="restrict writer heads to these layers")
    p.add_argument("--reader-layers", nargs="+", type=int, default=None, help="restrict reader heads to these layers")
    add_model_args(p)
    p.set_defaults(func=run)
