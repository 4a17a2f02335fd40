"""Every way down closes every connection with the WAL applied, commits nothing that was
not committed, and waits for statements in progress only as long as the runtime's
shutdown timeout allows; a pool that cannot open is fatal and leaves nothing open."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import trio.testing
from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants

import oversip_mod_sqlite
from oversip_mod_sqlite import PoolClosedError

from sqlite_helpers import (
    Connections,
    PoolUser,
    opened,
    read_rows,
    register_pool,
    wal_is_applied,
)

WithPool = Callable[..., tuple[PoolUser, Connections]]
INSERT = "INSERT INTO items (name) VALUES (?)"


def module_lines(harness: LifecycleHarness) -> list[str]:
    """The module's own log lines: the runtime logs after the module's last one (how
    long its terminated hook took)."""
    return [line for line in harness.lines if "<SQLite module>" in line]


async def test_terminated_applies_the_wal_and_closes_every_connection(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, connections = with_pool(size=3)
    async with lifecycle.running():
        pool = opened(user)
        await pool.executemany(INSERT, [("a",), ("b",)])

    assert lifecycle.exit_status == 0
    assert connections.closed() == [True] * 3
    assert wal_is_applied(database)
    assert read_rows(database) == [(1, "a"), (2, "b")]
    assert pool.stats().open_connections == 0
    with pytest.raises(PoolClosedError, match="SQLite pool 'main' is closed"):
        await pool.fetchall("SELECT * FROM items")
    assert module_lines(lifecycle)[-1] == (
        "INFO: <SQLite module> Closed SQLite connection pool (name: main, connections: 3, "
        "transactions rolled back: 0, queries served: 1)"
    )
    check_lifecycle_invariants(lifecycle)


async def test_the_wal_is_applied_even_while_another_connection_has_the_database_open(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    # SQLite applies the WAL by itself when the last connection to a database closes;
    # with another one still open, only the pool's own checkpoint does it.
    user, _ = with_pool(size=2)
    async with lifecycle.running():
        await opened(user).executemany(INSERT, [("a",), ("b",)])
        with closing(sqlite3.connect(database)) as other:
            assert other.execute("SELECT count(*) FROM items").fetchall() == [(2,)]
            await lifecycle.stop()
            assert wal_is_applied(database)

    assert lifecycle.exit_status == 0


@pytest.mark.parametrize("how", ["raise", "fatal"])
async def test_on_error_the_pools_still_close_cleanly(
    lifecycle: LifecycleHarness,
    with_pool: WithPool,
    database: Path,
    how: Literal["raise", "fatal"],
) -> None:
    # A plugin started after the module fails: the module's terminated gets error=True.
    _, connections = with_pool(size=2)
    lifecycle.inject_failure("started", how)

    assert await lifecycle.play() == 1

    assert "sqlite.terminated(error=True)" in lifecycle.trace
    assert connections.closed() == [True, True]
    assert wal_is_applied(database)
    assert read_rows(database, "SELECT name FROM sqlite_schema") == [("items",)]
    check_lifecycle_invariants(lifecycle)


async def test_a_stop_during_startup_closes_the_connections_already_open(
    lifecycle: LifecycleHarness, database: Path
) -> None:
    connections = Connections()

    def stop_at_the_second(connection: sqlite3.Connection) -> None:
        connections(connection)
        if len(connections.opened) == 2:
            assert lifecycle.runtime is not None
            lifecycle.runtime.stop()  # from this worker thread, as a signal would

    register_pool(lifecycle, database, size=4, on_connect=stop_at_the_second)

    assert await lifecycle.play() == 0

    assert "sqlite.started cancelled" in lifecycle.trace
    assert "sqlite.terminated(error=False)" not in lifecycle.trace  # it never started
    assert connections.closed() == [True, True]
    assert wal_is_applied(database)


def refuse_the_second(connections: Connections) -> Callable[[sqlite3.Connection], None]:
    def on_connect(connection: sqlite3.Connection) -> None:
        if connections.opened:
            raise ValueError("no schema for you")
        connections(connection)

    return on_connect


@pytest.mark.parametrize("cause", ["not a database", "on_connect raises"])
async def test_a_pool_that_cannot_open_is_fatal_and_leaves_nothing_open(
    lifecycle: LifecycleHarness, tmp_path: Path, cause: str
) -> None:
    good_db, bad_db = tmp_path / "good.db", tmp_path / "bad.db"
    good, bad = Connections(), Connections()
    on_connect: Callable[[sqlite3.Connection], None] = bad
    if cause == "not a database":
        bad_db.write_bytes(b"this is not an SQLite database, and it is long enough to tell" * 4)
        reason = "DatabaseError: file is not a database"
    else:
        on_connect = refuse_the_second(bad)
        reason = "on_connect raised ValueError: no schema for you"
    register_pool(lifecycle, good_db, size=2, on_connect=good)
    lifecycle.register(PoolUser("bad", database=bad_db, size=3, on_connect=on_connect))

    assert await lifecycle.play() == 1

    message = (
        f"cannot open SQLite connection pool (name: bad, database: {bad_db}): {reason} "
        "(PoolOpenError)"
    )
    assert lifecycle.fatal_message == message
    assert f"CRIT: <SQLite module> {message}" in lifecycle.lines
    assert "sqlite.terminated(error=True)" not in lifecycle.trace  # it never started
    assert good.closed() + bad.closed() == [True] * (len(good.opened) + len(bad.opened))
    assert len(good.opened) == 2
    assert wal_is_applied(good_db)


async def test_a_statement_in_flight_at_shutdown_finishes_and_new_ones_are_refused(
    lifecycle: LifecycleHarness, database: Path
) -> None:
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def on_connect(connection: sqlite3.Connection) -> None:
        # wait(): a SQL function that holds its worker thread until the test releases it.
        connection.create_function(
            "wait", 0, lambda: trio.from_thread.run(release.wait, trio_token=token)
        )

    user, _ = register_pool(lifecycle, database, size=2, on_connect=on_connect)
    results: list[Any] = []

    async with lifecycle.running() as runtime:
        pool = opened(user)

        async def in_flight() -> None:
            results.append(await pool.fetchone("SELECT wait()"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_flight)
            await trio.testing.wait_all_tasks_blocked()
            runtime.stop()
            await trio.testing.wait_all_tasks_blocked()
            # The module's terminated hook is now waiting for the statement in flight.
            assert pool.stats().in_use == 1
            with pytest.raises(PoolClosedError, match="SQLite pool 'main' is closing"):
                await pool.execute("SELECT 1")
            release.set()
        assert await lifecycle.wait_stopped() == 0

    assert results == [(None,)]
    last = module_lines(lifecycle)[-1]
    assert "Closed SQLite connection pool (name: main, connections: 2" in last


class HoldsATransaction(PoolUser):
    """Commits a row, then starts a service that inserts rows in a transaction and
    waits, with the transaction open, until the runtime cancels it."""

    def __init__(self, database: Path) -> None:
        super().__init__("main", database=database, on_connect=Connections())
        self.inside = trio.Event()

    @hookimpl
    async def started(self, runtime: Any) -> None:
        await opened(self).execute(INSERT, ("committed",))
        runtime.start_soon(self.hold)

    async def hold(self) -> None:
        async with opened(self).transaction() as tx:
            await tx.executemany(INSERT, [("half",), ("applied",)])
            self.inside.set()
            await trio.sleep_forever()


async def test_a_transaction_open_at_shutdown_is_rolled_back(
    lifecycle: LifecycleHarness, database: Path
) -> None:
    holder = HoldsATransaction(database)
    lifecycle.register(oversip_mod_sqlite, name="sqlite")
    lifecycle.register(holder, name="server")
    async with lifecycle.running():
        await holder.inside.wait()

    assert lifecycle.exit_status == 0
    assert wal_is_applied(database)
    assert read_rows(database) == [(1, "committed")]


async def test_a_transaction_held_past_the_shutdown_timeout_is_rolled_back(
    make_lifecycle: Callable[..., LifecycleHarness], database: Path
) -> None:
    harness = make_lifecycle(shutdown_timeout=0.5)
    user, connections = register_pool(harness, database, size=2)
    async with harness.running():
        pool = opened(user)
        await pool.execute(INSERT, ("committed",))
        with pytest.raises(PoolClosedError, match="SQLite pool 'main' is closed"):
            await stop_inside_a_transaction(harness, pool)

    assert harness.exit_status == 1
    assert (
        "CRIT: <runtime> terminated of 'sqlite' cancelled: the shutdown timeout of 0.5 s ran out"
    ) in harness.lines
    assert (
        "INFO: <SQLite module> Closed SQLite connection pool (name: main, connections: 2, "
        "transactions rolled back: 1, queries served: 2)"
    ) in harness.lines
    assert connections.closed() == [True, True]
    assert wal_is_applied(database)
    assert read_rows(database) == [(1, "committed")]


async def stop_inside_a_transaction(harness: LifecycleHarness, pool: Any) -> None:
    """Insert a row in a transaction, then stop the runtime and wait for the end of its
    run before the end of the block: the block ends (commits) only after the pool
    closed."""
    async with pool.transaction() as tx:
        await tx.execute(INSERT, ("never committed",))
        await harness.stop()


async def test_a_long_statement_is_interrupted_when_the_shutdown_timeout_runs_out(
    make_lifecycle: Callable[..., LifecycleHarness], database: Path
) -> None:
    harness = make_lifecycle(shutdown_timeout=0.5)
    user, connections = register_pool(harness, database, size=1)
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    async with harness.running() as runtime:
        pool = opened(user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(expect_interrupted, pool, endless)
            await trio.testing.wait_all_tasks_blocked()
            runtime.stop()

    assert harness.exit_status == 1
    assert connections.closed() == [True]


async def expect_interrupted(pool: Any, sql: str) -> None:
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await pool.fetchone(sql)


async def test_stopping_an_idle_pool_never_waits_for_the_busy_timeout(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    # A read snapshot left open would hold the checkpoint up until the shutdown timeout,
    # then leave it incomplete: a warning, and a WAL not applied.
    user, _ = with_pool(size=3, timeout=60)
    async with lifecycle.running():
        pool = opened(user)
        await pool.executemany(INSERT, [("a",), ("b",), ("c",)])
        await pool.fetchone("SELECT * FROM items")
        await pool.execute("SELECT * FROM items")
        async with pool.transaction("deferred") as tx:
            await tx.fetchone("SELECT * FROM items")
            await tx.execute("CREATE TABLE more (x)")  # every other connection now stale

    assert lifecycle.exit_status == 0
    assert [line for line in lifecycle.lines if line.startswith(("CRIT", "WARN"))] == [
        "WARN: <SQLite module> SQLite pool 'main': timeout=60 (the busy timeout) is above "
        "the runtime's shutdown timeout of 5 s; a shutdown may wait that long for a lock"
    ]  # the warning of add_pool; none from the shutdown
    assert wal_is_applied(database)
