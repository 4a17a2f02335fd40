"""No message, log_id or traceback can forge a log record, in any format; the journal gets
each line's level; syslog truncates a record too large for its transport instead of
dropping it. The command is run for real, as in test_cli.py: standard error from a child
process, real datagram sockets for syslog, a real file named by JOURNAL_STREAM."""

from __future__ import annotations

import io
import json
import os
import re
import socket
from pathlib import Path
from subprocess import DEVNULL

import pytest
import trio
from loguru import logger

from oversip_hooks import add_console_sink, get_logger
from oversip_hooks._logging import CONTINUATION, SEVERITIES, escape
from oversip_hooks._sinks import truncate
from tests.processes import COMMAND, TIMEOUT, child_env, command, isolated, write

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ([A-Z]+): (.*)")
FORGED = "2026-01-01 00:00:00.000 CRIT: <runtime> FORGED"

# The server file logs, at `started`, everything that used to forge a record: a newline
# in a message, in a log_id, in a foreign (plain loguru) record and in an exception's
# message, and the other control characters; its user line, at import, as the user's own
# code (a hook may not use `log_<level>`).
FORGER = rf"""
    from loguru import logger
    from oversip_hooks import get_logger

    FORGED = {FORGED!r}
    log = get_logger("server")
    log.log_notice("hello\n" + FORGED)

    def started(runtime):
        get_logger("evil\n" + FORGED).log_system_info("from a bad log_id")
        log.log_system_info("nul\x00 esc\x1b[2J cr\r del\x7f csi\x9b ls\u2028 rlo\u202e end")
        logger.warning("foreign\n" + FORGED)
        try:
            raise ValueError("bad\n" + FORGED)
        except ValueError as error:
            log.log_system_error(error)
        runtime.stop()
"""


async def test_text_lines_cannot_be_forged_by_a_message_a_log_id_or_a_traceback(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"server.py": FORGER})
    finished = await command(tmp_path, "run", "server.py")

    assert finished.status == 0, finished.err
    for line in finished.err:
        assert line.isprintable(), line
        assert RECORD.fullmatch(line) or line.startswith(CONTINUATION), line
    records = [match[2] for line in finished.err if (match := RECORD.fullmatch(line))]
    assert "<runtime> FORGED" not in records
    err = finished.err
    hello = err.index(next(line for line in err if line.endswith("NOTICE: <server> [user] hello")))
    assert err[hello + 1] == CONTINUATION + FORGED
    assert any(line.endswith(r"INFO: <evil\n" + FORGED + "> from a bad log_id") for line in err)
    escaped = r"nul\x00 esc\x1b[2J cr\r del\x7f csi\x9b ls\u2028 rlo\u202e end"
    assert any(line.endswith(f"INFO: <server> {escaped}") for line in err)
    foreign = err.index(next(line for line in err if line.endswith("WARNING: foreign")))
    assert err[foreign + 1] == CONTINUATION + FORGED
    error = err.index(next(line for line in err if line.endswith("ERROR: <server> bad")))
    assert err[error + 1] == CONTINUATION + FORGED + " (ValueError)"
    assert err[error + 2] == CONTINUATION + "Traceback (most recent call last):"
    end = err.index(CONTINUATION + "ValueError: bad")
    assert err[end + 1] == CONTINUATION + FORGED
    assert all(line.startswith(CONTINUATION) for line in err[error + 1 : end + 2])


async def test_json_values_escape_every_control_character_but_a_message_s_newlines(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"server.py": FORGER})
    env = child_env(tmp_path, OVERSIP_HOOKS_LOG_FORMAT="json")
    finished = await command(tmp_path, "run", "server.py", env=env)

    assert finished.status == 0, finished.err
    records = [json.loads(line) for line in finished.err]
    for record in records:
        for key in ("log_id", "message", "exception"):
            value = record.get(key) or ""
            assert value.replace("\n", "").isprintable(), (key, value)
        assert "\n" not in (record["log_id"] or "")
    by_message = {record["message"]: record for record in records}
    assert by_message["hello\n" + FORGED]["log_id"] == "server"
    assert by_message["from a bad log_id"]["log_id"] == r"evil\n" + FORGED
    escaped = r"nul\x00 esc\x1b[2J cr\r del\x7f csi\x9b ls\u2028 rlo\u202e end"
    assert by_message[escaped]["level"] == "info"
    assert by_message["foreign\n" + FORGED]["log_id"] is None
    error = by_message[f"bad\n{FORGED} (ValueError)"]
    assert error["exception"].endswith(f"ValueError: bad\n{FORGED}\n")


# -- the journal ---------------------------------------------------------------------------

