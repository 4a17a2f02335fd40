"""The README's example module, run as a real process and stopped with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "hello.py"


def read_until(process: subprocess.Popen[str], text: str) -> list[str]:
    """Lines of the child's stderr up to the first that contains ``text``."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line.rstrip("\n"))
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never appeared; stderr was:\n" + "\n".join(seen))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_example_reloads_on_sighup_and_stops_cleanly(signum):
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE)], stderr=subprocess.PIPE, text=True, bufsize=1
    ) as process:
        try:
            read_until(process, "INFO: <heartbeat> beat")
            os.kill(process.pid, signal.SIGHUP)
            read_until(process, "NOTICE: <heartbeat> reloaded")
            os.kill(process.pid, signum)
            rest = read_until(process, "stopped (error=False)")
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
    name = signal.Signals(signum).name
    assert any(
        line.endswith(f"NOTICE: <runtime> {name} signal received, exiting...") for line in rest
    )


EXTENSION_EXAMPLE = EXAMPLE.parent / "extension_hooks.py"


def test_the_extension_hooks_example_runs_as_the_readme_says():
    done = subprocess.run(
        [sys.executable, str(EXTENSION_EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "db: fine",
        "queue: 3 jobs waiting for more than a minute",
    ]
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    code = EXTENSION_EXAMPLE.read_text()
    body = code[code.index("import trio") : code.index("\n\nif __name__")]
    assert body in readme  # the README shows the example as it runs
