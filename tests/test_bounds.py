"""The lifecycle's promises at their edges, through the real command: the shutdown (and the
start) bounded whatever plugin code does, signals handled from the process's first instant
to its last. Real child processes and real signals; the races are repeated until they
would show."""

from __future__ import annotations

import contextlib
import signal
import textwrap
import time
from pathlib import Path

import pytest
import trio

from tests.processes import SERVER, TIMEOUT, Child, Spawn, child_env, write

# A plugin below would hold the process for 60 s; the bound is the timeout (2 s) plus the
# grace (1 s). Far enough from both that only a broken bound fails, not a slow machine.
BOUNDED = 15

# A module loaded with --plugin before the server file: its `terminated` runs after the
# server's, its `started` before.
INNOCENT = """
    import trio
    from oversip_hooks import get_logger, hookimpl

    log = get_logger("innocent")

    @hookimpl
    def initialize():
        log.log_system_info("innocent initialize")

    @hookimpl
    def started():
        log.log_system_info("innocent started")

    @hookimpl
    async def terminated():
        await trio.lowlevel.checkpoint()
        log.log_system_info("innocent terminated")
"""


async def ended_by_the_watchdog(child: Child, begun: float, directory: Path) -> str:
    """Wait for ``child`` to end; check that it ended in bounds, with status 1, its PID
    file removed and one line saying what still ran, and return that line."""
    status = await child.finish()
    assert time.monotonic() - begun < BOUNDED
    assert status == 1, "\n".join(child.lines)
    [overrun] = [line for line in child.lines if "still running" in line]
    assert not (directory / "pid").exists()
    return overrun


