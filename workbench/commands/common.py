"""What every sub-command shares: the model options, loading, and table printing."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None, help="model source (default: embedded SmolLM2-135M-Instruct; see `workbench models`)")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16")
    parser.add_argument("--device-map", default=None, help="'auto' to shard a large model over GPUs / offload to CPU")


def load(args):
    from .. import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)


def print_frame(df: pd.DataFrame, max_rows: int = 60) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", max_rows, "display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))


def print_summary(result) -> None:
    """A result's summary lines, keys right-aligned."""
    lines = result.summary()
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:>{width}}  {value}")


def given(args, *names: str, convert=lambda v: v) -> dict:
    """The options among ``names`` that were given on the command line (not None), as ``convert(value)``."""
    return {name: convert(getattr(args, name)) for name in names if getattr(args, name) is not None}
