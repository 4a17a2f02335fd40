# systemd's notification protocol (sd_notify(3)) is one datagram of newline-separated
# VAR=VALUE lines sent to the unix socket named by $NOTIFY_SOCKET. We speak it directly, a
# socket and a few strings, rather than depend on python-systemd, a C extension that needs
# libsystemd to build, for a protocol this small.
#
# Notifications follow the runtime's state through a state listener, so that they say what
# the runtime did (READY=1 once every `started` returned, not once we called run()). A
# failed send is logged once and otherwise ignored, as sd_notify(3) itself does: the
# service works without its supervisor's bookkeeping. Each message is sent to the address
# anew rather than over a connected socket, so that a re-executed systemd is found again.
#
# Sending never blocks: the socket is non-blocking, and a message that finds the socket's
# queue full (systemd busy, or a socket nobody reads) is dropped. A send waiting for room
# would block the event loop, and with it the signal handling that could stop us. One warn
# line says when messages start being dropped, whatever the reason, and one notice line
# when they get through again, not a line per message.
#
# The watchdog task pings before the first hook runs and until the last one returned: it is
# a trio task, so pings stop exactly when a hook blocks the event loop, which is what the
# watchdog exists to catch. A WATCHDOG_USEC below WATCHDOG_FLOOR_USEC (0.1 s, pings every
# 0.05 s) is refused as bad input: a watchdog that short cannot be kept reliably by a
# Python event loop, and pinging as often as it asks (WATCHDOG_USEC=1 was 88,000 datagrams
# in 3 s) floods systemd. Clamping it would only get the service killed by the watchdog.

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Mapping
from typing import NoReturn

import trio

from ._events import RuntimeState
from ._logging import emit
from ._settings import LARGEST_PID, ConfigError, parse_int, shown

LOG_ID = "systemd"

# The shortest watchdog accepted, and the longest (a day), in microseconds.
WATCHDOG_FLOOR_USEC = 100_000
WATCHDOG_LONGEST_USEC = 86_400_000_000


def _state_message(state: RuntimeState) -> list[str]:
    status = f"STATUS={state.value}"
    if state is RuntimeState.RUNNING:  # after the startup and after each reload
        return ["READY=1", status]
    if state is RuntimeState.RELOADING:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return ["RELOADING=1", f"MONOTONIC_USEC={now}", status]
    if state in (RuntimeState.DRAINING, RuntimeState.STOPPING):  # the drain is the way down
        return ["STOPPING=1", status]
    return [status]


class Notifier:
    """Sends sd_notify(3) messages to one socket.

    Args:
        address: an absolute path, or ``@name`` for an abstract socket.
        watchdog_interval: seconds between ``WATCHDOG=1`` pings, or ``None`` for none.

    Raises:
        ConfigError: ``address`` is neither an absolute path nor ``@name``.

    Example::

        notifier = Notifier.from_environ(os.environ)
        if notifier is not None:
            runtime.add_state_listener(notifier.on_state)
    """

    def __init__(self, address: str, watchdog_interval: float | None = None) -> None:
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        else:
            raise ConfigError(
                f"NOTIFY_SOCKET: expected an absolute path or @name, not {shown(address)}"
            )
        self.watchdog_interval = watchdog_interval
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._failing = False
        self._dropped = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier | None:
        """The notifier that ``NOTIFY_SOCKET`` asks for, pinging every half of
        ``WATCHDOG_USEC`` when that is set and ``WATCHDOG_PID``, if set, is ours; ``None``
        without ``NOTIFY_SOCKET``.

        Raises:
            ConfigError: one of these variables holds something systemd never sets
                (``WATCHDOG_PID`` above Linux's largest process id, ``WATCHDOG_USEC``
                above a day), or a watchdog of ours shorter than ``WATCHDOG_FLOOR_USEC``.
        """
        address = environ.get("NOTIFY_SOCKET")
        if not address:
            return None
        usec = _environ_int(environ, "WATCHDOG_USEC", WATCHDOG_LONGEST_USEC, "microseconds")
        pid = _environ_int(environ, "WATCHDOG_PID", LARGEST_PID, "a process id")
        ours = pid is None or pid == os.getpid()
        if usec is None or not ours:
            return cls(address)
        if usec < WATCHDOG_FLOOR_USEC:
            raise ConfigError(
                f"WATCHDOG_USEC: a watchdog of {usec} microseconds is too short to keep; "
                f"expected at least {WATCHDOG_FLOOR_USEC} (WatchdogSec=100ms)"
            )
        return cls(address, usec / 2e6)

    def send(self, *assignments: str) -> None:
        """Send ``assignments`` (``"READY=1"``, ...) in one datagram, or drop them: never
        blocks, never raises."""
        try:
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                reason = "its socket's queue is full" if _full(exc) else str(exc)
                emit(LOG_ID, "warn", f"cannot notify systemd: {reason}; dropping notifications")
            self._failing = True
            self._dropped += 1
        else:
            if self._failing:
                emit(LOG_ID, "notice", f"notifying systemd again, {self._dropped} dropped")
            self._failing = False
            self._dropped = 0

    def close(self) -> None:
        """Close the socket; a message sent after this is dropped."""
        self._socket.close()

    def on_state(self, state: RuntimeState) -> None:
        """A state listener for :meth:`Runtime.add_state_listener`."""
        self.send(*_state_message(state))

    async def keep_alive(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        """Send ``WATCHDOG=1`` now, report ready, then again every watchdog interval."""
        assert self.watchdog_interval is not None, "only started with a watchdog"
        self.send("WATCHDOG=1")
        task_status.started()
        while True:
            await trio.sleep(self.watchdog_interval)
            self.send("WATCHDOG=1")


def _full(exc: OSError) -> bool:
    return isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS


def _environ_int(environ: Mapping[str, str], name: str, high: int, what: str) -> int | None:
    raw = environ.get(name)
    if not raw:
        return None
    try:
        return parse_int(raw, low=1, high=high, what=what)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