STUCK_SERVICES = {
    "worker-thread": (
        """
        import time, trio

        async def blocked():
            await trio.to_thread.run_sync(time.sleep, 60)

        def started(runtime):
            runtime.start_soon(blocked)
        """,
        ["service blocked", "a worker thread running sleep"],
    ),
    "shielded-scope": (
        """
        import trio

        async def shielded():
            with trio.CancelScope(shield=True):
                await trio.sleep(60)

        def started(runtime):
            runtime.start_soon(shielded)
        """,
        ["service shielded"],
    ),
    "swallowed-cancellation": (
        """
        import trio

        async def stubborn():
            deadline = trio.current_time() + 60
            while trio.current_time() < deadline:
                try:
                    await trio.sleep_until(deadline)
                except trio.Cancelled:
                    pass

        def started(runtime):
            runtime.start_soon(stubborn)
        """,
        ["service stubborn"],
    ),
    "terminated-awaits-a-thread": (
        """
        import time, trio

        async def terminated():
            await trio.to_thread.run_sync(time.sleep, 60)
        """,
        ["terminated", "a worker thread running sleep"],
    ),
    "sync-terminated-blocks-the-loop": (
        """
        import time

        def terminated():
            time.sleep(60)
        """,
        ["terminated"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("server", "still_running"), STUCK_SERVICES.values(), ids=STUCK_SERVICES)
async def test_a_stuck_shutdown_ends_the_process_after_the_grace(
    tmp_path: Path, spawn: Spawn, server: str, still_running: list[str]
) -> None:
    write(tmp_path, {"server.py": server})
    child = await spawn("run", "server.py", "--shutdown-timeout", "2", "--pidfile", "pid")
    await child.line("running")
    begun = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    overrun = await ended_by_the_watchdog(child, begun, tmp_path)
    assert "CRIT: <runtime> the shutdown did not end within the shutdown timeout of 2 s" in overrun
    assert f"'server': {', '.join(still_running)}" in overrun
    assert overrun.endswith("ending the process")
    assert not any("Traceback" in line for line in child.lines)


@pytest.mark.slow
async def test_a_sync_terminated_that_returns_late_is_the_one_blamed(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(
        tmp_path,
        {
            "innocent.py": INNOCENT,
            "server.py": """
                import time

                def terminated():
                    time.sleep(2.3)
            """,
        },
    )
    child = await spawn(
        "run", "server.py", "--plugin", "innocent", "--shutdown-timeout", "2", "--pidfile", "pid"
    )
    await child.line("running")
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 1
    crit = [line for line in child.lines if "CRIT:" in line]
    assert any(
        "terminated of 'server' returned late: the shutdown timeout of 2 s ran out" in line
        for line in crit
    )
    assert not any("innocent" in line for line in crit)
    assert not (tmp_path / "pid").exists()


@pytest.mark.slow
async def test_a_sync_started_that_blocks_the_loop_cannot_outlast_the_startup_timeout(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(
        tmp_path,
        {
            "innocent.py": INNOCENT,
            "server.py": """
                import time

                def started():
                    time.sleep(60)
            """,
        },
    )
    child = await spawn(
        "run",
        "server.py",
        "--plugin",
        "innocent",
        "--startup-timeout",
        "1",
        "--shutdown-timeout",
        "2",
        "--pidfile",
        "pid",
    )
    await child.line("innocent started")
    begun = time.monotonic()
    await child.line(
        "CRIT: <runtime> started of 'server' did not complete within the startup timeout of 1 s"
    )
    overrun = await ended_by_the_watchdog(child, begun, tmp_path)
    assert "'server': started" in overrun


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["started", "terminated"])
async def test_a_second_stop_signal_ends_a_blocked_process_within_the_grace(
    tmp_path: Path, spawn: Spawn, phase: str
) -> None:
    write(
        tmp_path,
        {
            "server.py": f"""
                import sys, time

                def {phase}():
                    print("blocking", file=sys.stderr, flush=True)
                    time.sleep(60)
            """
        },
    )
    child = await spawn("run", "server.py", "--shutdown-timeout", "30", "--pidfile", "pid")
    if phase == "terminated":
        await child.line("running")
        child.process.send_signal(signal.SIGTERM)
    await child.line("blocking")
    if phase == "started":
        child.process.send_signal(signal.SIGTERM)
    begun = time.monotonic()
    # Another signal than the first: two of the same, sent a microsecond apart, are
    # delivered as one by the kernel, as they would never be sent by an operator.
    child.process.send_signal(signal.SIGINT)
    overrun = await ended_by_the_watchdog(child, begun, tmp_path)
    assert "the shutdown did not end within 1 s of a second stop signal" in overrun
    assert f"'server': {phase}" in overrun


@pytest.mark.slow
async def test_a_blocked_event_loop_is_reported_while_it_is_blocked(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                import sys, time

                def started(runtime):
                    time.sleep(60)
            """
        },
    )
    child = await spawn("run", "server.py", "--blocked-loop-threshold", "0.5")
    first = await child.line("the event loop has been blocked for")
    assert "WARN: <runtime>" in first
    assert first.endswith(" s in started of 'server'")
    second = await child.line("the event loop has been blocked for")  # at twice the time
    blocked_for = [float(line.split("blocked for ")[1].split(" s")[0]) for line in (first, second)]
    assert 0.5 <= blocked_for[0] < blocked_for[1]
    child.process.send_signal(signal.SIGTERM)
    child.process.send_signal(signal.SIGINT)
    assert await child.finish() == 1


# -- 2. Signals, from the first instant to the last --------------------------------------


async def _wait_for_pid_file(path: Path, pid: int) -> None:
    """Until ``path`` holds ``pid``: what a log rotation script waits for."""
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                if (await trio.Path(path).read_text()).strip() == str(pid):
                    return
            except FileNotFoundError:
                pass
            await trio.sleep(0.001)


@pytest.mark.slow
async def test_a_sighup_as_soon_as_the_pid_file_names_the_process_reloads_once(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(tmp_path, {"server.py": SERVER})
    for _ in range(30):
        child = await spawn("run", "server.py", "--pidfile", "pid")
        await _wait_for_pid_file(tmp_path / "pid", child.pid)
        child.process.send_signal(signal.SIGHUP)
        await child.line("server reload")
        child.process.send_signal(signal.SIGTERM)
        assert await child.finish() == 0, "\n".join(child.lines)
        assert sum("server reload" in line for line in child.lines) == 1
        started = next(i for i, line in enumerate(child.lines) if "server started" in line)
        reload = next(i for i, line in enumerate(child.lines) if "server reload" in line)
        assert started < reload
        assert not (tmp_path / "pid").exists()


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=lambda signum: signum.name
)
async def test_a_stop_during_the_imports_runs_no_hook_and_exits_0(
    tmp_path: Path, spawn: Spawn, signum: signal.Signals
) -> None:
    write(
        tmp_path,
        {
            "server.py": "import sys, time\n"
            'print("importing", file=sys.stderr, flush=True)\n'
            "time.sleep(0.5)\n" + textwrap.dedent(SERVER)
        },
    )
    child = await spawn("run", "server.py", "--pidfile", "pid")
    await child.line("importing")
    child.process.send_signal(signum)
    assert await child.finish() == 0
    assert f"NOTICE: <runtime> {signum.name} signal received, exiting..." in "\n".join(child.lines)
    assert not any("server " in line for line in child.lines)
    assert not any("Traceback" in line for line in child.lines)
    assert not (tmp_path / "pid").exists()


@pytest.mark.slow
async def test_two_stop_signals_at_the_end_of_a_run_never_kill_the_process(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(tmp_path, {"server.py": SERVER})
    for run in range(60):
        child = await spawn("run", "server.py")
        await child.line("running")
        first, second = (signal.SIGTERM, signal.SIGINT) if run % 2 else (signal.SIGINT,) * 2
        child.process.send_signal(first)
        await trio.sleep(run % 6 / 1000)  # 0 to 5 ms apart: the end of a run, where it broke
        child.process.send_signal(second)
        status = await child.finish()
        assert status in (0, 1), f"run {run}: status {status}\n" + "\n".join(child.lines)
        assert not any("Traceback" in line for line in child.lines), "\n".join(child.lines)


@pytest.mark.parametrize("hook", ["initialize", "started"])
async def test_a_real_signal_during_a_sync_hook_stops_before_the_next_one(
    tmp_path: Path, spawn: Spawn, hook: str
) -> None:
    write(
        tmp_path,
        {
            "first.py": f"""
                import os, signal, time
                from oversip_hooks import hookimpl

                @hookimpl
                def {hook}():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)  # the signal arrives while this hook still runs
            """,
            "server.py": SERVER,
        },
    )
    child = await spawn("run", "server.py", "--plugin", "first")
    assert await child.finish() == 0
    assert not any(f"server {hook}" in line for line in child.lines), "\n".join(child.lines)
    assert not any("server started" in line for line in child.lines)


async def test_a_child_forked_by_a_hook_never_returns_into_the_runtime(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                import os
                from oversip_hooks import get_logger

                log = get_logger("server")
                children = []

                def started():
                    pid = os.fork()
                    if pid:
                        children.append(pid)

                def reload():
                    _, status = os.waitpid(children[0], 0)
                    log.log_system_info(f"child exit status {os.waitstatus_to_exitcode(status)}")
            """
        },
    )
    child = await spawn("run", "server.py", env=child_env(tmp_path))
    await child.line("running")
    child.process.send_signal(signal.SIGHUP)
    await child.line("child exit status 1")
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0
    assert sum("running" in line for line in child.lines) == 1
    assert any(
        "a hook forked and the child returned to the runtime" in line for line in child.lines
    )


@pytest.mark.parametrize("subcommand", ["check", "plugins"])
async def test_check_and_plugins_stop_on_a_signal_with_one_line(
    tmp_path: Path, spawn: Spawn, subcommand: str
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                import sys, time

                print("importing", file=sys.stderr, flush=True)
                time.sleep(30)
            """
        },
    )
    child = await spawn(subcommand, "server.py")
    await child.line("importing")
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 130
    assert child.lines[1:] == ["oversip-hooks: stopped: SIGTERM signal received"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "server",
    [
        """
        import threading, time

        def started():
            threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon
        """,
        """
        import atexit, time

        def started():
            atexit.register(time.sleep, 60)
        """,
    ],
    ids=["non-daemon-thread", "atexit-handler"],
)
async def test_what_a_plugin_leaves_behind_cannot_keep_the_process_after_the_run(
    tmp_path: Path, spawn: Spawn, server: str
) -> None:
    write(tmp_path, {"server.py": server})
    child = await spawn("run", "server.py", "--pidfile", "pid")
    await child.line("running")
    begun = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 1
    assert time.monotonic() - begun < BOUNDED
    assert child.lines[-1] == (
        "oversip-hooks: the process did not exit within 1 s of the end of the run "
        "(a plugin's thread or atexit handler still runs); ending it"
    )
    assert not (tmp_path / "pid").exists()


async def test_a_flood_of_signals_during_the_shutdown_is_handled_quietly(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                import time

                def terminated():
                    time.sleep(0.05)
            """
        },
    )
    for _ in range(5):
        child = await spawn("run", "server.py", "--pidfile", "pid")
        await child.line("running")
        child.process.send_signal(signal.SIGTERM)
        while child.process.poll() is None:  # as fast as signals can be sent, to the end
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGHUP)
        assert await child.finish() == 0, "\n".join(child.lines)
        assert not any("Traceback" in line or "Error" in line for line in child.lines)
        assert not any("reloading" in line for line in child.lines)
        assert not (tmp_path / "pid").exists()
