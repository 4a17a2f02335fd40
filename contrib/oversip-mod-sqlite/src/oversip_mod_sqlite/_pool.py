# A pool lends each call a connection of its own for the length of that call (or of a
# transaction) and runs the blocking sqlite3 work in a worker thread, so trio never
# blocks and no connection is ever used by two threads at once. We rejected one
# connection per worker thread (trio's worker threads are cached and anonymous, so their
# connections would open outside `started` and outlive the pool) and one shared
# connection behind a lock (WAL lets readers run beside the writer, but only on separate
# connections).
#
# Connections are in autocommit mode (`isolation_level=None`): a statement outside
# transaction() is its own transaction, and transaction() says BEGIN, COMMIT and ROLLBACK
# itself, so nothing is committed that the caller did not ask for. Every call fetches what
# it returns and closes its cursor before the connection goes back, so an idle connection
# holds no read snapshot, and neither a checkpoint nor closing ever waits for one.
#
# Closing refuses new calls, waits for those that hold a connection, then rolls back what
# is still open, checkpoints the WAL into the database and closes every connection. When
# the caller's deadline cuts the wait short, the rest still happens, shielded: a statement
# still running is interrupted (`interrupt()` is the one sqlite3 call that is safe from
# another thread), its connection is taken back from the task that held it, and that
# task's next call fails with PoolClosedError.

from __future__ import annotations

import abc
import enum
import math
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import trio
from oversip_hooks import Logger

from ._errors import PoolClosedError, PoolOpenError
from ._settings import PoolSettings

LOG_ID = "SQLite module"

Parameters = Sequence[Any] | Mapping[str, Any]
"""Values for a statement's placeholders: a sequence for ``?``, a mapping for ``:name``."""

TransactionMode = Literal["deferred", "immediate", "exclusive"]

_BEGIN: dict[str, str] = {
    "deferred": "BEGIN DEFERRED",
    "immediate": "BEGIN IMMEDIATE",
    "exclusive": "BEGIN EXCLUSIVE",
}

_T = TypeVar("_T")

_INTERRUPT_EVERY = 0.01  # seconds between interrupts of a statement that closing stops


@dataclass(frozen=True)
class Result:
    """What ``execute()`` and ``executemany()`` report.

    Attributes:
        rowcount: the rows inserted, updated or deleted; -1 for other statements.
        lastrowid: the rowid of the last row inserted, or ``None``.
    """

    rowcount: int
    lastrowid: int | None


@dataclass(frozen=True)
class PoolStats:
    """A pool's state, as the module logs it on reload.

    Attributes:
        name: the pool's name.
        open_connections: connections open (the pool's size once it is open, 0 before
            and after).
        in_use: connections lent to a call or a transaction right now.
        queries_served: calls (``execute``, ``executemany``, ``fetchone``, ``fetchall``,
            on the pool or in a transaction) that completed without an error.
        queries_waiting: calls waiting for a connection because all are in use.
    """

    name: str
    open_connections: int
    in_use: int
    queries_served: int
    queries_waiting: int

    def __str__(self) -> str:
        return (
            f"name: {self.name}, open connections: {self.open_connections}, "
            f"in use: {self.in_use}, queries served: {self.queries_served}, "
            f"queries waiting: {self.queries_waiting}"
        )


class _State(enum.Enum):
    ADDED = "not open yet"  # configured in initialize; the started hook opens it
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(eq=False)
class _Lease:
    """A connection lent to one call or to one transaction."""

    connection: sqlite3.Connection
    # Held while a worker thread uses the connection, so that a transaction shared by two
    # tasks still runs one statement at a time, and so that closing can wait for the
    # statement in progress.
    lock: trio.Lock = field(default_factory=trio.Lock)
    revoked: bool = False  # taken back by aclose(): never to be used again


