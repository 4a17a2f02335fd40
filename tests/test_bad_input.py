"""Bad numbers and addresses in options and variables: one line naming the option or
variable, exit status 2, never a traceback, never a hang (issue 9, section 5). The parsers
are called in process; sending to systemd, which must never block the event loop, is
tested with the real command and a real unix datagram socket that nobody reads."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from loguru import logger

from oversip_hooks import add_console_sink
from oversip_hooks._cli import main
from oversip_hooks._notify import WATCHDOG_FLOOR_USEC, Notifier
from oversip_hooks._settings import (
    LARGEST_PID,
    ConfigError,
    parse_int,
    parse_seconds,
    parse_syslog_address,
)
from tests.processes import Spawn, child_env, write

HUGE = "9" * 5000  # beyond int()'s 4300 digits: int(HUGE) raises, with a traceback

# Values that int() or float() accept, or str.isdigit() does, but an operator never means.
NOT_PLAIN_NUMBERS = [
    " 5 ",
    "5 ",
    "\t5",
    "5\n",
    "+5",
    "-5",
    "1_000",
    "\u00b2",  # ², isdigit() but not int()
    "\u0665",  # Arabic-Indic five: int() takes it
    "\uff15",  # fullwidth five: int() takes it
    "0x10",
    "1e3",
    "",
]


@pytest.mark.parametrize("text", [*NOT_PLAIN_NUMBERS, HUGE, "65536", "0", "00000000065536"])
def test_parse_int_takes_plain_ascii_digits_within_bounds_only(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_int(text, low=1, high=65535)
    assert len(str(raised.value)) < 200  # a value of 5000 digits is not repeated whole


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("514", 514), ("065535", 65535)])
def test_parse_int_accepts(text: str, value: int) -> None:
    assert parse_int(text, low=1, high=65535) == value


@pytest.mark.parametrize(
    "text",
    [*NOT_PLAIN_NUMBERS, HUGE, "0", "0.0", ".5", "5.", "1.2.3", "inf", "nan", "86400.5", "1e9"],
)
def test_parse_seconds_takes_a_plain_positive_decimal_up_to_a_day(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_seconds(text)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("text", "value"), [("30", 30.0), ("2.5", 2.5), ("0.1", 0.1), ("86400", 86400.0)]
)
def test_parse_seconds_accepts(text: str, value: float) -> None:
    assert parse_seconds(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "[127.0.0.1:514",  # unbalanced bracket
        "127.0.0.1]:514",
        "[::1]514",
        "[::1]",
        "[]:514",
        "::1:514",  # IPv6 with a port must be bracketed
        "127.0.0.1: 514",
        "127.0.0.1:514 ",
        "127.0.0.1:1_000",
        "127.0.0.1:\u0665\u0661\u0664",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        f"127.0.0.1:{HUGE}",
        "127.0.0.1",
        ":514",
    ],
)
def test_parse_syslog_address_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_syslog_address(text)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("/dev/log", "/dev/log"),
        ("127.0.0.1:514", ("127.0.0.1", 514)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:514", ("::1", 514)),
        ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
    ],
)
def test_parse_syslog_address_accepts(text: str, address: object) -> None:
    assert parse_syslog_address(text) == address


# -- through the command, in process ------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("OVERSIP_HOOKS_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        status = main(["run", *args])
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return status, captured.err.splitlines()


FLAG_CASES = [
    pytest.param(flag, value, id=f"{flag}={value[:12]!r}")
    for flag in ("--startup-timeout", "--shutdown-timeout")
    for value in (" 5 ", "1_000", "\u00b2", "\u0665", "1e3", "inf", "nan", "-1", "86401", HUGE)
] + [
    pytest.param("--syslog", value, id=f"--syslog={value[:16]!r}")
    for value in ("[127.0.0.1:514", "::1:514", "127.0.0.1: 514", f"127.0.0.1:{HUGE}", "h:\u00b2")
]


@pytest.mark.usefixtures("clean_environ")
@pytest.mark.parametrize(("flag", "value"), FLAG_CASES)
def test_a_bad_number_in_a_flag_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    status, err = run_main(["server.py", flag, value], capsys)
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"oversip-hooks run: error: argument {flag}: "), err
    assert len(err[0]) < 400


VARIABLE_CASES = (
    [
        pytest.param({name: value}, name, id=f"{name}={value[:12]!r}")
        for name in ("OVERSIP_HOOKS_STARTUP_TIMEOUT", "OVERSIP_HOOKS_SHUTDOWN_TIMEOUT")
        for value in (" 5 ", "1_000", "\u00b2", "inf", "0", HUGE)
    ]
    + [
        pytest.param(
            {"OVERSIP_HOOKS_SYSLOG": value}, "OVERSIP_HOOKS_SYSLOG", id=f"syslog={value[:16]!r}"
        )
        for value in ("[127.0.0.1:514", f"127.0.0.1:{HUGE}")
    ]
    + [
        pytest.param({"NOTIFY_SOCKET": "/nowhere", name: value}, name, id=f"{name}={value[:12]!r}")
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID")
        for value in ("\u00b2", "\u0665", HUGE, " 5", "1_000", "0", "-1")
    ]
    + [
        pytest.param(
            {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_PID": str(LARGEST_PID + 1)},
            "WATCHDOG_PID",
            id="WATCHDOG_PID-beyond-pid_max",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": str(86_400_000_001)},
            "WATCHDOG_USEC",
            id="WATCHDOG_USEC-over-a-day",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": "1"}, "WATCHDOG_USEC", id="1us"
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": str(WATCHDOG_FLOOR_USEC - 1)},
            "WATCHDOG_USEC",
            id="just-below-the-floor",
        ),
    ]
)


@pytest.mark.usefixtures("clean_environ")
@pytest.mark.parametrize(("variables", "name"), VARIABLE_CASES)
def test_a_bad_number_in_a_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    name: str,
) -> None:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    status, err = run_main(["server.py"], capsys)
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"oversip-hooks: error: {name}: "), err
    assert len(err[0]) < 400


def test_the_watchdog_floor_applies_to_our_watchdog_only() -> None:
    at_floor = {"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": str(WATCHDOG_FLOOR_USEC)}
    notifier = Notifier.from_environ(at_floor)
    assert notifier is not None
    assert notifier.watchdog_interval == WATCHDOG_FLOOR_USEC / 2e6
    notifier.close()
    # Another process's watchdog (WATCHDOG_PID not ours) is not ours to keep, or judge.
    theirs = {**at_floor, "WATCHDOG_USEC": "1", "WATCHDOG_PID": str(os.getppid())}
    notifier = Notifier.from_environ(theirs)
    assert notifier is not None
    assert notifier.watchdog_interval is None
    notifier.close()


# -- sending to systemd never blocks -------------------------------------------------------


@pytest.fixture
def unread_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A unix datagram socket bound and never read: its queue fills after a few messages."""
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind(str(tmp_path / "notify"))
    yield unread
    unread.close()


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    sink = add_console_sink(stream, level="debug")
    yield stream
    logger.remove(sink)


