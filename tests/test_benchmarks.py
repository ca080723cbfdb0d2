"""The benchmark commands run (on a tiny configuration: timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_generation_benchmark_runs_and_reports_both_paths():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "generation.py"), "--units", "8", "--length", "10",
                             "--repeats", "1", "--rows", "1", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "3"]
    assert all(float(row[1].replace(",", "")) > 0 and float(row[2].replace(",", "")) > 0 for row in rows)
