"""The benchmark command keeps working: run at tiny sizes, with no timing asserted (the
figures of a one-round run on a shared machine mean nothing; see benchmarks/RESULTS.md)."""

from __future__ import annotations

import shutil
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


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_an_instruction_count_is_the_same_from_one_run_to_the_next(tmp_path: Path) -> None:
    """What makes the count worth showing beside the time: a rerun gives the same figure,
    and more work gives a larger one."""
    from benchmarks.startup import _instructions

    small = _instructions(["-c", "pass"], tmp_path)
    large = _instructions(["-c", "sum(range(10**6))"], tmp_path)
    first, second = (small(1)["instructions"] for _ in range(2))
    assert abs(first - second) / first < 0.01
    assert large(1)["instructions"] > first + 10**7  # a million additions, tens of millions


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_an_instruction_count_of_a_failed_process_is_refused(tmp_path: Path) -> None:
    from benchmarks.startup import _instructions

    with pytest.raises(RuntimeError, match="exited with status 3"):
        _instructions(["-c", "raise SystemExit(3)"], tmp_path)(1)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_an_instruction_count_is_read_whatever_valgrinds_options_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quiet, its messages sent to a file, other events counted beside the instructions:
    the count is still found, and is still that of the instructions."""
    from benchmarks.startup import _instructions

    plain = _instructions(["-c", "pass"], tmp_path)(1)["instructions"]
    monkeypatch.setenv(
        "VALGRIND_OPTS", f"-q --log-file={tmp_path / 'valgrind.log'} --cache-sim=yes"
    )
    other = _instructions(["-c", "pass"], tmp_path)(1)["instructions"]
    assert abs(other - plain) / plain < 0.01
