"""``workbench report`` with every section cached: without its plan (the model is loaded and fingerprinted, each
section read from the cache) vs with it (the model is not loaded; the results are read for the table of contents,
torch and the analyses imported) vs the page replayed (``workbench/report/pages.py``: plan, model files, results
and rendered sections unchanged, so the page is written again from its sections without importing torch), side
by side in one run.

    python benchmarks/report_from_cache.py [--model M] [--repeats N]

Uses the cache in ``WORKBENCH_CACHE`` (or ``~/.cache/workbench``); the first report fills whatever is missing
(untimed). Each timed run is a fresh ``python -m workbench.cli report`` process, import of the package included.
The machine's load (1-minute average) is printed before and after: on a shared machine the absolute times move
with it, the ratio less so. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, here and in the timed processes (run from ROOT)


def _report(model: str | None, out: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "workbench.cli", "report", "--out", str(out)] + (["--model", model] if model else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WORKBENCH_PROGRESS": "0"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return wall, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from workbench._paths import cache_root
    from workbench.engine import list_analyses
    from workbench.report.pages import FOLDER
    from workbench.report.plan import _path, plan_id

    names = [a.name for a in list_analyses() if a.in_report]
    identity = plan_id(args.model, names)
    if identity is None:
        raise SystemExit(f"{args.model} is not a model made of files: its report always loads the model")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        _report(args.model, out)  # fills the cache and the plan
        times: dict[str, list[float]] = {"model loaded": [], "from the plan": [], "page replayed": []}
        for _ in range(args.repeats):
            _path(identity).unlink(missing_ok=True)  # without a plan: load, fingerprint, read each section
            wall, line = _report(args.model, out)
            assert "model loaded" in line, line
            times["model loaded"].append(wall)
            for page in (cache_root() / FOLDER).glob("*.json"):  # the plan, but no page to replay
                page.unlink()
            wall, line = _report(args.model, out)  # the plan the run above wrote
            assert "model not loaded" in line, line
            times["from the plan"].append(wall)
            wall, line = _report(args.model, out)  # the page the run above recorded
            assert "model not loaded" in line, line
            times["page replayed"].append(wall)
    for name, laps in times.items():
        print(f"{name:>14}: median {statistics.median(laps):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in laps)})")
    for name in ("from the plan", "page replayed"):
        ratio = statistics.median(times["model loaded"]) / statistics.median(times[name])
        print(f"ratio model loaded / {name}: {ratio:.1f}x")
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
