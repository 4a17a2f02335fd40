"""Plugins and checks that the SQLite module's tests share."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio
from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness

import oversip_mod_sqlite

TIMEOUT = 30  # seconds for any one event of a child process; generous, for a loaded CI


class PoolUser:
    """A user's server plugin: adds one pool from ``initialize``, as a server file does,
    and keeps it for the test. Register it after the module."""

    def __init__(self, name: str = "main", **settings: Any) -> None:
        self.name = name
        self.settings = settings
        self.pool: oversip_mod_sqlite.Pool | None = None

    @hookimpl
    def initialize(self) -> None:
        self.pool = oversip_mod_sqlite.add_pool(self.name, **self.settings)


class Connections:
    """An ``on_connect`` that creates the test table and keeps every connection opened,
    so that a test can check that each one was closed."""

    def __init__(self) -> None:
        self.opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def __call__(self, connection: sqlite3.Connection) -> None:
        connection.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        with self._lock:
            self.opened.append(connection)

    def closed(self) -> list[bool]:
        return [_is_closed(connection) for connection in self.opened]


def register_pool(
    harness: LifecycleHarness, database: Path, **settings: Any
) -> tuple[PoolUser, Connections]:
    """Register the module as ``sqlite``, then a :class:`PoolUser` of ``database`` as
    ``server``, whose ``on_connect`` is a :class:`Connections` unless one is given."""
    connections = Connections()
    settings.setdefault("on_connect", connections)
    user = PoolUser(database=database, **settings)
    harness.register(oversip_mod_sqlite, name="sqlite")
    harness.register(user, name="server")
    return user, connections


def opened(user: PoolUser) -> oversip_mod_sqlite.Pool:
    """The user's pool, once its initialize has run."""
    assert user.pool is not None
    return user.pool


def _is_closed(connection: sqlite3.Connection) -> bool:
    try:
        connection.total_changes  # noqa: B018 - any use of a closed connection raises
    except sqlite3.ProgrammingError:
        return True
    return False


def wal_is_applied(database: Path) -> bool:
    """No ``-wal`` file beside ``database``, or an empty one: nothing left to apply.
    Check it before opening the database, which may create a new one."""
    wal = database.with_name(database.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def read_rows(database: Path, sql: str = "SELECT id, name FROM items ORDER BY id") -> list[Any]:
    """The rows as a separate connection, outside the runtime, sees them."""
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute(sql).fetchall()


class Child:
    """``python -m oversip_hooks ARGS`` running, with its output read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._new_line = trio.Event()
        self._ended = 0

    async def read(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines.extend(line.decode() for line in complete)
            self._ping()
        self._ended += 1
        self._ping()

    def _ping(self) -> None:
        self._new_line.set()
        self._new_line = trio.Event()

    async def line(self, lines: list[str], text: str, start: int = 0) -> int:
        """The index of the first line of ``lines`` from ``start`` that contains
        ``text``, once it has been printed."""
        with trio.fail_after(TIMEOUT):
            while True:
                for index in range(start, len(lines)):
                    if text in lines[index]:
                        return index
                if self._ended == 2:
                    pytest.fail(f"exited without printing {text!r}:\n" + "\n".join(self.err))
                await self._new_line.wait()

    async def finish(self) -> int:
        """Wait for the exit, with all of the output read; the exit status."""
        with trio.fail_after(TIMEOUT):
            while self._ended < 2:
                await self._new_line.wait()
            return await self.process.wait()


Spawn = Callable[..., Awaitable[Child]]
"""The ``spawn`` fixture: ``await spawn("run", "server.py", NAME="value")``."""
