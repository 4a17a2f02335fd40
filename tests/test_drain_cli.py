"""`oversip-hooks run --drain SECONDS` (issue 12, section 2) through the real command:
from a stop request on, /readyz answers 503 while everything keeps running for the drain,
then the shutdown begins, its deadline counted from there; a second stop signal skips the
drain; systemd hears "draining". The runtime's own drain rule is tested where it lives."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio

from oversip_hooks._cli import main
from tests.processes import Child, Datagrams, Spawn, child_env, notifications_until, write
from tests.test_health import http_address, request

# A service that logs a tick a tenth of a second: it still runs while the process drains.
TICKING = """
    import trio
    from oversip_hooks import get_logger

    log = get_logger("server")

    async def tick():
        count = 0
        while True:
            count += 1
            log.log_info(f"tick {count}")
            await trio.sleep(0.1)

    def started(runtime):
        runtime.start_soon(tick)

    async def terminated():
        await trio.sleep(0.5)
        log.log_system_info("server terminated")
"""


async def draining(child: Child) -> str:
    """Wait for the child to run, then stop it; the address of its probe server."""
    address = await http_address(child)
    await child.line("running")
    child.process.send_signal(signal.SIGTERM)
    return address


@pytest.mark.slow
async def test_the_drain_keeps_serving_then_shuts_down(tmp_path: Path, spawn: Spawn) -> None:
    write(tmp_path, {"server.py": TICKING})
    child = await spawn("run", "server.py", "--http", "127.0.0.1:0", "--drain", "2")
    address = await draining(child)
    stopped = time.monotonic()
    unready = await request(address, "/readyz")
    assert unready.status == 503  # at once
    await child.line("draining")
    report = (await request(address, "/readyz")).json()
    assert report["state"] == "draining"
    assert (await request(address, "/livez")).status == 200
    ticks_at_stop = len([line for line in child.lines if "tick" in line])
    await child.line("server terminated")
    drained = time.monotonic() - stopped
    assert drained >= 2  # the whole drain, then terminated (0.5 s)
    ticks = len([line for line in child.lines if "tick" in line])
    assert ticks - ticks_at_stop >= 10  # the service ran through the drain
    assert await child.finish() == 0


@pytest.mark.slow
async def test_the_shutdown_timeout_starts_after_the_drain(tmp_path: Path, spawn: Spawn) -> None:
    # A drain of 2 s and a shutdown timeout of 1 s, terminated taking 0.5 s: counted from
    # the stop request, the shutdown would have overrun.
    write(tmp_path, {"server.py": TICKING})
    child = await spawn(
        "run",
        "server.py",
        "--drain",
        "2",
        "--shutdown-timeout",
        "1",
        env=child_env(tmp_path, OVERSIP_HOOKS_HTTP="127.0.0.1:0"),
    )
    await draining(child)
    await child.line("server terminated")
    assert await child.finish() == 0
    assert not [line for line in child.lines if "shutdown timeout" in line]


@pytest.mark.slow
async def test_a_second_stop_signal_skips_the_drain(tmp_path: Path, spawn: Spawn) -> None:
    write(tmp_path, {"server.py": TICKING})
    child = await spawn("run", "server.py", "--http", "127.0.0.1:0", "--drain", "60")
    address = await draining(child)
    await child.line("draining")
    assert (await request(address, "/readyz")).json()["state"] == "draining"
    skipped = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    await child.line("server terminated")  # terminated still runs: the drain alone is skipped
    assert time.monotonic() - skipped < 10
    await child.finish()


@pytest.mark.slow
async def test_systemd_hears_draining(tmp_path: Path, spawn: Spawn, notify: Datagrams) -> None:
    write(tmp_path, {"server.py": TICKING})
    env = child_env(tmp_path, NOTIFY_SOCKET=str(notify.address), OVERSIP_HOOKS_DRAIN="1")
    child = await spawn("run", "server.py", env=env)
    await notifications_until(notify, "READY")
    child.process.send_signal(signal.SIGTERM)
    received = await notifications_until(notify, "STOPPING")
    assert "draining" in [each.get("STATUS") for each in received]
    with trio.fail_after(10):
        assert await child.finish() == 0


def test_a_bad_drain_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--drain", "-1"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--drain: expected a positive number of seconds, not '-1'" in line


async def test_a_bad_drain_variable_is_named(tmp_path: Path, spawn: Spawn) -> None:
    write(tmp_path, {"server.py": TICKING})
    child = await spawn("run", "server.py", env=child_env(tmp_path, OVERSIP_HOOKS_DRAIN="1e3"))
    assert await child.finish() == 2
    [line] = child.lines
    assert "OVERSIP_HOOKS_DRAIN: expected a positive number of seconds, not '1e3'" in line
