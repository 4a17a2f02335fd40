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
# The watchdog task pings before the first hook runs and until the last one returned: it is
# a trio task, so pings stop exactly when a hook blocks the event loop, which is what the
# watchdog exists to catch.

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import NoReturn

import trio

from ._logging import emit
from ._runtime import RuntimeState
from ._settings import ConfigError

LOG_ID = "systemd"


def _state_message(state: RuntimeState) -> list[str]:
    status = f"STATUS={state.value}"
    if state is RuntimeState.RUNNING:  # after the startup and after each reload
        return ["READY=1", status]
    if state is RuntimeState.RELOADING:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return ["RELOADING=1", f"MONOTONIC_USEC={now}", status]
    if state is RuntimeState.STOPPING:
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
            raise ConfigError(f"NOTIFY_SOCKET: expected an absolute path or @name, not {address!r}")
        self.watchdog_interval = watchdog_interval
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier | None:
        """The notifier that ``NOTIFY_SOCKET`` asks for, pinging every half of
        ``WATCHDOG_USEC`` when that is set and ``WATCHDOG_PID``, if set, is ours; ``None``
        without ``NOTIFY_SOCKET``.

        Raises:
            ConfigError: one of these variables holds something systemd never sets.
        """
        address = environ.get("NOTIFY_SOCKET")
        if not address:
            return None
        usec = _environ_int(environ, "WATCHDOG_USEC")
        pid = _environ_int(environ, "WATCHDOG_PID")
        ours = pid is None or pid == os.getpid()
        return cls(address, usec / 2e6 if usec and ours else None)

    def send(self, *assignments: str) -> None:
        """Send ``assignments`` (``"READY=1"``, ...) in one datagram."""
        try:
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                emit(LOG_ID, "warn", f"cannot notify systemd: {exc}")
            self._failing = True
        else:
            self._failing = False

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


def _environ_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) == 0:
        raise ConfigError(f"{name}: expected a positive integer, not {raw!r}")
    return int(raw)
