"""The `oversip-hooks` command, run for real: `python -m oversip_hooks` in a child process,
real signals, a real unix datagram socket as NOTIFY_SOCKET, real syslog sockets, real PID
files. Every wait is for an event (a line, a datagram, the child's exit) with a timeout."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import trio

from tests.processes import (
    COMMAND,
    FAKE_DISTRIBUTION,
    SERVER,
    Datagrams,
    Spawn,
    child_env,
    command,
    dead_pid,
    fields,
    notifications_until,
    venv_seeing_this_one,
    write,
)

# A module, whose hooks must be marked.
MODULE_A = """
    from oversip_hooks import get_logger, hookimpl

    log = get_logger("mod_a")

    @hookimpl
    def started():
        log.log_system_info("mod_a started")

    @hookimpl
    def reload():
        log.log_system_info("mod_a reload")

    @hookimpl
    def terminated():
        log.log_system_info("mod_a terminated")
"""

# -- the lifecycle, under systemd ----------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_run_notifies_systemd_reloads_on_sighup_and_stops_on_signal(
    tmp_path: Path, spawn: Spawn, notify: Datagrams, stop_signal: signal.Signals
) -> None:
    write(tmp_path, {"server.py": SERVER, "mod_a.py": MODULE_A})
    pid_file = tmp_path / "run" / "oversip-hooks.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{await dead_pid()}\n")  # stale: replaced
    child = await spawn(
        "run",
        "server.py",
        "--plugin",
        "mod_a",
        "--pidfile",
        str(pid_file),
        env=child_env(tmp_path, NOTIFY_SOCKET=str(notify.address)),
    )

    assert await notifications_until(notify, "READY") == [
        {"STATUS": "initializing"},
        {"STATUS": "starting"},
        {"READY": "1", "STATUS": "running"},
    ]
    assert pid_file.read_text() == f"{child.pid}\n"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    os.kill(child.pid, signal.SIGHUP)
    reloading = fields(await notify.receive())
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC", "STATUS"}
    assert (reloading["RELOADING"], reloading["STATUS"]) == ("1", "reloading")
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert fields(await notify.receive()) == {"READY": "1", "STATUS": "running"}
    await child.line("<server> server reload")

    os.kill(child.pid, stop_signal)
    assert await child.finish() == 0
    assert notify.drain() == [b"STOPPING=1\nSTATUS=stopping", b"STATUS=stopped"]
    assert not pid_file.exists()

    logged = [re.sub(r"^.*?: ", "", line) for line in child.lines]
    assert f"<runtime> {stop_signal.name} signal received, exiting..." in logged
    # The server file is registered last: its `started` runs after every module's, its
    # `terminated` first.
    hooks = [line for line in logged if re.match(r"<(server|mod_a)> \S+ (started|term)", line)]
    assert hooks == [
        "<mod_a> mod_a started",
        "<server> server started",
        "<server> server terminated error=False",
        "<mod_a> mod_a terminated",
    ]


@pytest.mark.parametrize("watchdog_pid", ["ours", "another"])
async def test_run_pings_the_watchdog_when_it_is_ours(
    tmp_path: Path, spawn: Spawn, watchdog_pid: str
) -> None:
    write(tmp_path, {"server.py": SERVER})
    # An abstract socket, the other form NOTIFY_SOCKET takes.
    notify = Datagrams(socket.AF_UNIX, f"\0oversip-hooks-test-{uuid.uuid4()}")
    env = child_env(tmp_path, NOTIFY_SOCKET=str(notify.address), WATCHDOG_USEC="100000")
    if watchdog_pid == "ours":
        # As systemd does it: WATCHDOG_PID is the id of the process it starts.
        argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *COMMAND]
    else:
        argv, env["WATCHDOG_PID"] = list(COMMAND), str(os.getpid())
    try:
        child = await spawn("run", "server.py", env=env, argv=argv)
        until_ready = await notifications_until(notify, "READY")
        if watchdog_pid == "ours":
            # The first ping goes out before the first hook runs; the next ones follow.
            assert until_ready[0] == {"WATCHDOG": "1"}
            await notifications_until(notify, "WATCHDOG")
        os.kill(child.pid, signal.SIGTERM)
        assert await child.finish() == 0
        received = until_ready + [fields(datagram) for datagram in notify.drain()]
    finally:
        notify.close()
    pinged = any("WATCHDOG" in message for message in received)
    assert pinged is (watchdog_pid == "ours")


# -- exit statuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "args", "crit"),
    [
        pytest.param(
            {
                "server.py": """
                    from oversip_hooks import fatal

                    def started():
                        fatal("invalid module settings, exiting")
                """
            },
            ["server.py"],
            "CRIT: <server> invalid module settings, exiting",
            id="fatal-in-started",
        ),
        pytest.param(
            {
                "pool.py": """
                    from oversip_hooks import hookimpl

                    @hookimpl
                    def initialize():
                        raise ValueError("pool size must be > 0")
                """
            },
            ["--plugin", "pool"],
            "CRIT: <pool> initialize failed: ValueError('pool size must be > 0')",
            id="bad-settings-in-initialize",
        ),
    ],
)
async def test_run_exits_1_on_fatal_or_error_once_the_lifecycle_began(
    tmp_path: Path, files: dict[str, str], args: list[str], crit: str
) -> None:
    write(tmp_path, files)
    finished = await command(tmp_path, "run", *args)
    assert finished.status == 1
    logged = [re.sub(r"^\S+ \S+ ", "", line) for line in finished.err]  # without the time
    assert logged.index(crit) < logged.index("CRIT: <runtime> exiting with error status")


HANGS_IN_STARTED = """
    import trio

    async def started():
        await trio.sleep_forever()
