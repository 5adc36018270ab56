"""The ``workbench`` command: a thin shell over the Python API.

    workbench report --out report.html [--model M] [--analyses overview ...]
    workbench models
    workbench info --model M
    workbench overview --model M
    workbench super-weights | heads | bilinear | attribute ...   (one per analysis)
    workbench cluster attribute | checkpoints | layers ...        (on a Dask cluster: wb.distributed)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from types import ModuleType

from ._version import __version__
from .commands.common import add_model_args, load, print_frame
from .errors import MissingExtraError, UnsupportedModelError, WorkbenchError


def command_modules() -> list[ModuleType]:
    """The sub-commands of the analyses: ``workbench.commands.<package>`` for each package of
    :data:`workbench.analyses.PACKAGES`, in its order (each module has ``add_parser(sub)``)."""
    from .analyses import PACKAGES

    return [importlib.import_module(f"{__package__}.commands.{package.__name__.rpartition('.')[2]}")
            for package in PACKAGES]


def cmd_models(args) -> None:
    import pandas as pd

    from .models import available_models

    print_frame(pd.DataFrame(available_models()))
    print("\nAlso: any local HF folder, any .gguf file, or a hub id (needs the network unless cached).")


def cmd_info(args) -> None:
    model = load(args)
    for key, value in model.facts.describe():
        print(f"{key:>22}  {value}")
    print(f"{'device':>22}  {model.device}")
    print(f"{'fingerprint':>22}  {model.fingerprint()}")
    print(f"{'hook points':>22}  {len(model.hook_names())}")


def page_options(args) -> dict:
    """What a report page is recorded under (``report/pages.py``): the options that choose its content."""
    return {"model": None if args.model is None else str(args.model), "analyses": args.analyses, "title": args.title,
            "dtype": args.dtype, "device_map": args.device_map}


def _say_written(path, sections: int, start: float, how: str) -> None:
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB, {sections} section(s), {time.perf_counter() - start:.1f} s, {how})")


def cmd_report(args) -> None:
    from .cache import get_cache
    from .engine import get_analysis, list_analyses
    from .engine.runner import run_with_key
    from .report import report
    from .report.build import check_output_path, section_id
    from .report.pages import record
    from .report.plan import Plan, cached_sections, model_files, plan_id, save_plan

    names = args.analyses or [a.name for a in list_analyses() if a.in_report]
    for name in names:  # every argument checked before any work
        get_analysis(name)
    check_output_path(args.out)
    start = time.perf_counter()
    store = get_cache()
    # every section cached for these exact model files: the report needs no model (workbench/report/plan.py)
    identity = plan_id(args.model, names, dtype=args.dtype, device_map=args.device_map)
    found = cached_sections(identity, store) if identity is not None else None
    planned = found is not None
    if found is not None:
        plan, results = found
        keys: list[str | None] = [key for _, key in plan.sections]
        skipped = plan.skipped
        for name, why in skipped:
            print(f"skipped {name}: {why}", file=sys.stderr)
        model_name, how = plan.model, "from the cache, model not loaded"
    else:
        model = load(args)
        results, sections, skipped, keys = [], [], [], []
        for name in names:
            spec = get_analysis(name)
            try:
                result, key = run_with_key(spec, spec.report_subject(model) if spec.report_subject else model, cache=store)
            # a bilinear replacement asked of a plain MLP, the digits demo without scikit-learn: skip, say why
            except (UnsupportedModelError, MissingExtraError) as exc:
                print(f"skipped {name}: {exc}", file=sys.stderr)
                skipped.append((name, str(exc)))
                continue
            results.append(result)
            keys.append(key)
            if key is not None:
                sections.append((name, key))
        if not results:
            raise UnsupportedModelError(f"none of {names} applies to {model.name}")
        if identity is not None and len(sections) == len(results):
            save_plan(identity, Plan(model.name, sections, skipped))
            planned = True
        model_name, how = model.name, "model loaded"
    title = args.title or f"Workbench report: {model_name}"
    path = report(results, args.out, title=title, keys=keys)
    if planned and identity is not None:  # the next identical run writes this page without torch (report/pages.py)
        files, folder = model_files(args.model)
        record(page_options(args), plan=identity, title=title, model_files=files, folder=folder, skipped=skipped,
               sections=[(section_id(i, r), r.title, r.model_id, r.analysis, str(k)) for i, (r, k) in enumerate(zip(results, keys))])
    _say_written(path, len(results), start, how)


class _NotThisWay(Exception):
    """The report's own parser met something only the full command line parser answers (it says what is wrong)."""


class _ReportParser(argparse.ArgumentParser):
    def error(self, message):  # the full parser says what is wrong
        raise _NotThisWay(message)


def replay_report(argv: list[str]) -> bool:
    """``workbench report ...`` written again from the page an identical run recorded (``report/pages.py``),
    importing neither torch nor the analyses; False (nothing written) when there is none or anything changed."""
    if any(a in ("-h", "--help") for a in argv):
        return False
    parser = _ReportParser(prog="workbench report", add_help=False)
    add_report_args(parser)
    try:
        args = parser.parse_args(argv)
    except _NotThisWay:
        return False
    from .report.pages import replay

    start = time.perf_counter()
    done = replay(page_options(args), args.out)  # checks --out only when it has a page to write
    if done is None:
        return False
    path, sections, skipped = done
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    _say_written(path, sections, start, "from the cache, model not loaded")
    return True


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", default="report.html", help="output file (default: report.html)")
    p.add_argument("--analyses", nargs="+", default=None, help="analyses to include (default: all registered)")
    p.add_argument("--title", default=None)
    add_model_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Interpretability and weight analysis for transformer LMs.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("report", help="write a self-contained HTML report")
    add_report_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("models", help="list the models that load here without the network")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="architecture facts of a model")
    add_model_args(p)
    p.set_defaults(func=cmd_info)

    for module in command_modules():
        module.add_parser(sub)
    from .commands import cluster

    cluster.add_parser(sub)  # not an analysis: runs them on a Dask cluster (wb.distributed)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # every section of this very report cached and rendered: written from them, without torch
        if argv[:1] == ["report"] and replay_report(argv[1:]):
            return 0
        args = build_parser().parse_args(argv)
        args.func(args)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
