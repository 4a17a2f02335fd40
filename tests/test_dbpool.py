"""The pool engine (oversip_hooks.dbpool) on its own, with a small driver on real sqlite3
databases and real worker threads: a thread per connection, started by open() and joined
by aclose(); work queued onto busy connections; cancellation removes queued work and
interrupts running work; transactions and run() commit or roll back; the shutdown is
bounded."""

from __future__ import annotations

import errno
import math
import os
import random
import select
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import closing, suppress
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from oversip_hooks import dbpool

T = TypeVar("T")

TIMEOUT = 30  # seconds for a worker thread to reach a gate; generous, for a loaded CI
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


class Driver(dbpool.Driver[sqlite3.Connection]):
    """sqlite3 in autocommit mode, recording which thread uses which connection."""

    def __init__(self, database: Path, *, fail_at: int | None = None) -> None:
        self.database = database
        self.fail_at = fail_at  # the connection whose connect() raises
        self.opened: list[sqlite3.Connection] = []
        self.owners: dict[int, set[int]] = {}  # id(connection) -> threads that used it
        self.inside: Counter[int] = Counter()  # id(connection) -> threads inside now
        self.overlaps = 0
        self.interrupts = 0
        self.closed_with: float | None = None  # close()'s patience
        self._lock = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        if len(self.opened) == self.fail_at:
            raise OSError("no more connections")
        connection = sqlite3.connect(
            self.database, isolation_level=None, check_same_thread=False, timeout=5
        )
        connection.execute("PRAGMA journal_mode = WAL").close()
        connection.execute("PRAGMA synchronous = OFF").close()
        connection.execute("CREATE TABLE IF NOT EXISTS items (k INTEGER, part TEXT)").close()
        self.opened.append(connection)
        return connection

    def begin(self, connection: sqlite3.Connection, mode: str) -> None:
        connection.execute(f"BEGIN {mode}").close()

    def commit(self, connection: sqlite3.Connection) -> None:
        connection.execute("COMMIT").close()

    def rollback(self, connection: sqlite3.Connection) -> bool:
        if not connection.in_transaction:
            return False
        connection.execute("ROLLBACK").close()
        return True

    def interrupt(self, connection: sqlite3.Connection) -> None:
        self.interrupts += 1
        connection.interrupt()

    def close(self, connections: Sequence[sqlite3.Connection], patience: float) -> None:
        self.closed_with = patience
        for connection in connections:
            connection.close()

    def using(self, connection: sqlite3.Connection) -> Callable[[], None]:
        """Record that this thread uses ``connection``; call the result when done."""
        key = id(connection)
        with self._lock:
            self.owners.setdefault(key, set()).add(threading.get_ident())
            self.overlaps += self.inside[key]
            self.inside[key] += 1

        def done() -> None:
            with self._lock:
                self.inside[key] -= 1

        return done


def insert(k: int, parts: int = 2) -> Callable[[sqlite3.Connection], None]:
    """One statement that inserts ``parts`` rows for ``k``: all of them, or none."""

    def work(connection: sqlite3.Connection) -> None:
        values = ", ".join(f"({k}, 'p{n}')" for n in range(parts))
        connection.execute(f"INSERT INTO items (k, part) VALUES {values}").close()

    return work


def rows(database: Path) -> Counter[int]:
    """Rows per k, as a separate connection sees them."""
    with closing(sqlite3.connect(database)) as connection:
        return Counter(k for (k,) in connection.execute("SELECT k FROM items"))


def pool_threads(label: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(label)]


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    return Driver(tmp_path / "engine.db")


@pytest.fixture
async def pool(driver: Driver) -> AsyncIterator[dbpool.Pool[sqlite3.Connection]]:
    engine = dbpool.Pool(driver, 3, label="test pool")
    await engine.open()
    try:
        yield engine
    finally:
        with trio.move_on_after(TIMEOUT):
            await engine.aclose()