"""
HANGS_IN_TERMINATED = """
    import trio

    def started(runtime):
        runtime.stop()

    async def terminated():
        await trio.sleep_forever()
"""


@pytest.mark.parametrize(
    ("server", "variables", "args", "expected"),
    [
        # A flag wins over its variable, even over one whose value is bad.
        pytest.param(
            HANGS_IN_STARTED,
            {"OVERSIP_HOOKS_STARTUP_TIMEOUT": "soon"},
            ["--startup-timeout", "0.1"],
            "did not complete within the startup timeout of 0.1 s",
            id="startup-from-flag",
        ),
        pytest.param(
            HANGS_IN_TERMINATED,
            {"OVERSIP_HOOKS_SHUTDOWN_TIMEOUT": "0.1"},
            [],
            "the shutdown timeout of 0.1 s ran out",
            id="shutdown-from-environment",
        ),
    ],
)
async def test_run_timeouts_come_from_flags_or_environment(
    tmp_path: Path, server: str, variables: dict[str, str], args: list[str], expected: str
) -> None:
    write(tmp_path, {"server.py": server})
    env = child_env(tmp_path, **variables)
    finished = await command(tmp_path, "run", "server.py", *args, env=env)
    assert finished.status == 1
    assert any(expected in line for line in finished.err), finished.err


# Each case: files to write, arguments after `run`, extra environment, the one line expected.
BAD_INPUT = [
    pytest.param(
        {},
        ["nope.py"],
        {},
        r"nope\.py: cannot read the server file: No such file or directory",
        id="missing-server-file",
    ),
    pytest.param(
        {"conf/.keep": ""},
        ["conf"],
        {},
        r"conf: cannot read the server file: Is a directory",
        id="unreadable-server-file",
    ),
    pytest.param(
        {"bad.py": "x = 1\ndef started(:\n    pass\n"},
        ["bad.py"],
        {},
        r"bad\.py:2: SyntaxError: .+ \(while loading the server file\)",
        id="syntax-error-in-server-file",
    ),
    pytest.param(
        {"bad.py": "import os\n\nx = 1 / 0\n"},
        ["bad.py"],
        {},
        r"bad\.py:3: ZeroDivisionError: division by zero \(while loading the server file\)",
        id="server-file-raises",
    ),
    pytest.param(
        {"broken.py": "import not_installed\n"},
        ["server.py", "--plugin", "broken"],
        {},
        r".*broken\.py:1: ModuleNotFoundError: No module named 'not_installed' "
        r"\(while loading --plugin 'broken'\)",
        id="module-fails-to-import",
    ),
    pytest.param(
        {},
        ["server.py", "--plugin", "no_such_module"],
        {},
        r"ModuleNotFoundError: No module named 'no_such_module' "
        r"\(while loading --plugin 'no_such_module'\)",
        id="module-not-found",
    ),
    pytest.param(
        {**FAKE_DISTRIBUTION, "fake_mod.py": "import os\n\nraise RuntimeError('no settings')\n"},
        ["server.py"],
        {},
        r".*fake_mod\.py:3: RuntimeError: no settings "
        r"\(while loading entry point 'fake' from oversip-mod-fake 0\.1\)",
        id="entry-point-fails-to-import",
    ),
    pytest.param(
        {
            **FAKE_DISTRIBUTION,
            "oversip_mod_fake-0.1.dist-info/entry_points.txt": "[oversip_hooks]\nserver = os\n",
        },
        ["server.py"],
        {},
        r"the server file: the name 'server' is already taken by entry point 'server' from "
        r"oversip-mod-fake 0\.1",
        id="entry-point-named-server",
    ),
    pytest.param(
        {"typo.py": "from oversip_hooks import hookimpl\n\n@hookimpl\ndef startd():\n    pass\n"},
        ["server.py", "--plugin", "typo"],
        {},
        r".*typo\.py:3: plugin 'typo': unknown hook 'startd'; did you mean 'started'\? .*",
        id="unknown-hook",
    ),
    pytest.param(
        {"bad.py": "def started(runtime, colour):\n    pass\n"},
        ["bad.py"],
        {},
        r"bad\.py:1: .*'started'.*\{'colour'\} are declared in the hookimpl but can not be "
        r"found in the hookspec",
        id="argument-not-in-spec",
    ),
    pytest.param(
        {},
        ["server.py", "--log-level", "loud"],
        {},
        r"(?<=run: error: )argument --log-level: unknown log level 'loud'; expected one of "
        r"debug, info, notice, warn, error, crit, alert, emerg .*",
        id="bad-flag-value",
    ),
    pytest.param(
        {},
        ["server.py"],
        {"OVERSIP_HOOKS_LOG_LEVEL": "loud"},
        r"OVERSIP_HOOKS_LOG_LEVEL: unknown log level 'loud'; .*",
        id="bad-environment-value",
    ),
    pytest.param(
        {},
        ["server.py", "--shutdown-timeout", "0"],
        {},
        r".*argument --shutdown-timeout: expected a positive number of seconds, not '0'.*",
        id="bad-timeout",
    ),
    pytest.param(
        {},
        ["server.py", "--syslog-facility", "local9"],
        {},
        r".*argument --syslog-facility: unknown syslog facility 'local9'; .*",
        id="bad-facility",
    ),
    pytest.param(
        {},
        ["server.py", "--syslog", "nowhere/log"],
        {},
        r"syslog socket nowhere/log: No such file or directory",
        id="missing-syslog-socket",
    ),
    pytest.param(
        {},
        ["server.py", "-p", "fake"],
        {},
        r".*argument -p: expected no:NAME to block the entry point NAME, not 'fake'.*",
        id="p-without-no",
    ),
    pytest.param(
        {},
        ["server.py"],
        {"NOTIFY_SOCKET": "notify"},
        r"NOTIFY_SOCKET: expected an absolute path or @name, not 'notify'",
        id="bad-notify-socket",
    ),
    pytest.param(
        {"pid": f"{os.getpid()}\n"},
        ["server.py"],
        {},
        rf"pid file pid: process {os.getpid()} is running; not starting",
        id="pid-file-of-a-live-process",
    ),
    pytest.param(
        {"pid": "nameserver 127.0.0.1\n"},
        ["server.py"],
        {},
        r"pid file pid: does not hold a process id; not replacing it",
        id="pid-file-of-something-else",
    ),
    *(
        pytest.param(
            {"pid": f"{content}\n"},
            ["server.py"],
            {},
            r"pid file pid: does not hold a process id; not replacing it",
            id=f"pid-file-holding-{name}",
        )
        for name, content in [("a-huge-number", "9" * 20), ("a-unicode-digit", "\u00b2")]
    ),
    pytest.param(
        {"server.py": "async def startd(runtime):\n    pass\n"},
        ["server.py"],
        {},
        r"server\.py:1: plugin 'server': unknown hook 'startd'; did you mean 'started'\? .*",
        id="unmarked-hook-typo-in-the-server-file",
    ),
    pytest.param(
        {},
        ["server.py", "--syslog", "a..b:514"],
        {},
        r"syslog address a\.\.b:514: .*",
        id="malformed-syslog-host",
    ),
]


@pytest.mark.parametrize(("files", "args", "env", "message"), BAD_INPUT)
async def test_bad_input_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path,
    notify: Datagrams,
    files: dict[str, str],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    write(tmp_path, {"server.py": SERVER, **files})
    pid_before = (tmp_path / "pid").read_text() if "pid" in files else None
    variables = {"NOTIFY_SOCKET": str(notify.address), **env}

    finished = await command(
        tmp_path, "run", *args, "--pidfile", "pid", env=child_env(tmp_path, **variables)
    )

    assert finished.status == 2
    assert len(finished.err) == 1, finished.err
    assert re.fullmatch(r"oversip-hooks( run)?: error: " + message, finished.err[0])
    # Nothing started: no hook logged (the line above is the only one), no PID file, not
    # a word to systemd.
    pid_after = (tmp_path / "pid").read_text() if (tmp_path / "pid").exists() else None
    assert pid_after == pid_before
    assert notify.drain() == []


async def test_a_pid_file_held_by_a_running_instance_is_never_taken(
    tmp_path: Path, spawn: Spawn
) -> None:
    """The lock decides, not the id in the file: even with a stale id written over it
    (what a second instance racing on a stale file would see), the file is not taken."""
    write(tmp_path, {"server.py": SERVER})
    first = await spawn("run", "server.py", "--pidfile", "pid")
    await first.line("<runtime> running")
    (tmp_path / "pid").write_text(f"{await dead_pid()}\n")

    second = await command(tmp_path, "run", "server.py", "--pidfile", "pid")

    assert second.status == 2
    assert second.err == [
        "oversip-hooks: error: pid file pid: another instance is running; not starting"
    ]
    os.kill(first.pid, signal.SIGTERM)
    assert await first.finish() == 0
    assert not (tmp_path / "pid").exists()


async def test_run_goes_on_when_systemd_cannot_be_notified(tmp_path: Path) -> None:
    write(tmp_path, {"server.py": "def started(runtime):\n    runtime.stop()\n"})
    env = child_env(tmp_path, NOTIFY_SOCKET=str(tmp_path / "nobody-listens"))
    finished = await command(tmp_path, "run", "server.py", env=env)
    assert finished.status == 0
    warnings = [line for line in finished.err if "<systemd> cannot notify systemd" in line]
    assert len(warnings) == 1, finished.err  # once, not at every state


async def test_check_lists_every_problem_then_passes_once_fixed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "typo.py": """
                from oversip_hooks import hookimpl

                @hookimpl
                def startd():
                    pass

                @hookimpl
                def reloda():
                    pass
            """,
            "broken.py": "import not_installed\n",
            "server.py": "def terminated(colour):\n    pass\n",
        },
    )
    finished = await command(
        tmp_path, "check", "server.py", "--plugin", "typo", "--plugin", "broken"
    )
    assert finished.status == 2
    assert [
        re.sub(r"^oversip-hooks: error: \S*?(\w+\.py:\d+): .*", r"\1", line)
        for line in finished.err
    ] == [
        "typo.py:3",
        "typo.py:7",
        "broken.py:1",
        "server.py:1",
    ]
    assert "did you mean 'started'?" in finished.err[0]
    assert "did you mean 'reload'?" in finished.err[1]

    write(tmp_path, {"server.py": SERVER, "mod_a.py": MODULE_A})
    finished = await command(tmp_path, "check", "server.py", "--plugin", "mod_a")
    assert (finished.status, finished.out, finished.err) == (
        0,
        "oversip-hooks: ok (plugins: mod_a, server)\n",
        [],
    )


async def test_debug_shows_the_traceback_behind_bad_input(tmp_path: Path) -> None:
    write(tmp_path, {"bad.py": "import not_installed\n"})
    finished = await command(tmp_path, "run", "bad.py", "--debug")
    assert finished.status == 2
    assert finished.err[0].startswith("oversip-hooks: error: bad.py:1: ModuleNotFoundError")
    assert "Traceback (most recent call last):" in finished.err


async def test_version_from_the_script_and_the_module(tmp_path: Path) -> None:
    version = importlib.metadata.version("oversip-hooks")
    script = [str(Path(sys.executable).with_name("oversip-hooks"))]  # [project.scripts]
    for argv, args in [(script, ["--version"]), (COMMAND, ["run", "--version"])]:
        finished = await command(tmp_path, *args, argv=argv)
        assert (finished.status, finished.out) == (0, f"oversip-hooks {version}\n")


@pytest.mark.parametrize(
    ("args", "shown", "not_shown"),
    [
        (["--help"], ["run ", "check ", "plugins ", "new "], ["--pidfile"]),
        (["run", "--help"], ["--pidfile", "--http", "SERVER_PY"], ["--json"]),
        (["check", "--help"], ["--pidfile", "--http", "SERVER_PY"], ["--json"]),
        (["plugins", "--help"], ["--json", "SERVER_PY", "--no-entrypoints"], ["--pidfile"]),
        (["new", "--help"], ["NAME"], ["--pidfile", "SERVER_PY"]),
    ],
    ids=["top", "run", "check", "plugins", "new"],
)
async def test_each_command_has_its_own_options_and_only_those(
    tmp_path: Path, args: list[str], shown: list[str], not_shown: list[str]
) -> None:
    """Only the named command's arguments are built (the others' cost every start); its
    help must still show all of them, and none of another command's."""
    finished = await command(tmp_path, *args)
    assert finished.status == 0, finished.err
    for text in shown:
        assert text in finished.out, (text, finished.out)
    for text in not_shown:
        assert text not in finished.out, (text, finished.out)


