"""Write README's families x analyses table from the same matrix the tests run.

    .venv/bin/python docs/families.py          # ~1 minute on a 2-core CPU

Builds each family's tiny random model (tests/support/families.py), loads it through
``wb.load_model(folder)``, runs every analysis with small settings, and replaces the table
between the markers in README.md; then sweeps every causal-LM architecture of the installed
TransformerLens bridge (tests/support/sweep.py) for the second table. ``tests/models/test_families.py``
and ``tests/models/test_sweep.py`` fail when a table is stale.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("WORKBENCH_CACHE", tempfile.mkdtemp(prefix="workbench-families-"))

START, END = "<!-- families table: start -->", "<!-- families table: end -->"
SWEEP_START, SWEEP_END = "<!-- sweep table: start -->", "<!-- sweep table: end -->"


def main() -> None:
    import workbench as wb
    from support.families import FAMILIES, analysis_runs, outcome, readme_table, save_family

    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in sorted(FAMILIES):
            model = wb.load_model(save_family(family, Path(tmp) / family), progress=False)
            for name, run in analysis_runs(model).items():
                outcomes[(family, name)] = outcome(run)[0]
            print(family, sum(v == "yes" for (f, _), v in outcomes.items() if f == family), "analyses", flush=True)
    from support.sweep import bridge_architectures, scope, sweep_table, verify

    sweep = {}
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in bridge_architectures():
            if scope(architecture) is None:
                sweep[architecture] = verify(architecture, Path(tmp) / architecture)
                print(architecture, *sweep[architecture], flush=True)
    readme = (ROOT / "README.md").read_text()
    for (start, end), table in (((START, END), readme_table(outcomes)), ((SWEEP_START, SWEEP_END), sweep_table(sweep))):
        head, rest = readme.split(start)
        _, tail = rest.split(end)
        readme = f"{head}{start}\n{table}\n{end}{tail}"
    (ROOT / "README.md").write_text(readme)
    print("README.md updated")


if __name__ == "__main__":
    main()