class Queries(abc.ABC):
    """The statements that a :class:`Pool` and a :class:`Transaction` both run.

    Annotate with it the code that should work inside or outside a transaction alike.

    Example::

        async def record_login(db: Queries, user_id: int) -> None:
            await db.execute("INSERT INTO logins (user_id) VALUES (?)", (user_id,))
    """

    async def execute(self, sql: str, parameters: Parameters = ()) -> Result:
        """Run one statement; on a pool, as a transaction of its own.

        Rows that the statement returns are discarded: use :meth:`fetchone` or
        :meth:`fetchall` for those.

        Args:
            sql: one SQL statement, with ``?`` or ``:name`` placeholders.
            parameters: the values for the placeholders.

        Raises:
            sqlite3.Error: what SQLite raised (bad SQL, a constraint, "database is
                locked" after the busy timeout).
            PoolClosedError: the pool is not open.

        Example::

            result = await pool.execute("INSERT INTO users (name) VALUES (?)", ("ada",))
            user_id = result.lastrowid
        """
        return await self._statement(sqlite3.Cursor.execute, sql, parameters, _summary)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Result:
        """Run one statement once for each set of parameters; on a pool, all of them as
        one transaction.

        ``seq_of_parameters`` is read to its end before the statement runs, so that a
        generator never runs in a worker thread.

        Raises:
            sqlite3.Error: what SQLite raised; on a pool, no row was changed.
            PoolClosedError: the pool is not open.

        Example::

            await pool.executemany("INSERT INTO tags (name) VALUES (?)", [("a",), ("b",)])
        """
        rows = list(seq_of_parameters)
        return await self._statement(_executemany_atomically, sql, rows, _summary)

    async def fetchone(self, sql: str, parameters: Parameters = ()) -> Any:
        """Run a query; return its first row, or ``None`` when it has none.

        Rows are tuples unless ``on_connect`` sets the connection's ``row_factory``.

        Raises:
            sqlite3.Error: what SQLite raised.
            PoolClosedError: the pool is not open.

        Example::

            (count,) = await pool.fetchone("SELECT count(*) FROM users")
        """
        return await self._statement(
            sqlite3.Cursor.execute, sql, parameters, sqlite3.Cursor.fetchone
        )

    async def fetchall(self, sql: str, parameters: Parameters = ()) -> list[Any]:
        """Run a query; return all its rows.

        Raises:
            sqlite3.Error: what SQLite raised.
            PoolClosedError: the pool is not open.

        Example::

            names = [name for (name,) in await pool.fetchall("SELECT name FROM users")]
        """
        return await self._statement(
            sqlite3.Cursor.execute, sql, parameters, sqlite3.Cursor.fetchall
        )

    async def _statement(
        self,
        run: Callable[[sqlite3.Cursor, str, Any], object],
        sql: str,
        parameters: object,
        collect: Callable[[sqlite3.Cursor], _T],
    ) -> _T:
        def work(connection: sqlite3.Connection) -> _T:
            cursor = connection.cursor()
            try:
                run(cursor, sql, parameters)
                return collect(cursor)
            finally:
                cursor.close()  # ends the statement, and with it the snapshot it read

        return await self._run(work)

    @abc.abstractmethod
    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(connection)`` in a worker thread, on a connection of this object's."""


