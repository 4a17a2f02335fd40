"""The benchmark command keeps working: run at tiny sizes, with no timing asserted (the
figures of a one-round run on a shared machine mean nothing; see benchmarks/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Dispatch of one event to N plugins",
    "Whole lifecycle, per plugin, against the smallest N",
    "Time to ready and import",
    "HTTP probes: /livez and /readyz",
    "Signals",
    "Logging: one line to a file sink",
    "Memory: peak RSS per 1000 plugins",
    "SQLite module: statements against aiosqlite and sqlite3",
    "MySQL module: statements against aiomysql and the driver",
)


@pytest.mark.slow
def test_the_benchmark_command_prints_its_table_and_writes_its_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("figure ")
    assert "sync: dispatch / pluggy" in done.stdout
    written = results.read_text()
    assert written.startswith("# Benchmark results\n")
    for key in ("| cores |", "| python |", "| trio |", "| pluggy |", "| loguru |", "| date |"):
        assert key in written
    for title in SECTIONS:
        assert f"[{title}]" in done.stdout
        assert f"## {title}" in written
