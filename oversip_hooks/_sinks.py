# Two loguru sinks beside add_console_sink's lines: JSON lines on a stream, and syslog
# datagrams. Both escape what a message holds with the console's `escape`, because a
# control character passed through would forge a record or rewrite a terminal: JSON keeps
# a message's newlines (json.dumps writes them as \n, and with ensure_ascii U+2028 and
# friends too, so a record stays one line) and escapes every other control character;
# syslog, one line per datagram, escapes newlines too. Under the journal, a JSON line
# starts with the "<N>" of its level, as the console's lines do.
#
# The JSON sink is loguru's documented recipe, a format function that stores the object in
# `extra` and returns a template that only inserts it; loguru's own `serialize=True` was
# rejected for its schema: the formatted line beside the whole record, two dozen keys deep.
#
# The syslog sink speaks the BSD protocol (RFC 3164, the form glibc's syslog(3) writes) over
# a datagram socket itself, and sends each record to the address anew, so that a restarted
# syslog daemon is found again without reconnecting. A send to a unix socket waits while
# the daemon's queue is full, as syslog(3) does: no record is dropped, at the cost of
# waiting for a daemon that has fallen behind. A record larger than the transport carries
# (65507 bytes for UDP over IPv4, 65527 over IPv6, the socket's send buffer less 32 bytes
# for a unix socket on Linux) is cut to fit, with "... [truncated, N more bytes]" at its
# end: sent, rather than refused with EMSGSIZE and reported as if syslog were down. The
# stdlib's SysLogHandler was rejected: it takes stdlib log records, not loguru's, and maps
# level names it does not know (notice, crit, ...) to warning unless taught otherwise.

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from ._logging import (
    LEVELS,
    SEVERITIES,
    escape,
    exception_text,
    is_journal,
    journal_prefix,
    oversip_level,
)
from ._settings import FACILITIES, ConfigError, SyslogAddress

if TYPE_CHECKING:
    from loguru import Message, Record

IDENT = "oversip-hooks"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_JSON_LINE = "{extra[_json]}\n"


def _json_object(record: Record) -> str:
    log_id = record["extra"].get("log_id")
    fields: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": oversip_level(record),
        "log_id": None if log_id is None else escape(str(log_id)),
        "message": escape(record["message"], keep_newlines=True),
    }
    exception = exception_text(record)
    if exception is not None:
        fields["exception"] = escape(exception, keep_newlines=True)
    return json.dumps(fields)


def _format_json(record: Record) -> str:
    record["extra"]["_json"] = _json_object(record)
    return _JSON_LINE


def _format_json_journal(record: Record) -> str:
    record["extra"]["_json"] = _json_object(record)
    return journal_prefix(SEVERITIES[oversip_level(record)], _JSON_LINE)


def add_json_sink(stream: TextIO, *, level: str) -> int:
    """Send records to ``stream`` as JSON, one object per line, with the keys ``time``
    (ISO 8601), ``level`` (an OverSIP level), ``log_id`` (``null`` for records that are
    not OverSIP's), ``message`` and, when there is one, ``exception`` (its traceback).
    Control characters other than newline in the values are escaped (``\\x1b``), newlines
    in ``log_id`` too. When ``stream`` is the systemd journal (``JOURNAL_STREAM`` names
    it), each line starts with the ``<N>`` priority prefix of sd-daemon(3).

    Args:
        stream: where the lines go, such as ``sys.stderr``.
        level: the lowest OverSIP level sent.

    Returns:
        The loguru handler id.

    Example::

        add_json_sink(sys.stderr, level="info")
        # {"time": "2026-11-26T09:25:52.952+00:00", "level": "notice", "log_id": ...}
    """
    format_ = _format_json_journal if is_journal(stream) else _format_json
    return logger.add(stream, level=LEVELS[level][0], format=format_, colorize=False)


# The largest UDP payload: 65535 less the IPv4 and UDP headers; IPv6's payload length
# does not count its own header.
_UDP_LIMITS = {socket.AF_INET: 65535 - 20 - 8, socket.AF_INET6: 65535 - 8}
_UNIX_OVERHEAD = 32  # Linux refuses a unix datagram above the send buffer less 32 bytes
_SMALLEST_LIMIT = 480  # RFC 5426's smallest datagram a receiver must take; never cut below


def truncate(data: bytes, limit: int) -> bytes:
    """``data`` if it fits in ``limit`` bytes, else its start, cut at a UTF-8 character's
    boundary, and ``... [truncated, N more bytes]``, ``limit`` bytes at most."""
    if len(data) <= limit:
        return data
    room = limit - len(f"... [truncated, {len(data)} more bytes]")
    while room > 0 and data[room] & 0xC0 == 0x80:  # within a character: back to its start
        room -= 1
    return data[:room] + f"... [truncated, {len(data) - room} more bytes]".encode()


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
        if family == socket.AF_UNIX:
            sndbuf = self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self._limit = max(sndbuf - _UNIX_OVERHEAD, _SMALLEST_LIMIT)
        else:
            self._limit = _UDP_LIMITS.get(family, 65507)
        self._facility = FACILITIES[facility]
        self._failing = False

    def __call__(self, message: Message) -> None:
        record = message.record
        priority = self._facility * 8 + SEVERITIES[oversip_level(record)]
        time = record["time"]
        stamp = f"{_MONTHS[time.month - 1]} {time.day:2d} {time:%H:%M:%S}"
        datagram = f"<{priority}>{stamp} {IDENT}[{os.getpid()}]: {self._text(record)}"
        # backslashreplace: a lone surrogate (an undecodable file name, say) must not cost
        # the whole record
        whole = datagram.encode(errors="backslashreplace")
        try:
            self._send(whole)
        except OSError as exc:
            # Said once per outage, on standard error: a sink cannot log through loguru.
            if not self._failing:
                print(f"{IDENT}: cannot send to syslog at {self._describe}: {exc}", file=sys.stderr)
            self._failing = True
        else:
            self._failing = False

    def _send(self, whole: bytes) -> None:
        while True:
            try:
                self._socket.sendto(truncate(whole, self._limit), self._address)
                return
            except OSError as exc:
                # A transport that takes less than we knew (a smaller send buffer, a kernel
                # of another overhead): try smaller, and remember.
                if exc.errno != errno.EMSGSIZE or self._limit <= _SMALLEST_LIMIT:
                    raise
                self._limit = max(min(self._limit, len(whole)) * 7 // 8, _SMALLEST_LIMIT)

    @staticmethod
    def _text(record: Record) -> str:
        extra = record["extra"]
        text = record["message"]
        if extra.get("user"):
            text = f"[user] {text}"
        if "log_id" in extra:
            text = f"<{extra['log_id']}> {text}"
        exception = exception_text(record)
        if exception is not None:
            text = f"{text}\n{exception}"
        return escape(text)


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
    one line. A record larger than the transport carries is cut to fit and ends with
    ``... [truncated, N more bytes]``. Sending failures are reported once per outage on
    standard error.

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
