"""A pool opens in started, runs statements in worker threads (at most `size` at once,
never two on one connection), commits each call on its own or a transaction as a whole,
leaves no read snapshot behind, and reports itself on reload."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants

from oversip_mod_sqlite import Pool, PoolClosedError, Result

from sqlite_helpers import TIMEOUT, Connections, PoolUser, opened, read_rows

WithPool = Callable[..., tuple[PoolUser, Connections]]


class Probe:
    """``probe()``, a SQL function that ``on_connect`` adds to each connection: it counts
    the worker threads inside it, in all and per connection, and holds them at a gate
    until the test opens it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.most_inside = 0
        self.overlaps = 0  # a thread came in while another was inside on its connection
        self._inside: Counter[int] = Counter()
        self._changed = threading.Condition()

    def on_connect(self, connection: sqlite3.Connection) -> None:
        connection.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.create_function("probe", 0, lambda: self._probe(id(connection)))

    def inside(self) -> int:
        with self._changed:
            return self._inside.total()

    def wait_until_inside(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._inside.total() >= count, TIMEOUT)

    def _probe(self, connection_id: int) -> int:
        with self._changed:
            self.overlaps += self._inside[connection_id]
            self._inside[connection_id] += 1
            self.most_inside = max(self.most_inside, self._inside.total())
            self._changed.notify_all()
        try:
            self.gate.wait(TIMEOUT)
        finally:
            with self._changed:
                self._inside[connection_id] -= 1
        return 1


class Observer:
    """Records what the pool looks like in the user's initialize and started hooks."""

    def __init__(self, user: PoolUser, database: Path) -> None:
        self.user = user
        self.database = database
        self.seen: dict[str, tuple[bool, int, str]] = {}

    async def _look(self, hook: str) -> None:
        pool = opened(self.user)
        try:
            await pool.execute("INSERT INTO items (name) VALUES (?)", (hook,))
            outcome = "inserted"
        except PoolClosedError as exc:
            outcome = str(exc)
        self.seen[hook] = (self.database.exists(), pool.stats().open_connections, outcome)

    @hookimpl
    async def initialize(self) -> None:
        await self._look("initialize")

    @hookimpl
    async def started(self) -> None:
        await self._look("started")


