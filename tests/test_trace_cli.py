"""`--trace-hooks` and `--slow-hook-threshold`, with their variables: through the real
command where the lines a run logs are the point, in process (`main([...])`) where only
the refusal of bad input is. A slow hook is made slow by blocking in it, which is what
the threshold reports: no sleep waits for anything to settle."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oversip_hooks._cli import main
from tests.processes import child_env, command, write

# A module that declares an extension hook and implements it; its implementation raises
# when asked to, so that a trace line with an exception can be seen.
HEALTH = """
    from oversip_hooks import hookimpl, hookspec


    class Specs:
        @hookspec
        def diagnose(self, fail):
            "Say whether this plugin is healthy."


    extension_hooks = Specs


    @hookimpl
    def diagnose(fail):
        if fail:
            raise RuntimeError("disk full")
        return "ok"
"""

# Calls the hook twice once started, the second time collecting the error, then stops.
SERVER = """
    import time

    from oversip_hooks import get_logger

    log = get_logger("server")

    SLOW = {slow}


    def initialize():
        time.sleep(SLOW)  # blocks the loop: what a slow hook is


    async def started(runtime):
        log.log_system_info(f"health: {{await runtime.hooks.diagnose(fail=False)}}")
        outcomes = await runtime.hooks.diagnose.call_each({{"fail": True}})
        log.log_system_info(f"errors: {{[str(outcome.error) for outcome in outcomes]}}")
        runtime.stop()