def test_the_parsers_own_options_take_no_value() -> None:
    """The command is found as the first word that is not an option, before parsing;
    an option of the parser's own that took a value would make that word its value."""
    from oversip_hooks._cli import _parser

    parser = _parser([])
    assert all(action.nargs == 0 for action in parser._actions if action.option_strings)


# -- logging -------------------------------------------------------------------------------


async def test_json_log_lines_keep_each_record_on_one_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "server.py": r"""
                from oversip_hooks import get_logger

                log = get_logger("server")
                log.log_notice("two\nlines\r\x1b[31m red\u2028end")  # not from a hook

                def started(runtime):
                    log.log_system_debug("debugging")
                    try:
                        1 / 0
                    except ZeroDivisionError as error:
                        log.log_system_error(error)
                    runtime.stop()
            """
        },
    )
    # The format from the environment; the level from the flag, which wins over it.
    env = child_env(tmp_path, OVERSIP_HOOKS_LOG_FORMAT="json", OVERSIP_HOOKS_LOG_LEVEL="emerg")
    finished = await command(tmp_path, "run", "server.py", "--log-level", "debug", env=env)

    assert finished.status == 0
    assert all(line.isascii() and line.isprintable() for line in finished.err)
    records = [json.loads(line) for line in finished.err]
    for record in records:
        assert {"time", "level", "log_id", "message"} <= record.keys() <= {*record, "exception"}
        assert datetime.datetime.fromisoformat(record["time"]).tzinfo is not None
    by_message = {record["message"]: record for record in records}
    assert by_message["debugging"]["level"] == "debug"
    forged = by_message["two\nlines\\r\\x1b[31m red\\u2028end"]
    assert (forged["level"], forged["log_id"], "exception" in forged) == ("notice", "server", False)
    error = by_message["division by zero (ZeroDivisionError)"]
    assert error["level"] == "error"
    assert error["exception"].startswith("Traceback (most recent call last):")
    assert error["exception"].endswith("ZeroDivisionError: division by zero\n")