class Gate:
    """Work that holds its worker thread until the test opens the gate."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def work(self, connection: sqlite3.Connection) -> str:
        self.reached.set()
        self.opened.wait(TIMEOUT)
        return "through"

    async def wait_reached(self) -> None:
        assert await trio.to_thread.run_sync(self.reached.wait, TIMEOUT)


# -- threads and connections -------------------------------------------------------------


async def test_each_connection_has_a_thread_of_the_pool_from_open_to_aclose(
    driver: Driver,
) -> None:
    engine = dbpool.Pool(driver, 3, label="owned pool", opened_by="open() opens it")
    with pytest.raises(dbpool.PoolClosedError, match=r"owned pool is not open yet: open\(\)"):
        await engine.call(insert(1))
    assert pool_threads("owned pool") == []

    await engine.open()
    assert [t.name for t in pool_threads("owned pool")] == [
        "owned pool connection 0",
        "owned pool connection 1",
        "owned pool connection 2",
    ]
    assert engine.stats() == dbpool.PoolStats(open_connections=3, in_use=0, served=0, waiting=0)
    with pytest.raises(RuntimeError, match="owned pool is open; it opens once"):
        await engine.open()

    shutdown = await engine.aclose()

    assert shutdown == dbpool.Shutdown(connections=3, rolled_back=0, abandoned=0)
    assert engine.shutdown == shutdown
    assert pool_threads("owned pool") == []  # joined
    assert engine.state is dbpool.PoolState.CLOSED
    assert engine.stats().open_connections == 0
    with pytest.raises(dbpool.PoolClosedError, match="owned pool is closed"):
        await engine.call(insert(1))
    assert await engine.aclose() == shutdown  # again: what the first close did


async def test_a_failed_connect_closes_what_opened_and_joins_every_thread(
    tmp_path: Path,
) -> None:
    driver = Driver(tmp_path / "engine.db", fail_at=2)
    engine = dbpool.Pool(driver, 4, label="failing pool")
    with pytest.raises(OSError, match="no more connections"):
        await engine.open()
    assert len(driver.opened) == 2
    assert pool_threads("failing pool") == []
    assert engine.state is dbpool.PoolState.CLOSED
    with pytest.raises(sqlite3.ProgrammingError):
        driver.opened[0].execute("SELECT 1")  # closed


async def test_concurrent_work_never_uses_more_threads_than_size_nor_one_connection_twice(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    def work(k: int) -> Callable[[sqlite3.Connection], None]:
        def record(connection: sqlite3.Connection) -> None:
            done = driver.using(connection)
            try:
                insert(k)(connection)
            finally:
                done()

        return record

    async with trio.open_nursery() as nursery:
        for task in range(32):
            nursery.start_soon(run_many, pool, [work(task * 100 + n) for n in range(20)])

    assert driver.overlaps == 0
    assert len(driver.owners) == 3
    assert all(len(threads) == 1 for threads in driver.owners.values())  # its own thread
    assert len(set().union(*driver.owners.values())) == 3
    assert threading.get_ident() not in set().union(*driver.owners.values())
    assert pool.stats().served == 32 * 20
    assert set(rows(driver.database).values()) == {2}


async def run_many(
    pool: dbpool.Pool[sqlite3.Connection], works: list[Callable[[sqlite3.Connection], None]]
) -> None:
    for work in works:
        await pool.call(work)


async def test_work_queues_on_the_least_busy_connection(
    pool: dbpool.Pool[sqlite3.Connection],
) -> None:
    gates = [Gate() for _ in range(3)]
    results: list[object] = []

    async def call(work: Callable[[sqlite3.Connection], object]) -> None:
        results.append(await pool.call(work))

    async with trio.open_nursery() as nursery:
        for gate in gates:
            nursery.start_soon(call, gate.work)
            await gate.wait_reached()  # each on a connection of its own
        for _ in range(6):
            nursery.start_soon(call, lambda connection: "queued")
        await trio.testing.wait_all_tasks_blocked()
        assert pool.stats() == dbpool.PoolStats(open_connections=3, in_use=3, served=0, waiting=6)
        assert dbpool.jobs_in_flight() == 9  # for a test clock to hold on
        for gate in gates:
            gate.opened.set()
    assert sorted(map(str, results)) == ["queued"] * 6 + ["through"] * 3
    assert dbpool.jobs_in_flight() == 0


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelled_while_queued_it_never_runs(tmp_path: Path) -> None:
    driver = Driver(tmp_path / "engine.db")
    engine = dbpool.Pool(driver, 1, label="one")
    await engine.open()
    gate = Gate()
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.call, gate.work)
        await gate.wait_reached()
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_when_blocked, scope)
            await engine.call(lambda connection: ran.append("queued"))
        assert scope.cancelled_caught
        assert engine.stats().waiting == 0  # taken off the queue at once
        gate.opened.set()
    assert await engine.call(lambda connection: "after") == "after"
    assert ran == []
    await engine.aclose()


async def cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_cancelled_while_running_it_is_interrupted_and_the_task_leaves_at_once(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    running = threading.Event()

    def endless(connection: sqlite3.Connection) -> object:
        running.set()
        return connection.execute(ENDLESS).fetchone()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_running() -> None:
                assert await trio.to_thread.run_sync(running.wait, TIMEOUT)
                scope.cancel()

            nursery.start_soon(cancel_when_running)
            await pool.call(endless)
    assert scope.cancelled_caught
    assert driver.interrupts >= 1  # again, until the statement has started and stopped
    # The interrupted statement ended in its thread, and the connection serves again.
    for _ in range(3):
        assert await pool.call(lambda connection: connection.execute("SELECT 7").fetchone()) == (7,)
    # The interrupted job was delivered (and dropped) too: nothing holds the close up.
    with trio.fail_after(TIMEOUT):
        assert await pool.aclose() == dbpool.Shutdown(connections=3, rolled_back=0, abandoned=0)


async def test_a_result_finished_but_cancelled_is_discarded_and_counted_as_served(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    gate = Gate()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_reached() -> None:
                await gate.wait_reached()
                scope.cancel()  # the default interrupt does not stop Python code
                gate.opened.set()

            nursery.start_soon(cancel_when_reached)
            await pool.call(gate.work)
    assert scope.cancelled_caught
    await pool.call(insert(1))
    await pool.aclose()  # waits for the discarded work too
    assert pool.stats().served == 2


# -- transactions and run() -----------------------------------------------------------------


async def test_a_transaction_commits_at_the_end_and_rolls_back_on_an_error(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    async with pool.transaction("IMMEDIATE") as tx:
        await tx.call(insert(1))
        await tx.call(insert(2))
        assert rows(driver.database) == {}
    assert rows(driver.database) == {1: 2, 2: 2}

    async def insert_and_fail() -> dbpool.Transaction[sqlite3.Connection]:
        async with pool.transaction("IMMEDIATE") as tx:
            await tx.call(insert(3))
            raise KeyError(tx)

    with pytest.raises(KeyError) as raised:
        await insert_and_fail()
    with pytest.raises(RuntimeError, match="this transaction has ended"):
        await raised.value.args[0].call(insert(4))
    assert rows(driver.database) == {1: 2, 2: 2}
    assert pool.stats().served == 3  # BEGIN, COMMIT and ROLLBACK are not counted


async def test_a_cancelled_transaction_rolls_back(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    with trio.CancelScope() as scope:
        async with pool.transaction("IMMEDIATE") as tx:
            await tx.call(insert(1))
            scope.cancel()
            await trio.sleep_forever()
    assert rows(driver.database) == {}
    assert pool.stats().in_use == 0


async def test_transactions_wait_for_a_connection_when_each_is_held(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    entered = [trio.Event() for _ in range(4)]
    releases = [trio.Event() for _ in range(4)]
    left = trio.Event()

    async def hold(n: int) -> None:
        async with pool.transaction("DEFERRED") as tx:
            entered[n].set()
            await tx.call(lambda connection: None)
            await releases[n].wait()
        if n == 0:
            left.set()

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(hold, n)
            await entered[n].wait()
        nursery.start_soon(hold, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert not entered[3].is_set()  # waiting for one of the three to end
        assert pool.stats().waiting == 1
        releases[0].set()
        await left.wait()
        await entered[3].wait()
        for release in releases:
            release.set()


async def test_a_transaction_that_ends_lets_every_call_waiting_for_a_connection_go_on(
    pool: dbpool.Pool[sqlite3.Connection],
) -> None:
    # Calls wait only while every connection is held; once one is free, all of them can
    # queue onto it, even while the other transactions stay open (they may be waiting for
    # those very calls).
    held = [trio.Event() for _ in range(3)]
    ends = [trio.Event() for _ in range(3)]
    results: list[int] = []
    all_done = trio.Event()

    async def hold(n: int) -> None:
        async with pool.transaction("DEFERRED"):
            held[n].set()
            await ends[n].wait()

    async def call(k: int) -> None:
        results.append(await pool.call(lambda connection: k))
        if len(results) == 3:
            all_done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(hold, n)
                await held[n].wait()
            for k in range(3):
                nursery.start_soon(call, k)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.stats().waiting == 3
            ends[0].set()  # one transaction ends; the two others wait for the calls
            await all_done.wait()
            for end in ends:
                end.set()
    assert sorted(results) == [0, 1, 2]


async def test_run_is_one_round_trip_in_one_transaction(
    pool: dbpool.Pool[sqlite3.Connection], driver: Driver
) -> None:
    threads: set[int] = set()

    def batch(connection: sqlite3.Connection) -> bool:
        threads.add(threading.get_ident())
        for k in range(100):
            insert(k)(connection)
        return connection.in_transaction

    assert await pool.run(batch, mode="IMMEDIATE") is True
    assert len(rows(driver.database)) == 100

    def half_and_fail(connection: sqlite3.Connection) -> None:
        insert(1000)(connection)
        raise ValueError("half")

    with pytest.raises(ValueError, match="half"):
        await pool.run(half_and_fail, mode="IMMEDIATE")
    assert 1000 not in rows(driver.database)
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert pool.stats().served == 1


# -- inline work ------------------------------------------------------------------------------


class InlineDriver(Driver):
    """Runs work inline unless it is marked as needing the thread, or would wait for a
    lock."""

    def run_inline(
        self, connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
    ) -> T:
        if getattr(work, "needs_thread", False):
            raise dbpool.HandOff
        # Never wait for a lock in trio's thread: the transaction holding it needs trio.
        connection.execute("PRAGMA busy_timeout = 0").close()
        try:
            return work(connection)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            raise dbpool.HandOff from None  # a statement of its own: rolled back
        finally:
            connection.execute("PRAGMA busy_timeout = 5000").close()


async def test_inline_work_runs_in_trios_thread_and_a_hand_off_in_the_connections(
    tmp_path: Path,
) -> None:
    engine = dbpool.Pool(InlineDriver(tmp_path / "engine.db"), 2, label="inline pool")
    await engine.open()

    def where(connection: sqlite3.Connection) -> int:
        return threading.get_ident()

    def handed_off(connection: sqlite3.Connection) -> int:
        return threading.get_ident()

    handed_off.needs_thread = True  # type: ignore[attr-defined]
    assert await engine.call(where, inline=True) == threading.get_ident()
    assert await engine.call(where) != threading.get_ident()  # not asked for inline
    thread = await engine.call(handed_off, inline=True)
    assert thread in {t.ident for t in pool_threads("inline pool")}
    assert engine.stats().served == 3

    # Cancelled before it runs inline, it does not run: its checkpoint comes first.
    ran: list[int] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await engine.call(lambda connection: ran.append(1), inline=True)
    assert ran == []
    await engine.aclose()


# -- queueing under load, with random cancellations ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tasks", "statements"),
    [
        (64, 10_000),  # results come back in batches, through trio's entry queue
        (1, 3_000),  # one call at a time: each result rings the pool's bell
    ],
)
async def test_statements_with_random_cancellations_none_twice_none_lost_none_half_done(
    tmp_path: Path, tasks: int, statements: int
) -> None:
    """Every statement inserts two rows for its own k in one statement. No statement runs
    twice (no k has more than two rows), none is lost (every k whose call returned has
    both), and every cancelled one ran completely or not at all (none has one row)."""
    driver = InlineDriver(tmp_path / "engine.db")
    engine = dbpool.Pool(driver, 4, label="stress pool")
    await engine.open()
    rng = random.Random(13)
    returned: set[int] = set()
    cancelled: set[int] = set()
    most_threads = 0

    async def one(k: int) -> None:
        nonlocal most_threads
        work = insert(k)
        if k % 3 == 0:
            work.needs_thread = True  # type: ignore[attr-defined]
        kind = k % 4  # a call inline or in a thread, a transaction, a run()
        with trio.CancelScope() as scope:
            if rng.random() < 0.2:
                scope.deadline = trio.current_time() + rng.random() * 0.0005
            if kind == 0:
                await engine.call(work, inline=True)
            elif kind == 1:
                await engine.call(work)
            elif kind == 2:
                async with engine.transaction("IMMEDIATE") as tx:
                    await tx.call(work)
            else:
                await engine.run(work, mode="IMMEDIATE")
        (cancelled if scope.cancelled_caught else returned).add(k)
        most_threads = max(most_threads, len(pool_threads("stress pool")))

    async def task(ks: range) -> None:
        for k in ks:
            await one(k)

    async with trio.open_nursery() as nursery:
        for n in range(tasks):
            nursery.start_soon(task, range(n * statements // tasks, (n + 1) * statements // tasks))
    shutdown = await engine.aclose()

    found = rows(driver.database)
    assert set(found.values()) <= {2}
    assert returned <= set(found)
    assert set(found) <= returned | cancelled
    assert len(returned) + len(cancelled) == statements
    assert cancelled  # the test cancels something
    assert most_threads == 4
    assert shutdown == dbpool.Shutdown(connections=4, rolled_back=0, abandoned=0)


# -- closing ------------------------------------------------------------------------------------


async def test_closing_lets_work_in_progress_finish_and_refuses_new_work(
    pool: dbpool.Pool[sqlite3.Connection],
) -> None:
    gate = Gate()
    results: list[object] = []

    async def call() -> None:
        results.append(await pool.call(gate.work))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await gate.wait_reached()
        nursery.start_soon(pool.aclose)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.state is dbpool.PoolState.CLOSING
        with pytest.raises(dbpool.PoolClosedError, match="test pool is closing"):
            await pool.call(insert(1))
        gate.opened.set()
    assert results == ["through"]
    assert pool.shutdown == dbpool.Shutdown(connections=3, rolled_back=0, abandoned=0)


async def test_past_the_deadline_queued_fails_running_is_interrupted_transactions_roll_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    driver = Driver(tmp_path / "engine.db")
    # Never abandoned: the autojump clock would reach any deadline while the interrupted
    # statement returns in its thread.
    engine = dbpool.Pool(driver, 2, label="forced pool", abandon_after=math.inf)
    await engine.open()
    outcomes: dict[str, str] = {}

    async def record(name: str, call: Callable[[], object]) -> None:
        try:
            await call()  # type: ignore[misc]
            outcomes[name] = "returned"
        except Exception as exc:
            outcomes[name] = f"{type(exc).__name__}: {exc}"

    inside, closed = trio.Event(), trio.Event()
    running = threading.Event()

    async def hold_a_transaction() -> None:
        async with engine.transaction("IMMEDIATE") as tx:
            await tx.call(insert(1))
            inside.set()
            await closed.wait()
            await tx.call(insert(3))

    def endless(connection: sqlite3.Connection) -> object:
        running.set()
        return connection.execute(ENDLESS).fetchone()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, "transaction", hold_a_transaction)
        await inside.wait()
        nursery.start_soon(record, "endless", lambda: engine.call(endless))
        assert await trio.to_thread.run_sync(running.wait, TIMEOUT)
        nursery.start_soon(record, "queued", lambda: engine.call(insert(2)))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await engine.aclose()
        closed.set()

    assert outcomes == {
        "endless": "OperationalError: interrupted",
        "queued": "PoolClosedError: forced pool is closing",  # failed before the close ended
        "transaction": "PoolClosedError: forced pool is closed",
    }
    assert engine.shutdown == dbpool.Shutdown(connections=2, rolled_back=1, abandoned=0)
    assert rows(driver.database) == {}
    assert pool_threads("forced pool") == []


async def test_a_thread_that_no_interrupt_stops_is_abandoned_so_the_shutdown_is_bounded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    driver = Driver(tmp_path / "engine.db")
    engine = dbpool.Pool(driver, 2, label="stuck pool", abandon_after=3)
    await engine.open()
    gate = Gate()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.call, gate.work)
        await gate.wait_reached()
        start = trio.current_time()
        with trio.move_on_after(1):
            await engine.aclose()
        assert trio.current_time() - start == pytest.approx(4)  # deadline, then abandon_after
        assert engine.shutdown == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=1)
        assert driver.closed_with == 0  # the deadline had passed
        gate.opened.set()  # the abandoned thread finishes, delivers to its caller, ends
    for thread in pool_threads("stuck pool"):
        thread.join(TIMEOUT)
    assert pool_threads("stuck pool") == []


def test_the_threads_end_with_the_run_even_without_aclose(driver: Driver) -> None:
    # An abandoned shutdown (a second stop signal) skips the terminated hooks.
    async def open_only() -> None:
        await dbpool.Pool(driver, 2, label="forgotten pool").open()

    trio.run(open_only)
    for thread in pool_threads("forgotten pool"):
        thread.join(TIMEOUT)
    assert pool_threads("forgotten pool") == []


# -- the bell ---------------------------------------------------------------------------------


async def test_finished_and_rung_but_cancelled_before_its_task_woke_it_is_discarded(
    tmp_path: Path,
) -> None:
    # The window between a thread ringing the bell and trio noticing is microseconds; the
    # test widens it by blocking trio's thread until the ring (white box: it reads the
    # bell's pipe), then cancels the waiting task.
    engine = dbpool.Pool(Driver(tmp_path / "engine.db"), 1, label="rung pool")
    await engine.open()
    gate = Gate()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_once_rung() -> None:
                await gate.wait_reached()
                bell = engine._bell
                assert bell is not None
                gate.opened.set()
                # Blocking trio's thread: nothing is delivered until the cancel.
                rung, _, _ = select.select([bell._read], [], [], TIMEOUT)
                assert rung
                scope.cancel()

            nursery.start_soon(cancel_once_rung)
            await engine.call(gate.work)
    assert scope.cancelled_caught
    assert dbpool.jobs_in_flight() == 0  # delivered by the cancellation, result dropped
    stats = engine.stats()
    assert (stats.in_use, stats.served, stats.waiting) == (0, 1, 0)
    # The ring is still in the pipe: the next call wakes for it once, and waits on.
    assert await engine.call(lambda connection: "next") == "next"
    with trio.fail_after(TIMEOUT):
        assert await engine.aclose() == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)


async def test_out_of_file_descriptors_at_open_the_pool_stays_unopened(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = dbpool.Pool(driver, 2, label="starved pool")

    def no_pipe() -> tuple[int, int]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pipe", no_pipe)
    with pytest.raises(OSError, match="Too many open files"):
        await engine.open()
    assert engine.state is dbpool.PoolState.ADDED
    assert pool_threads("starved pool") == []
    with trio.fail_after(TIMEOUT):
        assert await engine.aclose() == dbpool.Shutdown(0, 0, 0)


async def test_a_driver_whose_interrupt_raises_still_gets_its_work_delivered(
    tmp_path: Path,
) -> None:
    class FailingInterrupt(Driver):
        def interrupt(self, connection: sqlite3.Connection) -> None:
            raise RuntimeError("cannot interrupt")

    engine = dbpool.Pool(FailingInterrupt(tmp_path / "engine.db"), 1, label="failing pool")
    await engine.open()
    gate = Gate()
    scope = trio.CancelScope()

    async def cancel_when_reached() -> None:
        await gate.wait_reached()
        scope.cancel()
        gate.opened.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_reached)
        with scope, pytest.raises(RuntimeError, match="cannot interrupt"):
            await engine.call(gate.work)
    # The thread delivered the job all the same: nothing holds the close up.
    with trio.fail_after(TIMEOUT):
        assert await engine.aclose() == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)


def open_pipes() -> int:
    """This process's open pipes; the bell of an open pool is one (two descriptors)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(FileNotFoundError):  # the listing's own descriptor, closed since
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sum(1 for link in links if link.startswith("pipe:")) // 2


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
async def test_the_bells_pipe_is_closed_however_the_pool_ends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    before = open_pipes()

    engine = dbpool.Pool(Driver(tmp_path / "a.db"), 2, label="closed pool")
    await engine.open()
    assert open_pipes() == before + 1
    assert await engine.call(lambda connection: "rung") == "rung"
    await engine.aclose()
    assert open_pipes() == before

    with pytest.raises(OSError, match="no more connections"):
        await dbpool.Pool(Driver(tmp_path / "b.db", fail_at=1), 2, label="failed pool").open()
    assert open_pipes() == before

    # Abandoned at the shutdown, a thread may still ring the bell for the task that waits
    # on it: the bell stays open until that task has its result.
    engine = dbpool.Pool(Driver(tmp_path / "c.db"), 1, label="stuck pool", abandon_after=3)
    await engine.open()
    gate = Gate()
    results: list[str] = []

    async def call() -> None:
        results.append(await engine.call(gate.work))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await gate.wait_reached()
        with trio.move_on_after(1):
            await engine.aclose()
        assert engine.shutdown == dbpool.Shutdown(connections=0, rolled_back=0, abandoned=1)
        assert open_pipes() == before + 1
        gate.opened.set()
    assert results == ["through"]
    assert open_pipes() == before


