"""``workbench bilinear``: the digits demo (train a bilinear classifier, eigendecompose each class),
or with ``--layer L`` a bilinear replacement of an LM's MLP (gated or plain) and its fidelity."""

from __future__ import annotations

from .common import add_model_args, load, print_frame


def run(args) -> None:
    from ..analyses.bilinear.api import bilinear_replacement, bilinear_spectrum, train_digits
    from ..analyses.bilinear.spectrum import BilinearSpectrumResult

    result: BilinearSpectrumResult
    if args.layer is not None:
        result = bilinear_replacement(load(args), layer=args.layer)
        print_frame(result.to_frame("fidelity"))
        print()
    else:
        trained = train_digits(d_hidden=args.hidden, input_noise=args.noise, weight_decay=args.weight_decay,
                               epochs=args.epochs, seed=args.seed)
        m = trained.metrics
        print(f"{trained.name}: train accuracy {m['train_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f}\n")
        result = bilinear_spectrum(trained)
    print_frame(result.to_frame("directions"))
    trunc = result.to_frame("truncation")
    trunc = trunc[(trunc.direction == "all") & trunc.k.isin(args.ks)]
    print(f"\ntruncation: {result.truncation_metric}")
    print_frame(trunc[["k", "value"]])


def add_parser(sub) -> None:
    p = sub.add_parser("bilinear", help="bilinear MLP eigen-analysis: digits demo, or --layer L to replace an LM's MLP")
    p.add_argument("--hidden", type=int, default=64, help="digits: bilinear hidden width (default 64)")
    p.add_argument("--noise", type=float, default=0.4, help="digits: input noise std in training (default 0.4)")
    p.add_argument("--weight-decay", type=float, default=0.5, help="digits: AdamW weight decay (default 0.5)")
    p.add_argument("--epochs", type=int, default=150, help="digits: training epochs (default 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer", type=int, default=None, help="fit a bilinear replacement of this layer's MLP of --model instead")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20, 50], help="truncation levels to print")
    add_model_args(p)
    p.set_defaults(func=run)