class Pool(Queries, Logger):
    """Connections to one SQLite database, lent to one call or transaction at a time.

    Made by :func:`~oversip_mod_sqlite.add_pool`, opened by the module's ``started``
    hook and closed by its ``terminated`` hook; :func:`~oversip_mod_sqlite.pool` finds
    it by name. Each statement runs in a worker thread; at most ``size`` run at once,
    and the others wait for a connection.

    Example::

        pool = oversip_mod_sqlite.pool("main")
        await pool.execute("INSERT INTO events (kind) VALUES (?)", ("login",))
        rows = await pool.fetchall("SELECT kind, count(*) FROM events GROUP BY kind")
    """

    log_id = LOG_ID

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._state = _State.ADDED
        self._idle: list[sqlite3.Connection] = []
        self._leases: set[_Lease] = set()
        self._free = trio.Semaphore(settings.size)  # one token per connection
        # A limiter of its own, so that the pool's statements neither queue behind other
        # code's threads in trio's default limiter nor crowd them out.
        self._threads = trio.CapacityLimiter(settings.size)
        self._returned = trio.Event()  # set, and replaced, whenever a lease ends
        self._closed = trio.Event()
        self._served = 0

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def size(self) -> int:
        return self.settings.size

    def stats(self) -> PoolStats:
        """The pool's state now: connections open and in use, queries served and
        waiting."""
        is_open = self._state in (_State.OPEN, _State.CLOSING)
        return PoolStats(
            name=self.name,
            open_connections=len(self._idle) + len(self._leases) if is_open else 0,
            in_use=len(self._leases),
            queries_served=self._served,
            queries_waiting=self._free.statistics().tasks_waiting,
        )

    @asynccontextmanager
    async def transaction(self, mode: TransactionMode = "immediate") -> AsyncIterator[Transaction]:
        """Run statements as one transaction: committed when the block ends, rolled
        back when it raises or is cancelled. The transaction holds one connection for
        the whole block; run its statements on the object it yields, not on the pool,
        whose other connections would wait for this transaction's lock.

        Args:
            mode: how BEGIN locks. ``"immediate"`` takes the write lock at once, so that
                two writing transactions queue on the busy timeout rather than one of
                them failing with "database is locked" when it upgrades its read lock;
                ``"deferred"`` locks nothing until a statement needs it, which suits a
                transaction that only reads; ``"exclusive"`` is ``"immediate"`` in WAL
                mode.

        Raises:
            ValueError: ``mode`` is none of the three.
            PoolClosedError: the pool is not open, or was closed under the transaction
                (which it rolled back).
            sqlite3.Error: what SQLite raised; the transaction was rolled back.

        Example::

            async with pool.transaction() as tx:
                await tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
                await tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
        """
        if mode not in _BEGIN:
            raise ValueError(f"mode must be one of {', '.join(_BEGIN)}, not {mode!r}")
        async with self._lease() as lease:
            await self._in_thread(lease, partial(_run_sql, _BEGIN[mode]))
            transaction = Transaction(self, lease)
            try:
                yield transaction
                commit = partial(_run_sql, "COMMIT")
                await self._in_thread(lease, partial(_in_open_transaction, commit))
            except BaseException:
                await self._roll_back(lease)
                raise
            finally:
                transaction._end()

    async def open(self) -> None:
        """Open the connections, in WAL mode with the busy timeout, calling
        ``on_connect`` for each; the module's ``started`` hook calls it.

        Raises:
            PoolOpenError: a connection could not be opened or set up; those already
                open were closed.
            RuntimeError: the pool was opened before.

        Example::

            await pool.open()
            (mode,) = await pool.fetchone("PRAGMA journal_mode")   # "wal"
        """
        if self._state is not _State.ADDED:
            raise RuntimeError(f"SQLite pool {self.name!r} is {self._state.value}; it opens once")
        try:
            while len(self._idle) < self.size:
                connection = await trio.to_thread.run_sync(self._connect, limiter=self._threads)
                self._idle.append(connection)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._close_connections()
            if isinstance(exc, Exception):
                raise PoolOpenError(
                    f"cannot open SQLite connection pool (name: {self.name}, "
                    f"database: {self.settings.database}): {_reason(exc)}"
                ) from exc
            raise
        self._state = _State.OPEN

    async def aclose(self) -> None:
        """Close the pool; the module's ``terminated`` hook calls it.

        New calls fail with :class:`PoolClosedError` from now on. Calls that hold a
        connection (a statement, an open transaction) may finish; when the caller is
        cancelled first (the runtime's shutdown timeout), their statements are
        interrupted and their transactions rolled back. Then the WAL is checkpointed
        into the database and every connection is closed. Nothing is committed. The
        checkpoint waits for readers in other processes until the caller's deadline at
        most; what it could not apply is logged, and left to the database's next user.

        Raises:
            sqlite3.Error: a rollback or the checkpoint failed; every connection was
                closed all the same.

        Example::

            with trio.move_on_after(shutdown_timeout):  # then statements are interrupted
                await pool.aclose()
        """
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            deadline = trio.current_effective_deadline()
            try:
                while self._leases:
                    await self._returned.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._close_connections(deadline)
        elif self._state is _State.ADDED:
            self._state = _State.CLOSED
            self._closed.set()
        await self._closed.wait()

    # -- lending connections --------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        async with self._lease() as lease:
            return await self._query(lease, partial(_on_its_own, work))

    async def _query(self, lease: _Lease, work: Callable[[sqlite3.Connection], _T]) -> _T:
        result = await self._in_thread(lease, work)
        self._served += 1
        return result

    async def _in_thread(self, lease: _Lease, work: Callable[[sqlite3.Connection], _T]) -> _T:
        async with lease.lock:
            if lease.revoked:
                raise self._not_open()
            return await trio.to_thread.run_sync(work, lease.connection, limiter=self._threads)

    async def _roll_back(self, lease: _Lease) -> None:
        # Shielded: a cancelled transaction must still end, and a ROLLBACK is quick.
        # PoolClosedError: aclose() took the connection back, and rolled it back itself.
        with trio.CancelScope(shield=True), suppress(PoolClosedError):
            await self._in_thread(lease, _roll_back_if_open)

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[_Lease]:
        self._check_open()
        await self._free.acquire()
        try:
            self._check_open()  # it may have begun closing while this call waited
            lease = _Lease(self._idle.pop())
            self._leases.add(lease)
            try:
                yield lease
            finally:
                self._leases.remove(lease)
                if not lease.revoked:
                    self._idle.append(lease.connection)
                self._returned.set()
                self._returned = trio.Event()
        finally:
            self._free.release()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise self._not_open()

    def _not_open(self) -> PoolClosedError:
        if self._state is _State.ADDED:
            return PoolClosedError(
                f"SQLite pool {self.name!r} is not open yet: the SQLite module opens it in "
                "its started hook"
            )
        return PoolClosedError(f"SQLite pool {self.name!r} is {self._state.value}")

    # -- opening and closing connections --------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Open and set up one connection; runs in a worker thread."""
        settings = self.settings
        connection = sqlite3.connect(
            settings.database,
            timeout=settings.timeout,  # the busy timeout
            detect_types=settings.detect_types,
            isolation_level=None,  # autocommit; transaction() says BEGIN and COMMIT itself
            check_same_thread=False,  # lent to one worker thread at a time, never two
            cached_statements=settings.cached_statements,
        )
        try:
            (mode,) = _fetch_row("PRAGMA journal_mode=WAL", connection)
            if mode != "wal":
                raise PoolOpenError(
                    f"the journal mode stays {mode!r}: this filesystem cannot do WAL"
                )
            if settings.on_connect is not None:
                try:
                    settings.on_connect(connection)
                except Exception as exc:
                    raise PoolOpenError(f"on_connect raised {_reason(exc)}") from exc
            if connection.in_transaction:
                raise PoolOpenError("on_connect left a transaction open; it must commit it")
        except BaseException:
            connection.close()
            raise
        return connection

    async def _close_connections(self, deadline: float = math.inf) -> None:
        """Take back every lent connection, then roll back, checkpoint and close them
        all; the caller shields it, and the checkpoint waits for another process's
        readers until ``deadline`` at most."""
        taken_back = list(self._leases)
        for lease in taken_back:
            lease.revoked = True
        for lease in taken_back:
            await _stop_statement(lease)
        connections = [*self._idle, *(lease.connection for lease in taken_back)]
        self._idle.clear()
        try:
            patience = max(0.0, min(self.settings.timeout, deadline - trio.current_time()))
            shutdown = await trio.to_thread.run_sync(
                _shut, connections, patience, limiter=self._threads
            )
        finally:
            self._state = _State.CLOSED
            self._closed.set()
        if not connections:
            return
        self.log_system_info(
            f"Closed SQLite connection pool (name: {self.name}, connections: "
            f"{len(connections)}, transactions rolled back: {shutdown.rolled_back}, "
            f"queries served: {self._served})"
        )
        if not shutdown.checkpointed:
            self.log_system_warn(
                f"SQLite pool {self.name!r}: another connection to {self.settings.database} "
                "kept the WAL checkpoint from completing; its next writer will apply the WAL"
            )


