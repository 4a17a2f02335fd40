"""Whatever happens to the service (reloads, stops, stop signals, failures in any hook),
the pool's connections are open exactly while it runs; once it has stopped, every
connection is closed, the WAL applied and every committed row there. An abandoned
shutdown (a second stop signal) skips the module's terminated hook, as the runtime's rule
says: then only the committed rows are promised."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hypothesis import settings
from hypothesis.stateful import invariant
from oversip_hooks.testing.hypothesis import LifecycleMachine

import oversip_mod_sqlite

from sqlite_helpers import Connections, PoolUser, read_rows, wal_is_applied

SIZE = 2


class Writes(Connections):
    """An ``on_connect`` that also writes a row, so that the WAL always has content."""

    def __call__(self, connection: sqlite3.Connection) -> None:
        super().__call__(connection)
        connection.execute("INSERT INTO items (name) VALUES ('connected')")


@settings(max_examples=60, stateful_step_count=6, deadline=None)
class SQLiteModuleMachine(LifecycleMachine):
    def make_plugins(self) -> Mapping[str, object]:
        self.directory = Path(tempfile.mkdtemp(prefix="oversip-mod-sqlite-"))
        self.database = self.directory / "machine.db"
        self.connections = Writes()
        user = PoolUser("main", database=self.database, size=SIZE, on_connect=self.connections)
        return {"sqlite": oversip_mod_sqlite, "user": user}

    def _module_started(self) -> bool:
        return any(
            not call.raised and not call.cancelled
            for call in self.harness.calls_to("started", plugin="sqlite")
        )

    def _abandoned(self) -> bool:
        # A second stop signal during the shutdown: the terminated hooks not yet called
        # are not called at all, and in a real process the exit closes the files.
        return any("abandoning the shutdown" in line for line in self.harness.lines)

    @invariant()
    def connections_are_open_exactly_while_the_service_runs(self) -> None:
        closed = self.connections.closed()
        if self._abandoned():
            return
        if self.harness.stopped or not self._module_started():
            assert all(closed), f"{closed.count(False)} connections left open"
        else:
            assert closed == [False] * SIZE

    @invariant()
    def once_stopped_the_wal_is_applied_and_no_committed_row_is_lost(self) -> None:
        if not self.harness.stopped:
            return
        if not self._abandoned():
            assert wal_is_applied(self.database)
        if self.connections.opened:
            rows = read_rows(self.database, "SELECT count(*) FROM items WHERE name = 'connected'")
            assert rows == [(len(self.connections.opened),)]

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            for connection in self.connections.opened:
                connection.close()  # those an abandoned shutdown left open
            shutil.rmtree(self.directory)


TestSQLiteModuleMachine = SQLiteModuleMachine.TestCase