JOURNALED = r"""
    from loguru import logger
    from oversip_hooks import get_logger

    log = get_logger("server")
    log.log_notice("two\n<0>lines")  # the user's own code, at import: not from a hook

    def started(runtime):
        log.log_system_debug("debugging")
        log.log_system_warn("careful")
        logger.success("foreign success")
        try:
            1 / 0
        except ZeroDivisionError as error:
            log.log_system_error(error)
        runtime.stop()
"""
# The severity each level's line carries: loguru's SUCCESS (25) counts as notice.
SEVERITY_OF = {name.upper(): number for name, number in SEVERITIES.items()} | {"SUCCESS": 5}


async def run_to_file(tmp_path: Path, journal: Path, *args: str, **variables: str) -> list[str]:
    """Run the command with its standard error written to the file ``journal``; its
    lines."""
    env = child_env(tmp_path, **variables)
    with journal.open("wb") as stderr, trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [*COMMAND, *isolated(args)],
            cwd=tmp_path,
            env=env,
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=stderr,
            check=False,
        )
    lines = (await trio.Path(journal).read_text()).splitlines()
    assert done.returncode == 0, lines
    return lines


def stream_id(path: Path) -> str:
    """``path`` as JOURNAL_STREAM names a stream: ``DEVICE:INODE``."""
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


async def test_under_the_journal_every_text_line_starts_with_its_level_s_priority(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"server.py": JOURNALED})
    journal = tmp_path / "journal"
    journal.touch()
    lines = await run_to_file(
        tmp_path, journal, "run", "server.py", "--log-level", "debug",
        JOURNAL_STREAM=stream_id(journal),
    )  # fmt: skip

    severity = None
    for line in lines:
        prefix = re.match(r"<([0-7])>", line)
        assert prefix, line
        rest = line[prefix.end() :]
        if record := RECORD.fullmatch(rest):
            severity = SEVERITY_OF[record[1]]
        else:
            assert rest.startswith(CONTINUATION), line
        assert int(prefix[1]) == severity, line
    assert any(re.fullmatch(r"<7>\S+ \S+ DEBUG: <server> debugging", line) for line in lines)
    notice = lines.index(next(line for line in lines if line.endswith("<server> [user] two")))
    assert lines[notice].startswith("<5>")
    assert lines[notice + 1] == f"<5>{CONTINUATION}<0>lines"
    assert any(re.fullmatch(r"<4>\S+ \S+ WARN: <server> careful", line) for line in lines)
    assert any(re.fullmatch(r"<5>\S+ \S+ SUCCESS: foreign success", line) for line in lines)
    assert f"<3>{CONTINUATION}Traceback (most recent call last):" in lines
    assert f"<3>{CONTINUATION}ZeroDivisionError: division by zero" in lines
    assert any(re.fullmatch(r"<6>\S+ \S+ INFO: <runtime> terminating", line) for line in lines)


async def test_under_the_journal_every_json_line_starts_with_its_level_s_priority(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"server.py": JOURNALED})
    journal = tmp_path / "journal"
    journal.touch()
    lines = await run_to_file(
        tmp_path, journal, "run", "server.py", "--log-level", "debug",
        JOURNAL_STREAM=stream_id(journal), OVERSIP_HOOKS_LOG_FORMAT="json",
    )  # fmt: skip

    levels = {}
    for line in lines:
        prefix = re.match(r"<([0-7])>\{", line)
        assert prefix, line
        record = json.loads(line[prefix.end() - 1 :])
        assert int(prefix[1]) == SEVERITIES[record["level"]], line
        levels[record["message"]] = record["level"]
    assert levels["two\n<0>lines"] == "notice"
    assert levels["foreign success"] == "notice"
    assert levels["division by zero (ZeroDivisionError)"] == "error"


async def test_a_journal_stream_that_is_not_standard_error_adds_no_prefix(
    tmp_path: Path,
) -> None:
    # As systemd.exec(5) warns: the variable is inherited by a process whose standard
    # error was redirected elsewhere; only the stream it names is the journal.
    write(tmp_path, {"server.py": JOURNALED})
    journal = tmp_path / "journal"
    journal.touch()
    lines = await run_to_file(
        tmp_path, journal, "run", "server.py",
        JOURNAL_STREAM=stream_id(tmp_path / "server.py"),
    )  # fmt: skip
    assert lines
    assert all(RECORD.fullmatch(line) or line.startswith(CONTINUATION) for line in lines)


