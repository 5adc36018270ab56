"""A busy machine: the report's analyses next to a second busy process, against the same run on an idle machine.

    .venv/bin/python benchmarks/load.py            # the whole report (cold results): ~10 minutes on 2 cores
    .venv/bin/python benchmarks/load.py --quick    # overview + head composition only: ~2 minutes

Two kinds of neighbour: a single-threaded busy process (one core taken), and another PyTorch job (a
matmul loop with PyTorch's default threads: every core wanted, the usual neighbour on a shared
workstation). Each condition runs in a fresh process with a fresh result cache (the converted embedded
model is reused). Side by side in one run: idle; next to each neighbour with threads sized to the free
cores (the workbench's default); and next to each with ``WORKBENCH_THREADS=all`` (PyTorch's default
thread count: the old behaviour), stopped after ``--limit`` seconds.

Goal: busy / idle within 2.5x. The script refuses to start when the machine is not idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEIGHBOURS = {
    "one busy core (a Python loop)": "while True:\n    pass\n",
    "another PyTorch job (all cores)": "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n",
}
QUICK = """
import time, workbench as wb
model = wb.load_model(progress=False)
start = time.perf_counter()
wb.model_overview(model)
wb.head_composition(model)
print(f"WORK {time.perf_counter() - start:.2f}")
"""
REPORT = """
import time, workbench as wb
from workbench.engine import list_analyses, run_analysis
model = wb.load_model(progress=False)
start = time.perf_counter()
for spec in list_analyses():
    if spec.in_report:
        try:
            run_analysis(spec.name, spec.report_subject(model) if spec.report_subject else model)
        except wb.UnsupportedModelError:
            pass
print(f"WORK {time.perf_counter() - start:.2f}")
"""


def timed(code: str, env: dict, limit: float) -> float | None:
    """Seconds the workload took in a fresh process (model loading excluded), or None past ``limit``."""
    from workbench._paths import cache_root

    with tempfile.TemporaryDirectory() as fresh:
        models = cache_root(None) / "models"
        if models.is_dir():  # a fresh result cache, but the converted model reused
            (Path(fresh) / "models").symlink_to(models)
        env = dict(env, WORKBENCH_PROGRESS="0", WORKBENCH_CACHE=fresh)
        try:
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return None
        lines = [line for line in out.stdout.splitlines() if line.startswith("WORK ")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"workload failed: {out.stderr[-2000:]}")
        return float(lines[-1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="overview + head composition instead of the whole report")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    from workbench._threads import cores, free_cores

    free = free_cores(1.0)
    if free < cores() - 0.3:
        sys.exit(f"the machine is busy ({cores() - free:.1f} of {cores()} cores in use): run this on an idle machine")
    code = QUICK if args.quick else REPORT
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_THREADS"}
    print(f"{cores()} cores, {free:.2f} free before starting; workload: {'quick' if args.quick else 'report'}", flush=True)
    idle = timed(code, env, args.limit)
    print(f"idle: {idle:.1f} s", flush=True)
    rows = [("idle", "-", idle)]
    for neighbour, busy_code in NEIGHBOURS.items():
        busy = subprocess.Popen([sys.executable, "-c", busy_code])
        try:
            time.sleep(2.0)
            for threads, setting in (("sized to free cores", None), ("all (before)", "all")):
                run_env = env if setting is None else dict(env, WORKBENCH_THREADS=setting)
                seconds = timed(code, run_env, args.limit)
                rows.append((neighbour, threads, seconds))
                print(f"{neighbour}, threads {threads}: "
                      + (f"{seconds:.1f} s ({seconds / idle:.2f}x idle)" if seconds else f"stopped at {args.limit:.0f} s"),
                      flush=True)
        finally:
            busy.kill()
            busy.wait()
    print("\n| neighbour | threads | seconds | vs idle |\n|---|---|---|---|")
    for neighbour, threads, seconds in rows:
        shown = (f"{seconds:.1f} | {seconds / idle:.2f}x" if seconds is not None
                 else f"> {args.limit:.0f} | > {args.limit / idle:.0f}x")
        print(f"| {neighbour} | {threads} | {shown} |")
    worst = max(s / idle for _, t, s in rows if s is not None and t.startswith("sized"))
    print(f"\nworst busy / idle with sized threads: {worst:.2f}x (goal <= 2.5x: {'met' if worst <= 2.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
