"""Write README's families x analyses table from the same matrix the tests run.

    .venv/bin/python docs/families.py          # ~1 minute on a 2-core CPU

Builds each family's tiny random model (tests/support/families.py), loads it through
``wb.load_model(folder)``, runs every analysis with small settings, and replaces the table
between the markers in README.md. ``tests/models/test_families.py`` fails when the table is stale.
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
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    (ROOT / "README.md").write_text(f"{head}{START}\n{readme_table(outcomes)}\n{END}{tail}")
    print("README.md updated")


if __name__ == "__main__":
    main()
