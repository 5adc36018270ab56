"""Explorer responsiveness: control change -> updated view, in real JupyterLab vs the Python callback alone.

    python benchmarks/widgets.py [--quick] [--changes N] [--json out.json]

From cached results (the run computes them first if the cache lacks them; ``WORKBENCH_CACHE`` or
``~/.cache/workbench``), for one control of each of the four explorers of notebooks/explorers.ipynb:

(a) python: the explorer built in this process (no kernel, no browser); time to set the control's
    value until its callback returns (re-slicing the result, building the plotly figures, serialising
    the widget state). This is the kernel's share of a change.
(b) browser: the notebook run in a JupyterLab server started here, opened in headless Chromium
    (``tests/support/jupyterlab_session.py``); in the page, from dispatching the control's change event to the
    first and the last DOM mutation of the explorer's view (settled: no mutation for 0.75 s after it).
    This is what the user waits for: comm round trip, Python callback, widget messages, plotly drawing.

Each control moves to its next option ``--changes`` times (round robin over options). ``ratio`` =
browser settled / python. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from run import machine_facts, print_table  # noqa: E402  (shared helpers; sets offline env)
from support.jupyterlab_session import Control, browser_available, lab_session  # noqa: E402

NOTEBOOK = HERE.parent / "notebooks" / "explorers.ipynb"
MARKERS = {"super_weights": "sw.widget(", "heads": "comp.widget(", "bilinear": "spectrum.widget(",
           "reagent": "attribution.widget("}
# the control's description is also the explorer's attribute name
CONTROLS = (Control("super_weights", "candidate"), Control("heads", "kind", "toggle"),
            Control("bilinear", "direction"), Control("reagent", "target"))


def build_explorers(model) -> dict:
    """The notebook's four explorers, built here (same calls, same cached results)."""
    import workbench as wb

    return {
        "super_weights": wb.super_weights(model).widget(model=model),
        "heads": wb.head_composition(model).widget(),
        "bilinear": wb.bilinear_spectrum(wb.train_digits()).widget(),
        "reagent": wb.reagent(model, prompt="The capital of France is", max_new_tokens=2).widget(),
    }


def python_side(explorers: dict, changes: int) -> dict[str, list[float]]:
    """Milliseconds from setting each control's value to its callback's return, ``changes`` times each."""
    times = {}
    for control in CONTROLS:
        widget = getattr(explorers[control.explorer], control.description)
        values = [o[1] if isinstance(o, tuple) else o for o in widget.options]
        laps = []
        for _ in range(changes):
            nxt = values[(values.index(widget.value) + 1) % len(values)]
            start = time.perf_counter()
            widget.value = nxt  # observers run synchronously
            laps.append((time.perf_counter() - start) * 1e3)
        times[control.explorer] = laps
    return times


def browser_side(changes: int, workdir: Path) -> tuple[float, dict[str, dict[str, list[float]]]]:
    """Notebook run time (s) and per explorer the first / settled latencies (ms) of ``changes`` changes."""
    out = {}
    with lab_session(NOTEBOOK, workdir) as lab:
        run_s = lab.run_all()
        lab.mark_explorers(MARKERS)
        for control in CONTROLS:
            state = lab.wait_rendered(control.explorer)
            if not state or state["drawn"] != state["plots"]:
                raise SystemExit(f"{control.explorer} did not render in JupyterLab: {state}")
            first, last = [], []
            for _ in range(changes):
                r = lab.change(control)
                if "error" in r or not r["changed"]:
                    raise SystemExit(f"{control.explorer}/{control.description}: no view update: {r}")
                first.append(r["first_ms"])
                last.append(r["last_ms"])
            out[control.explorer] = {"first": first, "settled": last}
    return run_s, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 changes per control")
    parser.add_argument("--changes", type=int, default=5, help="control changes per explorer")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    changes = 2 if args.quick else args.changes
    reason = browser_available()
    if reason:
        raise SystemExit(reason)

    import workbench as wb

    wb.set_progress(False)
    model = wb.load_model()
    facts = machine_facts(str(model.device))
    print(json.dumps(facts))
    start = time.perf_counter()
    explorers = build_explorers(model)  # also fills the cache the notebook's kernel reads
    build_s = time.perf_counter() - start
    py = python_side(explorers, changes)
    with tempfile.TemporaryDirectory(prefix="wb-widgets-bench-") as tmp:
        run_s, browser = browser_side(changes, Path(tmp))

    rows = []
    for control in CONTROLS:
        p, b = py[control.explorer], browser[control.explorer]
        settled = statistics.median(b["settled"])
        rows.append({
            "name": control.explorer, "control": control.description,
            "python_ms": statistics.median(p), "python_max_ms": max(p),
            "first_ms": statistics.median(b["first"]), "settled_ms": settled, "settled_max_ms": max(b["settled"]),
            "ratio": settled / statistics.median(p), "notes": f"{changes} changes",
        })
    print(f"\nresults + explorers built in this process: {build_s:.1f} s; notebook run in JupyterLab: {run_s:.1f} s")
    print_table("control change -> updated view, medians (ms)", "python", rows, [
        ("name", "explorer", "s"), ("control", "control", "s"), ("python_ms", "python", ".1f"),
        ("python_max_ms", "python max", ".1f"), ("first_ms", "browser first", ".0f"),
        ("settled_ms", "browser settled", ".0f"), ("settled_max_ms", "settled max", ".0f"), ("ratio", "ratio", ".1f"),
    ])
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "build_s": build_s, "notebook_run_s": run_s,
                                               "rows": rows, "python_ms": py, "browser_ms": browser}, indent=2))


if __name__ == "__main__":
    main()
