# One worker thread per connection, owned by the pool: started by open() (a database
# module's `started` hook), stopped and joined by aclose() (its `terminated` hook), so no
# connection outlives the pool and none is ever used by two threads at once. A task hands
# its work to a connection's thread through a queue.SimpleQueue. Work is queued onto
# connections that are busy (pipelining): an idle connection first, else the connection
# with the fewest jobs queued, so that 64 tasks on 8 connections keep all 8 threads fed
# instead of waiting in trio for a lease.
#
# The result comes back one of two ways. When the pool has nothing else in flight (one
# task calling after another: a quiet server), the task waits on the pool's bell, a pipe,
# with trio.lowlevel.wait_readable, and the thread writes a byte to it: trio's I/O wakes
# that task directly, one scheduler pass. Otherwise the task waits with
# trio.lowlevel.wait_task_rescheduled and the thread hands the result back through one
# TrioToken.run_sync_soon per batch of finished jobs (a worker that finishes a job while
# the previous batch is still undelivered adds to it), so a busy pool costs one wakeup of
# trio for many statements; that wakeup goes through trio's entry-queue task, one pass
# more. The bell took a sequential call to a worker thread from 78-90 us to 57-62 us
# here; used under load too, it made the 16-task workloads slower (two wakeups per batch,
# the bell's and the entry queue's), hence only when nothing else is in flight; and one
# task at a time (trio allows one waiter per file descriptor). The lease/lock/limiter/
# to_thread design this replaces took 5 task steps (and 5 epoll waits) per statement.
#
# Even that hop is slower than aiosqlite's whole statement when the database finishes it
# in microseconds: waking trio from another thread is the cost (50-90 us here, against
# 5 us for a point SELECT). So a driver may also run work *inline*, in trio's thread, on
# an idle connection (Driver.run_inline): the driver bounds it (SQLite: a progress
# handler and a zero busy timeout) and raises HandOff, having undone the attempt, when
# the work needs the thread after all; the engine then queues it on that same
# connection. An inline statement costs one checkpoint: one scheduler pass, and the only
# point where it can be cancelled (it has not run then). Measured through the SQLite
# module (benchmarks/sqlite.py, time per statement over aiosqlite's, median of
# interleaved rounds, three runs on 2 shared cores): one-row INSERT 0.44-0.63x
# sequential and 0.48-0.81x from 16 tasks, point SELECT 0.31-0.50x and 0.29-0.87x, where
# the old design took 4.1x, 4.4x, 4.6x and 6.3x on the same machine. A 100-INSERT
# Pool.run is 1.47-1.51x the same function on sqlite3 in one thread (1.61x without the
# bell, same session): the hop costs 40-60 us, more under load, where waking one Python
# thread from another and back through a pipe and epoll takes 20-33 us on this machine
# (asyncio's call_soon_threadsafe: 32 us); the rest is the GIL, which the woken thread
# waits for until trio's thread reaches its next epoll wait. Rejected: a thread per
# statement from trio's cache (to_thread renames its thread twice per job and runs
# through a CapacityLimiter), a lease object and a lock per call (two more passes each),
# one connection behind a lock (WAL lets readers run beside the writer only on separate
# connections), and busy-waiting in either thread (it holds the GIL the other needs).
#
# A server's driver cannot bound its work that way, but it can send a request from trio's
# thread and return WaitForReply: the engine waits for the connection's socket to become
# readable (trio's I/O, no thread) and calls its finish() there, holding the connection
# meanwhile (no job queues on it; Pool.quiet is False). MySQL's one-row writes take this
# path on a quiet pool, at the cost of the statement alone (benchmarks/PROFILES.md). A
# module asks for it only when the pool is quiet: under load, a connection held by a
# reply is one that work cannot be queued onto. Cancelled while it waits, the request is
# interrupted and finish() is queued on the connection's thread, first, its result
# dropped: the reply is read before the connection's next job.
#
# Cancellation, per case: work still queued is removed and never runs; work running in a
# thread is interrupted (Driver.interrupt, repeated by a system task until it returns,
# since an interrupt that lands before its statement starts is lost) and its result
# discarded, so the task leaves at once and the work either ran completely (and its
# result was dropped) or not at all; the thread finishes it before its next job, so the
# connection's order is kept. Work that finished but was not delivered yet is discarded
# likewise. Inline work is cancelled at its checkpoint, before it runs, or while it waits
# for a server's reply (see above). Opening a connection and the rollback that ends a
# transaction are not cancellable. A failed job's traceback frames are cleared in its
# thread, so that a driver's objects (cursors) are never freed in trio's thread while the
# connection runs its next job.
#
# Closing refuses new work, waits for running and queued work and open transactions;
# when the caller's deadline cuts that short, the rest happens shielded: queued work fails
# with PoolClosedError, running work is interrupted every `interrupt_every` seconds (and
# a thread that still has not returned after `abandon_after` seconds, in Python code no
# interrupt reaches, is abandoned with its connection, so the shutdown stays bounded),
# open transactions are taken back, every connection is rolled back in its own thread,
# then Driver.close runs once with all of them, and the threads are joined. If trio's run
# ends without aclose() (an abandoned shutdown), a system task stops the threads.
#
# Pool.call (and so Pool.run) times itself from its caller's side, queueing included,
# into a count and a sum that PoolStats reports: what a Prometheus summary needs, read at
# each scrape (dbpool.PoolCollector), so nothing is exported per call. Here rather than
# in each database module, which would wrap the same two calls the same way: every
# module's calls come through call(). The cost is two perf_counter() reads per call,
# about 0.2 us, some 4% of an inline point SELECT. A transaction's calls are not timed
# one by one (the caller holds the connection between them; the wait is its own).