def test_the_bells_pipe_is_closed_when_the_run_ends_without_aclose(driver: Driver) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("reads /proc/self/fd")
    before = open_pipes()

    async def open_only() -> None:
        engine = dbpool.Pool(driver, 2, label="forgotten pool")
        await engine.open()
        await engine.call(lambda connection: None)

    trio.run(open_only)
    assert open_pipes() == before


# -- an inline call that waits for a server's reply ----------------------------------------


class Server:
    """A server on the other end of a socket pair: it answers each line with the same
    line once the test lets it (``answer``), or with ``interrupted`` once interrupted."""

    def __init__(self) -> None:
        self.client, self._server = socket.socketpair()
        self.allowed = threading.Semaphore(0)
        self.interrupted = threading.Event()
        self.received: list[bytes] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer(self) -> None:
        self.allowed.release()

    def _serve(self) -> None:
        with self._server, self._server.makefile("rb") as lines:
            for line in lines:
                self.interrupted.clear()  # an interrupt stops the request in progress only
                with self._arrived:
                    self.received.append(line)
                    self._arrived.notify_all()
                while not self.allowed.acquire(timeout=0.001):
                    if self.interrupted.is_set():
                        self.interrupted.clear()
                        line = b"interrupted\n"
                        break
                self._server.sendall(line)

    async def wait_received(self, count: int) -> None:
        def wait() -> bool:
            with self._arrived:
                return self._arrived.wait_for(lambda: len(self.received) >= count, TIMEOUT)

        assert await trio.to_thread.run_sync(wait)

    def close(self) -> None:
        self.client.close()
        self._thread.join(TIMEOUT)


