"""``workbench cluster``: the distributed workloads (wb.distributed) from a terminal.

    workbench cluster attribute --prompts prompts.txt [--model M] [--method reagent] [--address tcp://...]
    workbench cluster checkpoints run/step* --analysis head_composition [--out series.html]
    workbench cluster layers CHECKPOINT [--parts N]
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from .common import print_frame


def _cluster(args):
    from ..distributed import cluster

    return cluster(args.address) if args.address else cluster(n_workers=args.workers)


def _prompts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"no prompts file {path}: give a text file with one prompt per line")
    prompts = [line for line in file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"{path} holds no prompt (one per line)")
    return prompts


def run_attribute(args) -> None:
    from ..distributed import attribute_dataset

    prompts = _prompts(args.prompts)
    options = {"target": args.target} if args.target is not None else {}
    with _cluster(args) as c:
        run = attribute_dataset(args.model, prompts, method=args.method, cluster=c, **options)
    rows = []
    for prompt, result, computed in zip(prompts, run.results, run.computed):
        targets = result.targets  # one row per attributed target, with its most important context token
        rows.append({"prompt": prompt[:50], "targets": "".join(targets["target"]),
                     "most important": ", ".join(repr(t) for t in targets["top_context_token"]), "computed": computed})
    print_frame(pd.DataFrame(rows))
    print(f"\n{run.n_computed} computed, {len(prompts) - run.n_computed} read from the cache")


def run_checkpoints(args) -> None:
    from ..distributed import over_checkpoints
    from ..report import report

    with _cluster(args) as c:
        series = over_checkpoints(args.checkpoints, args.analysis, cluster=c)
    print_frame(series.summary_table)
    if args.out:
        path = report([series], args.out, title=f"{args.analysis} across {len(args.checkpoints)} checkpoints")
        print(f"\nwrote {path}")


def run_layers(args) -> None:
    from ..distributed import layer_parallel

    with _cluster(args) as c:
        result = layer_parallel(args.checkpoint, "overview", cluster=c, parts=args.parts)
    print_frame(result.to_frame("matrices").sort_values("outlier_ratio", ascending=False).head(15))


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="run on a Dask cluster: a dataset of prompts, many checkpoints, layer ranges")
    actions = p.add_subparsers(dest="action", required=True)

    def common(q) -> None:
        q.add_argument("--address", default=None, help="an existing Dask scheduler (default: start a local cluster)")
        q.add_argument("--workers", type=int, default=None, help="local workers (default: one per core)")

    q = actions.add_parser("attribute", help="attribute every prompt of a file (one per line), cached per prompt")
    q.add_argument("--prompts", required=True, help="text file, one prompt per line")
    q.add_argument("--model", "-m", default=None, help="model source every worker loads (default: embedded)")
    q.add_argument("--method", default="reagent", help="reagent or a baseline (see `workbench attribute --help`)")
    q.add_argument("--target", default=None, help="token to attribute (default: the generated ones)")
    common(q)
    q.set_defaults(func=run_attribute)

    q = actions.add_parser("checkpoints", help="one analysis on every checkpoint folder, a row per checkpoint")
    q.add_argument("checkpoints", nargs="+", help="checkpoint folders, in training order")
    q.add_argument("--analysis", default="head_composition", help="analysis name (default: head_composition)")
    q.add_argument("--out", default=None, help="also write an HTML report with the figure across checkpoints")
    common(q)
    q.set_defaults(func=run_checkpoints)

    q = actions.add_parser("layers", help="the overview of a checkpoint's shards, layer ranges on the workers")
    q.add_argument("checkpoint", help="a Hugging Face checkpoint folder (safetensors)")
    q.add_argument("--parts", type=int, default=None, help="layer ranges (default: one per worker)")
    common(q)
    q.set_defaults(func=run_layers)