"""

EXTENSION_LINE = re.compile(r" DEBUG: <runtime> diagnose of 'health' took [0-9.]+ (?:ns|µs|ms|s)")
LIFECYCLE_LINE = re.compile(
    r" DEBUG: <runtime> initialize of 'server' took [0-9.]+ (?:ns|µs|ms|s)$"
)


def _files(slow: float = 0.0) -> dict[str, str]:
    return {"health.py": HEALTH, "server.py": SERVER.format(slow=slow)}


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        pytest.param(["--trace-hooks"], {}, id="flag"),
        pytest.param([], {"OVERSIP_HOOKS_TRACE_HOOKS": "1"}, id="variable"),
        pytest.param([], {"OVERSIP_HOOKS_TRACE_HOOKS": "Yes"}, id="variable-any-case"),
    ],
)
async def test_trace_hooks_logs_one_debug_line_per_extension_hook_call(
    tmp_path: Path, args: list[str], variables: dict[str, str]
) -> None:
    write(tmp_path, _files())
    env = child_env(tmp_path, **variables)
    ran = await command(tmp_path, "run", "server.py", "--plugin", "health", *args, env=env)
    assert ran.status == 0, ran.err
    traced = [line for line in ran.err if EXTENSION_LINE.search(line)]
    # One line per call: the first returned, the second raised, with its exception.
    assert len(traced) == 2, ran.err
    assert "raised" not in traced[0]
    assert ", raised RuntimeError" in traced[1], traced
    assert "disk full" in traced[1], traced
    assert any("errors: ['disk full']" in line for line in ran.err), ran.err
    # The level became debug without being asked: the lifecycle's lines are there too.
    assert any(LIFECYCLE_LINE.search(line) for line in ran.err), ran.err


@pytest.mark.parametrize("variables", [{}, {"OVERSIP_HOOKS_TRACE_HOOKS": "off"}])
async def test_without_trace_hooks_only_lifecycle_hook_calls_are_logged(
    tmp_path: Path, variables: dict[str, str]
) -> None:
    write(tmp_path, _files())
    env = child_env(tmp_path, **variables)
    args = ["run", "server.py", "--plugin", "health", "--log-level", "debug"]
    ran = await command(tmp_path, *args, env=env)
    assert ran.status == 0, ran.err
    assert not [line for line in ran.err if EXTENSION_LINE.search(line)], ran.err
    assert any(LIFECYCLE_LINE.search(line) for line in ran.err), ran.err


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        pytest.param(["--slow-hook-threshold", "0.01"], {}, id="flag"),
        pytest.param([], {"OVERSIP_HOOKS_SLOW_HOOK_THRESHOLD": "0.01"}, id="variable"),
        pytest.param(
            ["--slow-hook-threshold", "0.01"],
            {"OVERSIP_HOOKS_SLOW_HOOK_THRESHOLD": "30"},
            id="flag-wins",
        ),
    ],
)
async def test_a_lifecycle_hook_over_the_threshold_is_logged_at_notice(
    tmp_path: Path, args: list[str], variables: dict[str, str]
) -> None:
    write(tmp_path, _files(slow=0.05))
    env = child_env(tmp_path, **variables)
    ran = await command(tmp_path, "run", "server.py", "--plugin", "health", *args, env=env)
    assert ran.status == 0, ran.err
    slow = [line for line in ran.err if " NOTICE: <runtime> initialize of 'server' took " in line]
    assert len(slow) == 1, ran.err
    # Extension hook calls are traced, not timed against the threshold.
    assert not [line for line in ran.err if "diagnose" in line and "NOTICE" in line]


async def test_the_default_threshold_lets_a_fast_hook_pass_in_silence(tmp_path: Path) -> None:
    write(tmp_path, _files(slow=0.05))
    ran = await command(tmp_path, "run", "server.py", "--plugin", "health")
    assert ran.status == 0, ran.err
    assert not [line for line in ran.err if " took " in line], ran.err


# -- bad input, in process ----------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith(("OVERSIP_HOOKS_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # for --plugin health
    write(tmp_path, _files())
    yield tmp_path
    sys.modules.pop("health", None)  # imported by the run: the next test writes its own


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on standard error of ``oversip-hooks ARGS``, which must exit with 2."""
    try:
        status = main(args)
    except SystemExit as exit:  # argparse's own usage errors
        status = exit.code if isinstance(exit.code, int) else 1
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.usefixtures("clean_environ")
@pytest.mark.parametrize("subcommand", ["run", "check"])
@pytest.mark.parametrize(
    ("args", "variables", "expected"),
    [
        pytest.param(
            ["--trace-hooks", "--log-level", "info"],
            {},
            "--trace-hooks logs at debug, which --log-level info hides",
            id="trace-with-a-higher-level-flag",
        ),
        pytest.param(
            ["--trace-hooks"],
            {"OVERSIP_HOOKS_LOG_LEVEL": "notice"},
            "--trace-hooks logs at debug, which OVERSIP_HOOKS_LOG_LEVEL notice hides",
            id="trace-with-a-higher-level-variable",
        ),
        pytest.param(
            [],
            {"OVERSIP_HOOKS_TRACE_HOOKS": "enabled"},
            "OVERSIP_HOOKS_TRACE_HOOKS: expected 1, true, yes or on, or 0, false, no or off, "
            "not 'enabled'",
            id="trace-variable-not-a-yes-or-no",
        ),
        pytest.param(
            ["--slow-hook-threshold", "0"],
            {},
            "argument --slow-hook-threshold: expected a positive number of seconds, not '0'",
            id="threshold-zero",
        ),
        pytest.param(
            ["--slow-hook-threshold", "1e3"],
            {},
            "argument --slow-hook-threshold: expected a positive number of seconds",
            id="threshold-exponent",
        ),
        pytest.param(
            [],
            {"OVERSIP_HOOKS_SLOW_HOOK_THRESHOLD": "86401"},
            "OVERSIP_HOOKS_SLOW_HOOK_THRESHOLD: expected at most 86400 seconds",
            id="threshold-variable-over-a-day",
        ),
    ],
)
def test_bad_trace_settings_are_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    subcommand: str,
    args: list[str],
    variables: dict[str, str],
    expected: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    line = _refused(
        [subcommand, "server.py", "--plugin", "health", "--no-entrypoints", *args], capsys
    )
    assert expected in line, line


@pytest.mark.usefixtures("clean_environ")
def test_trace_hooks_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(["check", "server.py", "--trace-hooks=1"], capsys)
    assert "argument --trace-hooks: ignored explicit argument '1'" in line, line


@pytest.mark.usefixtures("clean_environ")
def test_trace_hooks_with_debug_given_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check", "server.py", "--plugin", "health", "--no-entrypoints"]
    status = main([*args, "--trace-hooks", "--log-level", "debug"])
    assert (status, capsys.readouterr().out) == (0, "oversip-hooks: ok (plugins: health, server)\n")
