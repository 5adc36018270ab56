"""``workbench attribute "prompt"``: which context tokens made the model say each generated token."""

from __future__ import annotations

from .common import add_model_args, load, print_frame


def run(args) -> None:
    from ..analyses.attribution.api import attribute
    from ..render.attribution import readable_token

    options = {"max_new_tokens": args.new_tokens}
    if args.method == "reagent":
        options.update(n_probes=args.probes, max_steps=args.max_steps, seed=args.seed, replacer=args.replacer)
        if args.mlm_path:
            options["mlm_path"] = args.mlm_path
    result = attribute(load(args), prompt=args.prompt, method=args.method, target=args.target, **options)
    for row in result.targets.itertuples():
        print(f"target {row.target_index}: {readable_token(row.target)!r}  (p = {row.probability:.3f})")
        top = result.top_tokens(row.target_index, args.top)
        top = top.assign(context_token=top["context_token"].map(readable_token))
        print_frame(top[["rank", "context_position", "context_token", "importance"]])
        print()


def add_parser(sub) -> None:
    p = sub.add_parser("attribute", help="print the most important context tokens for each generated token")
    p.add_argument("prompt", help="the prompt to attribute to")
    p.add_argument("--method", default="reagent",
                   help="reagent (default), gradient_norm, input_x_gradient, integrated_gradients, "
                        "attention_last, attention_mean, attention_rollout, occlusion")
    p.add_argument("--target", default=None, help="text whose tokens to attribute (default: generate)")
    p.add_argument("--new-tokens", type=int, default=1, help="generated tokens to attribute (default 1)")
    p.add_argument("--top", type=int, default=5, help="context tokens to print per target")
    p.add_argument("--probes", type=int, default=8, help="ReAGent probes (default 8; Inseq uses 16)")
    p.add_argument("--max-steps", type=int, default=500, help="ReAGent steps per probe at most (default 500; Inseq 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replacer", default="uniform",
                   help="ReAGent's replacement tokens: uniform (default: the vocabulary without special tokens), "
                        "pos (uniform among tokens of the same part of speech, as Inseq and the paper's code; "
                        "needs lemminflect), predictions (the model's own), mlm (needs --mlm-path)")
    p.add_argument("--mlm-path", default=None, help="a saved HF masked LM folder for --replacer mlm")
    add_model_args(p)
    p.set_defaults(func=run)