class Ask:
    """Work that sends ``word`` and returns the reply: inline, or in the worker thread."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.finished_in: int | None = None  # the thread that read the reply

    def __call__(self, server: Server) -> str:
        server.client.sendall(self.word.encode() + b"\n")
        return self.finish(server)

    def finish(self, server: Server) -> str:
        self.finished_in = threading.get_ident()
        reply = b""
        while not reply.endswith(b"\n"):
            reply += server.client.recv(100)
        if reply == b"interrupted\n":
            raise InterruptedError("interrupted")
        return reply.decode().strip()


class ServerDriver(dbpool.Driver[Server]):
    def __init__(self) -> None:
        self.servers: list[Server] = []

    def connect(self) -> Server:
        self.servers.append(Server())
        return self.servers[-1]

    def begin(self, connection: Server, mode: str) -> None:
        pass

    def commit(self, connection: Server) -> None:
        pass

    def rollback(self, connection: Server) -> bool:
        return False

    def close(self, connections: Sequence[Server], patience: float) -> None:
        for server in connections:
            server.close()

    def interrupt(self, connection: Server) -> None:
        connection.interrupted.set()

    def run_inline(
        self, connection: Server, work: Callable[[Server], T]
    ) -> T | dbpool.WaitForReply[Server, T]:
        if not isinstance(work, Ask):
            raise dbpool.HandOff
        connection.client.sendall(work.word.encode() + b"\n")
        return dbpool.WaitForReply(connection.client.fileno(), work.finish)  # type: ignore[arg-type]


async def test_an_inline_call_waits_for_its_reply_holding_its_connection() -> None:
    driver = ServerDriver()
    engine = dbpool.Pool(driver, 1, label="reply pool")
    await engine.open()
    (server,) = driver.servers
    ask = Ask("hello")
    results: list[str] = []

    async def call(work: Callable[[Server], str], inline: bool) -> None:
        results.append(await engine.call(work, inline=inline))

    assert engine.quiet
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, ask, True)
            await server.wait_received(1)
            assert not engine.quiet
            assert dbpool.jobs_in_flight() == 1  # for a test clock to hold on
            # Its connection is held: calls behind it wait, they do not reach the thread;
            # once the reply is in, every one of them goes on.
            nursery.start_soon(call, Ask("next"), False)
            nursery.start_soon(call, Ask("last"), False)
            await trio.testing.wait_all_tasks_blocked()
            assert engine.stats().in_use == 1
            assert engine.stats().waiting == 2
            for _ in range(3):
                server.answer()
    assert results[0] == "hello"
    assert sorted(results[1:]) == ["last", "next"]  # in either order
    assert ask.finished_in == threading.get_ident()  # read in trio's thread
    assert engine.stats().served == 3
    assert engine.quiet
    assert await engine.aclose() == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)


async def test_cancelled_while_waiting_for_its_reply_the_thread_reads_it_and_drops_it() -> None:
    driver = ServerDriver()
    engine = dbpool.Pool(driver, 1, label="dropped pool")
    await engine.open()
    (server,) = driver.servers
    ask = Ask("lost")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_once_received() -> None:
                await server.wait_received(1)
                scope.cancel()

            nursery.start_soon(cancel_once_received)
            await engine.call(ask, inline=True)
    assert scope.cancelled_caught
    # Interrupted, the server answered "interrupted" to the worker thread, which read it
    # before the next call: that one gets its own reply, not the cancelled call's.
    results: list[str] = []

    async def call_again() -> None:
        results.append(await engine.call(Ask("mine")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call_again)
        await server.wait_received(2)
        server.answer()
    assert results == ["mine"]
    assert server.received == [b"lost\n", b"mine\n"]
    assert ask.finished_in in {t.ident for t in pool_threads("dropped pool")}
    assert dbpool.jobs_in_flight() == 0
    stats = engine.stats()
    assert (stats.in_use, stats.served, stats.waiting) == (0, 1, 0)
    assert await engine.aclose() == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)


async def test_closing_waits_for_a_reply_and_past_the_deadline_interrupts_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    driver = ServerDriver()
    # Never abandoned: the autojump clock would reach any deadline while the server thread
    # answers the interrupt.
    engine = dbpool.Pool(driver, 1, label="closing pool", abandon_after=math.inf)
    await engine.open()
    (server,) = driver.servers
    outcome: list[str] = []

    async def call() -> None:
        try:
            outcome.append(await engine.call(Ask("slow"), inline=True))
        except InterruptedError as exc:
            outcome.append(f"raised {exc}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await server.wait_received(1)
        with trio.move_on_after(1):
            await engine.aclose()
    assert outcome == ["raised interrupted"]
    assert engine.shutdown == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)


@pytest.mark.slow
def test_a_reply_cancelled_by_the_close_deadline_is_still_read_by_the_thread() -> None:
    # The caller and aclose() share one deadline: the caller queues the reply's finish()
    # on the thread, and _shut() must leave it there (nobody waits for it, and the reply
    # must be read before anything else runs on the connection). Racy by nature: the
    # thread must not have taken the job yet; repeated.
    async def once() -> None:
        driver = ServerDriver()
        engine = dbpool.Pool(driver, 1, label="race pool", abandon_after=TIMEOUT)
        await engine.open()
        (server,) = driver.servers
        with trio.move_on_after(0.3):  # the runtime's shutdown deadline, for both
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(engine.call, Ask("waits"), inline=True))
                await server.wait_received(1)
                await engine.aclose()
        with trio.fail_after(TIMEOUT):
            await engine.aclose()
        assert engine.shutdown == dbpool.Shutdown(connections=1, rolled_back=0, abandoned=0)
        assert dbpool.jobs_in_flight() == 0

    for _ in range(20):
        trio.run(once)


async def test_a_reply_abandoned_at_the_close_then_cancelled_leaves_nothing_in_flight() -> None:
    class Deaf(ServerDriver):
        def interrupt(self, connection: Server) -> None:
            pass  # the server never answers an interrupt

    driver = Deaf()
    engine = dbpool.Pool(driver, 1, label="deaf pool", abandon_after=0.2, interrupt_every=0.05)
    await engine.open()
    (server,) = driver.servers
    caller = trio.CancelScope()

    async def call() -> None:
        with caller:
            await engine.call(Ask("unanswered"), inline=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await server.wait_received(1)
        with trio.move_on_after(0.1):
            await engine.aclose()
        with trio.fail_after(TIMEOUT):
            assert await engine.aclose() == dbpool.Shutdown(0, 0, abandoned=1)
        assert dbpool.jobs_in_flight() == 1  # the reply it still waits for
        caller.cancel()
    assert caller.cancelled_caught
    assert dbpool.jobs_in_flight() == 0  # nothing queued behind the thread's end
    server.answer()  # lets the server's thread end
