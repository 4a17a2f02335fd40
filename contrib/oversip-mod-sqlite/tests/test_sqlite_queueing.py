"""Where a statement runs: quick ones in trio's thread, never blocking it (a lock, a slow
statement, a user function or collation send it to the connection's thread, with nothing
done twice); the rest queued onto the connections' threads; run() one transaction in one
round trip; and under load with random cancellations, every statement ran once or, if
cancelled, completely or not at all."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import trio
import trio.testing
from oversip_hooks.testing import LifecycleHarness

from oversip_mod_sqlite import Pool, _pool

from sqlite_helpers import TIMEOUT, Connections, PoolUser, opened, read_rows

WithPool = Callable[..., tuple[PoolUser, Connections]]
INSERT = "INSERT INTO items (name) VALUES (?)"


def thread_of(calls: list[int]) -> Callable[[sqlite3.Connection], None]:
    """An on_connect that adds ``here()``: records the thread that runs it."""

    def on_connect(connection: sqlite3.Connection) -> None:
        Connections()(connection)

        def here() -> int:
            calls.append(threading.get_ident())
            return 1

        connection.create_function("here", 0, here)

    return on_connect


def pool_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("SQLite pool 'main'")}


@pytest.mark.parametrize("synchronous", [None, "full", "EXTRA", "normal", "OFF"])
async def test_synchronous_is_set_on_every_connection_and_full_by_default(
    lifecycle: LifecycleHarness, with_pool: WithPool, synchronous: str | None
) -> None:
    options = {} if synchronous is None else {"synchronous": synchronous}
    _, connections = with_pool(size=2, **options)
    async with lifecycle.running():
        for connection in connections.opened:
            with closing(connection.execute("PRAGMA synchronous")) as cursor:
                level = cursor.fetchone()[0]
            assert level == ["OFF", "NORMAL", "FULL", "EXTRA"].index(
                (synchronous or "FULL").upper()
            )


@pytest.mark.parametrize(("synchronous", "writes_inline"), [("FULL", False), ("NORMAL", True)])
async def test_quick_statements_run_in_trios_thread_and_writes_only_without_fsync(
    lifecycle: LifecycleHarness, with_pool: WithPool, synchronous: str, writes_inline: bool
) -> None:
    user, _ = with_pool(size=2, synchronous=synchronous)
    async with lifecycle.running():
        pool = opened(user)
        before = pool.stats().queries_served
        assert await pool.fetchone("SELECT 1") == (1,)
        await pool.execute(INSERT, ("a",))
        # Nothing went to a thread inline: the pool's connections are idle, the
        # statements served.
        assert pool.stats().queries_served == before + 2
        assert pool._driver.may_inline("SELECT 1")
        assert pool._driver.may_inline(INSERT) is writes_inline


async def test_a_user_function_runs_in_a_thread_of_the_pool_once_only(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    calls: list[int] = []
    user, _ = with_pool(size=2, synchronous="NORMAL", on_connect=thread_of(calls))
    async with lifecycle.running():
        pool = opened(user)
        await pool.execute("INSERT INTO items (name) VALUES ('x' || here())")
        assert await pool.fetchone("SELECT here()") == (1,)
        threads = pool_threads()
    assert len(calls) == 2  # not once inline and again in the thread
    assert set(calls) <= threads
    assert read_rows(database) == [(1, "x1")]


async def test_a_user_aggregate_and_window_function_run_in_a_thread(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    made_in: list[int] = []

    class Total:
        def __init__(self) -> None:
            made_in.append(threading.get_ident())
            self.total = 0

        def step(self, value: int) -> None:
            self.total += value

        def inverse(self, value: int) -> None:
            self.total -= value

        def value(self) -> int:
            return self.total

        def finalize(self) -> int:
            return self.total

    def on_connect(connection: sqlite3.Connection) -> None:
        Connections()(connection)
        connection.create_aggregate("total", 1, Total)
        connection.create_window_function("running", 1, Total)

    user, _ = with_pool(size=1, on_connect=on_connect)
    async with lifecycle.running():
        pool = opened(user)
        await pool.executemany(INSERT, [("a",), ("b",)])
        assert await pool.fetchone("SELECT total(id) FROM items") == (3,)
        assert await pool.fetchall("SELECT running(id) OVER (ORDER BY id) FROM items") == [
            (1,),
            (3,),
        ]
        threads = pool_threads()
    assert made_in
    assert set(made_in) <= threads


async def test_a_connection_with_a_collation_runs_nothing_inline(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    compared_in: set[int] = set()

    def backwards(a: str, b: str) -> int:
        compared_in.add(threading.get_ident())
        return (a < b) - (a > b)

    def on_connect(connection: sqlite3.Connection) -> None:
        Connections()(connection)
        connection.create_collation("backwards", backwards)

    user, _ = with_pool(size=1, on_connect=on_connect)
    async with lifecycle.running():
        pool = opened(user)
        await pool.executemany(INSERT, [("a",), ("b",), ("c",)])
        rows = await pool.fetchall("SELECT name FROM items ORDER BY name COLLATE backwards")
        threads = pool_threads()
    assert rows == [("c",), ("b",), ("a",)]
    assert compared_in
    assert compared_in <= threads


async def test_a_statement_over_its_budget_finishes_in_a_thread_and_goes_there_from_then_on(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    user, _ = with_pool(size=1)
    slow = (
        "SELECT (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT ?) "
        "SELECT sum(i) FROM n)"
    )
    async with lifecycle.running():
        pool = opened(user)
        for _ in range(_pool.STRIKES):
            assert pool._driver.may_inline(slow)
            assert await pool.fetchone(slow, (300_000,)) == (300_000 * 300_001 // 2,)
        assert not pool._driver.may_inline(slow)
        assert await pool.fetchone(slow, (10,)) == (55,)


async def test_a_write_reported_interrupted_after_it_committed_is_not_run_again(
    lifecycle: LifecycleHarness,
    with_pool: WithPool,
    database: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no budget at all, the progress handler stops every statement it is called
    # in. SQLite also calls it as a statement returns, after a one-row INSERT committed
    # (every few statements, as the VM step count crosses the handler's period): that
    # one must count as done, not be handed to a thread and inserted twice.
    monkeypatch.setattr(_pool, "INLINE_BUDGET", -1.0)
    user, _ = with_pool(size=1, synchronous="NORMAL")
    async with lifecycle.running():
        pool = opened(user)
        results = [await pool.execute(INSERT, (str(n),)) for n in range(300)]
        await pool.executemany(INSERT, [("many",)] * 300)
    assert results == [_pool.Result(rowcount=1, lastrowid=n + 1) for n in range(300)]
    names = Counter(name for _, name in read_rows(database))
    assert names == {**{str(n): 1 for n in range(300)}, "many": 300}


async def test_a_user_progress_handler_is_kept(
    lifecycle: LifecycleHarness, with_pool: WithPool
) -> None:
    calls = Counter[str]()

    connections = Connections()

    def on_connect(connection: sqlite3.Connection) -> None:
        connections(connection)
        connection.set_progress_handler(lambda: calls.update(["progress"]) or 0, 1)

    user, _ = with_pool(size=1, on_connect=on_connect)
    async with lifecycle.running():
        pool = opened(user)
        await pool.fetchone("SELECT 1")
        calls.clear()
        # Idle: the connection has the user's handler back, not the pool's.
        with closing(connections.opened[0].execute("SELECT 1")) as cursor:
            cursor.fetchone()
    assert calls["progress"] > 0


async def test_a_write_that_would_wait_for_a_lock_waits_in_a_thread_not_in_trio(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, _ = with_pool(size=2, synchronous="NORMAL")
    async with lifecycle.running():
        pool = opened(user)
        with closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.execute, INSERT, ("waited",))
                # trio runs on: the insert waits for the lock in a worker thread.
                await trio.testing.wait_all_tasks_blocked()
                assert pool.stats().in_use == 1
                other.execute("COMMIT")
        assert not pool._driver._strikes  # a lock sends nothing to threads for good
    assert read_rows(database) == [(1, "waited")]


async def test_inline_writes_are_checkpointed_from_a_thread(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    # SQLite's automatic checkpoint is off while a connection runs inline (it would
    # fsync in trio's thread); every CHECKPOINT_EVERY inline writes a thread does it, so
    # the WAL is reused instead of growing.
    user, _ = with_pool(size=1, synchronous="NORMAL")
    wal = database.with_name(database.name + "-wal")
    async with lifecycle.running():
        pool = opened(user)
        for n in range(3 * _pool.CHECKPOINT_EVERY):
            await pool.execute(INSERT, (str(n),))
        frames = (wal.stat().st_size - 32) // (4096 + 24)
    assert frames < 2 * _pool.CHECKPOINT_EVERY
    assert len(read_rows(database)) == 3 * _pool.CHECKPOINT_EVERY


async def test_run_is_one_transaction_in_one_round_trip(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    user, _ = with_pool(size=2)
    seen: list[tuple[int, bool]] = []

    def add(connection: sqlite3.Connection, names: list[str], *, suffix: str) -> int:
        seen.append((threading.get_ident(), connection.in_transaction))
        for name in names:
            connection.execute(INSERT, (name + suffix,))
        return len(names)

    def add_and_fail(connection: sqlite3.Connection) -> None:
        connection.execute(INSERT, ("never",))
        raise LookupError("no")

    async with lifecycle.running():
        pool = opened(user)
        assert await pool.run(add, ["a", "b"], suffix="!") == 2
        with pytest.raises(LookupError):
            await pool.run(add_and_fail)
        threads = pool_threads()
        assert pool.stats().queries_served == 1
    assert read_rows(database) == [(1, "a!"), (2, "b!")]
    ((thread, in_transaction),) = seen
    assert thread in threads
    assert in_transaction


@pytest.mark.slow
async def test_10000_statements_from_64_tasks_with_random_cancellations(
    lifecycle: LifecycleHarness, with_pool: WithPool, database: Path
) -> None:
    """Each call writes its own key twice, in one call of one of five kinds (a statement
    inline or in a thread, executemany, run, a transaction); a fifth are cancelled at a
    random moment. No key is written more than twice (nothing ran twice), every call
    that returned is there (none lost), and no key is there once (a cancelled call ran
    completely or not at all)."""
    user, _ = with_pool(size=4, synchronous="NORMAL")
    rng = random.Random(13)
    returned: set[int] = set()
    cancelled: set[int] = set()
    threads: set[int | None] = set()

    async def call(pool: Pool, k: int) -> None:
        pair = [(f"{k}",), (f"{k}",)]
        kind = k % 5
        if kind == 0:  # inline
            await pool.execute("INSERT INTO items (name) VALUES (?1), (?1)", (f"{k}",))
        elif kind == 1:  # a BEGIN IMMEDIATE/COMMIT of its own: a thread
            await pool.executemany(INSERT, pair)
        elif kind == 2:
            await pool.run(lambda connection: connection.executemany(INSERT, pair))
        elif kind == 3:
            async with pool.transaction() as tx:
                await tx.execute(INSERT, pair[0])
                await tx.execute(INSERT, pair[1])
        else:  # a statement that goes to a thread for its budget, sometimes
            await pool.execute(
                "INSERT INTO items (name) SELECT ?1 FROM (SELECT 1 UNION ALL SELECT 2)"
                " WHERE (SELECT count(*) FROM items) >= 0",
                (f"{k}",),
            )

    async def task(pool: Pool, ks: range) -> None:
        for k in ks:
            with trio.CancelScope() as scope:
                if rng.random() < 0.2:
                    scope.deadline = trio.current_time() + rng.random() * 0.0005
                await call(pool, k)
            (cancelled if scope.cancelled_caught else returned).add(k)
            threads.update(pool_threads() - before)

    before = pool_threads()  # those an abandoned shutdown of another test left
    async with lifecycle.running():
        pool = opened(user)
        with trio.fail_after(TIMEOUT * 4):
            async with trio.open_nursery() as nursery:
                for n in range(64):
                    nursery.start_soon(task, pool, range(n * 10_000 // 64, (n + 1) * 10_000 // 64))
    assert lifecycle.exit_status == 0

    found = Counter(int(name) for _, name in read_rows(database))
    assert set(found.values()) <= {2}, [k for k, n in found.items() if n != 2][:10]
    assert returned <= set(found)
    assert set(found) <= returned | cancelled
    assert len(returned) + len(cancelled) == 10_000
    assert cancelled
    assert len(threads) == 4  # the pool's, never more
