"""``benchmarks/device_check.py`` (the script a session lent a GPU runs) runs end to end on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "device_check.py"


def test_device_check_runs_on_cpu_quick():
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--no-inseq"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for analysis in ("overview", "head composition", "head effects", "super weights", "super-weight trace",
                     "bilinear replacement", "ReAGent"):
        assert f"| {analysis} |" in out
    assert "float32 agreement: all within tolerance" in out  # the CPU against itself: exactly equal