from __future__ import annotations

import abc
import enum
import math
import os
import queue
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import trio

C = TypeVar("C")
T = TypeVar("T")

# A job's states. The worker thread moves it QUEUED -> RUNNING -> DONE, and trio's thread
# QUEUED -> CANCELLED, each under the worker's lock.
_QUEUED, _RUNNING, _DONE, _CANCELLED = range(4)


class HandOff(Exception):
    """Raised by :meth:`Driver.run_inline`: this work must run in the connection's worker
    thread. The driver has undone whatever the attempt did; the engine queues the same
    work on the same connection."""


class WaitForReply(Generic[C, T]):
    """What :meth:`Driver.run_inline` returns when it sent ``work`` to a database server
    from trio's thread and the rest must wait for the reply.

    Args:
        fd: the connection's socket, readable once the reply has come.
        finish: reads the reply and returns what ``work`` would have returned, or raises
            what it would have raised. Run in trio's thread once ``fd`` is readable, so
            it must not wait for more than what has arrived; or, if the caller was
            cancelled first, in the connection's worker thread, where it may block.

    Example::

        def run_inline(self, connection, work):
            connection.send_query(work.query)
            return WaitForReply(connection.fileno(), work.read_reply)
    """

    __slots__ = ("fd", "finish")

    def __init__(self, fd: int, finish: Callable[[C], T]) -> None:
        self.fd = fd
        self.finish = finish


class PoolClosedError(RuntimeError):
    """The pool is not open: not yet (its module opens it in ``started``), or closing or
    closed. A database module may pass a subclass of its own to :class:`Pool`."""


class PoolState(enum.Enum):
    """Where a pool is in its life; the value is how messages say it."""

    ADDED = "not open yet"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class PoolStats:
    """A pool's state now.

    Attributes:
        open_connections: connections open (``size`` while the pool is open).
        in_use: connections with work queued or running, or held by a transaction.
        served: calls (``call``, ``run`` and a transaction's ``call``) that completed
            without an error, counted even when a cancelled caller discarded the result.
        waiting: work queued behind a connection's running work, plus tasks waiting for
            a connection that no transaction holds.
        calls_timed: calls of :meth:`Pool.call` and :meth:`Pool.run` that the open pool
            took and that returned or raised (cancelled ones too); a transaction's calls
            are not timed one by one.
        call_seconds: the seconds those calls took from their caller's side, queueing
            included: a Prometheus summary's sum, ``calls_timed`` its count.
    """

    open_connections: int
    in_use: int
    served: int
    waiting: int
    calls_timed: int = 0
    call_seconds: float = 0.0


@dataclass(frozen=True)
class Shutdown:
    """What :meth:`Pool.aclose` did.

    Attributes:
        connections: connections closed.
        rolled_back: transactions that were still open and were rolled back.
        abandoned: connections left with a worker thread that did not return in time
            (a ``run`` function stuck in Python code); neither closed nor joined.
    """

    connections: int
    rolled_back: int
    abandoned: int