def drain(unread: socket.socket) -> int:
    """Receive every datagram queued; how many there were."""
    unread.setblocking(False)
    received = 0
    while True:
        try:
            unread.recv(100)
        except BlockingIOError:
            return received
        received += 1


def test_a_full_queue_drops_messages_with_one_warning_per_outage(
    unread_socket: socket.socket, console: io.StringIO
) -> None:
    notifier = Notifier(unread_socket.getsockname())
    began = time.monotonic()
    for _ in range(1000):
        notifier.send("WATCHDOG=1")
    assert time.monotonic() - began < 5
    received = drain(unread_socket)
    assert 0 < received < 1000  # the queue took some, the rest were dropped
    notifier.send("READY=1")  # gets through again
    for _ in range(1000):
        notifier.send("WATCHDOG=1")
    notifier.close()
    lines = console.getvalue().splitlines()
    warnings = [line for line in lines if "cannot notify systemd" in line]
    recovered = [line for line in lines if "notifying systemd again" in line]
    assert len(warnings) == 2, lines  # one per outage, not one per message
    assert "queue is full" in warnings[0]
    assert len(recovered) == 1, lines
    assert re.search(rf"notifying systemd again, {1000 - received} dropped", recovered[0])


async def test_a_full_notify_socket_does_not_stop_sigterm_getting_through(
    tmp_path: Path, spawn: Spawn, unread_socket: socket.socket
) -> None:
    write(tmp_path, {"server.py": "def started():\n    pass\n"})
    env = child_env(tmp_path, NOTIFY_SOCKET=unread_socket.getsockname(), WATCHDOG_USEC="100000")
    child = await spawn("run", "server.py", env=env)
    await child.line("<runtime> running")
    await child.line("cannot notify systemd: its socket's queue is full")
    await trio.sleep(1)  # twenty more pings, each dropped

    os.kill(child.pid, signal.SIGTERM)

    with trio.fail_after(10):  # the old blocking send never returned
        assert await child.finish() == 0
    warnings = [line for line in child.lines if "cannot notify systemd" in line]
    assert len(warnings) == 1, child.lines
    assert any("SIGTERM signal received" in line for line in child.lines), child.lines