class Transaction(Queries):
    """The statements of one transaction, on the connection it holds: what
    :meth:`Pool.transaction` yields. It works only inside its ``async with`` block."""

    def __init__(self, pool: Pool, lease: _Lease) -> None:
        self._pool = pool
        self._lease: _Lease | None = lease

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._lease is None:
            raise RuntimeError(
                "this transaction has ended: run its statements inside its `async with` block"
            )
        return await self._pool._query(self._lease, partial(_in_open_transaction, work))

    def _end(self) -> None:
        self._lease = None


async def _stop_statement(lease: _Lease) -> None:
    """Interrupt the statement that runs on ``lease``'s connection until it has returned;
    then no statement runs on it, since it is revoked."""
    # interrupt() stops a statement that is running, not one that starts a moment later:
    # interrupt again until the lock is free.
    while lease.lock.locked():
        lease.connection.interrupt()
        with trio.move_on_after(_INTERRUPT_EVERY):
            async with lease.lock:
                pass


# -- what runs in the worker threads ----------------------------------------------------


def _in_open_transaction(
    work: Callable[[sqlite3.Connection], _T], connection: sqlite3.Connection
) -> _T:
    # SQLite ends a transaction by itself on some errors (ON CONFLICT ROLLBACK, a full
    # disk, an interrupt) and on an explicit COMMIT or ROLLBACK. A statement run after that
    # would be committed on its own; refusing it keeps the transaction all or nothing.
    if not connection.in_transaction:
        raise sqlite3.OperationalError(
            "this transaction was already ended by SQLite (rolled back after an error, or "
            "an explicit COMMIT/ROLLBACK); nothing more runs in it"
        )
    return work(connection)