@pytest.mark.parametrize("transport", ["udp", "unix"])
async def test_syslog_gets_one_datagram_per_record_with_each_level_priority(
    tmp_path: Path, transport: str
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                from oversip_hooks import LEVELS, get_logger

                log = get_logger("server")
                log.log_info("user says\\nhello\\x00")  # the user's code: not from a hook

                def initialize():
                    for number in range(20):  # more than a unix socket's queue holds
                        log.log_system_debug(f"number {number}")
                    for level in LEVELS:
                        getattr(log, f"log_system_{level}")(f"level {level}")
                    log.log_system_info("found report-\\udcff.csv")

                def started(runtime):
                    runtime.stop()
            """
        },
    )
    if transport == "udp":
        syslog = Datagrams(socket.AF_INET, ("127.0.0.1", 0))
        host, port = syslog.address
        address = f"{host}:{port}"
    else:
        syslog = Datagrams(socket.AF_UNIX, str(tmp_path / "log"))
        address = str(syslog.address)
    received: list[bytes] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(syslog.collect, received)
            finished = await command(
                tmp_path,
                "run",
                "server.py",
                *("--syslog", address, "--syslog-facility", "local3", "--log-level", "debug"),
            )
            nursery.cancel_scope.cancel()
        received += syslog.drain()
    finally:
        syslog.close()

    assert finished.status == 0
    shape = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d oversip-hooks\[\d+\]: (.*)")
    priorities = {}
    for datagram in received:
        match = shape.fullmatch(datagram.decode())
        assert match, datagram
        priorities[match[2]] = int(match[1])
    local3 = 19
    severities = ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"]
    for severity, level in enumerate(severities):
        assert priorities[f"<server> level {level}"] == local3 * 8 + severity
    assert priorities["<server> [user] user says\\nhello\\x00"] == local3 * 8 + 6
    assert priorities["<server> found report-\\udcff.csv"] == local3 * 8 + 6
    assert priorities["<runtime> terminating"] == local3 * 8 + 6


# -- listing plugins -----------------------------------------------------------------------

LISTED = {
    **FAKE_DISTRIBUTION,
    "fake_mod.py": """
        from oversip_hooks import get_logger, hookimpl

        log = get_logger("fake")

        @hookimpl
        def started():
            log.log_system_info("fake started")

        @hookimpl
        def terminated():
            log.log_system_info("fake terminated")
    """,
    "mod_a.py": """
        from oversip_hooks import SystemCallbacks, get_logger, hookimpl

        log = get_logger("mod_a")

        @hookimpl(tryfirst=True)
        def started():
            log.log_system_info("mod_a started")

        @hookimpl
        def reload():
            pass

        @SystemCallbacks.on_terminated
        def closed():
            log.log_system_info("SystemCallbacks terminated")
    """,
    "server.py": """
        from oversip_hooks import get_logger

        log = get_logger("server")

        def initialize():
            log.log_system_info("server initialize")

        def started(runtime):
            log.log_system_info("server started")
            runtime.stop()

        def terminated():
            log.log_system_info("server terminated")
    """,
}


async def test_plugins_lists_sources_and_the_order_that_run_follows(tmp_path: Path) -> None:
    write(tmp_path, LISTED)
    args = ["server.py", "--plugin", "mod_a"]

    listed = await command(tmp_path, "plugins", *args, "--json")
    assert listed.status == 0
    listing = json.loads(listed.out)
    assert [
        (
            plugin["name"],
            plugin["origin"],
            plugin["target"],
            plugin["distribution"],
            plugin["version"],
        )
        for plugin in listing["plugins"]
    ] == [
        ("SystemCallbacks", "callbacks", "mod_a.closed", None, None),
        ("fake", "entry point", "fake_mod", "oversip-mod-fake", "0.1"),
        ("mod_a", "--plugin", "mod_a", None, None),
        ("server", "server file", "server.py", None, None),
    ]
    assert listing["plugins"][1]["path"] == str(tmp_path / "fake_mod.py")
    assert listing["hooks"] == {
        "initialize": ["server"],
        "lifespan": [],
        "started": ["mod_a", "fake", "server"],
        "reload": ["mod_a"],
        "terminated": ["server", "fake", "SystemCallbacks"],
    }

    # What `run` does is what `plugins` said.
    ran = await command(tmp_path, "run", *args)
    assert ran.status == 0
    for hook in ("initialize", "started", "terminated"):
        called = [m[1] for line in ran.err if (m := re.search(rf"> (\w+) {hook}$", line))]
        assert called == listing["hooks"][hook]

    text = await command(tmp_path, "plugins", *args)
    assert text.out.splitlines() == [
        "plugins, in registration order:",
        "  SystemCallbacks  callbacks    mod_a.closed",
        "  fake             entry point  fake_mod from oversip-mod-fake 0.1 "
        f"({tmp_path / 'fake_mod.py'})",
        f"  mod_a            --plugin     mod_a ({tmp_path / 'mod_a.py'})",
        "  server           server file  server.py",
        "",
        "hooks, in call order:",
        "  initialize  server",
        "  lifespan    (none)",
        "  started     mod_a, fake, server",
        "  reload      mod_a",
        "  terminated  server, fake, SystemCallbacks",
        "",
        "extension hooks, in call order:",
        "  health_check        (none) (declared by oversip_hooks)",
        "  metrics_collectors  (none) (declared by oversip_hooks)",
    ]


@pytest.mark.parametrize("option", ["-p", "--no-entrypoints"])
async def test_entry_points_can_be_blocked(tmp_path: Path, option: str) -> None:
    write(tmp_path, LISTED)
    args = ["-p", "no:fake"] if option == "-p" else [option]
    listed = await command(tmp_path, "plugins", "server.py", *args, "--json")
    assert listed.status == 0
    assert [plugin["name"] for plugin in json.loads(listed.out)["plugins"]] == ["server"]


# -- a real distribution -------------------------------------------------------------------


@pytest.mark.slow
async def test_a_pip_installed_module_is_found_listed_and_run(tmp_path: Path, spawn: Spawn) -> None:
    project = tmp_path / "oversip-mod-greeter"
    write(
        project,
        {
            "pyproject.toml": """
                [build-system]
                requires = ["hatchling"]
                build-backend = "hatchling.build"

                [project]
                name = "oversip-mod-greeter"
                version = "1.2.3"

                [project.entry-points.oversip_hooks]
                greeter = "oversip_mod_greeter"
            """,
            "oversip_mod_greeter/__init__.py": """
                from oversip_hooks import get_logger, hookimpl

                log = get_logger("greeter")

                @hookimpl
                def started():
                    log.log_system_notice("hello")

                @hookimpl
                def terminated(error):
                    log.log_system_notice(f"goodbye error={error}")
            """,
        },
    )
    python = await venv_seeing_this_one(tmp_path)
    with trio.fail_after(120):
        await trio.run_process(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-build-isolation",
                "--no-deps",
                str(project),
            ]
        )

    env = child_env(tmp_path)
    listed = await command(
        tmp_path, "plugins", "--json", env=env, argv=[python, "-m", "oversip_hooks"]
    )
    assert listed.status == 0, listed.err
    [greeter] = [
        plugin for plugin in json.loads(listed.out)["plugins"] if plugin["name"] == "greeter"
    ]
    assert greeter["origin"] == "entry point"
    assert (greeter["distribution"], greeter["version"]) == ("oversip-mod-greeter", "1.2.3")
    assert Path(greeter["path"]).is_relative_to(tmp_path / "venv")

    child = await spawn("run", env=env, argv=[python, "-m", "oversip_hooks"])
    await child.line("NOTICE: <greeter> hello")
    os.kill(child.pid, signal.SIGTERM)
    assert await child.finish() == 0
    assert child.lines[-1].endswith("NOTICE: <greeter> goodbye error=False")


@pytest.mark.parametrize("name", ["check", "run"])
async def test_a_start_imports_nothing_that_only_an_error_needs(tmp_path: Path, name: str) -> None:
    """difflib (a "did you mean"), dataclasses, the skeleton writer and the JSON and syslog
    sinks: each costs every start milliseconds (benchmarks/PROFILES.md, "Time to ready")."""
    write(
        tmp_path,
        {
            "server.py": """
                def restart():  # a helper whose name is compared with the hooks' names
                    pass

                def started(runtime):
                    runtime.stop()
            """
        },
    )
    code = (
        "import sys\n"
        "from oversip_hooks._cli import main\n"
        "status = main(sys.argv[1:])\n"
        "unneeded = ('difflib', 'dataclasses', 'oversip_hooks._scaffold', 'oversip_hooks._sinks')\n"
        "print(status, [name for name in unneeded if name in sys.modules])\n"
    )
    finished = await command(
        tmp_path, name, "server.py", "--no-entrypoints", argv=[sys.executable, "-c", code]
    )
    assert finished.out.splitlines()[-1] == "0 []", finished.err
