"""``workbench super-weights``: detect super weights and print the candidates table; ``--trace PROMPT``
follows the strongest one (or ``--weight L ROW COL``) to its driving and reading heads on a prompt."""

from __future__ import annotations

from .common import add_model_args, given, load, print_frame, print_summary

COLUMNS = ["layer", "row", "col", "weight", "weight_rank", "in_value", "out_value", "position", "token", "round",
           "delta_loss", "kl", "effect_vs_random", "role"]


def run(args) -> None:
    from ..analyses.super_weights.api import super_weights, trace_super_weight

    model = load(args)
    options = given(args, "eval_windows", "window", "max_rounds", "out_factor")
    options.update({k: v for k, v in (("prompts", args.prompts), ("eval_file", args.eval_file)) if v is not None})
    result = super_weights(model, cache=not args.no_cache, **options)
    print_summary(result)
    print()
    table = result.candidates
    if not result.spiked:
        print("no layer spiked: no candidates" + ("; the best single weight, measured anyway:" if len(table) else ""))
    if len(table):
        print_frame((result.super_weights if args.only_super else table)[COLUMNS])
    published = result.compare_published()
    if published is not None:
        print("\npublished index:")
        print_frame(published)
    if args.trace is not None:
        chosen = {k: v for k, v in (("weight", args.weight), ("prompt", args.trace or None)) if v is not None}
        trace = trace_super_weight(model, cache=not args.no_cache, **chosen)
        print("\ntrace:")
        print_summary(trace)
        print("\nparts of the residual stream that drive its input channel:")
        print_frame(trace.top_drivers(10))
        print("\nlater heads whose attention on the spike tokens moves most when it is zeroed:")
        print_frame(trace.top_readers(10))


def add_parser(sub) -> None:
    p = sub.add_parser("super-weights", help="find super weights (Yu et al. 2024) and print the candidates")
    p.add_argument("--prompts", nargs="+", default=None, help="detection prompts (default: a few short sentences)")
    p.add_argument("--eval-file", default=None, help="UTF-8 text file for ablation effects (default: the shipped corpus)")
    p.add_argument("--eval-windows", type=int, default=None, help="windows of the evaluation text")
    p.add_argument("--window", type=int, default=None, help="tokens per window")
    p.add_argument("--max-rounds", type=int, default=None, help="most scan rounds of the iterative search")
    p.add_argument("--out-factor", type=float, default=None, help="spike: top channel / median channel of the MLP output")
    p.add_argument("--only-super", action="store_true", help="print only the candidates labelled 'super weight'")
    p.add_argument("--trace", nargs="?", const="", default=None, metavar="PROMPT",
                   help="follow a super weight on PROMPT (default prompt if none): its drivers and reading heads")
    p.add_argument("--weight", nargs=3, type=int, default=None, metavar=("LAYER", "ROW", "COL"),
                   help="the weight --trace follows (default: the strongest super weight)")
    p.add_argument("--no-cache", action="store_true", help="recompute even if a cached result exists")
    add_model_args(p)
    p.set_defaults(func=run)