@dataclass(frozen=True)
class _Shutdown:
    rolled_back: int
    checkpointed: bool


def _shut(connections: list[sqlite3.Connection], patience: float) -> _Shutdown:
    """Roll back, checkpoint and close ``connections``, none of them in use; the
    checkpoint waits ``patience`` seconds at most for readers on other connections."""
    rolled_back = 0
    checkpointed = True
    try:
        for connection in connections:
            if connection.in_transaction:
                _run_sql("ROLLBACK", connection)
                rolled_back += 1
        if connections:
            # A connection whose schema is stale (another one created a table since it
            # last read) reloads it inside the checkpoint statement, which then waits the
            # whole busy timeout for that read to end: for itself. Reading the schema
            # version first brings it up to date in a read that ends at once.
            _fetch_row("PRAGMA schema_version", connections[0])
            _fetch_row(f"PRAGMA busy_timeout = {round(patience * 1000)}", connections[0])
            # TRUNCATE copies every frame into the database and cuts the -wal file to
            # zero bytes; `busy` is 1 when a reader on another connection prevented it.
            busy, _, _ = _fetch_row("PRAGMA wal_checkpoint(TRUNCATE)", connections[0])
            checkpointed = busy == 0
    finally:
        for connection in connections:
            connection.close()
    return _Shutdown(rolled_back, checkpointed)


def _on_its_own(work: Callable[[sqlite3.Connection], _T], connection: sqlite3.Connection) -> _T:
    """``work(connection)`` as a transaction of its own: whatever it leaves open (a
    failed executemany(), an ``execute("BEGIN")``) is rolled back before the connection
    goes back to the pool."""
    try:
        result = work(connection)
    finally:
        left_open = connection.in_transaction
        if left_open:
            _run_sql("ROLLBACK", connection)
    if left_open:
        raise sqlite3.ProgrammingError(
            "the statement left a transaction open, so it was rolled back; "
            "use pool.transaction() for a transaction"
        )
    return result


def _executemany_atomically(cursor: sqlite3.Cursor, sql: str, rows: list[Parameters]) -> None:
    # In autocommit mode sqlite3 commits each row on its own, and a failure halfway would
    # leave the first half in: on a pool, where a call is a transaction, wrap it in one.
    # A failure leaves it open, for _on_its_own() to roll back.
    atomic = not cursor.connection.in_transaction
    if atomic:
        _run_sql("BEGIN IMMEDIATE", cursor.connection)
    cursor.executemany(sql, rows)
    if atomic:
        _run_sql("COMMIT", cursor.connection)


def _run_sql(sql: str, connection: sqlite3.Connection) -> None:
    connection.execute(sql).close()


def _roll_back_if_open(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        _run_sql("ROLLBACK", connection)


def _fetch_row(sql: str, connection: sqlite3.Connection) -> Any:
    cursor = connection.execute(sql)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def _summary(cursor: sqlite3.Cursor) -> Result:
    return Result(cursor.rowcount, cursor.lastrowid)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PoolOpenError) else f"{type(exc).__name__}: {exc}"