async def test_the_connections_open_in_started_and_not_before(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, connections = with_pool(size=2)
    observer = Observer(user, database)
    lifecycle.register(observer, name="observer")

    assert await lifecycle.play() == 0

    assert observer.seen == {
        "initialize": (
            False,
            0,
            "SQLite pool 'main' is not open yet: the SQLite module opens it in its started hook",
        ),
        "started": (True, 2, "inserted"),
    }
    assert lifecycle.trace[:4] == [
        "sqlite.initialize",
        "server.initialize",
        "observer.initialize",
        "sqlite.started",
    ]
    assert "INFO: <SQLite module> Adding SQLite connection pool (name: main, size: 2)" in (
        lifecycle.lines
    )
    assert len(connections.opened) == 2
    check_lifecycle_invariants(lifecycle)


def pragma(connection: sqlite3.Connection, name: str) -> Any:
    with closing(connection.execute(f"PRAGMA {name}")) as cursor:
        return cursor.fetchone()[0]


@pytest.mark.parametrize(("options", "busy_timeout_ms"), [({}, 5000), ({"timeout": 1.5}, 1500)])
async def test_each_connection_is_set_up_in_wal_mode_with_the_busy_timeout(
    lifecycle: LifecycleHarness, with_pool: WithPool, options: dict[str, Any], busy_timeout_ms: int
) -> None:
    _, connections = with_pool(size=3, **options)
    async with lifecycle.running():
        # Idle connections, used here from the test's thread while no worker has them.
        assert len(set(map(id, connections.opened))) == 3
        for connection in connections.opened:
            assert pragma(connection, "journal_mode") == "wal"
            assert pragma(connection, "busy_timeout") == busy_timeout_ms
            assert connection.isolation_level is None  # autocommit


async def test_each_call_outside_a_transaction_commits_on_its_own(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, _ = with_pool(size=2)
    async with lifecycle.running():
        pool = opened(user)
        insert = "INSERT INTO items (name) VALUES (?)"
        assert await pool.execute(insert, ("a",)) == Result(rowcount=1, lastrowid=1)
        assert read_rows(database) == [(1, "a")]  # committed: another connection sees it

        assert (await pool.executemany(insert, (name for name in [("b",), ("c",)]))).rowcount == 2
        assert await pool.fetchone("SELECT name FROM items WHERE id = ?", (2,)) == ("b",)
        assert await pool.fetchone("SELECT name FROM items WHERE id = :id", {"id": 9}) is None
        assert await pool.fetchall("SELECT name FROM items ORDER BY id") == [("a",), ("b",), ("c",)]

        # executemany() is one call, so one transaction: a failure halfway keeps nothing.
        with pytest.raises(sqlite3.IntegrityError):
            await pool.executemany(
                "INSERT INTO items (id, name) VALUES (?, ?)", [(10, "d"), (1, "duplicate")]
            )
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await pool.fetchall("SELECT * FROM missing")
        # A call that would leave a transaction open is rolled back, and refused.
        with pytest.raises(sqlite3.ProgrammingError, match=r"use pool\.transaction\(\)"):
            await pool.execute("BEGIN")
        assert read_rows(database) == [(1, "a"), (2, "b"), (3, "c")]
        assert pool.stats().queries_served == 5  # the calls that did not raise


async def test_a_transaction_commits_at_the_end_of_its_block_and_not_before(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, _ = with_pool(size=2)
    async with lifecycle.running():
        pool = opened(user)
        async with pool.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('a')")
            await tx.executemany("INSERT INTO items (name) VALUES (?)", [("b",), ("c",)])
            assert await tx.fetchall("SELECT name FROM items") == [("a",), ("b",), ("c",)]
            assert read_rows(database) == []
            assert await pool.fetchall("SELECT name FROM items") == []  # another connection
        assert read_rows(database) == [(1, "a"), (2, "b"), (3, "c")]


async def insert_and_fail(pool: Pool, mode: Any, failure: type[Exception]) -> None:
    """Insert a row in a transaction, then fail, with an error of SQLite's or not."""
    async with pool.transaction(mode) as tx:
        await tx.execute("INSERT INTO items (id, name) VALUES (5, 'a')")
        if failure is sqlite3.IntegrityError:
            await tx.execute("INSERT INTO items (id, name) VALUES (5, 'a')")
        raise failure


@pytest.mark.parametrize("failure", [ZeroDivisionError, sqlite3.IntegrityError])
@pytest.mark.parametrize("mode", ["deferred", "immediate", "exclusive"])
async def test_a_transaction_rolls_back_when_its_block_raises(
    lifecycle: LifecycleHarness,
    with_pool: WithPool,
    database: Path,
    mode: Any,
    failure: type[Exception],
) -> None:
    user, _ = with_pool(size=2)
    async with lifecycle.running():
        pool = opened(user)
        with pytest.raises(failure):
            await insert_and_fail(pool, mode, failure)
        assert await pool.fetchall("SELECT * FROM items") == []
        assert pool.stats().in_use == 0
    assert read_rows(database) == []


async def test_an_interrupt_that_lands_on_the_rollback_does_not_leave_the_transaction_open(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    """The engine repeats the interrupt of a cancelled call until the call returns, so
    one may land on the ROLLBACK that ends it; SQLite interrupts a ROLLBACK too, which
    then leaves the transaction open, holding the write lock for the connection's next
    calls. Here a progress handler interrupts the ROLLBACK itself, once (a handler that
    returns non-zero interrupts the statement as sqlite3_interrupt() does)."""
    armed = threading.Event()
    tables = Connections()

    def interrupt_the_next_statement(connection: sqlite3.Connection) -> None:
        tables(connection)

        def on_progress() -> int:
            if armed.is_set():
                armed.clear()
                return 1
            return 0

        connection.set_progress_handler(on_progress, 1)

    user, _ = with_pool(size=1, on_connect=interrupt_the_next_statement)

    def insert_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO items (name) VALUES ('undone')").close()
        armed.set()  # the next statement is the ROLLBACK
        raise ZeroDivisionError

    async with lifecycle.running():
        pool = opened(user)
        with pytest.raises(ZeroDivisionError):
            await pool.run(insert_then_fail)
        assert not armed.is_set()  # it did interrupt the ROLLBACK
        assert read_rows(database) == []
        # Not in a transaction: another connection can write, and so can the pool.
        with closing(sqlite3.connect(database, timeout=0)) as other:
            other.execute("INSERT INTO items (name) VALUES ('other')")
            other.commit()
        await pool.run(lambda c: c.execute("INSERT INTO items (name) VALUES ('next')").close())
    assert [name for _, name in read_rows(database)] == ["other", "next"]


async def test_a_transaction_ended_by_sqlite_runs_nothing_more(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    """ON CONFLICT ROLLBACK ends the transaction inside SQLite; a caller who catches the
    error and carries on must not get the rest committed on its own."""
    user, _ = with_pool(size=1)
    async with lifecycle.running():
        pool = opened(user)
        await pool.execute("CREATE TABLE audit (note TEXT UNIQUE ON CONFLICT ROLLBACK)")
        await pool.execute("INSERT INTO audit VALUES ('transfer 1')")

        async def transfer() -> None:
            async with pool.transaction() as tx:
                await tx.execute("INSERT INTO items (name) VALUES ('debit')")
                with pytest.raises(sqlite3.IntegrityError):
                    await tx.execute("INSERT INTO audit VALUES ('transfer 1')")
                await tx.execute("INSERT INTO items (name) VALUES ('credit')")

        with pytest.raises(sqlite3.OperationalError, match="already ended by SQLite"):
            await transfer()
    assert read_rows(database) == []


async def test_a_transaction_works_only_inside_its_block(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    user, _ = with_pool(size=1)
    async with lifecycle.running():
        pool = opened(user)
        async with pool.transaction() as tx:
            pass
        with pytest.raises(RuntimeError, match="this transaction has ended"):
            await tx.execute("SELECT 1")
        with pytest.raises(ValueError, match="mode must be one of"):
            async with pool.transaction("lazy"):  # type: ignore[arg-type]
                pass


async def test_a_pool_opens_once(lifecycle: LifecycleHarness, with_pool: WithPool) -> None:
    user, connections = with_pool(size=1)
    async with lifecycle.running():
        with pytest.raises(RuntimeError, match="SQLite pool 'main' is open; it opens once"):
            await opened(user).open()
    assert len(connections.opened) == 1


async def test_more_concurrent_queries_than_size_all_complete_on_at_most_size_threads(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    probe = Probe()
    user, _ = with_pool(size=3, on_connect=probe.on_connect)
    results: list[Any] = []
    async with lifecycle.running():
        pool = opened(user)

        async def query() -> None:
            results.append(await pool.fetchone("SELECT probe()"))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(query)
            assert await trio.to_thread.run_sync(probe.wait_until_inside, 3)
            await trio.testing.wait_all_tasks_blocked()
            # Three threads are held inside probe(); the seven other calls wait in trio,
            # without a thread, for a connection.
            assert probe.inside() == 3
            stats = pool.stats()
            assert (stats.in_use, stats.queries_waiting) == (3, 7)
            await lifecycle.reload()
            probe.gate.set()

    assert results == [(1,)] * 10
    assert probe.most_inside == 3
    assert probe.overlaps == 0
    assert (
        "INFO: <SQLite module> SQLite connection pool (name: main, open connections: 3, "
        "in use: 3, queries served: 0, queries waiting: 7)"
    ) in lifecycle.lines


async def test_a_transaction_shared_by_tasks_runs_one_statement_at_a_time(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    probe = Probe()
    user, _ = with_pool(size=3, on_connect=probe.on_connect)
    async with (
        lifecycle.running(),
        opened(user).transaction() as tx,
        trio.open_nursery() as nursery,
    ):
        for _ in range(4):
            nursery.start_soon(tx.fetchone, "SELECT probe()")
        assert await trio.to_thread.run_sync(probe.wait_until_inside, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert probe.inside() == 1  # the others wait for the transaction's connection
        probe.gate.set()
    assert probe.most_inside == 1
    assert probe.overlaps == 0


def checkpoint_is_blocked(database: Path) -> bool:
    """Whether some connection holds a read snapshot of the WAL: a TRUNCATE checkpoint
    from a separate connection that does not wait (timeout=0) then reports busy."""
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as connection:
        pragma(connection, "schema_version")  # see _SQLiteDriver.close() in _pool.py
        with closing(connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")) as cursor:
            busy, _, _ = cursor.fetchone()
    return bool(busy)


async def commit(pool: Pool) -> None:
    async with pool.transaction("deferred") as tx:
        await tx.fetchone("SELECT * FROM items")
        await tx.execute("INSERT INTO items (name) VALUES ('committed')")


async def read_and_fail(pool: Pool) -> None:
    async with pool.transaction("deferred") as tx:
        await tx.fetchone("SELECT * FROM items")
        raise KeyError


async def roll_back(pool: Pool) -> None:
    with pytest.raises(KeyError):
        await read_and_fail(pool)


async def fail(pool: Pool) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await pool.execute("INSERT INTO items (id) VALUES (1)")


CALLS: dict[str, Callable[[Pool], Awaitable[object]]] = {
    "execute a query": lambda pool: pool.execute("SELECT * FROM items"),
    "fetchone of many rows": lambda pool: pool.fetchone("SELECT * FROM items"),
    "fetchall": lambda pool: pool.fetchall("SELECT * FROM items"),
    "executemany": lambda pool: pool.executemany("INSERT INTO items (name) VALUES (?)", [("x",)]),
    "a committed transaction": commit,
    "a rolled back transaction": roll_back,
    "a failed statement": fail,
}


@pytest.mark.parametrize("call", CALLS)
async def test_no_call_leaves_a_read_snapshot_open(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path, call: str
) -> None:
    user, _ = with_pool(size=2)
    async with lifecycle.running():
        pool = opened(user)
        await pool.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",)])
        await CALLS[call](pool)
        assert not checkpoint_is_blocked(database)


async def test_the_snapshot_check_sees_a_cursor_left_open(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    # The check above can fail: a cursor that has not read all its rows holds a snapshot.
    user, _ = with_pool(size=1)
    async with lifecycle.running():
        await opened(user).executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",)])
        with closing(sqlite3.connect(database)) as reader:
            cursor = reader.execute("SELECT * FROM items")
            cursor.fetchone()
            assert checkpoint_is_blocked(database)
            cursor.close()
            assert not checkpoint_is_blocked(database)


async def test_reload_logs_each_pool_and_reopens_nothing(
    lifecycle: LifecycleHarness, with_pool: WithPool, tmp_path: Path
) -> None:
    user, connections = with_pool(size=2)
    audit = PoolUser("audit", database=tmp_path / "audit.db", size=1)
    lifecycle.register(audit, name="audit")
    async with lifecycle.running():
        await opened(user).execute("INSERT INTO items (name) VALUES ('a')")
        await opened(user).fetchall("SELECT * FROM items")
        await lifecycle.reload()
        await lifecycle.reload()
        assert len(connections.opened) == 2
        assert connections.closed() == [False, False]
    lines = [line for line in lifecycle.lines if "SQLite connection pool (name:" in line]
    assert lines[:6] == [
        "INFO: <SQLite module> Adding SQLite connection pool (name: main, size: 2)",
        "INFO: <SQLite module> Adding SQLite connection pool (name: audit, size: 1)",
        *[
            "INFO: <SQLite module> SQLite connection pool (name: main, open connections: 2, "
            "in use: 0, queries served: 2, queries waiting: 0)",
            "INFO: <SQLite module> SQLite connection pool (name: audit, open connections: 1, "
            "in use: 0, queries served: 0, queries waiting: 0)",
        ]
        * 2,
    ]
    # The pools close at the same time, so in no particular order.
    assert sorted(lines[6:]) == [
        "INFO: <SQLite module> Closed SQLite connection pool (name: audit, connections: 1, "
        "transactions rolled back: 0, queries served: 0)",
        "INFO: <SQLite module> Closed SQLite connection pool (name: main, connections: 2, "
        "transactions rolled back: 0, queries served: 2)",
    ]