class Driver(abc.ABC, Generic[C]):
    """What a database module tells the engine about its connections.

    Every method but :meth:`interrupt` and :meth:`run_inline` runs in a connection's
    worker thread, never in two threads at once for one connection.

    Example::

        class SQLiteDriver(Driver[sqlite3.Connection]):
            def connect(self):
                return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            def begin(self, connection, mode):
                connection.execute(f"BEGIN {mode}")
            def commit(self, connection):
                connection.execute("COMMIT")
            def rollback(self, connection):
                if not connection.in_transaction:
                    return False
                connection.execute("ROLLBACK")
                return True
            def close(self, connections, patience):
                for connection in connections:
                    connection.close()
    """

    @abc.abstractmethod
    def connect(self) -> C:
        """Open and set up one connection, in the worker thread that will own it.

        Raises:
            Exception: anything; :meth:`Pool.open` closes what is open and re-raises it.
        """

    @abc.abstractmethod
    def begin(self, connection: C, mode: str) -> None:
        """Begin a transaction; ``mode`` is what the module's caller chose (SQLite:
        ``"IMMEDIATE"``; another database: an isolation level, or ``""``)."""

    @abc.abstractmethod
    def commit(self, connection: C) -> None:
        """Commit the open transaction. If it raises, the engine calls :meth:`rollback`."""

    @abc.abstractmethod
    def rollback(self, connection: C) -> bool:
        """Roll back whatever transaction is open, if any.

        Returns:
            Whether a transaction was open.
        """

    @abc.abstractmethod
    def close(self, connections: Sequence[C], patience: float) -> None:
        """Close every connection, each rolled back and idle; called once, in one worker
        thread. SQLite checkpoints the WAL here first.

        Args:
            patience: seconds it may wait for other processes (a lock, a reader) at most.

        Raises:
            Exception: what failed; every connection must be closed all the same.
        """

    def interrupt(self, connection: C) -> None:
        """Stop the statement running on ``connection`` in its worker thread, soon.

        Called from trio's thread: it must not block (a driver that needs I/O for it,
        MySQL's ``KILL QUERY``, starts it in a thread of its own). For one job it is
        called again every ``interrupt_every`` seconds until the job returns, since an
        interrupt that lands before the job's statement starts is lost. It may arrive
        just after the job's last statement ended: it must then be harmless to the next
        job (SQLite forgets an interrupt when the next statement starts). The default
        does nothing, so cancelled work runs to its end and its result is discarded.
        """

    def run_inline(self, connection: C, work: Callable[[C], T]) -> T | WaitForReply[C, T]:
        """Run ``work(connection)`` in trio's thread, if it is quick; called only for
        :meth:`Pool.call` with ``inline=True``, on a connection whose thread is idle.

        The driver must bound the time it takes (SQLite: a progress handler, and no busy
        wait); when ``work`` needs longer, a lock, or anything that may block, it undoes
        what the attempt did and raises :class:`HandOff`. A driver whose server answers
        over a socket may instead send the request and return :class:`WaitForReply`:
        the engine holds the connection until the reply has come, then finishes in
        trio's thread (MySQL's one-row writes). The default always hands off.

        Raises:
            HandOff: run it in the worker thread instead.
            Exception: what ``work`` raised; the caller gets it.
        """
        raise HandOff


class _Job:
    __slots__ = ("bell", "discarded", "error", "served", "state", "task", "value", "work", "worker")

    def __init__(self, worker: _Worker[Any], work: Callable[[Any], object], served: bool):
        self.worker = worker
        self.work = work
        self.served = served  # counted in PoolStats.served when it completes
        self.state = _QUEUED
        self.task = trio.lowlevel.current_task()
        self.value: object = None
        self.error: BaseException | None = None
        self.discarded = False  # its caller was cancelled: deliver nothing
        self.bell: _Bell | None = None  # what its task waits on, if not a reschedule


class _Worker(Generic[C]):
    """One connection and the thread that owns it."""

    def __init__(self, pool: Pool[C], index: int) -> None:
        self.pool = pool
        self.connection: C = cast(C, None)  # set by the thread's first job
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards job.state
        self.pending: dict[_Job, None] = {}  # submitted, not yet delivered (trio's thread)
        self.transaction: Transaction[C] | None = None
        self.replying = False  # an inline call waits, in trio's thread, for its reply
        self.stopped = False  # told to end: nothing queued after that runs
        self.thread = threading.Thread(
            target=self._main, name=f"{pool.label} connection {index}", daemon=True
        )

    def _main(self) -> None:
        jobs, lock, finished = self.jobs, self.lock, self.pool._finished
        while (job := jobs.get()) is not None:
            with lock:
                if job.state == _CANCELLED:
                    continue
                job.state = _RUNNING
            try:
                job.value = job.work(self.connection)
            except BaseException as exc:
                _clear_frames(exc)
                job.error = exc
            with lock:
                job.state = _DONE
                bell = job.bell
                if bell is not None:
                    # Under the lock: once _cancel() took the job off the bell, the
                    # bell may be closed, and a ring must not come after that.
                    bell.ring()
            if bell is None:
                finished(job)


class _Bell:
    """A pipe on which one task at a time waits for its job: its worker thread writes a
    byte to it, which wakes that task directly (see the module's opening comment)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        try:
            os.set_blocking(self._read, False)
            os.set_blocking(self._write, False)
        except BaseException:
            os.close(self._read)
            os.close(self._write)
            raise
        self.taken = False  # a task waits on it

    def ring(self) -> None:
        with suppress(BlockingIOError):  # full: it rings already
            os.write(self._write, b"\0")

    async def wait(self) -> None:
        """Until it rings; may return for a ring meant for an earlier job."""
        await trio.lowlevel.wait_readable(self._read)
        with suppress(BlockingIOError):
            os.read(self._read, 4096)

    def close(self) -> None:
        trio.lowlevel.notify_closing(self._read)
        os.close(self._read)
        os.close(self._write)


class _InFlight:
    """Jobs submitted to a worker thread and not yet delivered or removed, in one run."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_IN_FLIGHT: trio.lowlevel.RunVar[_InFlight] = trio.lowlevel.RunVar("oversip_hooks_dbpool_jobs")


