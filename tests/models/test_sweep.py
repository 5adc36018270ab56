"""Every decoder architecture the installed TransformerLens bridge boots: right or refused, never a number from a
failed identity.

For each causal-LM class of the bridge's table that the installed transformers has (tests/support/sweep.py), a
tiny random model is saved and loaded through ``wb.load_model(folder)``. It is refused at load with one clear
line, or loaded; a loaded model's self-check decides which analyses may run, each analysis that may not refuses
naming the failed identity, and the cheap ones that may (the overview, which reads every weight accessor, and
ReAGent) run. README's sweep table is this test's outcome (``python docs/families.py`` writes it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.sweep import bridge_architectures, scope, sweep_table, verify

ARCHITECTURES = [a for a in bridge_architectures() if scope(a) is None]
SWEEP: dict[str, tuple[str, str]] = {}  # architecture -> (outcome, detail)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_bridge_architecture_is_verified_or_refused(architecture, tmp_path_factory):
    SWEEP[architecture] = verify(architecture, tmp_path_factory.mktemp(architecture, numbered=False))
    if SWEEP[architecture][0] == "skipped":
        pytest.skip(f"{architecture}: {SWEEP[architecture][1]}")


def test_readme_sweep_table_is_the_sweep():
    """README's sweep table is what the sweep above found (``python docs/families.py`` writes it)."""
    if len(SWEEP) < len(ARCHITECTURES):
        pytest.skip("the whole sweep did not run in this session")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert sweep_table(SWEEP) in readme, "README's sweep table is stale: run python docs/families.py"
