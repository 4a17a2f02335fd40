# Two loguru sinks beside add_console_sink's lines: JSON lines on a stream, and syslog
# datagrams. Both escape what a message holds, because a newline or a control character
# passed through would forge a second record in a log file or a JSON stream: JSON by
# json.dumps with ensure_ascii (which also escapes U+2028 and friends, that some line
# readers split on), syslog by writing every control character as its Python escape.
#
# The JSON sink is loguru's documented recipe, a format function that stores the object in
# `extra` and returns a template that only inserts it; loguru's own `serialize=True` was
# rejected for its schema: the formatted line beside the whole record, two dozen keys deep.
#
# The syslog sink speaks the BSD protocol (RFC 3164, the form glibc's syslog(3) writes) over
# a datagram socket itself, and sends each record to the address anew, so that a restarted
# syslog daemon is found again without reconnecting. A send to a unix socket waits while
# the daemon's queue is full, as syslog(3) does: no record is dropped, at the cost of
# waiting for a daemon that has fallen behind. The stdlib's SysLogHandler was rejected: it
# takes stdlib log records, not loguru's, and maps level names it does not know (notice,
# crit, ...) to warning unless taught otherwise.

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from ._logging import LEVELS
from ._settings import FACILITIES, ConfigError, SyslogAddress

if TYPE_CHECKING:
    from loguru import Message, Record

IDENT = "oversip-hooks"

# RFC 5424's severity codes, 0 (emerg) to 7 (debug).
SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "error": 3,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_LEVEL_OF_LOGURU_NAME = {loguru_name: level for level, (loguru_name, _) in LEVELS.items()}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def oversip_level(record: Record) -> str:
    """The OverSIP level of a record; a loguru level of someone else's (``WARNING``,
    ``SUCCESS``, ...) counts as the highest OverSIP level at or below its number."""
    level = _LEVEL_OF_LOGURU_NAME.get(record["level"].name)
    if level is not None:
        return level
    at_or_below = [name for name, (_, number) in LEVELS.items() if number <= record["level"].no]
    return at_or_below[-1] if at_or_below else "debug"


def one_line(text: str) -> str:
    """``text`` with each control character written as its escape: ``"a\\nb"``."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


def _exception_text(record: Record) -> str | None:
    error = record["exception"]
    if error is None:
        return None
    return "".join(traceback.format_exception(error.type, error.value, error.traceback))


def _format_json(record: Record) -> str:
    fields: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": oversip_level(record),
        "log_id": record["extra"].get("log_id"),
        "message": record["message"],
    }
    exception = _exception_text(record)
    if exception is not None:
        fields["exception"] = exception
    record["extra"]["_json"] = json.dumps(fields)
    return "{extra[_json]}\n"


def add_json_sink(stream: TextIO, *, level: str) -> int:
    """Send records to ``stream`` as JSON, one object per line, with the keys ``time``
    (ISO 8601), ``level`` (an OverSIP level), ``log_id`` (``null`` for records that are
    not OverSIP's), ``message`` and, when there is one, ``exception`` (its traceback).

    Args:
        stream: where the lines go, such as ``sys.stderr``.
        level: the lowest OverSIP level sent.

    Returns:
        The loguru handler id.

    Example::

        add_json_sink(sys.stderr, level="info")
        # {"time": "2026-11-26T09:25:52.952+00:00", "level": "notice", "log_id": ...}
    """
    return logger.add(stream, level=LEVELS[level][0], format=_format_json, colorize=False)


class _SyslogSink:
    def __init__(self, address: SyslogAddress, facility: str) -> None:
        if isinstance(address, str):
            self._address: Any = address
            family = socket.AF_UNIX
            _check_socket(address)
        else:
            family, self._address = _resolve(*address)
        self._describe = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._facility = FACILITIES[facility]
        self._failing = False

    def __call__(self, message: Message) -> None:
        record = message.record
        priority = self._facility * 8 + SEVERITIES[oversip_level(record)]
        time = record["time"]
        stamp = f"{_MONTHS[time.month - 1]} {time.day:2d} {time:%H:%M:%S}"
        datagram = f"<{priority}>{stamp} {IDENT}[{os.getpid()}]: {self._text(record)}"
        try:
            # backslashreplace: a lone surrogate (an undecodable file name, say) must not
            # cost the whole record
            self._socket.sendto(datagram.encode(errors="backslashreplace"), self._address)
        except OSError as exc:
            # Said once per outage, on standard error: a sink cannot log through loguru.
            if not self._failing:
                print(f"{IDENT}: cannot send to syslog at {self._describe}: {exc}", file=sys.stderr)
            self._failing = True
        else:
            self._failing = False

    @staticmethod
    def _text(record: Record) -> str:
        extra = record["extra"]
        text = record["message"]
        if extra.get("user"):
            text = f"[user] {text}"
        if "log_id" in extra:
            text = f"<{extra['log_id']}> {text}"
        exception = _exception_text(record)
        if exception is not None:
            text = f"{text}\n{exception}"
        return one_line(text)


def _check_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"syslog socket {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"syslog socket {path}: not a socket")


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a malformed host name
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"syslog address {host}:{port}: {reason}") from exc
    family, _, _, _, address = found[0]
    return family, address


def add_syslog_sink(address: SyslogAddress, *, facility: str, level: str) -> int:
    """Send each record to syslog as one datagram, with the priority of its level
    (``notice`` as notice, ``crit`` as crit, ...) in ``facility``.

    A datagram reads ``<PRI>Mmm dd hh:mm:ss oversip-hooks[PID]: <log_id> message``, with
    any traceback appended and every control character escaped, so that one record stays
    one line. Sending failures are reported once per outage on standard error.

    Args:
        address: a unix datagram socket path such as ``/dev/log``, or ``(host, port)``
            for UDP.
        facility: ``kern``, ``user``, ``daemon`` or ``local0`` to ``local7``.
        level: the lowest OverSIP level sent.

    Returns:
        The loguru handler id.

    Raises:
        ConfigError: the path is not a socket, or the host cannot be resolved.

    Example::

        add_syslog_sink("/dev/log", facility="local3", level="info")
    """
    return logger.add(_SyslogSink(address, facility), level=LEVELS[level][0], format="{message}")