def _in_flight() -> _InFlight:
    try:
        return _IN_FLIGHT.get()
    except LookupError:
        counter = _InFlight()
        _IN_FLIGHT.set(counter)
        return counter


def jobs_in_flight() -> int:
    """How many jobs the pools of this trio run have handed to their worker threads and
    not yet finished (or removed), and inline calls waiting for a server's reply
    (:class:`WaitForReply`): what a test clock that must not jump while threads and
    servers work (trio's MockClock with autojump) can hold on, as it does on
    ``trio.testing.active_thread_count()`` for ``trio.to_thread``.

    Example::

        busy = trio.testing.active_thread_count() > 0 or dbpool.jobs_in_flight() > 0
    """
    return _in_flight().count


def _clear_frames(error: BaseException) -> None:
    """Drop the local variables of ``error``'s frames (and of its causes') here, in the
    worker thread: a driver's objects (sqlite3 cursors) must not be freed in another
    thread while the connection runs its next job."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        each = pending.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        traceback.clear_frames(each.__traceback__)
        pending += [each.__cause__, each.__context__]


class Transaction(Generic[C]):
    """One transaction on one connection, held for the ``async with`` block of
    :meth:`Pool.transaction`. Its work runs one job at a time, in the order called."""

    def __init__(self, pool: Pool[C], worker: _Worker[C]) -> None:
        self._pool = pool
        self._worker: _Worker[C] | None = worker
        self._revoked = False

    async def call(self, work: Callable[[C], T]) -> T:
        """Run ``work(connection)`` in the transaction's worker thread.

        Cancelled while queued, it never runs; while running, it is interrupted and its
        result discarded (SQLite may then roll back the whole transaction).

        Raises:
            RuntimeError: the transaction's block has ended.
            PoolClosedError: the pool was closed under the transaction, which it rolled
                back.
            Exception: what ``work`` raised.

        Example::

            async with engine.transaction("IMMEDIATE") as tx:
                await tx.call(lambda c: c.execute("UPDATE t SET n = n + 1").close())
        """
        return await self._pool._hold_call(self, work, served=True, abortable=True)


class Pool(Generic[C]):
    """``size`` connections, each owned by a worker thread of the pool's own.

    Args:
        driver: the database module's :class:`Driver`.
        size: connections, and threads.
        label: how messages and thread names call the pool (``"SQLite pool 'main'"``).
        opened_by: what opens the pool, said when it is used before
            (``"the SQLite module opens it in its started hook"``).
        closed_error: the :class:`PoolClosedError` subclass to raise.
        interrupt_every: seconds between interrupts of running work at a forced close.
        abandon_after: seconds a forced close waits for a thread that interrupts do not
            stop before abandoning it.

    Example::

        engine = Pool(SQLiteDriver(path), 4, label="SQLite pool 'main'")
        await engine.open()
        try:
            count = await engine.call(lambda c: c.execute("SELECT 1").fetchone()[0])
        finally:
            await engine.aclose()
    """

    def __init__(
        self,
        driver: Driver[C],
        size: int,
        *,
        label: str,
        opened_by: str = "",
        closed_error: type[PoolClosedError] = PoolClosedError,
        interrupt_every: float = 0.01,
        abandon_after: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.driver = driver
        self.size = size
        self.label = label
        self.state = PoolState.ADDED
        self.shutdown: Shutdown | None = None
        """What closing the pool did, once it is closed."""
        self._opened_by = opened_by
        self._closed_error = closed_error
        self._interrupt_every = interrupt_every
        self._abandon_after = abandon_after
        self._opening = False
        self._workers: list[_Worker[C]] = []
        # Workers with nothing pending and no transaction, as an ordered set: the last
        # one to become idle is used first, so one connection stays hot in the caches.
        self._idle: dict[_Worker[C], None] = {}
        self._unheld = trio.lowlevel.ParkingLot()  # tasks waiting for a worker
        self._progress: trio.Event | None = None  # set when a job ends or a hold ends
        self._served = 0
        self._calls_timed = 0
        self._call_seconds = 0.0
        self._token: trio.lowlevel.TrioToken | None = None
        self._done: list[_Job] = []  # finished in a thread, not yet delivered
        self._done_lock = threading.Lock()
        self._bell: _Bell | None = None  # from open() to the shutdown (see _drop_bell)
        self._pending = 0  # jobs submitted to the workers and not yet delivered or removed
        self._replying = 0  # inline calls waiting for their reply
        self._closed = trio.Event()
        self._interrupting: dict[_Job, None] = {}  # discarded, still running
        self._interrupt_soon: trio.Event | None = None
        self._in_flight = _InFlight()  # the run's, from open() on

    # -- the public API ---------------------------------------------------------------

    def stats(self) -> PoolStats:
        """The pool's state now (see :class:`PoolStats`)."""
        is_open = self.state in (PoolState.OPEN, PoolState.CLOSING)
        busy = [w for w in self._workers if w.pending or w.transaction or w.replying]
        queued = sum(max(0, len(w.pending) - 1) for w in self._workers)
        return PoolStats(
            open_connections=len(self._workers) if is_open else 0,
            in_use=len(busy),
            served=self._served,
            waiting=queued + self._unheld.statistics().tasks_waiting,
            calls_timed=self._calls_timed,
            call_seconds=self._call_seconds,
        )

    @property
    def quiet(self) -> bool:
        """Whether nothing is in flight: no work queued or running in a worker thread,
        and no inline call waiting for its reply. An inline call that waits for a reply
        (:class:`WaitForReply`) holds its connection meanwhile; under load, work queued
        onto the connections' threads goes faster, so a module asks for it only then.

        Example::

            await engine.call(write, inline=engine.quiet)
        """
        return self._pending == 0 and self._replying == 0

    async def open(self) -> None:
        """Start the threads, and open the connections one after another, each in its
        own thread.

        Raises:
            RuntimeError: the pool was opened before.
            Exception: what :meth:`Driver.connect` raised; the connections already open
                were closed and their threads joined, and the pool is closed.
        """
        if self.state is not PoolState.ADDED or self._opening:
            state = "opening" if self._opening else self.state.value
            raise RuntimeError(f"{self.label} is {state}; it opens once")
        self._bell = _Bell()  # first: out of file descriptors, the pool is still unopened
        self._opening = True
        self._token = trio.lowlevel.current_trio_token()
        self._in_flight = _in_flight()
        try:
            for index in range(self.size):
                await trio.lowlevel.checkpoint_if_cancelled()
                worker = _Worker(self, index)
                self._workers.append(worker)
                worker.thread.start()
                await self._submit(worker, self._connect(worker), served=False, abortable=False)
        except BaseException:
            connected = [w for w in self._workers if w.connection is not None]
            with trio.CancelScope(shield=True):
                for worker in self._workers:
                    if worker.connection is None:  # its thread failed to connect
                        self._stop_thread(worker)
                self._workers = connected
                await self._shut(math.inf)
            raise
        self._opening = False
        self.state = PoolState.OPEN
        self._idle = dict.fromkeys(self._workers)
        trio.lowlevel.spawn_system_task(self._keep_house, name=f"{self.label} housekeeper")

    async def aclose(self) -> Shutdown:
        """Close the pool; safe to call again (it then waits for the first close).

        New work fails with :class:`PoolClosedError` from now on. Queued and running work
        and open transactions may finish; when the caller is cancelled first, the rest
        happens shielded: queued work fails with :class:`PoolClosedError`, running work
        is interrupted, transactions are taken back (their next call fails) and rolled
        back. Then :meth:`Driver.close` closes every connection and the threads are
        joined.

        Returns:
            What it closed and rolled back, as :attr:`shutdown` says (which is set
            even when the caller was cancelled, and this raised ``Cancelled``).

        Raises:
            Exception: what a rollback or :meth:`Driver.close` raised, once everything
                was closed.

        Example::

            with trio.move_on_after(shutdown_timeout):  # then work is interrupted
                shutdown = await engine.aclose()
        """
        if self.state is PoolState.OPEN:
            self.state = PoolState.CLOSING
            deadline = trio.current_effective_deadline()
            self._unheld.unpark_all()  # they raise PoolClosedError
            try:
                while any(w.pending or w.transaction or w.replying for w in self._workers):
                    self._progress = trio.Event()
                    await self._progress.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._shut(deadline)
        elif self.state is PoolState.ADDED and not self._opening:
            self.state = PoolState.CLOSED
            self.shutdown = Shutdown(0, 0, 0)
            self._closed.set()
        await self._closed.wait()
        assert self.shutdown is not None
        return self.shutdown

    @trio.lowlevel.enable_ki_protection  # a request sent inline is always waited for
    async def call(self, work: Callable[[C], T], *, inline: bool = False) -> T:
        """Run ``work(connection)`` on a connection that no transaction holds, in its
        worker thread; with ``inline``, in trio's thread if the driver finds it quick
        (see :meth:`Driver.run_inline`). The engine opens no transaction around it.

        Cancelled before it runs, it never runs; while it runs in a thread, or waits
        inline for a server's reply, it is interrupted and its result discarded (see the
        module's opening comment).

        Raises:
            PoolClosedError: the pool is not open.
            Exception: what ``work`` raised.

        Example::

            row = await engine.call(partial(fetch_one, "SELECT 1"), inline=True)
        """
        if self.state is not PoolState.OPEN:
            raise self._not_open()  # refused, not timed
        begun = time.perf_counter()
        try:
            if inline and self._idle:
                await trio.lowlevel.checkpoint()  # its schedule point, and its cancel point
                if self.state is not PoolState.OPEN:
                    raise self._not_open()
                if self._idle:
                    idle = next(reversed(self._idle))
                    try:
                        attempt = self.driver.run_inline(idle.connection, work)
                    except HandOff:
                        return await self._submit(idle, work)
                    value: T = (
                        await self._wait_for_reply(idle, attempt)
                        if isinstance(attempt, WaitForReply)
                        else attempt
                    )
                    self._served += 1
                    return value
            return await self._submit(await self._unheld_worker(), work)
        finally:
            self._calls_timed += 1
            self._call_seconds += time.perf_counter() - begun

    async def run(self, work: Callable[[C], T], *, mode: str) -> T:
        """Run ``work(connection)`` in a worker thread inside one transaction: begun
        with ``mode``, committed when it returns, rolled back when it raises. One round
        trip for a whole batch of work.

        Cancelled while queued, it never runs; while running, it is interrupted: it
        either raises and is rolled back, or it had committed and its result is dropped.

        Raises:
            PoolClosedError: the pool is not open.
            Exception: what ``work``, BEGIN or COMMIT raised; nothing was committed.

        Example::

            def transfer(connection, amount):
                ...
            await engine.run(partial(transfer, amount=10), mode="IMMEDIATE")
        """
        driver = self.driver

        def in_transaction(connection: C) -> T:
            driver.begin(connection, mode)
            try:
                result = work(connection)
                driver.commit(connection)
            except BaseException:
                driver.rollback(connection)
                raise
            return result

        return await self.call(in_transaction)

    @asynccontextmanager
    async def transaction(self, mode: str) -> AsyncIterator[Transaction[C]]:
        """Hold one connection for the block, as one transaction: begun with ``mode``,
        committed when the block ends, rolled back when it raises or is cancelled (the
        rollback is shielded, and not cancellable).

        Waits for a connection when every one is held by a transaction; work queued on
        the connection it takes runs first.

        Raises:
            PoolClosedError: the pool is not open, or was closed under the transaction
                (which it rolled back).
            Exception: what BEGIN, COMMIT or the block raised; rolled back.

        Example::

            async with engine.transaction("IMMEDIATE") as tx:
                await tx.call(debit)
                await tx.call(credit)
        """
        worker = await self._unheld_worker()
        transaction = Transaction(self, worker)
        worker.transaction = transaction
        self._idle.pop(worker, None)
        driver = self.driver
        try:
            await self._submit(worker, lambda c: driver.begin(c, mode), served=False)
            yield transaction
            await self._hold_call(transaction, driver.commit, served=False, abortable=True)
        except BaseException:
            # PoolClosedError: aclose() took the connection back and rolled it back.
            with trio.CancelScope(shield=True), suppress(PoolClosedError):
                await self._hold_call(transaction, driver.rollback, served=False, abortable=False)
            raise
        finally:
            self._release(transaction)

    # -- submitting work and delivering results ------------------------------------------

    # Protected from KeyboardInterrupt (delivered at the next checkpoint instead): raised
    # between taking the bell and waiting on it, or in _cancel(), it would leave the bell
    # taken and the counters wrong. trio protects the other path's abort and delivery.
    @trio.lowlevel.enable_ki_protection
    async def _submit(
        self,
        worker: _Worker[C],
        work: Callable[[C], T],
        *,
        served: bool = True,
        abortable: bool = True,
    ) -> T:
        job = self._enqueue(worker, work, served)
        bell = self._bell
        if abortable and self._pending == 1 and bell is not None and not bell.taken:
            job.bell = bell
            bell.taken = True
            worker.jobs.put(job)
            try:
                while True:
                    with worker.lock:  # so that _DONE is seen after the ring, not before it
                        state = job.state
                    if state != _QUEUED and state != _RUNNING:
                        break
                    await bell.wait()
            except BaseException:
                self._cancel(job)
                raise
            finally:
                bell.taken = False
                if self._bell is not bell:  # the pool dropped it while this task waited
                    bell.close()
            if state == _DONE:  # else _fail_queued() failed it, and forgot it
                self._delivered(job)
        else:
            worker.jobs.put(job)

            def abort(_: object) -> trio.lowlevel.Abort:
                if not abortable:
                    return trio.lowlevel.Abort.FAILED
                self._cancel(job)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        error = job.error
        if error is not None:
            job.error = None
            try:
                raise error
            finally:
                del error
        return cast(T, job.value)

    def _enqueue(self, worker: _Worker[C], work: Callable[[C], object], served: bool) -> _Job:
        """A new job, counted as pending on ``worker``; the caller puts it on the queue."""
        job = _Job(worker, work, served)
        worker.pending[job] = None
        self._in_flight.count += 1
        self._pending += 1
        self._idle.pop(worker, None)
        return job

    @trio.lowlevel.enable_ki_protection  # see _submit
    async def _wait_for_reply(self, worker: _Worker[C], reply: WaitForReply[C, T]) -> T:
        """The rest of an inline call that sent a request: hold ``worker``'s connection
        until the reply has come, and finish in trio's thread. Cancelled first, the
        request is interrupted and the worker thread reads the reply, before its next
        job, and drops it."""
        self._idle.pop(worker, None)
        worker.replying = True
        self._replying += 1
        self._in_flight.count += 1
        try:
            try:
                await trio.lowlevel.wait_readable(reply.fd)
            except BaseException:
                if worker.stopped:  # abandoned by a forced close: only stop the request
                    self.driver.interrupt(worker.connection)
                    raise
                job = self._enqueue(worker, reply.finish, served=True)
                job.discarded = True
                worker.jobs.put(job)
                self.driver.interrupt(worker.connection)  # the request runs on the server
                self._keep_interrupting(job)
                raise
            return reply.finish(worker.connection)
        finally:
            worker.replying = False
            self._replying -= 1
            self._in_flight.count -= 1
            self._freed(worker)

    def _cancel(self, job: _Job) -> None:
        """``job``'s task is cancelled: remove the job if it is queued, else interrupt
        it if it runs, and deliver nothing."""
        worker = job.worker
        with worker.lock:
            state = job.state
            rang = state == _DONE and job.bell is not None
            job.bell = None  # if it runs, its thread delivers it through _finished()
            if state == _QUEUED:
                job.state = _CANCELLED
            else:  # running or done: its result is dropped on delivery
                job.discarded = True
                if state == _RUNNING:
                    self.driver.interrupt(worker.connection)
        if state == _QUEUED:
            self._forget(job)
        elif state == _RUNNING:
            self._keep_interrupting(job)
        elif rang:
            self._delivered(job)

    def _keep_interrupting(self, job: _Job) -> None:
        # An interrupt that lands before the job's statement starts is lost: the
        # housekeeper repeats it while the job runs, until it returns.
        self._interrupting[job] = None
        if self._interrupt_soon is not None:
            self._interrupt_soon.set()

    def _finished(self, job: _Job) -> None:
        """In a worker thread: queue ``job`` for delivery, waking trio once per batch."""
        with self._done_lock:
            self._done.append(job)
            first = len(self._done) == 1
        if first:
            assert self._token is not None
            # RunFinishedError: trio's run is over, and nobody waits for the result.
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._deliver)

    def _deliver(self) -> None:
        """In trio's thread: hand every finished job's result to its task."""
        with self._done_lock:
            done, self._done = self._done, []
        reschedule = trio.lowlevel.reschedule
        for job in done:
            self._delivered(job)
            if not job.discarded:
                reschedule(job.task)

    def _delivered(self, job: _Job) -> None:
        if job.served and job.error is None:
            self._served += 1
        self._forget(job)

    def _forget(self, job: _Job) -> None:
        worker = job.worker
        del worker.pending[job]
        self._in_flight.count -= 1
        self._pending -= 1
        self._interrupting.pop(job, None)
        if not worker.pending:
            if worker.transaction is None and not worker.replying and self.state is PoolState.OPEN:
                self._idle[worker] = None
            self._note_progress()

    def _note_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    async def _unheld_worker(self) -> _Worker[C]:
        """The worker to queue on: :meth:`_least_busy`, once there is one."""
        while True:
            if self.state is not PoolState.OPEN:
                raise self._not_open()
            worker = self._least_busy()
            if worker is not None:
                return worker
            await self._unheld.park()

    def _least_busy(self) -> _Worker[C] | None:
        """An idle worker, else the one no transaction holds with the fewest jobs."""
        if self._idle:
            return next(reversed(self._idle))
        best: _Worker[C] | None = None
        for worker in self._workers:
            if (
                worker.transaction is None
                and not worker.replying
                and (best is None or len(worker.pending) < len(best.pending))
            ):
                best = worker
        return best

    async def _hold_call(
        self, transaction: Transaction[C], work: Callable[[C], T], *, served: bool, abortable: bool
    ) -> T:
        if transaction._revoked:
            raise self._not_open()
        if transaction._worker is None:
            raise RuntimeError(
                "this transaction has ended: run its statements inside its `async with` block"
            )
        return await self._submit(transaction._worker, work, served=served, abortable=abortable)

    def _release(self, transaction: Transaction[C]) -> None:
        worker = transaction._worker
        transaction._worker = None
        if worker is None or worker.transaction is not transaction:
            return  # taken back by aclose()
        worker.transaction = None
        self._freed(worker)

    def _freed(self, worker: _Worker[C]) -> None:
        """``worker`` is held no more (by a transaction or a reply): idle if nothing is
        queued on it, and every call waiting for a connection may queue on it."""
        if not worker.pending and self.state is PoolState.OPEN:
            self._idle[worker] = None
        self._unheld.unpark_all()
        self._note_progress()

    def _not_open(self) -> PoolClosedError:
        message = f"{self.label} is {self.state.value}"
        if self.state is PoolState.ADDED and self._opened_by:
            message += f": {self._opened_by}"
        return self._closed_error(message)

    # -- opening and closing ----------------------------------------------------------

    def _connect(self, worker: _Worker[C]) -> Callable[[C], None]:
        driver = self.driver

        def connect(_: C) -> None:
            worker.connection = driver.connect()

        return connect

    async def _keep_house(self) -> None:
        """A system task for the pool's run: interrupts the work that cancelled callers
        left running, every `interrupt_every` seconds until it returns; and stops the
        threads, without closing anything, if trio's run ends before aclose() (an
        abandoned shutdown): a thread must not outlive its pool's run."""
        try:
            while True:
                self._interrupt_soon = trio.Event()
                if not self._interrupting:
                    await self._interrupt_soon.wait()
                await trio.sleep(self._interrupt_every)
                for job in list(self._interrupting):
                    with job.worker.lock:
                        if job.state == _RUNNING:
                            self.driver.interrupt(job.worker.connection)
        finally:
            if self.state is not PoolState.CLOSED:
                for worker in self._workers:
                    self._stop(worker)  # after the job it runs, if any
            self._drop_bell()

    def _drop_bell(self) -> None:
        """Close the bell, unless a task still waits on it: a thread abandoned at the
        shutdown may ring it yet, and that task closes it once it leaves."""
        bell, self._bell = self._bell, None
        if bell is not None and not bell.taken:
            bell.close()

    def _stop(self, worker: _Worker[C]) -> None:
        worker.stopped = True
        worker.jobs.put(None)

    def _stop_thread(self, worker: _Worker[C]) -> None:
        self._stop(worker)
        # The thread is idle, waiting for its queue: it returns at once.
        worker.thread.join()

    async def _shut(self, deadline: float) -> None:
        """Take everything back, roll back, close and join, and set :attr:`shutdown`;
        shielded by the caller."""
        self.state = PoolState.CLOSING
        self._idle.clear()
        self._unheld.unpark_all()
        workers = self._workers
        for worker in workers:
            if worker.transaction is not None:
                worker.transaction._revoked = True
                worker.transaction = None
            self._fail_queued(worker)
        live = await self._stop_running(workers)
        errors: list[BaseException] = []
        rolled_back = 0
        try:
            for worker in live:
                try:
                    if await self._submit(worker, self.driver.rollback, served=False):
                        rolled_back += 1
                except Exception as exc:
                    errors.append(exc)
            if live:
                connections = [w.connection for w in live]
                patience = max(0.0, deadline - trio.current_time())
                try:
                    await self._submit(
                        live[0],
                        lambda _: self.driver.close(connections, patience),
                        served=False,
                        abortable=False,
                    )
                except Exception as exc:
                    errors.append(exc)
            for worker in live:
                self._stop_thread(worker)
        finally:
            for worker in workers:
                if worker not in live:
                    self._stop(worker)  # abandoned: it ends once its work returns
            self._drop_bell()
            self.shutdown = Shutdown(len(live), rolled_back, len(workers) - len(live))
            self.state = PoolState.CLOSED
            self._closed.set()
        if errors:
            raise errors[0]

    def _fail_queued(self, worker: _Worker[C]) -> None:
        for job in list(worker.pending):
            if job.discarded:
                # Nobody waits for it; it may read a reply that must be read before the
                # connection's next job (_wait_for_reply): it runs, _stop_running() waits.
                continue
            with worker.lock:
                queued = job.state == _QUEUED
                if queued:
                    job.state = _CANCELLED
            if queued:
                self._forget(job)
                job.error = self._not_open()
                if job.bell is not None:
                    job.bell.ring()
                else:
                    trio.lowlevel.reschedule(job.task)

    async def _stop_running(self, workers: list[_Worker[C]]) -> list[_Worker[C]]:
        """Interrupt running work until every worker is idle, or abandon_after has
        passed; the workers whose thread came back."""
        with trio.move_on_after(self._abandon_after):
            while any(w.pending or w.replying for w in workers):
                for worker in workers:
                    with worker.lock:
                        if worker.replying or any(job.state == _RUNNING for job in worker.pending):
                            self.driver.interrupt(worker.connection)
                with trio.move_on_after(self._interrupt_every):
                    self._progress = trio.Event()
                    await self._progress.wait()
        return [w for w in workers if not w.pending and not w.replying]