@pytest.mark.parametrize("variable", ["", "garbage", "1:", ":2", "1:2:3", "x:1"])
def test_a_malformed_journal_stream_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", variable)
    with (tmp_path / "out").open("w") as stream:
        sink = add_console_sink(stream)
        try:
            logger.bind(log_id="mod").info("plain")
        finally:
            logger.remove(sink)
    assert RECORD.fullmatch((tmp_path / "out").read_text().rstrip("\n"))


# -- syslog --------------------------------------------------------------------------------


class Receiver:
    """A syslog daemon's socket that receives datagrams of any size (tests.processes'
    Datagrams reads 64 KiB at most)."""

    def __init__(self, family: socket.AddressFamily, address: str | tuple[str, int]) -> None:
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.socket.bind(address)
        self.received: list[bytes] = []

    async def collect(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.socket)
            self.drain()

    def drain(self) -> None:
        while True:
            try:
                self.received.append(self.socket.recv(1 << 24))
            except BlockingIOError:
                return


def unix_send_buffer() -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        return int(probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


@pytest.mark.parametrize("transport", ["udp", "unix"])
async def test_a_syslog_record_too_large_for_the_transport_is_truncated_not_dropped(
    tmp_path: Path, transport: str
) -> None:
    # Larger than either transport carries: 65507 bytes for UDP over IPv4, the send
    # buffer for a unix socket. Two-byte characters, so that a cut may fall inside one.
    characters = 2 * max(unix_send_buffer(), 65536)
    write(
        tmp_path,
        {
            "server.py": f"""
                from oversip_hooks import get_logger

                log = get_logger("server")

                def started(runtime):
                    log.log_system_notice("start" + "é" * {characters} + "END")
                    log.log_system_notice("after the large one")
                    runtime.stop()
            """
        },
    )
    if transport == "udp":
        syslog = Receiver(socket.AF_INET, ("127.0.0.1", 0))
        host, port = syslog.socket.getsockname()
        address, limit = f"{host}:{port}", 65507
    else:
        syslog = Receiver(socket.AF_UNIX, str(tmp_path / "log"))
        address, limit = str(tmp_path / "log"), unix_send_buffer()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(syslog.collect)
            finished = await command(tmp_path, "run", "server.py", "--syslog", address)
            nursery.cancel_scope.cancel()
        syslog.drain()
    finally:
        syslog.socket.close()

    assert finished.status == 0
    assert not [line for line in finished.err if "syslog" in line]
    texts = [datagram.decode() for datagram in syslog.received]  # strict UTF-8: whole chars
    assert any(text.endswith(": <server> after the large one") for text in texts)
    (large,) = [datagram for datagram in syslog.received if b"<server> start" in datagram]
    assert len(large) <= limit
    marker = re.search(rb"\.\.\. \[truncated, (\d+) more bytes\]\Z", large)
    assert marker, large[-100:]
    head = large.index(b"<server> start")
    whole = head + len(f"<server> start{'é' * characters}END".encode())
    assert marker.start() + int(marker[1]) == whole
    assert (
        large[head : marker.start()]
        == f"<server> start{'é' * characters}".encode()[: marker.start() - head]
    )


# -- the pieces ----------------------------------------------------------------------------


def test_escape_writes_each_control_character_as_its_python_escape() -> None:
    controls = [
        *map(chr, range(0x20)),
        *map(chr, range(0x7F, 0xA0)),
        "\u2028",
        "\u2029",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    ]
    for character in controls:
        escaped = escape(f"a{character}b")
        assert escaped.isascii(), repr(character)
        assert escaped.isprintable(), repr(character)
        assert escaped == "a" + character.encode("unicode_escape").decode() + "b"
    assert escape("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"
    for kept in ("plain", "é ü 中文 \u00a0 \U0001f468\u200d\U0001f469", "a\\nb"):
        assert escape(kept) == kept


def test_truncate_cuts_within_the_limit_at_a_character_boundary() -> None:
    data = ("é" * 1000).encode()
    for limit in range(100, 140):
        cut = truncate(data, limit)
        assert len(cut) <= limit
        text = cut.decode()  # strict: no character cut in two
        kept, more = re.fullmatch(r"(é*)\.\.\. \[truncated, (\d+) more bytes\]", text).groups()
        assert len(kept.encode()) + int(more) == len(data)
    assert truncate(b"short", 5) == b"short"


def test_a_str_subclass_that_lies_about_being_printable_cannot_forge_a_line() -> None:
    class Liar(str):
        def isprintable(self) -> bool:
            return True

    stream = io.StringIO()
    sink = add_console_sink(stream)
    try:
        get_logger("liar").log_system_info(Liar("hello\n2026-11-26 00:00:00.000 CRIT: x\x1b"))
    finally:
        logger.remove(sink)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "| 2026-11-26 00:00:00.000 CRIT: x\\x1b"
